"""The per-process buffer: one bounded queue per provider, appended to from any thread.

Events reach it through the runtime's intake (``Runtime.admit``, in order), a length check and a
``deque.extend`` (atomic under the GIL) while there is room; a lock is taken only when it is full.
The dispatcher thread is the only consumer (``take_many``, under the lock: a full queue's eviction
must not pop between its count and its pops) and keeps ``held`` (events taken out but not yet
finished) so the bound covers them too.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter, deque
from typing import TypeVar

from ._log import limited
from .events import Event
from .signals import event_dropped, notify

__all__ = ["Dropped", "ProviderQueue", "pop_left"]

_monotonic = time.monotonic
_T = TypeVar("_T")


def pop_left(items: deque[_T], count: int) -> list[_T]:
    """The ``count`` first of ``items``, removed (``IndexError`` if there are fewer). One C-level loop
    of ``popleft`` calls: half the cost of a list comprehension, for every event a lane takes."""
    return list(itertools.starmap(items.popleft, itertools.repeat((), count)))


#: An ``event_dropped`` notification held back until a lock is released: event, provider, reason.
Dropped = tuple["Event | None", "str | None", str]


class ProviderQueue:
    """Events waiting for one provider. ``cap`` bounds queued plus held events (``drop_oldest`` may go
    past it by what it owes, at most ``overdraft``, until the lane's next pull)."""

    __slots__ = (
        "_lock",
        "_log_after",
        "cap",
        "drop_oldest",
        "dropped",
        "enqueued",
        "evicted",
        "held",
        "items",
        "name",
        "overdraft",
        "owed",
    )

    def __init__(self, name: str, cap: int, *, drop_oldest: bool = False) -> None:
        self.name = name
        self.cap = cap
        self.drop_oldest = drop_oldest
        self.items: deque[Event] = deque()
        #: Every event offered, the refused ones included; only grows. Written by one thread at a time
        #: (the runtime's admit lock), read by ``stats()`` on any thread without a lock.
        self.enqueued = 0
        #: Events taken by the dispatcher and not yet delivered or failed (written by it only).
        self.held = 0
        #: Events this queue pushed out for the drop-oldest policy (they count as finished for ``flush``);
        #: those its lane evicts for it (``owed``) count in the lane's ``done``.
        self.evicted = 0
        #: Events refused on the caller's side, by reason.
        self.dropped: Counter[str] = Counter()
        #: Evictions ``drop_oldest`` owes: events accepted past the bound, whose place the oldest events
        #: the dispatcher took (in its open batches, not yet in a request) must make; the lane pays
        #: them at its next pull (``Lane.evict_owed``). Under ``_lock``.
        self.owed = 0
        #: The most it may owe: the queue holds at most ``cap + overdraft`` events.
        self.overdraft = max(1, cap // 10)
        self._lock = threading.Lock()
        self._log_after = 0.0

    def offer(self, event: Event, later: list[Dropped] | None = None) -> int:
        """Queue ``event``; returns the new queue length, or 0 when the event was dropped.

        ``event_dropped`` receivers are told about a drop at once, or, given ``later``, it is appended
        there for the caller to send once it holds no lock (``Runtime.admit``): a receiver may call
        ``flush()`` or ``shutdown()``, which need the dispatcher to take that lock.
        """
        items = self.items
        # Counted before the event can be taken and finished: ``stats()`` reads the finished counters
        # first and this one last, so what it derives as still queued is never negative.
        self.enqueued += 1
        if len(items) + self.held < self.cap:
            items.append(event)
            return len(items)
        return self._overflow(event, later)

    def offer_many(self, events: list[Event], later: list[Dropped] | None = None) -> int:
        """Queue ``events`` in order (one C call when all fit); returns the new queue length. ``later``:
        as in ``offer``."""
        items = self.items
        if len(items) + self.held + len(events) <= self.cap:
            self.enqueued += len(events)  # before the dispatcher can take them (see ``offer``)
            items.extend(events)
        else:
            for event in events:  # the overflow policy decides, event by event
                self.offer(event, later)
        return len(items)

    def _overflow(self, event: Event, later: list[Dropped] | None) -> int:
        victim: Event | None = event
        with self._lock:
            if self.drop_oldest:
                if self.held and self.owed < self.overdraft:
                    # The oldest events are the ones the dispatcher took (a grouped lane takes them all
                    # each tick): only it can evict them. Accepted now, evicted at its next pull.
                    self.items.append(event)
                    self.owed += 1
                    victim = None
                elif self.items:  # the next oldest; ``take_many`` cannot pop meanwhile (same lock)
                    victim = self.items.popleft()
                    self.items.append(event)
                    self.evicted += 1
            if victim is not None:
                self.dropped["queue_full"] += 1
        # While a provider is down every event lands here: look at the clock, not at the shared
        # rate-limited logger (a lock and a dict), except about once a second.
        now = _monotonic()
        if now >= self._log_after:
            self._log_after = now + 1.0
            limited.log(
                logging.WARNING,
                f"queue_full:{self.name}",
                "evmiddleware: the %s queue is full (%d events); dropping the %s event",
                self.name,
                self.cap,
                "oldest" if victim is not event else "newest",
            )
        if victim is None:
            return len(self.items)
        if event_dropped.receivers:
            if later is None:
                notify(event_dropped, event=victim, provider=self.name, reason="queue_full")
            else:
                later.append((victim, self.name, "queue_full"))
        return len(self.items) if victim is not event else 0

    def take_many(self, limit: int) -> list[Event]:
        """Dispatcher side: up to ``limit`` of the oldest queued events (all with -1), counted as held."""
        items = self.items
        with self._lock:  # else an eviction (``_overflow``) may pop one of the ``count`` first
            count = len(items) if limit < 0 else min(limit, len(items))
            # Counted as held before they leave the deque, so the bound never looks looser than it is.
            self.held += count
            return pop_left(items, count)

    def count_evicted(self, count: int) -> None:
        """Dispatcher side: ``count`` events the lane evicted for what was owed, counted as the queue's
        own evictions are (``Lane.evict_owed``; ``dropped`` is written on callers' threads too)."""
        with self._lock:
            self.dropped["queue_full"] += count

    def settle(self) -> int:
        """Dispatcher side: the evictions owed (see ``owed``), now the lane's to make."""
        with self._lock:
            owed, self.owed = self.owed, 0
        return owed
