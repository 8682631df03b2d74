"""Request-rate limits as providers publish them, and retry backoff.

"N requests per W seconds" is a hard rule: never more than N requests in any W-second window. A
token bucket of capacity N refilled at N/W per second lets 2N through in one window, so this keeps
a log of the last requests per window instead (an exact sliding log; N is at most a few hundred).

Everything here takes the current time as an argument: tests drive it with a fake clock.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence

__all__ = ["SlidingWindowLimiter", "Slot", "backoff_delay"]


class Slot:
    """One request in the limiter's log: in flight until ``complete`` stamps when its answer came."""

    __slots__ = ("at", "in_flight")

    def __init__(self, at: float) -> None:
        self.at = at
        self.in_flight = True


#: How soon to look again when only an answer still in flight can free a place in the window.
_POLL = 0.02


class SlidingWindowLimiter:
    """Allows a request when, for every window (N, W), fewer than N requests are in the last W s.

    The provider counts requests when they *arrive*, and arrival jitters (a new connection, a busy
    network). So a request holds its place in the log from when it leaves until its answer comes,
    and from then on the window is measured from the answer: the provider saw the request before it
    answered, so W seconds after our answer is W seconds after its arrival, whatever the jitter.
    """

    def __init__(self, windows: Sequence[tuple[int, float]], margin: float = 0.01) -> None:
        self._windows = [(count, seconds + margin) for count, seconds in windows]
        self._span = max((seconds for _, seconds in self._windows), default=0.0)
        self._log: deque[Slot] = deque()
        self._paused_until = 0.0

    def delay(self, now: float) -> float:
        """Seconds to wait before the next request may leave (0 when it may leave now)."""
        wait = max(0.0, self._paused_until - now)
        if not self._windows:
            return wait
        log = self._log
        while log and not log[0].in_flight and log[0].at <= now - self._span:
            log.popleft()
        for count, seconds in self._windows:
            if len(log) < count:
                continue
            # Answers still in flight count as "just now": their window has not even started.
            times = sorted(
                now if slot.in_flight else slot.at
                for slot in log
                if slot.in_flight or slot.at > now - seconds
            )
            if len(times) >= count:
                oldest_to_leave = times[len(times) - count]
                wait = max(wait, oldest_to_leave + seconds - now, _POLL if oldest_to_leave >= now else 0.0)
        return wait

    def record(self, now: float) -> Slot:
        """A request leaves now; pass the slot to :meth:`complete` when its answer (or error) comes."""
        slot = Slot(now)
        if self._windows:
            self._log.append(slot)
        return slot

    def complete(self, slot: Slot, now: float) -> None:
        slot.at = max(slot.at, now)
        slot.in_flight = False

    def pause_until(self, when: float) -> None:
        """The provider asked us to wait (``Retry-After``): no request before ``when``."""
        self._paused_until = max(self._paused_until, when)


def backoff_delay(
    attempt: int, *, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None
) -> float:
    """Capped exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)].

    Full jitter spreads the retries of many processes that failed at the same moment.
    """
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return (rng or random).uniform(0.0, ceiling)
