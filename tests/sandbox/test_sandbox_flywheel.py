from __future__ import annotations

import pytest

from ._payloads import DROP, KEYS, fw_event, fw_headers, fw_url, post


def test_event_accepted(sb, client):
    r = post(client, fw_url(sb), {"event": fw_event()}, fw_headers())
    assert r.status_code == 200
    assert r.json() == {"success": True, "message": "Event tracked successfully"}
    assert sb.accepted("flywheel") == [fw_event()]


@pytest.mark.parametrize(
    "event",
    [
        fw_event(user_id=DROP, anonymous_id="anon_789"),
        fw_event(identify=True, properties={"email": "a@b.co"}),
        fw_event(timestamp=DROP, event_id=DROP, properties=DROP),
        fw_event(timestamp="2024-01-15T10:30:00.123+02:00"),
        fw_event(event="Page-View_2"),
    ],
    ids=["anonymous", "identify", "minimal", "offset-and-fraction", "name-dash"],
)
def test_valid_variants(sb, client, event):
    assert post(client, fw_url(sb), {"event": event}, fw_headers()).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        fw_headers(f"Bearer {KEYS.flywheel_api_key}"),
        fw_headers(auth_type=None),
        fw_headers(auth_type="bearer"),
        fw_headers("wrong"),
        {"Auth-Type": "api", "Content-Type": "application/json"},
    ],
    ids=["bearer-prefix", "auth-type-missing", "auth-type-wrong", "wrong-key", "missing"],
)
def test_auth_rejected(sb, client, headers):
    r = post(client, fw_url(sb), {"event": fw_event()}, headers)
    assert r.status_code == 401
    assert sb.accepted("flywheel") == []


@pytest.mark.parametrize(
    "body",
    [
        fw_event(),
        {"event": fw_event(event=DROP)},
        {"event": fw_event(event="page viewed")},
        {"event": fw_event(event="page.viewed")},
        {"event": fw_event(event="")},
        {"event": fw_event(properties={"nested": {"a": 1}})},
        {"event": fw_event(properties={"list": [1, 2]})},
        {"event": fw_event(properties={"none": None})},
        {"event": fw_event(properties="x")},
        {"event": fw_event(timestamp="2024-01-15T10:30:00")},
        {"event": fw_event(timestamp="not a date")},
        {"event": fw_event(identify="yes")},
        {"event": fw_event(event_id=123)},
        {"event": fw_event(user_id=1)},
        {"event": "page_view"},
    ],
    ids=[
        "no-wrapper",
        "name-missing",
        "name-space",
        "name-dot",
        "name-empty",
        "property-object",
        "property-list",
        "property-null",
        "properties-string",
        "timestamp-no-offset",
        "timestamp-garbage",
        "identify-string",
        "event_id-number",
        "user_id-number",
        "event-not-object",
    ],
)
def test_body_rules(sb, client, body):
    r = post(client, fw_url(sb), body, fw_headers())
    assert r.status_code == 400
    doc = r.json()
    assert doc["code"] == "VALIDATION_ERROR"
    assert doc["error"].startswith("Validation failed")


def test_unparsable(sb, client):
    r = post(client, fw_url(sb), None, fw_headers(), raw=b"\xff\xfe")
    assert r.status_code == 400
    assert r.json()["code"] == "VALIDATION_ERROR"


def test_duplicate_by_event_id(sb, client):
    post(client, fw_url(sb), {"event": fw_event(event_id="e-1")}, fw_headers())
    post(client, fw_url(sb), {"event": fw_event(event_id="e-1", event="other")}, fw_headers())
    post(client, fw_url(sb), {"event": fw_event(event_id="e-2")}, fw_headers())
    stats = sb.stats()["providers"]["flywheel"]
    assert (stats["accepted_events"], stats["duplicates"]) == (3, 1)
