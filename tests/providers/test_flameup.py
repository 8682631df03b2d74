"""Flameup: one event per request to one workspace, userId required, 120 requests a minute."""

from __future__ import annotations

import json

import pytest

from evmiddleware.config import load_settings
from evmiddleware.errors import ConfigurationError
from evmiddleware.providers.base import Limits, SkipEvent
from evmiddleware.providers.flameup import LIMITS, Flameup, _reset_delay

from ._helpers import batch, encoded, event, response, send_through

KEY = "fu_secret_key"


def provider(**kwargs) -> Flameup:
    return Flameup(KEY, "ws_1", **kwargs)


def test_limits_are_one_event_per_request_and_120_a_minute():
    assert LIMITS.max_events == 1
    assert LIMITS.rate == ((120, 60.0),)
    assert isinstance(LIMITS, Limits)


def test_encode_sends_user_id_event_properties_and_timestamp():
    sent = encoded(provider(), event("checkout", {"total": 5}, user_id="u1", anonymous_id="a1"))
    assert sent == {
        "userId": "u1",
        "event": "checkout",
        "properties": {"total": 5},
        "timestamp": "2024-03-15T14:22:00.000Z",
    }


def test_event_without_user_id_is_skipped_by_default():
    with pytest.raises(SkipEvent) as skipped:
        provider().encode(event(user_id=None, anonymous_id="a1"))
    assert skipped.value.reason == "no_user_id"


def test_anonymous_id_can_be_sent_as_user_id():
    sent = encoded(provider(anonymous_as_user_id=True), event(user_id=None, anonymous_id="a1"))
    assert sent["userId"] == "a1"
    with pytest.raises(SkipEvent):
        provider(anonymous_as_user_id=True).encode(event(user_id=None, anonymous_id=None))


def test_anonymous_as_user_id_setting_from_the_environment():
    settings = load_settings(
        {},
        {
            "EVMIDDLEWARE_FLAMEUP_API_KEY": KEY,
            "EVMIDDLEWARE_FLAMEUP_WORKSPACE_ID": "ws_1",
            "EVMIDDLEWARE_FLAMEUP_ANONYMOUS_AS_USER_ID": "1",
        },
    )
    [flameup] = settings.providers
    assert isinstance(flameup, Flameup)
    assert flameup.anonymous_as_user_id


def test_key_without_workspace_id_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="EVMIDDLEWARE_FLAMEUP_WORKSPACE_ID") as error:
        load_settings({}, {"EVMIDDLEWARE_FLAMEUP_API_KEY": KEY})
    assert KEY not in str(error.value)
    with pytest.raises(ConfigurationError, match="flameup_workspace_id"):
        load_settings({"flameup_api_key": KEY, "flameup_workspace_id": "  "}, {})


def test_workspace_id_without_key_leaves_flameup_off():
    assert Flameup.from_options({"workspace_id": "ws_1"}) is None


def test_request_goes_to_the_workspace_events_path_with_bearer_auth():
    request = provider().build_request(batch(provider(), event()))
    assert request.url == "https://api.flameup.ai/api/v1/workspaces/ws_1/events"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content)["event"] == "page_viewed"


def test_workspace_id_is_quoted_into_the_path():
    request = Flameup(KEY, "team a/b").build_request(batch(provider(), event()))
    assert request.url.endswith("/workspaces/team%20a%2Fb/events")


def test_base_url_override_replaces_the_default_base_whole():
    settings = load_settings(
        {},
        {
            "EVMIDDLEWARE_FLAMEUP_API_KEY": KEY,
            "EVMIDDLEWARE_FLAMEUP_WORKSPACE_ID": "ws_1",
            "EVMIDDLEWARE_FLAMEUP_URL": "http://127.0.0.1:9000/flameup/api/v1/",
        },
    )
    [flameup] = settings.providers
    assert isinstance(flameup, Flameup)
    request = flameup.build_request(batch(flameup, event()))
    assert request.url == "http://127.0.0.1:9000/flameup/api/v1/workspaces/ws_1/events"


def test_200_success_answer_is_delivered():
    p = provider()
    answer = {"success": True, "event_id": "evt_1"}
    result, seen = send_through(p, batch(p, event()), lambda r: response(200, answer))
    assert result.outcome == "ok"
    assert seen[0].url.path == "/api/v1/workspaces/ws_1/events"


def test_422_is_rejected_with_the_field_details():
    p = provider()
    answer = {
        "error": {
            "code": "validation_error",
            "message": "Validation failed",
            "details": {"fields": {"userId": "Required field", "timestamp": "Must be an RFC 3339 date-time"}},
        }
    }
    result = p.interpret(response(422, answer), batch(p, event()))
    assert result.outcome == "rejected"
    assert not result.auth
    assert result.reason.startswith("http_422: ")
    assert "userId: Required field" in result.reason
    assert "timestamp: Must be an RFC 3339 date-time" in result.reason


def test_422_without_details_still_says_why():
    p = provider()
    result = p.interpret(response(422, text="unprocessable"), batch(p, event()))
    assert result.outcome == "rejected"
    assert "unprocessable" in result.reason


def test_unknown_workspace_404_hints_at_the_workspace_setting():
    p = provider()
    result = p.interpret(response(404, {"error": {"code": "not_found"}}), batch(p, event()))
    assert result.outcome == "rejected"
    assert "EVMIDDLEWARE_FLAMEUP_WORKSPACE_ID" in result.reason


def test_429_honours_retry_after_first():
    p = provider()
    headers = {"Retry-After": "3", "X-RateLimit-Reset": "99999999999"}
    result = p.interpret(response(429, {"error": "Rate limit exceeded"}, headers=headers), batch(p, event()))
    assert result.outcome == "retry"
    assert result.retry_after == 3.0


def test_429_without_retry_after_waits_for_the_rate_limit_reset(monkeypatch):
    monkeypatch.setattr("evmiddleware.providers.flameup.time.time", lambda: 1_705_320_600.0)
    p = provider()
    headers = {"X-RateLimit-Reset": "1705320625"}
    result = p.interpret(response(429, {"error": "Rate limit exceeded"}, headers=headers), batch(p, event()))
    assert result.outcome == "retry"
    assert result.retry_after == 25.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1030", 30.0),
        ("990", 0.0),
        ("999999", 60.0),
        ("soon", None),
        (None, None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_reset_delay_is_bounded_by_the_window(value, expected):
    assert _reset_delay(value, now=1000.0) == expected
