"""The process-wide pipeline: settings, one queue and lane per provider, one dispatcher.

Created lazily (first event, ``configure()`` or a middleware's start-up), replaced by
``configure()``, and replaced by an empty one in a forked child so that events queued in the parent
are sent once, by the parent.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

from ._log import hide_in_http_logs, limited, logger
from .buffer import Dropped, ProviderQueue
from .config import Settings, load_settings
from .dispatcher import STOP_MARGIN, Dispatcher
from .errors import EventError
from .events import Event, refill_ids, request_event, stamp
from .lane import Lane, ProviderStats
from .normalize import warn_dropped_property
from .signals import event_dropped, notify, receiver_errors_snapshot
from .spool import check_spool, close_for_fork
from .spool import fork_guard as spool_fork_guard

__all__ = ["ProviderStats", "Runtime", "Stats", "current", "flush", "peek", "replace"]

#: How often a second shutdown looks at the first one's dispatcher while it waits.
_WAIT_SLICE = 0.05
_new_tuple = tuple.__new__
#: Records ``admit`` turns into events before it queues them (see ``_admit``).
_ADMIT_CHUNK = 1000


#: What the capture layer queues per request for the dispatcher to build the event from: name,
#: user id, anonymous id, ``time.time()``, a function and its argument that give the properties,
#: aliases.
RequestRecord = tuple[str, Any, "str | None", float, Callable[[Any], dict[str, Any]], Any, Mapping[str, str]]
#: What ``track()`` queues in its common case: an :class:`Event`'s fields but ``kind`` (``"track"``),
#: with the timestamp as ``time.time()``; the dispatcher makes the datetime (0.5 µs off the caller).
TrackRecord = tuple[
    str, str, "str | None", "str | None", float, dict[str, Any], Mapping[str, Any], Mapping[str, str]
]
#: The intake, in the order callers queued them: requests' records (7 items), ``track()``'s records
#: (8) and events built on the caller's thread (an :class:`Event`, 9).
Record = RequestRecord | TrackRecord | Event


class Stats(TypedDict):
    """What ``stats()`` returns."""

    #: Per provider, in the configured order.
    providers: dict[str, ProviderStats]
    #: Events refused before reaching any provider, by reason.
    dropped: dict[str, int]
    #: Events tracked and not yet handed to the providers' queues (the dispatcher does that within a
    #: tick): counted in no provider's ``enqueued`` yet, so that counter never goes down (one of them
    #: may still be refused, and would then count in ``dropped`` above instead).
    waiting: int
    #: Failures inside request capture, by where they happened (``evmiddleware.capture.errors()``).
    capture_errors: dict[str, int]
    #: Spool operations that failed.
    spool_errors: int
    #: Exceptions raised by signal receivers, by signal.
    receiver_errors: dict[str, int]
    #: Tracking is off (``disabled``, or no provider configured).
    disabled: bool


class Runtime:
    """One configured pipeline. On the caller's thread an event costs a record appended to
    ``intake`` (``track()``'s common case, a request's event) or, for an event built there,
    ``submit``; the dispatcher thread does the rest (see ``admit``)."""

    def __init__(self, settings: Settings, *, check_spool_file: bool = True) -> None:
        self.settings = settings
        self.disabled = settings.disabled or not settings.providers
        self.queues = [
            ProviderQueue(p.name, settings.max_queue, drop_oldest=settings.overflow == "drop_oldest")
            for p in settings.providers
        ]
        self.lanes = [
            Lane(p, q, settings.flush_interval) for p, q in zip(settings.providers, self.queues, strict=True)
        ]
        self.dispatcher = Dispatcher(
            self.lanes,
            request_timeout=settings.request_timeout,
            retry_deadline=settings.retry_deadline,
            backoff=(settings.retry_base_delay, settings.retry_max_delay),
            spool_path=settings.spool,
            spool_interval=settings.spool_interval,
            spool_lease=settings.spool_lease,
            on_failure=self._dispatcher_failed,
            admit=self.admit,
            last_admit=self.last_admit,
        )
        # A batch's worth waiting wakes the dispatcher early; below that it looks every tick.
        self._nudge_at = max(64, min(lane.limits.max_events for lane in self.lanes)) if self.lanes else 0
        #: Events refused before reaching any provider, by reason (caller threads: under the lock).
        self.dropped: Counter[str] = Counter()
        #: Records refused while admitted (a request event too large, say) or taken from the intake at
        #: a stop (``_count_refused``, under ``_lock``), and the failures no flush watched that the
        #: last flush counted (``_failed_since_last_flush``).
        self._refused_at_admission = 0
        self._failures_reported = 0
        #: The runtime this one replaced had failures no flush reported yet: the next flush does.
        self._failures_inherited = False
        #: Every event on its way to the providers' queues, in order (see ``Record``): appended on
        #: callers' threads (``api.track``, ``api.record_request_event``, ``submit``; each nudges the
        #: dispatcher at ``_nudge_at``) and turned into queued events by the dispatcher thread
        #: (``admit``); bounded by ``max_queue`` like every provider's queue.
        self.intake: deque[Record] = deque()
        self.max_queue = settings.max_queue
        self.max_event_bytes = settings.max_event_bytes
        #: Whether callers may queue records (``track()``'s and requests' fast paths): open, enabled
        #: and not strict (strict mode raises on the caller's thread, so it builds events there).
        self.takes_records = not self.disabled and not settings.strict
        self._lock = threading.Lock()
        # Reentrant: what runs under it (a log handler, a request's properties) may track, find the
        # intake full and admit too. event_dropped receivers do not run under it: see ``admit``.
        self._admit_lock = threading.RLock()
        self.closed = False
        self._closed_reason = "shut_down"
        #: Set just before the intake is emptied for the last time (the end of a shutdown, a dead
        #: dispatcher): a caller that passed the ``takes_records`` test before ``closed`` was set may
        #: append a record after that, which nothing would ever take. Each appending path tests this
        #: after its append and counts such a record itself (``drop_late``).
        self.finished = False
        #: Why records found once ``finished`` is set are dropped.
        self._finished_reason = "shutdown"
        #: When the first ``shutdown`` gives up (``time.monotonic()``); ``None`` before it (under ``_lock``).
        self._shutdown_deadline: float | None = None
        #: Set when the first ``shutdown`` is over: its events delivered, or counted and logged.
        self._shut_down = threading.Event()
        if settings.spool and not self.disabled and check_spool_file:
            check_spool(settings.spool)
        hide_in_http_logs(secret for provider in settings.providers for secret in provider.secrets())

    def start(self) -> None:
        """Start delivering now rather than at the first event (a spool may hold events to send).

        Never once shut down: ``configure()`` from two threads may shut this runtime down before
        the thread that made it starts it (the dispatcher refuses too, see ``Dispatcher.stop``).
        """
        if not self.disabled and not self.closed:
            self.dispatcher.start()

    def submit(self, event: Event) -> bool:
        """Queue an event built on the caller's thread, behind the records queued before it; False when
        it was dropped instead (the pipeline is closed: counted and logged)."""
        if self.closed:
            self.drop(event, self._closed_reason)
            return False
        intake = self.intake
        if len(intake) >= self.max_queue:
            # The dispatcher has fallen behind: move what waits into the providers' queues now, in
            # order, so their overflow policy decides what is dropped (the newest by default).
            self.admit()
        intake.append(event)
        if self.finished:  # shut down between the test above and the append: see ``finished``
            self.drop_late()
            return False
        dispatcher = self.dispatcher
        if dispatcher._thread is None:  # ``not dispatcher.started``, without the property's call
            dispatcher.start()
        elif len(intake) == self._nudge_at:
            dispatcher.nudge()
        return True

    def admit(self, wait: bool = True) -> bool:
        """Dispatcher thread (or a caller that found the intake full): turn the intake's records into
        events and queue each for every provider. Refused ones are counted like any refused event.
        ``wait=False`` (the dispatcher's loop): nothing, when another thread is admitting; returns
        whether it admitted.

        Their ``event_dropped`` receivers run once the lock is released: one that calls ``flush()`` or
        ``shutdown()`` needs the dispatcher, which admits on every turn, to take it.
        """
        later: list[Dropped] = []
        # One thread admits at a time: two at once could swap events.
        if not self._admit_lock.acquire(blocking=wait):
            return False
        try:
            nudge = self._admit(later)
        finally:
            self._admit_lock.release()
        self._after_admit(nudge, later)
        return True

    def last_admit(self) -> None:
        """Dispatcher thread, as its lanes stop: admit for the last time. Any later admit (a caller
        that found the intake full) counts the records instead: no lane would take them any more."""
        later: list[Dropped] = []
        with self._admit_lock:  # after any caller's admit under way, before any that begins later
            nudge = self._admit(later)
            self._finish_intake("shutdown")
        self._after_admit(nudge, later)

    def _after_admit(self, nudge: bool, later: list[Dropped]) -> None:
        refill_ids()  # for the track() calls to come
        if nudge:  # the other lanes sleep until their next tick otherwise
            self.dispatcher.nudge()
        for event, provider, reason in later:
            notify(event_dropped, event=event, provider=provider, reason=reason)

    def _admit(self, later: list[Dropped]) -> bool:
        """Build the intake's events and queue them for each provider, a chunk at a time; True when a
        queue now holds a batch's worth. Drops to signal are appended to ``later``."""
        if self.finished:  # the lanes stopped (``last_admit``, ``_dispatcher_failed``): count them
            # as refused: no flush watches them, the next one reports them (``_unwatched_failures``)
            self._count_refused(self._drop_intake(self._finished_reason, later))
            return False
        nudge = False
        # In chunks: the list of a whole burst (a flush after 20,000 calls admits them at once) stayed
        # young while it grew, and each collection of the garbage collector walked all of it.
        remaining = len(self.intake)  # no more: callers may append faster than this thread admits
        while remaining > 0:
            chunk = min(remaining, _ADMIT_CHUNK)
            remaining -= chunk
            events = self._build_events(chunk, later)
            if events:
                nudge_at = self._nudge_at
                for queue in self.queues:
                    before = len(queue.items)
                    if queue.offer_many(events, later) >= nudge_at > before:
                        nudge = True
        return nudge

    def _build_events(self, most: int, later: list[Dropped]) -> list[Event]:
        """The events of the intake's ``most`` oldest records (fewer if a shutdown took the rest); the
        records refused are counted as dropped."""
        intake = self.intake
        max_depth, max_bytes = self.settings.max_depth, self.settings.max_event_bytes
        events: list[Event] = []
        add = events.append
        for _ in range(most):
            try:
                record = intake.popleft()
            except IndexError:  # a shutdown that gave up waiting for us counted the rest
                break
            size = len(record)
            # (``type: ignore`` rather than ``cast``: a Python call per event, on the dispatcher thread)
            if size == 9:  # built on the caller's thread: an Event
                event: Event = record  # type: ignore[assignment]
            elif size == 8:  # track()'s
                event_id, name, user_id, anonymous_id, at, properties, context, aliases = record  # type: ignore[misc]
                when = stamp(at)
                fields = (event_id, name, user_id, anonymous_id, when, properties, context, "track", aliases)
                event = _new_tuple(Event, fields)
            else:
                try:
                    name, user_id, anonymous_id, at, make_properties, source, aliases = record  # type: ignore[misc]
                    event = request_event(
                        name,
                        make_properties(source),
                        user_id,
                        anonymous_id,
                        at,
                        aliases,
                        max_depth,
                        max_bytes,
                        warn_dropped_property,
                    )
                except EventError as exc:
                    self._count_refused(1)
                    self.drop(None, exc.reason, str(exc), later)
                    continue
                except Exception as exc:
                    self._count_refused(1)
                    limited.log(logging.ERROR, "track", "evmiddleware: tracking failed", exc_info=True)
                    self.drop(None, "internal_error", type(exc).__name__, later)
                    continue
            add(event)
        return events

    def drop_late(self) -> None:
        """A record appended after the intake was emptied for the last time (``finished``): counted
        as tracked after the shutdown, as ``track()`` counts one once ``closed`` is seen. Records of
        other callers it takes too (their ``track()`` returned an id) are for the next flush to report;
        the caller's own is reported by its ``None``."""
        self._count_refused(max(0, self._drop_intake(self._closed_reason) - 1))

    def _drop_intake(self, reason: str, later: list[Dropped] | None = None) -> int:
        """Count what is still in ``intake`` as dropped (the dispatcher will never build it); ``later``
        as in ``drop``."""
        count = 0
        while True:
            try:  # a dispatcher still running past a shutdown's timeout may take some meanwhile
                record = self.intake.popleft()
            except IndexError:
                return count
            # Receivers of event_dropped get the event when one was built (records are not events).
            self.drop(record if type(record) is Event else None, reason, later=later)
            count += 1

    def _finish_intake(self, reason: str) -> None:
        """Under ``_admit_lock``: no event is queued after this (see ``finished``). A caller admitting
        meanwhile has queued its events before this; one that admits later counts them (``_admit``)."""
        if not self.finished:
            self._finished_reason = reason
            self.finished = True

    def _dispatcher_failed(self) -> None:
        self._closed_reason = "dispatcher_error"
        self.closed = True
        self.takes_records = False
        with self._admit_lock:  # a caller's admit under way queues its events first: the lanes count them
            self._finish_intake("dispatcher_error")
        self._count_refused(self._drop_intake("dispatcher_error"))

    def _count_refused(self, count: int) -> None:
        """Records refused before any provider took them: for the next flush to report. Under
        ``_lock``, not ``_admit_lock``: the stop counts some, and a SIGTERM may have stopped the
        admit lock's holder (see ``admit``)."""
        with self._lock:
            self._refused_at_admission += count

    def drop(
        self, event: Event | None, reason: str, detail: str = "", later: list[Dropped] | None = None
    ) -> None:
        """An event refused before any provider saw it: counted, logged (rate-limited), signalled (at
        once, or appended to ``later``, as ``ProviderQueue.offer`` does)."""
        with self._lock:
            self.dropped[reason] += 1
        limited.log(
            logging.WARNING,
            f"drop:{reason}",
            "evmiddleware: event dropped (%s)%s",
            reason,
            f": {detail}" if detail else "",
        )
        if event_dropped.receivers:
            if later is None:
                notify(event_dropped, event=event, provider=None, reason=reason)
            else:
                later.append((event, None, reason))

    def flush(self, timeout: float | None) -> bool:
        if not self.dispatcher.started and not self.intake and not any(q.items for q in self.queues):
            return not self._failed_since_last_flush()  # no dispatcher thread that could ask meanwhile
        return self.dispatcher.flush(timeout, self._failed_since_last_flush)

    def _failed_since_last_flush(self) -> bool:
        """Dispatcher thread (or a flush before it started), as a flush registers: did events fail that
        no flush was waiting for, since the last flush asked? Those refused at admission or by a full
        queue (no lane ever held them), those a lane gave up, rejected or evicted while no flush
        watched them, and those of the runtime this one replaced. Each failure is reported once: by
        the flush waiting for the event, or else by the next one."""
        failed = self._unwatched_failures()
        reported, self._failures_reported = self._failures_reported, failed
        inherited, self._failures_inherited = self._failures_inherited, False
        return failed > reported or inherited

    def _unwatched_failures(self) -> int:
        return (
            self._refused_at_admission
            + sum(queue.dropped["queue_full"] for queue in self.queues)
            + sum(lane.unreported for lane in self.lanes)
        )

    def shutdown(self, timeout: float | None, *, wait: float | None = None) -> bool:
        """Deliver what can be delivered within ``timeout`` (``None``: ``shutdown_timeout``), count and
        log the rest, and stop. True once that is over; False at once on the dispatcher thread (a signal
        receiver), which only begins the stop.

        Called while another thread's shutdown is under way, it waits for that one to be over, at most
        ``wait`` seconds (default: ``timeout``), and returns whether it is: ``closed`` is set as that
        one begins, long before its events are delivered or counted, and a caller that returned at once
        and then ended the process (the ``atexit`` handler does) would lose them silently.
        """
        seconds = self.settings.shutdown_timeout if timeout is None else timeout
        if threading.current_thread() is self.dispatcher._thread:
            # A signal receiver on the dispatcher thread: that thread cannot wait for itself. It closes
            # the runtime and begins the stop only; the next shutdown (the exit's at the latest) is the
            # first, and waits for the stop and counts what is left. Nothing is marked over here.
            with self._lock:
                self.closed = True
                self.takes_records = False
            self.dispatcher.begin_stop(seconds)
            return False
        with self._lock:
            first = self._shutdown_deadline is None
            if first:
                self._shutdown_deadline = time.monotonic() + seconds
            self.closed = True
            self.takes_records = False
        if not first:
            return self._wait_first_shutdown(seconds if wait is None else wait)
        given_up = 0
        try:
            given_up = self.dispatcher.stop(seconds)
        finally:
            try:
                # The dispatcher admits every record on its way out; one appended in the very last
                # instant (its request saw the runtime still open) is counted, never left behind
                # silently, and so is all of it when stop() itself failed. One appended after this
                # sees ``finished`` and counts itself.
                self.finished = True
                dropped = self._drop_intake("shutdown")
                self._count_refused(dropped)
                given_up += dropped
            finally:
                self._shut_down.set()
        if given_up:
            logger.error("evmiddleware: %d event(s) could not be delivered before shutdown", given_up)
        return True

    def _wait_first_shutdown(self, wait: float) -> bool:
        """Wait, at most ``wait`` seconds, for the shutdown under way on another thread; whether it is over.

        Over too once its dispatcher counted what it could not deliver: the first shutdown may be on the
        very thread a signal interrupted (SIGTERM during ``configure()`` on the main thread, whose
        handler waits for us), and cannot end before we return. What it has left to do then is only
        to count records appended in the last instant.
        """
        deadline = time.monotonic() + wait
        while not self._shut_down.wait(max(0.0, min(_WAIT_SLICE, deadline - time.monotonic()))):
            if self.dispatcher.counted():
                return True
            if time.monotonic() >= deadline:
                return False
        return True

    def shutdown_left(self) -> float:
        """Seconds until a shutdown under way gives up (0 when none is)."""
        deadline = self._shutdown_deadline
        return 0.0 if deadline is None or self._shut_down.is_set() else max(0.0, deadline - time.monotonic())

    def wait_shut_down(self, timeout: float | None) -> bool:
        """Wait, up to ``timeout``, for the first ``shutdown`` to be over; whether it is."""
        return self._shut_down.wait(timeout)

    def undelivered(self) -> int:
        """Events finished without being delivered so far (refused, dropped, left in the spool); only
        grows. Read on any thread, like ``stats()``."""
        with self._lock:
            count = sum(self.dropped.values())
        for lane in self.lanes:
            row = lane.snapshot()
            count += row["rejected"] + sum(row["dropped"].values()) + row["left_in_spool"]
        return count

    def stats(self) -> Stats:
        """Counters; safe to call on any thread while the dispatcher works (see ``Lane.snapshot``)."""
        with self._lock:
            dropped = dict(self.dropped)
        capture = sys.modules.get("evmiddleware.capture")  # only when a middleware is in use
        return {
            "providers": {lane.name: lane.snapshot() for lane in self.lanes},
            "dropped": dropped,
            "waiting": len(self.intake),
            "capture_errors": capture.errors() if capture is not None else {},
            "spool_errors": self.dispatcher.spool_errors,
            "receiver_errors": receiver_errors_snapshot(),
            "disabled": self.disabled,
        }


_runtime: Runtime | None = None
_lock = threading.RLock()
_hooks_installed = False
#: Runtimes ``configure()`` replaced and is still shutting down, each with its ``undelivered()`` count
#: when it was replaced (under ``_lock``). Their events were tracked before anything that sees the new
#: runtime: ``flush()`` and the exit wait for them too.
_retiring: dict[Runtime, int] = {}
#: How much longer than ``shutdown_timeout`` the exit waits for a shutdown another thread began: that
#: one may wait ``STOP_MARGIN`` past its own deadline for the dispatcher to count what is left.
_EXIT_MARGIN = STOP_MARGIN + 0.5


def peek() -> Runtime | None:
    """The runtime if one exists, without creating it."""
    return _runtime


def current() -> Runtime:
    """The process's runtime, built from the environment on first use."""
    runtime = _runtime
    if runtime is not None:
        return runtime
    with _lock:
        if _runtime is None:
            created = Runtime(load_settings({}))
            _install(created)
            if created.settings.spool:
                created.start()
        assert _runtime is not None
        return _runtime


def replace(overrides: Mapping[str, Any]) -> Runtime:
    """``configure()``: validate first (a bad call leaves the old pipeline running), then swap.

    The old runtime delivers its events after the swap: until that is over it stays in ``_retiring``,
    so that a ``flush()`` meanwhile waits for them rather than answer for the new, empty runtime.
    """
    runtime = Runtime(load_settings(overrides))
    with _lock:
        old = _runtime
        _install(runtime)
        if old is not None:
            _retiring[old] = old.undelivered()
            runtime._failures_inherited = old._unwatched_failures() > old._failures_reported
    if old is not None:
        if threading.current_thread() is old.dispatcher._thread:
            # configure() from a signal receiver on the old pipeline's dispatcher, which cannot wait for
            # itself: a helper does. Until it is over the old runtime stays in _retiring, so that
            # flush() and the exit wait for its events.
            threading.Thread(target=_retire, args=(old,), name="evmiddleware-retire", daemon=True).start()
        else:
            _retire(old)
    if runtime.settings.spool:
        runtime.start()  # what a previous process left in the spool goes out now
    return runtime


def _retire(old: Runtime) -> None:
    try:
        old.shutdown(old.settings.shutdown_timeout)
    finally:
        with _lock:
            _retiring.pop(old, None)
            # What its shutdown gave up on, no flush watched: the next flush, the current runtime's,
            # reports it (once out of ``_retiring``, no flush looks at ``old`` any more).
            if _runtime is not None and old._unwatched_failures() > old._failures_reported:
                _runtime._failures_inherited = True


def flush(timeout: float | None) -> bool:
    """``flush()``: every event tracked before the call finished; True if all were delivered.

    That includes the events of runtimes ``configure()`` is still shutting down: waited for within the
    same ``timeout``, and False when one of them gave up on an event since it was replaced.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with _lock:  # the runtime and the retiring ones as replace() left them together
        runtime = _runtime
        retiring = list(_retiring.items())
    for old, undelivered in retiring:
        if threading.current_thread() is old.dispatcher._thread:
            return False  # a signal receiver on that dispatcher would wait for itself (as Dispatcher.flush)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not old.wait_shut_down(left) or old.undelivered() != undelivered:
            return False
    if runtime is None:
        return True
    return runtime.flush(None if deadline is None else max(0.0, deadline - time.monotonic()))


def _install(runtime: Runtime) -> None:
    global _runtime, _hooks_installed
    _runtime = runtime
    if not _hooks_installed:
        _hooks_installed = True
        atexit.register(_at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(
                before=_before_fork, after_in_parent=_release_fork_guard, after_in_child=_after_fork_in_child
            )


def _at_exit() -> None:
    """Shut the runtime down, and wait for every shutdown other threads have under way (the
    runtimes ``configure()`` is replacing, a ``shutdown()`` on another thread): the process ends
    after this, and with it their dispatchers (daemon threads) and whatever they still hold.

    Each is waited for up to ``shutdown_timeout`` or until its own deadline, whichever is later, plus
    ``_EXIT_MARGIN``; one that is still not over is logged with what it had not finished.
    """
    for each in _shutting_down():
        if not each.shutdown(None, wait=_exit_wait(each)):
            left = sum(row["queued"] for row in each.stats()["providers"].values()) + len(each.intake)
            logger.error(
                "evmiddleware: exiting before a shutdown under way finished; %d event(s) not delivered "
                "yet may be lost",
                left,
            )


def _shutting_down() -> list[Runtime]:
    """What the exit shuts down or waits for, in that order: the runtime, then the retiring ones."""
    runtimes = list(_retiring)  # list(): one C call, whole, while configure() may change it
    runtime = _runtime
    if runtime is not None and runtime not in runtimes:
        runtimes.insert(0, runtime)  # first: the retiring ones keep delivering on their threads meanwhile
    return runtimes


def _exit_wait(runtime: Runtime) -> float:
    """How long the exit waits for ``runtime``'s shutdown: see ``_at_exit``."""
    return max(runtime.settings.shutdown_timeout, runtime.shutdown_left()) + _EXIT_MARGIN


_fork_guarded = False


def _before_fork() -> None:
    """Let a dispatcher that is starting finish its start-up first (bounded): see ``settle``; and
    fork between spool transactions, never inside one (see ``spool.fork_guard``), with no spool
    connection open (see ``spool.close_for_fork``)."""
    global _fork_guarded
    runtime = _runtime
    if runtime is not None:
        runtime.dispatcher.settle(2.0)
    _fork_guarded = spool_fork_guard.acquire(timeout=10.0)
    if _fork_guarded:  # else a transaction may still be running: closing under it is not safe
        close_for_fork()


def _release_fork_guard() -> None:
    global _fork_guarded
    if _fork_guarded:
        _fork_guarded = False
        spool_fork_guard.release()


def _after_fork_in_child() -> None:
    """The child starts empty: the parent's queue and thread stay the parent's."""
    global _runtime, _lock, _retiring
    _release_fork_guard()
    _lock = threading.RLock()  # the parent's may have been held by another thread at fork time
    _retiring = {}  # the parent's, shut down by the parent's threads: none of them runs here
    if _runtime is not None:
        # The parent checked the spool file; the child's dispatcher opens it (memory only if it cannot).
        _runtime = Runtime(_runtime.settings, check_spool_file=False)
