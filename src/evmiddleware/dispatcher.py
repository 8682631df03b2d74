"""The dispatcher: one background thread per process, running one asyncio loop for every provider.

Each provider has a lane task that fills batches and starts deliveries; deliveries run concurrently
(bounded per provider by ``limits.max_in_flight``) on one shared HTTP client (our own
:class:`~evmiddleware.http11.Http11Client`, or ``httpx.AsyncClient`` when a proxy is configured), so a
slow or dead provider never holds up another. Other threads talk to the loop only through
``call_soon_threadsafe``: ``nudge`` (the queue grew), ``flush`` and ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from ._log import limited, logger
from .http11 import Http11Client, HttpClient, proxy_configured
from .lane import Lane, _Watch
from .providers.base import Batch, SendResult
from .ratelimit import Slot, backoff_delay
from .spool import Spool

__all__ = ["Dispatcher"]

#: How often an idle lane looks at its queue; the caller nudges it sooner when a batch's worth waits.
TICK = 0.05

#: How often ``flush`` checks that the dispatcher thread is still alive while it waits.
_FLUSH_SLICE = 0.1

#: How long ``stop`` waits past its deadline for the thread to count what it could not deliver and
#: end (cancelling deliveries and writing the rest to a spool take a moment).
STOP_MARGIN = 1.0

#: What the HTTP clients import only on first use: the dispatcher's client and first connection
#: (``encodings.idna``: the first host name looked up).
_LAZY_HTTP_MODULES = (
    "encodings.idna",
    "httpcore",
    "httpcore._backends.anyio",
    "anyio._backends._asyncio",
    "certifi",
    "sniffio",
)


def _import_http_stack() -> None:
    """Import now, on the caller's thread, what the dispatcher thread would otherwise import.

    A process forked while another thread is inside an import keeps that module half-initialised for
    good: gunicorn ``--preload`` forks its workers while the master's dispatcher starts and sends its
    first request, and a worker then failed on ``httpcore`` or ``anyio`` and lost what it tracked.
    """
    for name in _LAZY_HTTP_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


@dataclasses.dataclass
class _FlushWaiter:
    #: Per lane, the events queued or held when the flush was called (set on the dispatcher thread).
    watches: list[tuple[Lane, _Watch]] = dataclasses.field(default_factory=list)
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    all_delivered: bool = False
    #: Asked on the dispatcher thread once the intake is admitted: did events fail that no flush
    #: watched (refused by a full queue, given up before the call)? This flush reports them.
    failed_unwatched: Callable[[], bool] = lambda: False
    some_failed_unwatched: bool = False


#: How soon a flush asks again to admit while a caller is admitting (``_add_waiter``).
_ADMIT_RETRY = 0.001


def _nothing() -> None:
    pass


def _admit_nothing(wait: bool) -> bool:
    return True


class Dispatcher:
    """Delivers what the lanes' queues hold. Created stopped; ``start`` is cheap and idempotent."""

    def __init__(
        self,
        lanes: Sequence[Lane],
        *,
        request_timeout: float,
        retry_deadline: float,
        backoff: tuple[float, float] = (0.5, 30.0),
        spool_path: str | None = None,
        spool_interval: float = 0.1,
        spool_lease: float = 30.0,
        on_failure: Callable[[], None] | None = None,
        admit: Callable[[bool], bool] | None = None,
        last_admit: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_failure = on_failure
        #: Turns what callers queued outside the lanes' queues (requests' records) into queued events;
        #: ``False``: not if a caller is admitting them already (see ``Runtime.admit``), and says so.
        self._admit = admit if admit is not None else _admit_nothing
        #: The same, once more as the lanes stop: nothing is queued after it (see ``Runtime.last_admit``).
        self._last_admit = last_admit if last_admit is not None else _nothing
        _import_http_stack()
        self._spool_path = spool_path
        self._spool_lease = spool_lease
        # Lanes look at their queue at least this often, so queued events reach the spool in time.
        self._tick = min(TICK, spool_interval)
        self._backoff_base, self._backoff_cap = backoff
        self.lanes = list(lanes)
        self._request_timeout = request_timeout
        self._retry_deadline = retry_deadline
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._start_lock = threading.Lock()
        #: ``stop`` was called: ``start`` refuses from then on, even when no thread ran yet.
        self._stopped = False
        #: The deadline of the stop ``stop`` asked for (under ``_start_lock``): a thread not serving
        #: yet begins the stop itself as soon as it is (see ``_serve``).
        self._stop_at: float | None = None
        #: The loop takes ``call_soon_threadsafe`` callbacks from now on (under ``_start_lock``).
        self._serving = False
        #: Set by the thread once it has counted what it could not deliver, or has ended.
        self._counted = threading.Event()
        self._waiters: list[_FlushWaiter] = []
        self._stopping = False
        self._stop_deadline = float("inf")
        self._wakes: dict[str, asyncio.Event] = {}
        self._deliveries: set[asyncio.Task[None]] = set()
        self._client: HttpClient | None = None
        self._spool: Spool | None = None
        #: Why a delivery that is cancelled gave up its batch.
        self._cancelled_reason = "shutdown"

    # -- any thread ----------------------------------------------------------------------------
    @property
    def spool_errors(self) -> int:
        return self._spool.errors if self._spool is not None else 0

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._stopped:
                return
            self._thread = threading.Thread(target=self._run, name="evmiddleware-dispatcher", daemon=True)
            self._thread.start()

    def settle(self, timeout: float) -> None:
        """Wait, up to ``timeout``, until a starting thread has its client (or has ended).

        Called before the process forks: a fork while the thread creates its TLS context leaves the
        child with an OpenSSL lock held for good, and the child's own dispatcher then never sends.
        """
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            self._ready.wait(timeout)

    def nudge(self) -> None:
        """A queue holds a batch's worth: look now rather than at the next tick."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(self._wake_all)

    def flush(self, timeout: float | None, failed_unwatched: Callable[[], bool] | None = None) -> bool:
        """Wait until every event queued before the call is finished; True if all were delivered.

        ``failed_unwatched`` (dispatcher thread, once the intake is admitted): whether events no
        flush watched failed since the last flush asked; then the answer is False."""
        if threading.current_thread() is self._thread:
            return False  # a signal receiver on the dispatcher thread would wait for itself
        self.start()
        if self._thread is None:  # stopped before it ever started: nothing will move
            return self._settled(failed_unwatched)
        deadline = None if timeout is None else self._clock() + timeout
        if not self._ready.wait(timeout if timeout is not None else 5.0):
            return False
        waiter = _FlushWaiter()
        if failed_unwatched is not None:
            waiter.failed_unwatched = failed_unwatched
        loop = self._loop
        if loop is None or loop.is_closed():
            return self._settled(failed_unwatched)
        try:
            loop.call_soon_threadsafe(self._add_waiter, waiter)
        except RuntimeError:
            return False
        # One timeout for the whole call: the start-up wait above already spent part of it. Looked at
        # in slices: a thread that died before its loop ran our callback would never release us.
        thread = self._thread
        while True:
            left = None if deadline is None else max(0.0, deadline - self._clock())
            if waiter.done.wait(_FLUSH_SLICE if left is None else min(_FLUSH_SLICE, left)):
                return waiter.all_delivered
            if left == 0.0 or thread is None or not thread.is_alive():
                return False

    def _settled(self, failed_unwatched: Callable[[], bool] | None) -> bool:
        """A flush's answer once no loop runs: nothing outstanding, and no failure unreported (the
        events a shutdown counted as dropped included)."""
        failed = failed_unwatched is not None and failed_unwatched()
        return not failed and not any(lane.outstanding() for lane in self.lanes)

    def stop(self, timeout: float) -> int:
        """Deliver what can be delivered within ``timeout``, then stop; returns events given up.

        A dispatcher stopped before it started never starts: its runtime was shut down (a
        ``configure()`` on another thread replaced it) and a thread started now would outlive it.

        The stop is recorded whether or not the thread is serving yet: it takes about 30 ms to start
        (a TLS context), more than ``timeout`` may allow (``shutdown(0)``, a small ``shutdown_timeout``
        at exit), and a thread left with no stop request would die with the process holding its
        events, neither delivered nor counted. A thread not serving yet begins the stop itself as soon
        as it is; whatever is left at the deadline is counted as ``shutdown`` and logged.

        Never on the dispatcher thread (it would wait for itself): see ``begin_stop``.
        """
        thread, deadline = self.begin_stop(timeout)
        if thread is None:  # no thread will ever take what a full intake moved into the queues
            self._last_admit()  # and none is moved there after this
            return sum(lane.stop_everything() for lane in self.lanes)
        thread.join(max(0.0, deadline - self._clock()) + STOP_MARGIN)
        given_up = sum(lane.dropped.get("shutdown", 0) for lane in self.lanes)
        if not self._counted.is_set():
            # Stuck (a start-up that never ends, a provider blocking the loop): the thread may still
            # count these later, but the process may end first. Never silently: log what is at stake.
            left = sum(lane.snapshot()["queued"] for lane in self.lanes)
            logger.error(
                "evmiddleware: the dispatcher did not stop within %.1f s of its deadline; "
                "%d event(s) not delivered yet may be lost",
                STOP_MARGIN,
                left,
            )
            given_up += left
        return given_up

    def counted(self) -> bool:
        """The thread ran and has counted every event it could not deliver (its stop is over but
        for closing its clients)."""
        return self._counted.is_set()

    def begin_stop(self, timeout: float) -> tuple[threading.Thread | None, float]:
        """The first half of ``stop``, without waiting: record the stop, the earliest deadline asked for,
        and have a serving loop begin it. Any thread, the dispatcher's own included (a signal receiver's
        ``shutdown()``). Returns the thread to wait for (``None``: none ever ran) and the deadline."""
        deadline = self._clock() + timeout
        with self._start_lock:
            self._stopped = True
            thread = self._thread
            if self._stop_at is None or deadline < self._stop_at:
                self._stop_at = deadline
            deadline = self._stop_at
            loop = self._loop if self._serving else None
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the thread ended already
                loop.call_soon_threadsafe(self._begin_stop, deadline)
        return thread, deadline

    # -- dispatcher thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:  # never let the thread die silently, nor its events go uncounted
            logger.exception("evmiddleware: the dispatcher stopped on an error")
            if self._on_failure is not None:
                self._on_failure()  # later events are counted as dropped too, not queued for nobody
            for lane in self.lanes:
                lane.stop_everything("dispatcher_error")
        finally:
            self._ready.set()  # whoever waits for the start (flush, stop, settle) need not wait longer
            self._counted.set()  # nothing is left for this thread to count
            # However the thread ends, no flush() waits for it any longer (the loop is gone: this
            # thread is the only one that touches the waiters).
            for waiter in list(self._waiters):
                waiter.all_delivered = False
                self._release(waiter)

    async def _main(self) -> None:
        try:
            await self._serve()
        except Exception:
            # asyncio.run cancels the deliveries still running after this: they count their batches
            # as the dispatcher's error, not as a shutdown.
            self._cancelled_reason = "dispatcher_error"
            raise

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._spool_path is not None:
            try:
                self._spool = Spool(self._spool_path, lease_seconds=self._spool_lease)
            except Exception as exc:  # checked at start-up; a file that vanished since is not fatal
                logger.error(
                    "evmiddleware: cannot open the spool %s (%s); memory only", self._spool_path, exc
                )
            for lane in self.lanes:
                lane.spool = self._spool
                lane.reclaim()
        self._wakes = {lane.name: asyncio.Event() for lane in self.lanes}
        async with self._open_client() as client:
            self._client = client
            with self._start_lock:  # against ``stop``: either it sees us serving, or we see its stop
                self._serving = True
                stop_at = self._stop_at
            self._ready.set()
            if stop_at is not None:  # stopped while we started: ``stop`` left the stop to us
                self._begin_stop(stop_at)
            tasks = [asyncio.create_task(self._lane_loop(lane)) for lane in self.lanes]
            await self._until_stopped(tasks)
        if self._spool is not None:
            self._spool.close()
        for lane in self.lanes:
            try:
                await lane.provider.aclose()
            except Exception:
                logger.exception("evmiddleware: closing %s failed", lane.name)

    def _open_client(self) -> contextlib.AbstractAsyncContextManager[HttpClient]:
        if proxy_configured():
            # httpx goes through the proxy (and honours NO_PROXY); our own client knows no proxies.
            limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
            client = httpx.AsyncClient(
                timeout=self._request_timeout, limits=limits, follow_redirects=False, verify=True
            )
            return _WholeRequestTimeout(client, self._request_timeout)
        return Http11Client(timeout=self._request_timeout)

    async def _until_stopped(self, tasks: list[asyncio.Task[None]]) -> None:
        last_maintenance = self._clock()
        # At least three renewals per lease, so a live process never loses its rows to another.
        every = min(1.0, self._spool_lease / 3)
        while not self._stopping:
            await asyncio.sleep(TICK)
            if self._spool is not None and self._clock() - last_maintenance >= every:
                # Keep our leases alive and adopt rows whose owner died.
                last_maintenance = self._clock()
                self._spool.renew()
                for lane in self.lanes:
                    lane.reclaim()
                self._wake_all()
        remaining = max(0.0, self._stop_deadline - self._clock())
        _, pending = await asyncio.wait(tasks, timeout=remaining)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # One turn of the loop first: a delivery created just now has not begun, and a task cancelled
        # before its first step never runs its body, so its batch would be neither sent nor counted.
        await asyncio.sleep(0)
        deliveries = list(self._deliveries)
        for task in deliveries:
            task.cancel()
        await asyncio.gather(*deliveries, return_exceptions=True)
        self._last_admit()  # what arrived meanwhile is kept in the spool or counted, with the rest
        given_up = sum(lane.stop_everything() for lane in self.lanes)
        if given_up:
            logger.error(
                "evmiddleware: stopped with %d event(s) not delivered (counted as 'shutdown')", given_up
            )
        self._counted.set()  # ``stop`` need not wait for the clients to close
        self._check_waiters()
        for waiter in list(self._waiters):
            self._release(waiter)

    def _wake_all(self) -> None:
        for wake in self._wakes.values():
            wake.set()

    def _add_waiter(self, waiter: _FlushWaiter) -> None:
        # The flush covers every request that ended before it was called: admitted first. Never
        # waiting for a caller that is admitting (see ``_lane_loop``): asked again a moment later.
        if not self._admit(False):
            assert self._loop is not None
            self._loop.call_later(_ADMIT_RETRY, self._add_waiter, waiter)
            return
        # Only these events count: one queued later that finishes first (or fails) changes nothing.
        waiter.watches = [(lane, lane.watch()) for lane in self.lanes]
        # After the watches: one that fails as it is set up (an event the spool cannot write) marks
        # the watch failed and counts as unreported too; asked now, it is reported here, once.
        waiter.some_failed_unwatched = waiter.failed_unwatched()
        self._waiters.append(waiter)
        self._check_waiters()
        self._wake_all()

    def _check_waiters(self) -> None:
        if not self._waiters:
            return
        stopped = self._stopping and all(lane.idle() for lane in self.lanes)
        for waiter in list(self._waiters):
            reached = all(watch.remaining <= 0 for _, watch in waiter.watches)
            if reached or stopped:
                failed = waiter.some_failed_unwatched or any(watch.failed for _, watch in waiter.watches)
                waiter.all_delivered = reached and not failed
                self._release(waiter)

    def _release(self, waiter: _FlushWaiter) -> None:
        for lane, watch in waiter.watches:
            lane.unwatch(watch)
        waiter.done.set()
        self._waiters.remove(waiter)

    def _begin_stop(self, deadline: float) -> None:
        self._stopping = True
        # The earliest: a second stop() asked for a later one than the first's, or a later callback
        # came after we began the stop ourselves (see ``_serve``).
        self._stop_deadline = min(self._stop_deadline, deadline)
        self._wake_all()

    @property
    def _force(self) -> bool:
        """Send partly filled batches now: someone is waiting in ``flush`` or we are stopping."""
        return self._stopping or bool(self._waiters)

    async def _wait(self, lane: Lane, seconds: float) -> None:
        wake = self._wakes[lane.name]
        wake.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=max(seconds, 0.001))

    async def _lane_loop(self, lane: Lane) -> None:
        while True:
            try:
                now = self._clock()
                # Never waiting for a caller that is admitting (it queues those records itself): a
                # SIGTERM handler on that caller's thread may be waiting for this loop to stop.
                self._admit(False)
                lane.pull(now)
                self._check_waiters()
                key = lane.ready(now, self._force)
                if key is False:
                    if self._stopping and lane.idle():
                        return
                    due = lane.next_due(now)
                    await self._wait(lane, self._tick if due is None else min(due, self._tick))
                    continue
                if lane.in_flight >= lane.limits.max_in_flight:
                    await self._wait(lane, TICK)
                    continue
                delay = lane.limiter.delay(now)
                if delay > 0:
                    # The batch stays open while we wait, so it leaves as full as allowed.
                    await asyncio.sleep(min(delay, TICK))
                    continue
                assert key is not True
                # A method of its own: this loop idles holding its locals, and the batch (up to 5 MB,
                # and every event's objects for the garbage collector's full passes to walk) must not
                # wait here for the next one.
                self._start_delivery(lane, lane.take_batch(key, now), lane.limiter.record(now))
                # Let the request leave now, before the next pull's encoding: the provider reads
                # this batch while we encode the next.
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except Exception:
                limited.log(
                    logging.ERROR,
                    f"lane:{lane.name}",
                    "evmiddleware: error in the %s lane",
                    lane.name,
                    exc_info=True,
                )
                await asyncio.sleep(TICK)

    def _start_delivery(self, lane: Lane, batch: Batch, slot: Slot) -> None:
        lane.requests += 1
        lane.in_flight += 1
        task = asyncio.create_task(self._deliver(lane, batch, slot))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, lane: Lane, batch: Batch, slot: Slot) -> None:
        """Send one batch, retrying until it is delivered, refused for good or out of time.

        Between attempts it waits the capped exponential backoff with full jitter, or longer when
        the provider's ``Retry-After`` asks for more; that also pauses the whole provider, for at
        most ``retry_deadline`` seconds (a longer wait fails the batch at once).
        """
        started = self._clock()
        attempt = 0
        try:
            while True:
                try:
                    result = await self._attempt(lane, batch)
                finally:
                    lane.limiter.complete(slot, self._clock())
                if result.outcome == "ok":
                    lane.finish_sent(batch, dict(result.rejected))
                    return
                if result.outcome == "rejected":
                    lane.finish_rejected(batch, result.reason, auth=result.auth)
                    return
                attempt += 1
                now = self._clock()
                delay = backoff_delay(attempt, base=self._backoff_base, cap=self._backoff_cap)
                if result.retry_after is not None:
                    if result.reason == "http_429":
                        lane.throttled += 1
                    # A floor, not a replacement: "Retry-After: 0" (or a date in the past) must not
                    # turn the backoff off, or one batch sends thousands of requests a second.
                    delay = max(delay, result.retry_after)
                    # Paused at most for the retry deadline: no batch waits longer than that, and a
                    # huge value would otherwise hold every later event until the process ends.
                    lane.limiter.pause_until(now + min(result.retry_after, self._retry_deadline))
                if now + delay - started > self._retry_deadline:
                    lane.finish_failed(batch, "retry_deadline")
                    return
                if self._stopping and now + delay > self._stop_deadline:
                    lane.finish_failed(batch, "shutdown")
                    return
                await asyncio.sleep(delay)
                while (wait := lane.limiter.delay(self._clock())) > 0:
                    await asyncio.sleep(wait)
                slot = lane.limiter.record(self._clock())
                lane.requests += 1
                lane.retried += 1
        except asyncio.CancelledError:
            lane.finish_failed(batch, self._cancelled_reason)
            raise
        finally:
            lane.in_flight -= 1
            self._check_waiters()
            self._wakes[lane.name].set()

    async def _attempt(self, lane: Lane, batch: Batch) -> SendResult:
        assert self._client is not None
        try:
            return await lane.provider.send(batch, self._client)
        except httpx.TransportError as exc:
            limited.log(
                logging.WARNING,
                f"transport:{lane.name}",
                "evmiddleware: %s unreachable (%s); will retry",
                lane.name,
                type(exc).__name__,
            )
            return SendResult("retry", reason=type(exc).__name__)
        except asyncio.CancelledError:
            raise
        except Exception:
            limited.log(
                logging.ERROR,
                f"send:{lane.name}",
                "evmiddleware: %s failed to send a batch",
                lane.name,
                exc_info=True,
            )
            return SendResult("rejected", reason="provider_error")


class _WholeRequestTimeout:
    """httpx with ``request_timeout`` bounding each request whole, as ``Http11Client`` does: httpx's own
    timeouts bound each read, so a server trickling a byte at a time held a batch (and the retry
    deadline, checked between attempts) for good."""

    def __init__(self, client: httpx.AsyncClient, timeout: float) -> None:
        self._client = client
        self._timeout = timeout

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        sending = self._client.request(method, url, headers=headers, content=content, params=params)
        try:
            return await asyncio.wait_for(sending, self._timeout)
        except asyncio.TimeoutError:  # retried like any timeout
            raise httpx.ReadTimeout(f"no answer within {self._timeout:g} s") from None

    async def __aenter__(self) -> _WholeRequestTimeout:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._client.__aexit__(*exc_info)
