"""FloKit: batches of 1,000, 100 requests a minute, Idempotency-Key per batch, partial rejection."""

from __future__ import annotations

import json

import pytest

from evmiddleware.providers.base import SkipEvent
from evmiddleware.providers.flokit import LIMITS, FloKit

from ._helpers import batch, encoded, event, response, send_through

KEY = "fk_live_secret"


def test_limits_are_1000_events_and_100_requests_a_minute():
    assert LIMITS.max_events == 1000
    assert LIMITS.rate == ((100, 60.0),)


def test_event_without_any_identity_is_never_sent():
    with pytest.raises(SkipEvent) as skipped:
        FloKit(KEY).encode(event(user_id=None, anonymous_id=None))
    assert skipped.value.reason == "no_identity"


def test_encode_sends_snake_case_ids_and_iso_timestamp():
    sent = encoded(FloKit(KEY), event("trial_started", {"days": 7}, user_id="u1", anonymous_id="a1"))
    assert sent == {
        "event": "trial_started",
        "timestamp": "2024-03-15T14:22:00.000Z",
        "user_id": "u1",
        "anonymous_id": "a1",
        "properties": {"days": 7},
    }
    assert "user_id" not in encoded(FloKit(KEY), event(user_id=None, anonymous_id="a1"))


def test_idempotency_key_is_the_batch_key_and_a_batch_built_twice_gives_the_same_request():
    provider = FloKit(KEY)
    b = batch(provider, event(), event("second"), key="0f0e-batch")
    first, again = provider.build_request(b), provider.build_request(b)
    assert first.headers["Idempotency-Key"] == again.headers["Idempotency-Key"] == "0f0e-batch"
    assert first.content == again.content
    assert first.url == "https://api.flokit.ai/v1/batch/events"
    assert first.headers["Authorization"] == f"Bearer {KEY}"
    assert [e["event"] for e in json.loads(first.content)["events"]] == ["page_viewed", "second"]


def test_events_listed_in_errors_are_rejected_with_their_reason_and_the_rest_are_done():
    provider = FloKit(KEY)
    b = batch(provider, event("a"), event("b"), event("c"))
    answer = {
        "status": "ok",
        "accepted": 2,
        "rejected": 1,
        "event_ids": ["evt_1", "evt_2"],
        "errors": [{"index": 1, "reason": "timestamp must be an ISO 8601 datetime"}],
    }
    result = provider.interpret(response(200, answer), b)
    assert result.outcome == "ok"  # not retried: the accepted ones are kept by FloKit
    assert dict(result.rejected) == {1: "invalid_event: timestamp must be an ISO 8601 datetime"}


def test_error_entries_that_do_not_name_an_event_of_the_batch_are_ignored():
    provider = FloKit(KEY)
    b = batch(provider, event("a"))
    answer = {"errors": [{"index": 5, "reason": "x"}, {"index": "0"}, "junk", {"reason": "no index"}]}
    result = provider.interpret(response(200, answer), b)
    assert result.outcome == "ok"
    assert not result.rejected


def test_a_rejection_reason_echoing_the_key_is_redacted():
    provider = FloKit(KEY)
    answer = {"errors": [{"index": 0, "reason": f"bad event for key {KEY}"}]}
    result = provider.interpret(response(200, answer), batch(provider, event()))
    assert KEY not in result.rejected[0]


def test_a_200_that_is_not_json_still_counts_as_delivered():
    provider = FloKit(KEY)
    result = provider.interpret(response(200, text="<html>ok</html>"), batch(provider, event()))
    assert result.outcome == "ok"


def test_a_replayed_idempotency_key_answer_is_success():
    # FloKit answers a replay with 200 and the original result: nothing to send again.
    provider = FloKit(KEY)
    answer = {"status": "ok", "accepted": 1, "rejected": 0, "errors": []}
    assert provider.interpret(response(200, answer), batch(provider, event())).outcome == "ok"


def test_400_rejects_the_batch_and_429_is_retried_after_retry_after():
    provider = FloKit(KEY)
    b = batch(provider, event())
    bad = provider.interpret(response(400, {"error": "invalid_request", "message": "events missing"}), b)
    assert bad.outcome == "rejected"
    assert "events missing" in bad.reason
    throttled = provider.interpret(response(429, {"error": "rate"}, headers={"Retry-After": "12"}), b)
    assert throttled.outcome == "retry"
    assert throttled.retry_after == 12.0


def test_read_only_key_403_is_a_credentials_rejection():
    provider = FloKit(KEY)
    result, _ = send_through(
        provider, batch(provider, event()), lambda r: response(403, {"error": "forbidden"})
    )
    assert result.outcome == "rejected"
    assert result.auth
    assert "EVMIDDLEWARE_FLOKIT_API_KEY" in result.reason
