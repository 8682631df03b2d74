"""Helpers every benchmark shares: timing calls one by one, percentiles, child processes, tables.

Benchmarks run each measured configuration in a child process of their own (:func:`run_child`), so
that one library's threads, caches and heap never disturb the next measurement, and repeat rounds
in rotated order on the same machine, reporting medians and same-round ratios.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "Call",
    "Latency",
    "ROOT",
    "child_env",
    "fmt_bytes",
    "fmt_int",
    "fmt_ratio",
    "fmt_us",
    "median",
    "percentile",
    "print_table",
    "rotated",
    "run_child",
    "time_calls",
    "timer_overhead_ns",
]

ROOT = Path(__file__).resolve().parent.parent

Call = tuple[Callable[..., Any], tuple[Any, ...], Mapping[str, Any]]
"""One measured call: ``fn(*args, **kwargs)``, built before timing starts."""

#: Variables that would change what a library under test does (its own configuration).
_FOREIGN_PREFIXES = ("EVMIDDLEWARE_", "POSTHOG_", "SEGMENT_")


# -- timing -------------------------------------------------------------------------------------
def timer_overhead_ns(samples: int = 20_000) -> int:
    """The median cost of two back-to-back ``perf_counter_ns`` calls: the floor of any timed call."""
    pc = time.perf_counter_ns
    spans = []
    for _ in range(samples):
        t0 = pc()
        spans.append(pc() - t0)
    return int(statistics.median(spans))


def time_calls(
    make: Callable[[int], Call],
    count: int,
    *,
    rate: float | None = None,
    burst: int = 1,
    time_limit: float = 60.0,
) -> list[int]:
    """Time ``count`` calls one by one (nanoseconds each), optionally paced at ``rate`` per second.

    ``make(i)`` builds call ``i`` just before it is timed, as an application builds its arguments
    just before the call (so they are as hot in the cache as they would be there). Pacing issues
    ``burst`` calls back to back, then sleeps until the schedule allows the next burst; a call
    slower than the schedule simply runs late. Returns fewer samples once ``time_limit`` passed.
    """
    pc = time.perf_counter_ns
    spans: list[int] = []
    record = spans.append
    period = burst / rate if rate else 0.0
    started = time.perf_counter()
    for first in range(0, count, burst):
        for i in range(first, min(first + burst, count)):
            fn, args, kwargs = make(i)
            t0 = pc()
            fn(*args, **kwargs)
            record(pc() - t0)
        now = time.perf_counter()
        if now - started > time_limit:
            break
        if period:
            wait = started + (first // burst + 1) * period - now
            if wait > 0:
                time.sleep(wait)
    return spans


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) of ``values``, linearly interpolated; ``nan`` when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


@dataclasses.dataclass(frozen=True)
class Latency:
    """Per-call latency in microseconds."""

    count: int
    median: float
    p99: float
    p999: float
    max: float

    @classmethod
    def from_ns(cls, spans: Sequence[int]) -> Latency:
        us = sorted(span / 1000.0 for span in spans)
        return cls(
            len(us),
            percentile(us, 50),
            percentile(us, 99),
            percentile(us, 99.9),
            us[-1] if us else math.nan,
        )

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


# -- child processes ----------------------------------------------------------------------------
def child_env() -> dict[str, str]:
    """This environment without any library's own settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}


def run_child(module: str, job: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``python -m <module> --child <json>`` and return the JSON object on its last stdout line.

    Raises ``RuntimeError`` with the end of the child's stderr when it fails or times out.
    """
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, "--child", json.dumps(job)],
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{module} {job} did not finish within {timeout:.0f} s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{module} {job} failed (exit {done.returncode}):\n{tail}")
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    return result


def rotated(items: Sequence[str], shift: int) -> list[str]:
    """``items`` rotated by ``shift``: round ``r`` starts with a different item, so none is always first."""
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


# -- printing -----------------------------------------------------------------------------------
def fmt_us(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def fmt_int(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def fmt_ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}x" if value < 100 else f"{value:,.0f}x"


def fmt_bytes(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f} B"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [str(first).ljust(widths[0]), *(str(c).rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        )

    print(title)
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    print()
