"""The per-process buffer: one bounded queue per provider, appended to from any thread.

Events reach it through the runtime's intake (``Runtime.admit``, in order), a length check and a
``deque.extend`` (atomic under the GIL) while there is room; a lock is taken only when it is full.
The dispatcher thread is the only consumer and keeps ``held`` (events taken out but not yet
finished) so the bound covers them too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque

from ._log import limited
from .events import Event
from .signals import event_dropped, notify

__all__ = ["Dropped", "ProviderQueue"]

_monotonic = time.monotonic

#: An ``event_dropped`` notification held back until a lock is released: event, provider, reason.
Dropped = tuple["Event | None", "str | None", str]


class ProviderQueue:
    """Events waiting for one provider. ``cap`` bounds queued plus held events."""

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
        #: Events pushed out by the drop-oldest policy (they count as finished for ``flush``).
        self.evicted = 0
        #: Events refused on the caller's side, by reason.
        self.dropped: Counter[str] = Counter()
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
        victim = event
        with self._lock:
            if self.drop_oldest and self.items:
                try:
                    victim = self.items.popleft()
                except IndexError:  # the dispatcher emptied it meanwhile
                    victim = event
                else:
                    self.items.append(event)
                    self.evicted += 1
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
        if event_dropped.receivers:
            if later is None:
                notify(event_dropped, event=victim, provider=self.name, reason="queue_full")
            else:
                later.append((victim, self.name, "queue_full"))
        return len(self.items) if victim is not event else 0

    def take_many(self, limit: int) -> list[Event]:
        """Dispatcher side: up to ``limit`` of the oldest queued events (all with -1), counted as held."""
        items = self.items
        count = len(items) if limit < 0 else min(limit, len(items))
        # Counted as held before they leave the deque, so the bound never looks looser than it is.
        self.held += count
        popleft = items.popleft
        return [popleft() for _ in range(count)]
