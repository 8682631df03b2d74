"""Request-rate limits as providers publish them, and retry backoff.

"N requests per W seconds" is a hard rule: never more than N requests in any W-second window,
measured from when requests leave. A token bucket of capacity N refilled at N/W per second lets 2N
through in one window, so this keeps the send times of the last N requests per window instead
(an exact sliding log; N is at most a few hundred, so memory is trivial).

Everything here takes the current time as an argument: tests drive it with a fake clock.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence

__all__ = ["SlidingWindowLimiter", "backoff_delay"]


class SlidingWindowLimiter:
    """Allows a request when, for every window (N, W), fewer than N requests left in the last W s.

    ``margin`` widens each window a little: requests leave in order but arrive with jitter, and the
    provider counts arrivals.
    """

    def __init__(self, windows: Sequence[tuple[int, float]], margin: float = 0.05) -> None:
        self._windows = [(count, seconds + margin) for count, seconds in windows]
        self._sent: list[deque[float]] = [deque(maxlen=count) for count, _ in windows]
        self._paused_until = 0.0

    def delay(self, now: float) -> float:
        """Seconds to wait before the next request may leave (0 when it may leave now)."""
        wait = max(0.0, self._paused_until - now)
        for (count, seconds), sent in zip(self._windows, self._sent, strict=True):
            if len(sent) == count:
                wait = max(wait, sent[0] + seconds - now)
        return wait

    def record(self, now: float) -> None:
        """A request left at ``now``."""
        for sent in self._sent:
            sent.append(now)

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
