"""One provider's side of the dispatcher: open batches, limits and counters.

All of this runs on the dispatcher thread only; other threads read the counters for ``stats()``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import operator
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import NamedTuple, TypedDict

from ._json import dumps_items
from ._log import limited, logger, redact
from .buffer import ProviderQueue, pop_left
from .events import Event, new_event_id
from .providers.base import Batch, Encoded, Provider, SkipEvent
from .ratelimit import SlidingWindowLimiter
from .signals import batch_failed, batch_sent, event_dropped, notify
from .spool import Spool, encode_event

__all__ = ["Lane", "ProviderStats"]

_seq_of = operator.attrgetter("seq")  # Encoded.seq, for a whole batch in one C call
_spool_key_of = operator.itemgetter(2)  # a backlog entry's key (``_Entry``)
#: Events one ``pull`` takes at most while those it took opened no batch (all skipped or refused):
#: bounds the time one lane keeps the dispatcher thread from the others.
_PULL_LIMIT = 1000


_new_tuple = tuple.__new__


class ProviderStats(TypedDict):
    """One provider's counters in ``stats()["providers"]``, in events unless named otherwise.

    ``sent + rejected + sum(dropped.values()) + sum(skipped.values()) + left_in_spool + queued ==
    enqueued`` in every sample, and ``enqueued`` never goes down from one sample to the next.
    """

    #: Every event handed to this provider's queue, those it refused or pushed out included, and
    #: those recovered from the spool.
    enqueued: int
    sent: int
    #: Requests sent again.
    retried: int
    rejected: int
    rejected_reasons: dict[str, int]
    #: By reason: ``queue_full``, ``retry_deadline``, ``shutdown``, ``too_large``, …
    dropped: dict[str, int]
    #: By reason: events this provider does not take, by design.
    skipped: dict[str, int]
    #: Enqueued and not finished yet: in the queue, in a batch or in flight.
    queued: int
    requests: int
    #: 429 answers honoured.
    rate_limited: int
    largest_batch: int
    #: Events claimed from the spool (left by an earlier or a dead process).
    recovered: int
    #: Events kept in the spool at a graceful stop, for the next process.
    left_in_spool: int


class _Group:
    """Encoded events that may share a request (same group key), oldest first.

    ``parts`` holds their wire forms in order: one per event, or one per pull encoded in bulk
    (``bulk``), each a comma-joined run of events. ``bytes`` counts every event's JSON plus a comma.
    """

    __slots__ = ("bulk", "bytes", "items", "opened", "parts")

    def __init__(self, opened: float) -> None:
        self.items: deque[Encoded] = deque()
        self.parts: list[bytes] = []
        self.bulk = False
        self.bytes = 0
        self.opened = opened


class _Watch:
    """A ``flush`` waiting on one lane: the events numbered below ``target`` still to finish."""

    __slots__ = ("failed", "remaining", "target")

    def __init__(self, target: int, remaining: int) -> None:
        self.target = target
        self.remaining = remaining
        self.failed = False  # one of them was not delivered


#: A backlog entry: spool row id (``None``: not spooled), event, and the idempotency key of the
#: request the event was sent in by an earlier process (``Spool.set_key``; ``None``: none known).
_Entry = tuple[int | None, Event, str | None]


class _Replay(NamedTuple):
    """The ``Lane._groups`` key of a request an earlier process sent, opened to go again as it was."""

    key: str  # its idempotency key
    group: str | None  # the provider's group key of its events


#: A group of ``Lane._groups``: a provider's group key, or a request sent again.
GroupKey = str | None | _Replay


class Lane:
    """Batches for one provider, its rate limiter and its delivery counters."""

    def __init__(self, provider: Provider, queue: ProviderQueue, flush_interval: float) -> None:
        self.provider = provider
        self.name = provider.name
        self.queue = queue
        self.limits = provider.limits
        self.flush_interval = flush_interval
        self.limiter = SlidingWindowLimiter(self.limits.rate)
        self._grouped = type(provider).group_key is not Provider.group_key
        self._bulk = type(provider).wire is not Provider.wire and not self._grouped
        #: Set by the dispatcher thread when a spool is configured.
        self.spool: Spool | None = None
        #: Events taken from the queue (and spooled) or recovered from the spool, not yet encoded.
        self.backlog: deque[_Entry] = deque()
        #: Without a spool: events ``watch`` moved out of the queue, to open before the queue's. The
        #: backlog's role (the two are never both in use), without a tuple made for each event.
        self.moved: deque[Event] = deque()
        self._groups: dict[GroupKey, _Group] = {}
        self.pending = 0
        self.in_flight = 0
        #: The number the next event opened gets (``Encoded.seq``), in the order they were queued.
        self._seq = 0
        self._watches: list[_Watch] = []
        self._body_room = self.limits.max_bytes - self.limits.envelope_bytes
        # Counters (events unless named otherwise).
        self.done = 0
        self.sent = 0
        self.rejected = 0
        self.retried = 0  # requests sent again
        self.requests = 0
        self.throttled = 0  # 429 answers honoured
        self.largest_batch = 0
        self.dropped: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()  # by design: this provider does not take the event
        self.rejected_reasons: Counter[str] = Counter()
        self.recovered = 0  # events claimed from the spool (left by an earlier or a dead process)
        self.unreadable = 0  # spool rows that could not be read back (dropped as ``spool_corrupt``)
        self.left_in_spool = 0  # events kept in the spool at a graceful stop, for the next process
        #: Events not delivered that no waiting flush watched: the next flush reports them
        #: (``Runtime._failed_since_last_flush``), so each failure is reported once.
        self.unreported = 0
        self._auth_logged = False

    # -- filling -------------------------------------------------------------------------------
    def pull(self, now: float) -> None:
        """Move queued events into open batches, encoding each once.

        Ungrouped providers fill the open batch: they take one batch's worth beyond what is open,
        and again while the events taken opened none (an event the provider skips or refuses)
        and more wait, up to ``_PULL_LIMIT`` events a call. A provider that takes one event a
        request (Flameup) otherwise waited a dispatcher tick after every anonymous event it
        skips: 20 a second, where its queue fills with them. Grouped providers take all, so a
        request for one profile carries every event of that profile that is waiting.
        """
        if self.queue.owed:  # first: none of the queue's events is spooled only to be deleted
            self.evict_owed()
        if self.spool is not None and self.queue.items:
            self._spool_queued()
        if self._grouped:
            self._take(-1, now)  # -1: all there is
            return
        taken = 0
        while taken < _PULL_LIMIT and (want := self.limits.max_events - self.pending) > 0:
            count = self._take(want, now)
            if not count:
                return
            taken += count

    def _take(self, want: int, now: float) -> int:
        """Open up to ``want`` events (``-1``: all), the backlog's (or those ``watch`` moved) first;
        how many were taken."""
        backlog = self.backlog
        count = 0
        if self.moved:
            moved = self.moved
            count = len(moved) if want < 0 else min(want, len(moved))
            self._open(pop_left(moved, count), itertools.repeat(None), now)
            if moved or 0 <= want <= count:
                return count
            want = want - count if want > 0 else want
        elif backlog:
            count = len(backlog) if want < 0 else min(want, len(backlog))
            entries = pop_left(backlog, count)
            # A request sent again is opened whole (``_open_replay``): the rest of it comes too.
            key = entries[-1][2]
            while key is not None and backlog and backlog[0][2] == key:
                entries.append(backlog.popleft())
            count = len(entries)
            for key, run in itertools.groupby(entries, _spool_key_of):
                if key is None:
                    plain = list(run)
                    self._open([event for _, event, _ in plain], [spool_id for spool_id, _, _ in plain], now)
                else:
                    self._open_replay(key, list(run), now)
            if backlog or 0 <= want <= count:
                return count
            want = want - count if want > 0 else want
        events = self.queue.take_many(want)
        if events:
            self._open(events, itertools.repeat(None), now)
        return count + len(events)

    def _open(self, events: list[Event], spool_ids: Iterable[int | None], now: float) -> None:
        seq = self._seq
        self._seq += len(events)
        if self._bulk:
            self._open_bulk(events, spool_ids, seq, now)
        else:
            self._open_each(events, spool_ids, seq, now)

    def _open_each(
        self,
        events: list[Event],
        spool_ids: Iterable[int | None],
        first: int,
        now: float,
        groups: dict[GroupKey, _Group] | None = None,
    ) -> None:
        """Encode ``events`` one by one into their groups' open batches (a pull at a time: this loop
        runs per event); into ``groups`` instead of the lane's when given (``_open_replay``)."""
        encode = self.provider.encode
        group_key = self.provider.group_key if self._grouped else None
        if groups is None:
            groups = self._groups
        room = self._body_room
        group: _Group | None = None
        key: str | None = None
        added = 0
        # spool_ids may be endless; seq numbers the events from ``first``
        for event, spool_id, seq in zip(events, spool_ids, itertools.count(first), strict=False):
            try:
                data = encode(event)
                if group_key is not None:
                    key = group_key(event)
                    group = None
            except Exception as exc:
                self._not_encoded(event, spool_id, exc, seq)
                continue
            if len(data) > room:
                self.finish_dropped([event], "too_large", [spool_id], [seq])
                continue
            if group is None:
                group = groups.get(key)
                if group is None:
                    group = groups[key] = _Group(now)
            # tuple.__new__ skips the generated ``Encoded.__new__``: half the cost, once per event.
            group.items.append(_new_tuple(Encoded, (event, data, spool_id, seq)))
            group.parts.append(data)
            group.bytes += len(data) + 1
            added += 1
        self.pending += added

    def _open_bulk(
        self, events: list[Event], spool_ids: Iterable[int | None], first: int, now: float
    ) -> None:
        """Encode ``events`` in one call into the open batch (ungrouped providers with ``wire``).

        When the run would not fit the batch's bytes whole, or cannot be encoded as one (an event
        ``wire`` skips or refuses, a value JSON cannot write), its events go one by one instead:
        they may then leave over several requests, and only the event at fault is counted.
        """
        try:  # one C-level loop over the events, one JSON call for them all
            inner = dumps_items(list(map(self.provider.wire, events)))  # a comma-joined run of events
        except Exception:  # an event wire() skips or JSON cannot write: the one-by-one path finds it
            inner = b""
        group = self._groups.get(None)
        size = len(inner) + 1
        if not inner or size + (group.bytes if group is not None else 0) > self._body_room:
            self._open_each(events, spool_ids, first, now)
            return
        if group is None:
            group = self._groups[None] = _Group(now)
        # An Encoded per event without a Python step each: map and zip run in C.
        # spool_ids may be endless
        encoded = zip(events, itertools.repeat(b""), spool_ids, itertools.count(first), strict=False)
        group.items.extend(map(_new_tuple, itertools.repeat(Encoded), encoded))
        group.parts.append(inner)
        group.bulk = True
        group.bytes += size
        self.pending += len(events)

    def _open_replay(self, key: str, entries: list[_Entry], now: float) -> None:
        """Open the events of a request an earlier process sent under idempotency ``key`` (and kept in
        the spool: its answer never came) as one batch, to go again as it was, under ``key``.

        FloKit answers a key it knows with the original result and stores nothing, so the batch must
        hold no event that request did not: one would be lost. Fewer is safe (those the request had
        are stored already, or it never arrived): an event this process skips, refuses or evicts
        leaves. A batch that could not go whole (the limits or the grouping differ from the earlier
        process's) goes as ordinary events, under new keys: FloKit may then store some twice, but
        loses none.
        """
        first = self._seq
        self._seq += len(entries)
        opened: dict[GroupKey, _Group] = {}  # apart: nothing else may join the request
        events = [event for _, event, _ in entries]
        self._open_each(events, [spool_id for spool_id, _, _ in entries], first, now, opened)
        if len(opened) == 1:
            [(group_id, group)] = opened.items()
            replay = _Replay(key, group_id)  # type: ignore[arg-type]  # the provider's key: str | None
            if not self._full_past(group) and replay not in self._groups:
                group.opened = -math.inf  # due at once
                self._groups[replay] = group
                return
        for group_id, group in opened.items():  # not whole: ordinary events, under new keys
            ordinary = self._groups.get(group_id)
            if ordinary is None:
                self._groups[group_id] = group
            else:
                ordinary.items.extend(group.items)
                ordinary.parts += group.parts
                ordinary.bytes += group.bytes

    def _not_encoded(self, event: Event, spool_id: int | None, error: Exception, seq: int | None) -> None:
        """Count an event ``encode`` or ``wire`` refused (called in its ``except`` block)."""
        if isinstance(error, SkipEvent):
            self.skipped[error.reason] += 1
            self._finish(1, [spool_id])
            if self._watches and seq is not None:
                self._watched([seq], failed=False)  # by design: as good as delivered
            return
        limited.log(
            logging.ERROR,
            f"encode:{self.name}",
            "evmiddleware: %s could not encode an event",
            self.name,
            exc_info=True,
        )
        self.finish_dropped([event], "encode_error", [spool_id], None if seq is None else [seq])

    def evict_owed(self) -> None:
        """Make the evictions the queue owes (``ProviderQueue.owed``): drop, as ``queue_full``, the
        oldest events not in a request yet. By the order they were queued: the open batches' (taken
        before the backlog's), then the backlog's (or those ``watch`` moved), then the queue's. Those
        this lane had numbered count as its drops, which a waiting flush hears of (``_watched``); the
        queue's, which no lane ever held, count with the queue's own evictions, which the next flush
        reports (``Runtime._refused_since_last_flush``): each is reported once."""
        count = self.queue.settle()
        items = self._evict_open(count)
        events = [item.event for item in items]
        spool_ids = [item.spool_id for item in items]
        seqs = list(map(_seq_of, items))
        backlog, moved = self.backlog, self.moved
        if len(events) < count and (backlog or moved):
            if moved:
                taken = pop_left(moved, min(count - len(events), len(moved)))
                events += taken
                spool_ids += [None] * len(taken)
            else:
                entries = pop_left(backlog, min(count - len(events), len(backlog)))
                taken = [event for _, event, _ in entries]
                events += taken
                spool_ids += [spool_id for spool_id, _, _ in entries]
            # The numbers they would have been opened with, which a waiting flush counts on (``watch``).
            seqs += range(self._seq, self._seq + len(taken))
            self._seq += len(taken)
        numbered = len(events)
        if numbered < count:  # younger than any a flush waits for: ``watch`` moves those out
            events += self.queue.take_many(count - numbered)
        if events:
            self.dropped["queue_full"] += numbered
            if len(events) > numbered:
                self.queue.count_evicted(len(events) - numbered)
            self._end_dropped(events, "queue_full", spool_ids, seqs)

    def _evict_open(self, count: int) -> list[Encoded]:
        """Take the ``count`` oldest events out of the open batches (fewer if they hold fewer)."""
        groups = self._groups
        if count <= 0 or not groups:
            return []
        # Each group's items are in queue order: the oldest overall are a prefix of each.
        oldest = heapq.merge(*(group.items for group in groups.values()), key=_seq_of)
        items = list(itertools.islice(oldest, count))
        last = items[-1].seq
        for key, group in list(groups.items()):
            taken = sum(1 for _ in itertools.takewhile(lambda item: item.seq <= last, group.items))
            if taken == len(group.items):
                del groups[key]
            elif taken:
                if group.bulk:  # where one event ends in a run encoded in bulk is not known
                    self._unbundle(group)
                for _ in range(taken):
                    group.bytes -= len(group.items.popleft().data) + 1
                del group.parts[:taken]
        self.pending -= len(items)
        return items

    def _spool_queued(self) -> None:
        """Everything the callers queued goes to the spool before it is worked on."""
        assert self.spool is not None
        events = self.queue.take_many(-1)
        ids, events = self._spool_add(events)
        self.backlog.extend((spool_id, event, None) for spool_id, event in zip(ids, events, strict=True))

    def _spool_add(self, events: list[Event]) -> tuple[list[int | None], list[Event]]:
        """Spool ``events``: their row ids and the events written. One the spool cannot write (a lone
        surrogate in a request event's properties, which nothing checks for it) is counted as
        ``encode_error``, as a provider's encoder counts it; the others are written."""
        assert self.spool is not None
        try:
            return self.spool.add(self.name, events), events
        except Exception:  # rare: look for the culprit event by event, then write the rest at once
            writable = []
            for event in events:
                try:
                    encode_event(event)
                except Exception as exc:
                    self._not_encoded(event, None, exc, None)  # not numbered yet: no flush waits for it
                else:
                    writable.append(event)
            return self.spool.add(self.name, writable), writable

    def reclaim(self) -> None:
        """Take over spooled events no live process holds, as far as the queue bound allows."""
        if self.spool is None:
            return
        room = self.queue.cap - len(self.queue.items) - self.queue.held
        # A request sent before comes whole (``Spool.claim``): one larger than a batch, or than the
        # queue's room ever is, loses its key there.
        largest = min(self.queue.cap, self.limits.max_events)
        claimed = self.spool.claim(self.name, room, self._unreadable, largest=largest)
        if claimed:
            self.recovered += len(claimed)  # first: ``enqueued`` counts an event before it can finish
            self.queue.held += len(claimed)
            self.backlog.extend(claimed)

    def _unreadable(self, count: int) -> None:
        """Spool rows that could not be read back (and were deleted): dropped as ``spool_corrupt``.

        Counted in ``enqueued`` (first: see ``snapshot``) and in ``done`` like any finished event, so
        the counters still add up; the signal has no event to give.
        """
        self.unreadable += count
        self.dropped["spool_corrupt"] += count
        self.done += count  # not ``unreported``: rows no process can send, and this one never tracked
        if event_dropped.receivers:
            for _ in range(count):
                notify(event_dropped, event=None, provider=self.name, reason="spool_corrupt")

    def _full(self, group: _Group) -> bool:
        return len(group.items) >= self.limits.max_events or group.bytes >= self._body_room

    def _full_past(self, group: _Group) -> bool:
        """More than one request may carry."""
        return len(group.items) > self.limits.max_events or group.bytes > self._body_room

    def ready(self, now: float, force: bool) -> GroupKey | bool:
        """The key of the group to send next, or ``False`` when no batch is due yet."""
        for key, group in self._groups.items():
            if force or self._full(group) or now - group.opened >= self.flush_interval:
                return key
        return False

    def next_due(self, now: float) -> float | None:
        """Seconds until the oldest open batch is due, ``None`` with nothing open."""
        if not self._groups:
            return None
        oldest = min(group.opened for group in self._groups.values())
        return max(0.0, oldest + self.flush_interval - now)

    def take_batch(self, key: GroupKey, now: float) -> Batch:
        """Close a batch of group ``key``: as many events as the count and byte limits allow (all of a
        request sent again: ``_open_replay`` opened it only if it fits)."""
        group = self._groups[key]
        items: list[Encoded]
        # A request sent again goes whole (it fits: ``_open_replay`` opened it so): split, its key
        # would hide the second part's events.
        replay = isinstance(key, _Replay)
        if replay or (len(group.items) <= self.limits.max_events and group.bytes <= self._body_room):
            # The whole group fits: the common case.
            items, parts, size = list(group.items), group.parts, group.bytes
            group.items.clear()
            group.parts = []
            group.bulk = False
        else:
            if group.bulk:
                self._unbundle(group)
            items, size = [], 0
            while group.items and len(items) < self.limits.max_events:
                item = group.items[0]
                if items and size + len(item.data) + 1 > self._body_room:
                    break
                items.append(group.items.popleft())
                size += len(item.data) + 1
            parts = group.parts[: len(items)]
            del group.parts[: len(items)]
        group.bytes -= size
        if not group.items:
            del self._groups[key]
        else:
            group.opened = now  # the rest starts a new batch window
        self.pending -= len(items)
        self.largest_batch = max(self.largest_batch, len(items))
        if isinstance(key, _Replay):
            return Batch(items, key.group, key.key, b",".join(parts))
        idempotency_key = new_event_id()
        if self.spool is not None:
            # Kept with the rows before the request leaves: a later process sends them again under it
            # if this one stops or dies before the answer (``_open_replay``).
            self.spool.set_key([item.spool_id for item in items], idempotency_key)
        return Batch(items, key, idempotency_key, b",".join(parts))

    def _unbundle(self, group: _Group) -> None:
        """Give every event of ``group`` its own wire form, so the group can be split between requests
        (a run encoded in bulk cannot: where one event ends in it is not known)."""
        encode = self.provider.encode
        group.items = deque(
            item if item.data else item._replace(data=encode(item.event)) for item in group.items
        )
        group.parts = [item.data for item in group.items]
        group.bulk = False

    def idle(self) -> bool:
        return (
            not self.queue.items
            and not self.backlog
            and not self.moved
            and not self._groups
            and self.in_flight == 0
        )

    # -- finishing -----------------------------------------------------------------------------
    def _finish(self, count: int, spool_ids: list[int | None] | None = None) -> None:
        self.queue.held -= count
        self.done += count
        if self.spool is not None and spool_ids:
            self.spool.done(spool_ids)

    def _spool_ids(self, items: Iterable[Encoded]) -> list[int | None] | None:
        return [item.spool_id for item in items] if self.spool is not None else None

    def _seqs(self, items: Iterable[Encoded]) -> list[int] | None:
        """The events' numbers, only while a flush waits (nobody needs them otherwise)."""
        return list(map(_seq_of, items)) if self._watches else None

    def watch(self) -> _Watch:
        """For ``flush`` (dispatcher thread): follow every event queued or held now until it finishes.

        The queue's events move behind the lane's backlog first (into ``moved`` without a spool), so
        each of them, and each event held, gets a number below the watch's target, and every later
        event one above it.
        """
        done = self.done
        if self.spool is not None:
            self._spool_queued()
        else:
            self.moved.extend(self.queue.take_many(-1))
        watch = _Watch(self._seq + len(self.backlog) + len(self.moved), self.queue.held)
        watch.failed = self.done != done  # the spool could not write one of them: dropped already
        self._watches.append(watch)
        return watch

    def unwatch(self, watch: _Watch) -> None:
        self._watches.remove(watch)

    def _not_delivered(self, count: int, seqs: list[int] | None) -> None:
        """``count`` events failed (``seqs``: their numbers, ``None`` when not numbered). A waiting flush
        that watches one of them is told; the others count as ``unreported``, for the next flush."""
        if self._watches and seqs:
            self._watched(seqs, failed=True)
            newest = max(watch.target for watch in self._watches)  # below it, some flush watches
            count = sum(1 for seq in seqs if seq >= newest)
        self.unreported += count

    def _watched(self, seqs: list[int], failed: bool) -> None:
        """These events finished (``failed``: not delivered); per batch, and only while a flush waits."""
        if not seqs:
            return
        for watch in self._watches:
            target = watch.target
            before = len(seqs) if max(seqs) < target else sum(1 for seq in seqs if seq < target)
            if before:
                watch.remaining -= before
                if failed:
                    watch.failed = True

    def finish_sent(self, batch: Batch, rejected: dict[int, str] | None = None) -> None:
        rejected = rejected or {}
        delivered = len(batch.items) - len(rejected)
        self.sent += delivered
        for index, reason in rejected.items():
            self._reject_one(batch.items[index].event, reason)
        self._finish(len(batch.items), self._spool_ids(batch.items))
        if rejected:
            self._not_delivered(len(rejected), [batch.items[index].seq for index in rejected])
        if self._watches:
            if rejected:
                accepted = [item.seq for index, item in enumerate(batch.items) if index not in rejected]
            else:  # the common case, in C: a flush waits while thousands of events finish
                accepted = list(map(_seq_of, batch.items))
            self._watched(accepted, failed=False)
        if batch_sent.receivers:
            notify(batch_sent, provider=self.name, count=delivered, rejected=len(rejected))

    def finish_rejected(self, batch: Batch, reason: str, *, auth: bool = False) -> None:
        reason = redact(reason, self.provider.secrets())
        if auth and not self._auth_logged:
            self._auth_logged = True
            logger.error("evmiddleware: %s refused our credentials: %s", self.name, reason)
        else:
            limited.log(
                logging.WARNING,
                f"rejected:{self.name}",
                "evmiddleware: %s rejected %d event(s): %s",
                self.name,
                len(batch.items),
                reason,
            )
        for item in batch.items:
            self._reject_one(item.event, reason)
        self._finish(len(batch.items), self._spool_ids(batch.items))
        self._not_delivered(len(batch.items), self._seqs(batch.items))
        if batch_failed.receivers:
            notify(batch_failed, provider=self.name, count=len(batch.items), reason=reason)

    def _reject_one(self, event: Event, reason: str) -> None:
        self.rejected += 1
        self.rejected_reasons[reason.split(":", 1)[0]] += 1
        if event_dropped.receivers:
            notify(event_dropped, event=event, provider=self.name, reason=f"rejected: {reason}")

    def finish_failed(self, batch: Batch, reason: str) -> None:
        """Given up (retry deadline, shutdown, dispatcher error): counted as dropped with ``reason``.

        At a stop with a working spool nothing is given up: the events stay for the next process.
        """
        if reason in ("shutdown", "dispatcher_error") and self.spool is not None and self.spool.working:
            self._keep([(item.spool_id, item.event) for item in batch.items], reason)
            self._not_delivered(len(batch.items), self._seqs(batch.items))  # kept is not delivered
            return
        limited.log(
            logging.ERROR,
            f"failed:{self.name}:{reason}",
            "evmiddleware: %s: %d event(s) not delivered (%s)",
            self.name,
            len(batch.items),
            reason,
        )
        items = batch.items
        self.finish_dropped([item.event for item in items], reason, self._spool_ids(items), self._seqs(items))
        if batch_failed.receivers:
            notify(batch_failed, provider=self.name, count=len(batch.items), reason=reason)

    def finish_dropped(
        self,
        events: list[Event],
        reason: str,
        spool_ids: list[int | None] | None = None,
        seqs: list[int] | None = None,
    ) -> None:
        """Count ``events`` as dropped; ``seqs``: their numbers, for a waiting flush (``None`` for
        events not numbered yet, which no flush can be waiting for, or at a stop, which ends them all)."""
        self.dropped[reason] += len(events)
        self._end_dropped(events, reason, spool_ids, seqs)

    def _end_dropped(
        self, events: list[Event], reason: str, spool_ids: list[int | None] | None, seqs: list[int] | None
    ) -> None:
        """``finish_dropped`` once counted."""
        self._finish(len(events), spool_ids)
        self._not_delivered(len(events), seqs)
        if event_dropped.receivers:
            for event in events:
                notify(event_dropped, event=event, provider=self.name, reason=reason)

    def stop_everything(self, reason: str = "shutdown") -> int:
        """At a stop past its deadline: what is still open or queued is kept in the spool for the
        next process, or else counted as dropped (``reason``) — never lost silently."""
        self.queue.settle()  # nothing is owed: this ends every event
        items = [item for group in self._groups.values() for item in group.items]
        entries = [(item.spool_id, item.event) for item in items]
        seqs = list(map(_seq_of, items))
        self._groups.clear()
        self.pending = 0
        # A request sent again keeps its key in the spool, and its events stay together there.
        entries.extend((spool_id, event) for spool_id, event, _ in self.backlog)
        self.backlog.clear()
        entries.extend((None, event) for event in self.moved)
        self.moved.clear()
        entries.extend((None, event) for event in self.queue.take_many(-1))
        if not entries:
            return 0
        if self.spool is not None and self.spool.working:
            return self._keep(entries, reason)
        # The others get the numbers they would have been opened with: a waiting flush that watched
        # them hears of them (and reports them), the next flush of the rest only (``_not_delivered``).
        unnumbered = len(entries) - len(items)
        seqs += range(self._seq, self._seq + unnumbered)
        self._seq += unnumbered
        self.finish_dropped([event for _, event in entries], reason, seqs=seqs)
        return len(entries)

    def _keep(self, entries: list[tuple[int | None, Event]], reason: str) -> int:
        """Leave events in the spool, unleased, for the next process to send; those the spool fails
        to write are counted as dropped (``reason``). Returns how many were dropped so."""
        assert self.spool is not None
        unspooled = [event for spool_id, event in entries if spool_id is None]
        ids: list[int | None] = [spool_id for spool_id, _ in entries if spool_id is not None]
        added, written = self._spool_add(unspooled)  # an event it cannot write is counted there
        # A failed write (full disk) gives no row ids: those events are not in the spool.
        lost = [event for spool_id, event in zip(added, written, strict=True) if spool_id is None]
        ids.extend(spool_id for spool_id in added if spool_id is not None)
        self.spool.release(ids)
        kept = len(ids)
        self.left_in_spool += kept
        self.queue.held -= kept
        self.done += kept
        if lost:
            self.finish_dropped(lost, reason)
        return len(lost)

    # -- reading -------------------------------------------------------------------------------
    def completed(self) -> int:
        """Events finished one way or another, including those evicted from the queue."""
        return self.done + self.queue.evicted

    def outstanding(self) -> int:
        return len(self.queue.items) + self.queue.held

    def failures(self) -> int:
        return self.rejected + sum(self.dropped.values()) + sum(self.queue.dropped.values())

    def snapshot(self) -> ProviderStats:
        """The counters ``stats()`` shows, read on any thread while the dispatcher thread works.

        ``queued`` is derived: ``enqueued`` less every finished event. Without a lock against the
        dispatcher, that is what makes every sample add up: each counter is read once and only ever
        grows, the finished ones are read first and ``enqueued`` last, and an event is counted in
        ``enqueued`` before it can finish, so ``queued`` is never negative (at most it still counts one
        that finished while we read) and ``enqueued`` never goes down between samples. Reading the
        queue's length and ``held`` instead saw an event in two places, or in none, in the instant it
        moved (``take_many``, ``finish_sent``): the sum was off in about one sample in 10,000.
        """
        sent = self.sent
        rejected = self.rejected
        # dict(): a copy in one C call, whole under the GIL, while the dispatcher adds reasons.
        rejected_reasons = dict(self.rejected_reasons)
        dropped = Counter(dict(self.dropped))
        # The queue's refused or evicted ones (written under the queue's lock: callers' threads, and
        # this one's for the evictions it makes for the queue).
        dropped.update(dict(self.queue.dropped))
        skipped = dict(self.skipped)
        left_in_spool = self.left_in_spool
        enqueued = self.queue.enqueued + self.recovered + self.unreadable  # last (see above)
        finished = sent + rejected + dropped.total() + sum(skipped.values()) + left_in_spool
        return {
            "enqueued": enqueued,
            "sent": sent,
            "retried": self.retried,
            "rejected": rejected,
            "rejected_reasons": rejected_reasons,
            "dropped": dict(dropped),
            "skipped": skipped,
            "queued": enqueued - finished,
            "requests": self.requests,
            "rate_limited": self.throttled,
            "largest_batch": self.largest_batch,
            "recovered": self.recovered,
            "left_in_spool": left_in_spool,
        }


Clock = Callable[[], float]
