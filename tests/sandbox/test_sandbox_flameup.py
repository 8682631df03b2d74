from __future__ import annotations

import time

import pytest

from evmiddleware.sandbox import Fault, Sandbox

from ._payloads import DROP, KEYS, fu_event, fu_headers, fu_url, post


def test_event_accepted(sb, client):
    r = post(client, fu_url(sb), fu_event(), fu_headers())
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True
    assert isinstance(body["event_id"], str)
    assert sb.accepted("flameup") == [fu_event()]
    assert r.headers["X-RateLimit-Limit"] == "120"
    assert r.headers["X-RateLimit-Remaining"] == "119"
    assert int(r.headers["X-RateLimit-Reset"]) >= int(time.time())


def test_minimal_event_accepted(sb, client):
    event = fu_event(properties=DROP, timestamp=DROP)
    assert post(client, fu_url(sb), event, fu_headers()).status_code == 200


def test_base_url_ends_in_api_v1(sb):
    assert sb.base_url("flameup").endswith("/flameup/api/v1")


def test_one_event_per_request(sb, client):
    r = post(client, fu_url(sb), [fu_event(), fu_event()], fu_headers())
    assert r.status_code == 400
    assert sb.accepted("flameup") == []


def test_workspace_must_match(sb, client):
    r = post(client, fu_url(sb, "ws_other"), fu_event(), fu_headers())
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        fu_headers("wrong"),
        {"Authorization": KEYS.flameup_api_key, "Content-Type": "application/json"},
    ],
    ids=["missing", "wrong-key", "no-bearer"],
)
def test_auth_rejected(sb, client, headers):
    r = post(client, fu_url(sb), fu_event(), headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (fu_event(userId=DROP), "userId"),
        (fu_event(userId=5), "userId"),
        (fu_event(event=DROP), "event"),
        (fu_event(event=""), "event"),
        (fu_event(properties=[1]), "properties"),
        (fu_event(timestamp="2024-12-25"), "timestamp"),
        (fu_event(timestamp="2024-12-25T10:00:00"), "timestamp"),
        (fu_event(timestamp="2024-12-25T10:00+0000"), "timestamp"),
        (fu_event(timestamp=1735120800), "timestamp"),
    ],
    ids=[
        "userId-missing",
        "userId-number",
        "event-missing",
        "event-empty",
        "properties-list",
        "timestamp-date-only",
        "timestamp-no-offset",
        "timestamp-no-seconds-basic-offset",
        "timestamp-number",
    ],
)
def test_validation_422(sb, client, event, field):
    r = post(client, fu_url(sb), event, fu_headers())
    assert r.status_code == 422
    error = r.json()["error"]
    assert isinstance(error["message"], str)
    assert field in error["details"]["fields"]
    assert sb.accepted("flameup") == []


def test_unparsable_400(sb, client):
    r = post(client, fu_url(sb), None, fu_headers(), raw=b"userId=1")
    assert r.status_code == 400
    assert isinstance(r.json()["error"]["message"], str)


def test_injected_429_carries_the_rate_limit_headers_like_the_limiters_own(client):
    """Flameup's 429s always carry X-RateLimit-*; an injected one lacked them."""
    with Sandbox(rate_limits={"flameup": [(5, 60.0)]}) as sb:
        sb.inject("flameup", Fault("retry_after", retry_after=2))
        r = post(client, fu_url(sb), fu_event(), fu_headers())
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "2"
        assert r.headers["X-RateLimit-Limit"] == "5"
        assert r.headers["X-RateLimit-Remaining"] == "0"
        assert int(time.time()) + 2 <= int(r.headers["X-RateLimit-Reset"]) <= int(time.time()) + 4
    with Sandbox(rate_limits={"flameup": []}) as sb:  # no rule: nothing to describe, as on a 200
        sb.inject("flameup", Fault("retry_after", retry_after=2))
        r = post(client, fu_url(sb), fu_event(), fu_headers())
        assert r.status_code == 429
        assert not any(name.lower().startswith("x-ratelimit") for name in r.headers)
