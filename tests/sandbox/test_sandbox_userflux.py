from __future__ import annotations

import pytest

from ._payloads import DROP, post, uf_event, uf_headers, uf_url


def test_single_event_accepted_and_recorded(sb, client):
    event = uf_event()
    r = post(client, uf_url(sb), event, uf_headers())
    assert r.status_code == 204
    assert r.content == b""
    assert sb.accepted("userflux") == [event]
    stats = sb.stats()["providers"]["userflux"]
    assert stats["accepted_events"] == 1
    assert stats["status_counts"] == {"204": 1}


def test_batch_at_limit_accepted(sb, client):
    events = [uf_event(name=f"e{i}") for i in range(50)]
    r = post(client, uf_url(sb, batch=True), {"events": events}, uf_headers())
    assert r.status_code == 204
    assert sb.accepted("userflux") == events
    assert sb.stats()["providers"]["userflux"]["largest_batch"] == 50


def test_batch_one_past_limit_rejected(sb, client):
    events = [uf_event() for _ in range(51)]
    r = post(client, uf_url(sb, batch=True), {"events": events}, uf_headers())
    assert r.status_code == 400
    assert "message" in r.json()
    stats = sb.stats()["providers"]["userflux"]
    assert stats["accepted_events"] == 0
    assert stats["rejected_events"] == 51
    assert stats["largest_batch"] == 51


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        uf_headers("wrong-key"),
        {"Authorization": "uf_sandbox_write_key", "Content-Type": "application/json"},
        {"Authorization": "Basic dWY6eA==", "Content-Type": "application/json"},
    ],
    ids=["missing", "wrong-key", "no-bearer", "basic"],
)
def test_auth_rejected(sb, client, headers):
    r = post(client, uf_url(sb), uf_event(), headers)
    assert r.status_code == 401
    assert sb.accepted("userflux") == []


@pytest.mark.parametrize(
    ("event", "batch"),
    [
        (uf_event(name=DROP), False),
        (uf_event(name=42), False),
        (uf_event(name=""), False),
        (uf_event(timestamp="2024-01-01T00:00:00Z"), False),
        (uf_event(timestamp=True), False),
        (uf_event(userId=7), False),
        (uf_event(anonymousId=None), False),
        (uf_event(properties=["a"]), False),
        ([uf_event()], False),
        ({"events": "nope"}, True),
        ({"events": []}, True),
        ({"evts": [uf_event()]}, True),
        ({"events": [uf_event(), uf_event(name=None)]}, True),
    ],
    ids=[
        "name-missing",
        "name-not-string",
        "name-empty",
        "timestamp-iso-string",
        "timestamp-bool",
        "userId-number",
        "anonymousId-null",
        "properties-list",
        "single-is-list",
        "events-not-list",
        "events-empty",
        "events-missing",
        "one-bad-event-fails-batch",
    ],
)
def test_body_rules(sb, client, event, batch):
    r = post(client, uf_url(sb, batch=batch), event, uf_headers())
    assert r.status_code == 400
    assert set(r.json()) == {"error", "message"}
    assert sb.accepted("userflux") == []


def test_unparsable_and_wrong_content_type(sb, client):
    assert post(client, uf_url(sb), None, uf_headers(), raw=b"{nope").status_code == 400
    headers = {**uf_headers(), "Content-Type": "text/plain"}
    assert post(client, uf_url(sb), uf_event(), headers).status_code == 400


def test_location_enrichment_query(sb, client):
    assert post(client, uf_url(sb) + "?locationEnrichment=false", uf_event(), uf_headers()).status_code == 204
    assert post(client, uf_url(sb) + "?locationEnrichment=maybe", uf_event(), uf_headers()).status_code == 400


def test_repeat_counted_as_duplicate(sb, client):
    for _ in range(2):
        assert post(client, uf_url(sb), uf_event(), uf_headers()).status_code == 204
    assert sb.stats()["providers"]["userflux"]["duplicates"] == 1
    assert len(sb.accepted("userflux")) == 2
