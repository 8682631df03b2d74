from __future__ import annotations

import datetime as dt
import random

import pytest
from freezegun import freeze_time

from evmiddleware.providers.base import parse_retry_after
from evmiddleware.ratelimit import SlidingWindowLimiter, backoff_delay


def send_all(limiter: SlidingWindowLimiter, until: float, step: float = 0.01) -> list[float]:
    """Drive the limiter with a fake clock: send whenever it allows (answers come at once)."""
    now, sent = 0.0, []
    while now < until:
        if limiter.delay(now) == 0:
            limiter.complete(limiter.record(now), now)
            sent.append(now)
        now = round(now + step, 6)
    return sent


def test_arrival_jitter_never_breaks_the_window_seen_by_the_provider():
    """Requests leave in order but arrive late by up to 300 ms; the provider counts arrivals."""
    rng = random.Random(3)
    limiter = SlidingWindowLimiter([(10, 1.0)], margin=0)
    now, arrivals, in_flight = 0.0, [], []
    while now < 20:
        for item in list(in_flight):
            slot, answered_at = item
            if answered_at <= now:
                limiter.complete(slot, answered_at)
                in_flight.remove(item)
        if limiter.delay(now) == 0 and len(in_flight) < 4:
            arrival = now + rng.uniform(0, 0.3)
            arrivals.append(arrival)
            in_flight.append((limiter.record(now), arrival + rng.uniform(0, 0.05)))
        now = round(now + 0.001, 6)
    arrivals.sort()
    assert max_in_any_window(arrivals, 1.0) <= 10
    assert len(arrivals) > 120  # still close to the allowance of 10 a second


def test_a_request_in_flight_holds_its_place_until_answered():
    limiter = SlidingWindowLimiter([(1, 1.0)], margin=0)
    slot = limiter.record(0.0)
    assert limiter.delay(5.0) > 0  # no answer yet: the window has not even started
    limiter.complete(slot, 5.0)
    assert limiter.delay(5.5) == pytest.approx(0.5)
    assert limiter.delay(6.0) == 0


def max_in_any_window(times: list[float], window: float) -> int:
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


def test_never_more_than_n_in_any_window():
    sent = send_all(SlidingWindowLimiter([(100, 60.0)], margin=0), until=300)
    assert max_in_any_window(sent, 60.0) == 100
    assert len(sent) == 500  # the full allowance of each window is used


def test_a_token_bucket_burst_of_2n_cannot_happen():
    # A bucket of 10 refilled at 10/s would let 10 go at t=0.99 and 10 more at t=1.0.
    sent = send_all(SlidingWindowLimiter([(10, 1.0)], margin=0), until=5, step=0.001)
    assert max_in_any_window(sent, 1.0) == 10


def test_two_windows_both_hold():
    sent = send_all(SlidingWindowLimiter([(10, 1.0), (150, 60.0)], margin=0), until=120)
    # Each limit is reached, never passed: 10 in the first second, 150 in each minute, and no more.
    assert max_in_any_window(sent, 1.0) == 10
    assert max_in_any_window(sent, 60.0) == 150
    assert len(sent) == 300  # two minutes: the full allowance of each


def test_margin_widens_the_window():
    limiter = SlidingWindowLimiter([(1, 1.0)], margin=0.05)
    limiter.complete(limiter.record(0.0), 0.0)
    assert limiter.delay(1.0) == pytest.approx(0.05)


def test_pause_until_blocks_every_request_until_then():
    limiter = SlidingWindowLimiter([])
    limiter.pause_until(10.0)
    assert limiter.delay(8.0) == 2.0
    assert limiter.delay(10.0) == 0.0


def test_no_limits_never_waits():
    limiter = SlidingWindowLimiter([])
    for i in range(1000):
        assert limiter.delay(i) == 0
        limiter.record(i)  # never answered: without windows nothing is held


def test_backoff_is_capped_exponential_with_full_jitter():
    rng = random.Random(1)
    for attempt in range(1, 12):
        ceiling = min(30.0, 0.5 * 2**attempt)
        samples = [backoff_delay(attempt, rng=rng) for _ in range(500)]
        assert all(0 <= s <= ceiling for s in samples)
        # Spread over the whole of [0, ceiling]: near 0, near the ceiling, and every value its own.
        assert min(samples) < ceiling * 0.05
        assert max(samples) > ceiling * 0.95
        assert len(set(samples)) == len(samples)
        below_half = sum(1 for s in samples if s < ceiling / 2)
        assert 200 < below_half < 300  # uniform: about half below the middle, not bunched at one end


def test_backoff_draws_each_delay_uniformly_from_zero_to_the_ceiling():
    """With a seeded rng, each delay is exactly the rng's uniform draw over [0, ceiling], in order."""
    ours, reference = random.Random(7), random.Random(7)
    for attempt in [0, 1, 2, 5, 6, 10, 40]:
        ceiling = min(30.0, 0.5 * 2**attempt)
        for _ in range(20):
            assert backoff_delay(attempt, rng=ours) == reference.uniform(0.0, ceiling)


def test_retry_after_in_seconds():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("-5") == 0.0


@freeze_time("2026-11-23 10:00:00")
def test_retry_after_as_an_http_date():
    assert parse_retry_after("Mon, 23 Nov 2026 10:00:30 GMT") == 30.0
    assert parse_retry_after("Mon, 23 Nov 2026 09:00:00 GMT") == 0.0


def test_retry_after_garbage_is_ignored():
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("inf") is None
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:05 GMT", now=now) == 5.0
