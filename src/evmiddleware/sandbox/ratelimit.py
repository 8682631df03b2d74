"""Exact sliding-window rate limiting: never more than N requests in any W-second window."""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["PUBLISHED_RATE_LIMITS", "Decision", "Rule", "SlidingWindowLimiter", "resolve_limits"]

Rule = tuple[int, float]
"""``(max_requests, window_seconds)``."""

# The providers' published limits (README of the provider specs); the key each applies to is the
# API key (FloKit: per workspace, which is one key here; Klaviyo: per public key / company id).
PUBLISHED_RATE_LIMITS: Mapping[str, tuple[Rule, ...]] = {
    "userflux": (),
    "flokit": ((100, 60.0),),
    "flameup": ((120, 60.0),),
    "flywheel": (),
    "klaviyo": ((10, 1.0), (150, 60.0)),
}


def resolve_limits(
    overrides: Mapping[str, Sequence[Rule]] | None,
) -> dict[str, tuple[Rule, ...]]:
    """The published limits, with any provider named in ``overrides`` replaced whole."""
    limits = dict(PUBLISHED_RATE_LIMITS)
    for name, rules in (overrides or {}).items():
        if name not in limits:
            raise ValueError(f"unknown provider in rate_limits: {name!r}")
        limits[name] = tuple((int(n), float(w)) for n, w in rules)
    return limits


@dataclass(frozen=True)
class Decision:
    """The limiter's answer for one request.

    ``retry_after`` is the exact number of seconds until a request would be allowed (0 when
    allowed); ``limit``/``remaining``/``reset_after`` describe the rule with the fewest requests
    left, for providers that publish ``X-RateLimit-*`` headers. ``limit`` is None without rules.
    """

    allowed: bool
    retry_after: float
    limit: int | None
    remaining: int
    reset_after: float

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` as providers send it: whole seconds, rounded up, at least 1."""
        return str(max(1, math.ceil(self.retry_after - 1e-9)))


class SlidingWindowLimiter:
    """Counts accepted requests per key against every rule at once.

    A token bucket would allow 2N in one window; this keeps the arrival time of every counted
    request and checks the window ending now, which is exact. Refused requests are not recorded,
    matching providers that do not count a 429 against the caller.
    """

    def __init__(self, rules: Sequence[Rule], clock: Callable[[], float] = time.monotonic) -> None:
        for n, w in rules:
            if n < 1 or w <= 0:
                raise ValueError(f"invalid rate-limit rule ({n}, {w})")
        self.rules: tuple[Rule, ...] = tuple((int(n), float(w)) for n, w in rules)
        self.clock = clock
        self._longest = max((w for _, w in self.rules), default=0.0)
        self._times: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, now: float | None = None) -> Decision:
        """Decide for a request of ``key`` arriving at ``now`` (default: the clock) and count it."""
        if now is None:
            now = self.clock()
        if not self.rules:
            return Decision(True, 0.0, None, 0, 0.0)
        with self._lock:
            times = self._times.setdefault(key, [])
            # Requests handled on different threads can reach here slightly out of arrival order;
            # clamping keeps the list sorted at the cost of a few microseconds of leniency.
            if times and now < times[-1]:
                now = times[-1]
            del times[: bisect.bisect_right(times, now - self._longest)]
            wait = 0.0
            for n, w in self.rules:
                start = bisect.bisect_right(times, now - w)
                if len(times) - start >= n:
                    # The n-th most recent request must leave the window before another fits.
                    wait = max(wait, times[-n] + w - now)
            if wait > 0:
                limit = self._tightest(times, now)[0]
                return Decision(False, wait, limit, 0, wait)
            times.append(now)
            limit, remaining, reset = self._tightest(times, now)
            return Decision(True, 0.0, limit, remaining, reset)

    def _tightest(self, times: list[float], now: float) -> tuple[int, int, float]:
        best: tuple[int, int, float] | None = None
        for n, w in self.rules:
            start = bisect.bisect_right(times, now - w)
            remaining = max(0, n - (len(times) - start))
            reset = times[start] + w - now if start < len(times) else 0.0
            if best is None or remaining < best[1]:
                best = (n, remaining, reset)
        assert best is not None
        return best

    def reset(self) -> None:
        with self._lock:
            self._times.clear()
