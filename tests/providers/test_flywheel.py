"""Flywheel: bare key plus Auth-Type, {"event": {...}}, sanitised names, flat scalar properties."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evmiddleware.providers.base import SkipEvent
from evmiddleware.providers.flywheel import LIMITS, Flywheel, flatten_properties, sanitize_name

from ._helpers import batch, encoded, event, response, send_through

KEY = "fw_secret_key"
NAME = re.compile(r"^[a-zA-Z0-9_-]+$")


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ("Page Viewed!", "Page_Viewed"),
        ("page_viewed", "page_viewed"),
        ("checkout/completed", "checkout_completed"),
        ("a...b", "a_b"),
        ("  spaced   out  ", "spaced_out"),
        ("__x__", "x"),
        ("a--b", "a--b"),
        ("-dash-", "-dash-"),
        ("Ünïcode Name", "n_code_Name"),
        ("user.signed_up", "user_signed_up"),
        ("a_ _b", "a___b"),  # allowed underscores are kept; only the space becomes one
    ],
)
def test_names_are_made_to_fit_the_pattern(name, sent):
    assert sanitize_name(name) == sent


@given(st.text(max_size=40))
def test_sanitised_names_always_fit_or_are_empty(name):
    result = sanitize_name(name)
    assert result == "" or NAME.match(result)
    assert not result.startswith("_")
    assert not result.endswith("_")
    assert sanitize_name(result) == result


@pytest.mark.parametrize("name", ["!!!", "___", "页面", " "])
def test_a_name_with_nothing_left_is_skipped_with_a_reason(name):
    with pytest.raises(SkipEvent) as skipped:
        Flywheel(KEY).encode(event(name))
    assert skipped.value.reason == "invalid_name"
    assert "Flywheel" in str(skipped.value)


@pytest.mark.parametrize(
    ("properties", "flat"),
    [
        ({"a": 1, "b": "x", "c": True, "d": 1.5}, {"a": 1, "b": "x", "c": True, "d": 1.5}),
        ({"cart": {"total": 9.5, "coupon": {"code": "X"}}}, {"cart.total": 9.5, "cart.coupon.code": "X"}),
        ({"tags": ["a", "b"]}, {"tags": '["a","b"]'}),
        ({"rows": [{"id": 1}, None]}, {"rows": '[{"id":1},null]'}),
        ({"gone": None, "deep": {"gone": None}}, {}),
        ({"empty": {}, "none": []}, {"none": "[]"}),
        ({"ü": ["é"]}, {"ü": '["é"]'}),
        ({"a.b": 1, "a": {"b": 2}}, {"a.b": 2}),
    ],
)
def test_properties_are_flattened_to_scalars(properties, flat):
    assert flatten_properties(properties) == flat


def test_encode_wraps_the_event_and_carries_our_event_id():
    e = event("Page Viewed!", {"cart": {"n": 2}}, user_id="u1", anonymous_id="a1", context={"route": "/x"})
    sent = encoded(Flywheel(KEY), e)
    assert sent == {
        "event": {
            "event": "Page_Viewed",
            "event_id": e.id,
            "timestamp": "2024-03-15T14:22:00.000Z",
            "user_id": "u1",
            "anonymous_id": "a1",
            "properties": {"cart.n": 2, "context.route": "/x"},
        }
    }


def test_identify_is_true_only_on_identify_events():
    assert encoded(Flywheel(KEY), event(kind="identify"))["event"]["identify"] is True
    assert "identify" not in encoded(Flywheel(KEY), event())["event"]


def test_auth_is_the_bare_key_and_auth_type_api():
    provider = Flywheel(KEY)
    request = provider.build_request(batch(provider, event()))
    assert request.url == "https://api.flywheel.cx/v1/events"
    assert request.headers["Authorization"] == KEY
    assert not request.headers["Authorization"].startswith("Bearer")
    assert request.headers["Auth-Type"] == "api"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content)["event"]["event"] == "page_viewed"


def test_single_event_requests_overlap_with_no_published_rate():
    assert LIMITS.max_events == 1
    assert LIMITS.rate == ()
    assert LIMITS.max_in_flight == 8


def test_200_is_success_and_400_is_rejected_with_flywheels_message():
    provider = Flywheel(KEY)
    b = batch(provider, event())
    ok, seen = send_through(provider, b, lambda r: response(200, {"success": True, "message": "ok"}))
    assert ok.outcome == "ok"
    assert seen[0].headers["authorization"] == KEY
    bad = provider.interpret(
        response(400, {"error": "Validation failed: event name is required", "code": "VALIDATION_ERROR"}), b
    )
    assert bad.outcome == "rejected"
    assert "event name is required" in bad.reason
    assert provider.interpret(response(500, text="boom"), b).outcome == "retry"
