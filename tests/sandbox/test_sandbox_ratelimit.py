"""The limiter with a fake clock, then 429 answers over HTTP."""

from __future__ import annotations

import random
import time

import pytest

from evmiddleware.sandbox import PUBLISHED_RATE_LIMITS, Sandbox, SlidingWindowLimiter
from evmiddleware.sandbox.ratelimit import Decision, resolve_limits

from ._payloads import (
    fk_event,
    fk_headers,
    fk_url,
    fu_event,
    fu_headers,
    fu_url,
    fw_event,
    fw_headers,
    fw_url,
    kl_body,
    kl_event,
    kl_headers,
    kl_url,
    post,
    uf_event,
    uf_headers,
    uf_url,
)


def test_allows_n_then_refuses_with_exact_wait(clock):
    limiter = SlidingWindowLimiter([(3, 1.0)], clock)
    assert [limiter.acquire("k").allowed for _ in range(3)] == [True, True, True]
    clock.advance(0.25)
    refused = limiter.acquire("k")
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.75)
    assert refused.retry_after_header == "1"
    clock.advance(0.75)
    assert limiter.acquire("k").allowed


def test_window_slides_and_never_holds_more_than_n():
    """A token bucket would pass 2N across a window edge; random arrivals must never do so."""
    rng = random.Random(7)
    now = 0.0
    limiter = SlidingWindowLimiter([(5, 1.0)], lambda: now)
    accepted: list[float] = []
    for _ in range(3000):
        now += rng.expovariate(12.0)
        if limiter.acquire("k").allowed:
            accepted.append(now)
    assert len(accepted) > 100
    for i, t in enumerate(accepted):
        in_window = [u for u in accepted[i:] if u < t + 1.0]
        assert len(in_window) <= 5


def test_burst_at_window_edge(clock):
    limiter = SlidingWindowLimiter([(3, 1.0)], clock)
    clock.advance(0.9)
    for _ in range(3):
        assert limiter.acquire("k").allowed
    clock.advance(0.2)  # a fixed window would have reset at 1.0
    decision = limiter.acquire("k")
    assert not decision.allowed
    assert decision.retry_after == pytest.approx(0.8)


def test_refused_requests_do_not_count(clock):
    limiter = SlidingWindowLimiter([(2, 10.0)], clock)
    limiter.acquire("k")
    limiter.acquire("k")
    for _ in range(5):
        clock.advance(1.0)
        assert not limiter.acquire("k").allowed
    clock.advance(5.0)  # 10 s after the first two
    assert limiter.acquire("k").allowed


def test_keys_are_independent(clock):
    limiter = SlidingWindowLimiter([(1, 60.0)], clock)
    assert limiter.acquire("a").allowed
    assert limiter.acquire("b").allowed
    assert not limiter.acquire("a").allowed


def test_klaviyo_burst_and_steady_rules(clock):
    limiter = SlidingWindowLimiter(PUBLISHED_RATE_LIMITS["klaviyo"], clock)
    allowed = 0
    for _ in range(15):  # 10 per second at most
        allowed += limiter.acquire("co").allowed
    assert allowed == 10
    for _ in range(14):
        clock.advance(1.0)
        allowed += sum(limiter.acquire("co").allowed for _ in range(10))
    assert allowed == 150  # the steady 150/min now binds
    clock.advance(1.0)
    decision = limiter.acquire("co")
    assert not decision.allowed
    assert decision.retry_after == pytest.approx(45.0)  # the first ten leave at t0 + 60
    assert decision.limit == 150


def test_remaining_and_reset(clock):
    limiter = SlidingWindowLimiter([(3, 10.0)], clock)
    first = limiter.acquire("k")
    assert (first.limit, first.remaining, first.reset_after) == (3, 2, pytest.approx(10.0))
    clock.advance(4.0)
    second = limiter.acquire("k")
    assert (second.remaining, second.reset_after) == (1, pytest.approx(6.0))


def test_out_of_order_arrival_is_clamped(clock):
    limiter = SlidingWindowLimiter([(2, 1.0)], clock)
    assert limiter.acquire("k", now=5.0).allowed
    assert limiter.acquire("k", now=4.9).allowed
    assert not limiter.acquire("k", now=5.5).allowed


def test_no_rules_always_allowed(clock):
    limiter = SlidingWindowLimiter([], clock)
    decision = limiter.acquire("k")
    assert decision.allowed
    assert decision.limit is None


@pytest.mark.parametrize(("seconds", "header"), [(0.2, "1"), (1.0, "1"), (1.01, "2"), (59.5, "60")])
def test_retry_after_rounds_up(seconds, header):
    assert Decision(False, seconds, 1, 0, seconds).retry_after_header == header


def test_invalid_rules_and_overrides():
    with pytest.raises(ValueError):
        SlidingWindowLimiter([(0, 1.0)])
    with pytest.raises(ValueError):
        resolve_limits({"segment": [(1, 1.0)]})
    limits = resolve_limits({"flameup": [(2000, 1.0)], "flokit": []})
    assert limits["flameup"] == ((2000, 1.0),)
    assert limits["flokit"] == ()
    assert limits["klaviyo"] == ((10, 1.0), (150, 60.0))


_CASES = {
    "userflux": lambda sb, c: post(c, uf_url(sb), uf_event(), uf_headers()),
    "flywheel": lambda sb, c: post(c, fw_url(sb), {"event": fw_event()}, fw_headers()),
    "flokit": lambda sb, c: post(c, fk_url(sb), fk_event(), fk_headers()),
    "flameup": lambda sb, c: post(c, fu_url(sb), fu_event(), fu_headers()),
    "klaviyo": lambda sb, c: post(
        c, kl_url(sb), kl_body([kl_event(unique_id=str(time.monotonic_ns()))]), kl_headers()
    ),
}


@pytest.mark.parametrize("provider", sorted(_CASES))
def test_429_over_http_real_clock(provider, client):
    with Sandbox(rate_limits={provider: [(3, 1.0)]}) as sb:
        send = _CASES[provider]
        assert all(send(sb, client).status_code < 300 for _ in range(3))
        r = send(sb, client)
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "1"
        if provider == "flameup":
            assert r.headers["X-RateLimit-Limit"] == "3"
            assert r.headers["X-RateLimit-Remaining"] == "0"
            assert int(r.headers["X-RateLimit-Reset"]) >= int(time.time())
        stats = sb.stats()["providers"][provider]
        assert (stats["rate_limited"], stats["requests"], stats["accepted_events"]) == (1, 4, 3)
        assert stats["rejected_requests"] == 0


@pytest.mark.parametrize("provider", sorted(_CASES))
def test_429_over_http_exact_retry_after(provider, clock, client):
    with Sandbox(rate_limits={provider: [(3, 5.0)]}, clock=clock) as sb:
        send = _CASES[provider]
        for _ in range(3):
            assert send(sb, client).status_code < 300
        assert send(sb, client).headers["Retry-After"] == "5"
        clock.advance(2.5)
        assert send(sb, client).headers["Retry-After"] == "3"
        clock.advance(2.5)
        assert send(sb, client).status_code < 300
        assert sb.stats()["providers"][provider]["rate_limited"] == 2


def test_published_limits_are_default(sb, client):
    statuses = [post(client, fk_url(sb), fk_event(), fk_headers()).status_code for _ in range(101)]
    assert statuses.count(200) == 100
    assert statuses[-1] == 429
    assert sb.requests("flokit")[-1].status == 429
