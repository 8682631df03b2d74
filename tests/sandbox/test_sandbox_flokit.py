from __future__ import annotations

import pytest

from evmiddleware.sandbox import Sandbox

from ._payloads import DROP, KEYS, fk_event, fk_headers, fk_url, post


def test_single_event_accepted(sb, client):
    r = post(client, fk_url(sb), fk_event(), fk_headers())
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["event_id"].startswith("evt_")
    assert sb.accepted("flokit") == [fk_event()]


def test_anonymous_only_accepted(sb, client):
    event = fk_event(user_id=DROP, anonymous_id="anon-1")
    assert post(client, fk_url(sb), event, fk_headers()).status_code == 200


def test_batch_at_limit_accepted(sb, client):
    events = [fk_event(event=f"e{i}") for i in range(1000)]
    r = post(client, fk_url(sb, batch=True), {"events": events}, fk_headers())
    assert r.status_code == 200
    body = r.json()
    assert (body["accepted"], body["rejected"], body["errors"]) == (1000, 0, [])
    assert len(body["event_ids"]) == 1000
    assert len(sb.accepted("flokit")) == 1000


def test_batch_one_past_limit_rejected(sb, client):
    events = [fk_event() for _ in range(1001)]
    r = post(client, fk_url(sb, batch=True), {"events": events}, fk_headers())
    assert r.status_code == 400
    assert set(r.json()) == {"error", "message"}
    assert sb.accepted("flokit") == []


def test_partial_acceptance(sb, client):
    events = [fk_event(event="a"), fk_event(timestamp="yesterday"), fk_event(event="c"), 5]
    r = post(client, fk_url(sb, batch=True), {"events": events}, fk_headers())
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert (body["accepted"], body["rejected"]) == (2, 2)
    assert [e["index"] for e in body["errors"]] == [1, 3]
    assert all(isinstance(e["reason"], str) and e["reason"] for e in body["errors"])
    assert len(body["event_ids"]) == 2
    assert [e["event"] for e in sb.accepted("flokit")] == ["a", "c"]
    stats = sb.stats()["providers"]["flokit"]
    assert (stats["accepted_events"], stats["rejected_events"]) == (2, 2)
    assert stats["rejected_requests"] == 0


def test_idempotency_replay_answers_original_and_stores_nothing(sb, client):
    headers = fk_headers(**{"Idempotency-Key": "k-1"})
    batch = {"events": [fk_event(event="a"), fk_event(event="b")]}
    first = post(client, fk_url(sb, batch=True), batch, headers)
    second = post(client, fk_url(sb, batch=True), batch, headers)
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert len(sb.accepted("flokit")) == 2
    stats = sb.stats()["providers"]["flokit"]
    assert stats["duplicates"] == 0
    assert stats["requests"] == 2
    log = sb.requests("flokit")
    assert [(e.idempotency_key, e.replayed) for e in log] == [("k-1", False), ("k-1", True)]


def test_same_event_under_new_key_is_duplicate(sb, client):
    post(client, fk_url(sb), fk_event(), fk_headers(**{"Idempotency-Key": "k-1"}))
    post(client, fk_url(sb), fk_event(), fk_headers(**{"Idempotency-Key": "k-2"}))
    stats = sb.stats()["providers"]["flokit"]
    assert (stats["accepted_events"], stats["duplicates"]) == (2, 1)


def test_failed_request_key_can_be_retried(sb, client):
    headers = fk_headers(**{"Idempotency-Key": "k-9"})
    assert post(client, fk_url(sb), fk_event(event=DROP), headers).status_code == 400
    assert post(client, fk_url(sb), fk_event(), headers).status_code == 200
    assert len(sb.accepted("flokit")) == 1


def test_read_only_key_forbidden(sb, client):
    r = post(client, fk_url(sb), fk_event(), fk_headers(KEYS.flokit_read_only_key))
    assert r.status_code == 403
    assert set(r.json()) == {"error", "message"}


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        fk_headers("wrong"),
        {"Authorization": KEYS.flokit_api_key, "Content-Type": "application/json"},
    ],
    ids=["missing", "wrong-key", "no-bearer"],
)
def test_auth_rejected(sb, client, headers):
    assert post(client, fk_url(sb), fk_event(), headers).status_code == 401


@pytest.mark.parametrize(
    "event",
    [
        fk_event(event=DROP),
        fk_event(event=3),
        fk_event(timestamp=DROP),
        fk_event(timestamp=1710512520000),
        fk_event(timestamp="15/03/2024"),
        fk_event(timestamp="2024-02-30T10:00:00Z"),
        fk_event(user_id=DROP),
        fk_event(user_id=12),
        fk_event(properties="x"),
        [fk_event()],
    ],
    ids=[
        "event-missing",
        "event-not-string",
        "timestamp-missing",
        "timestamp-number",
        "timestamp-not-iso",
        "timestamp-impossible-date",
        "no-user-or-anonymous-id",
        "user_id-number",
        "properties-string",
        "body-is-list",
    ],
)
def test_single_body_rules(sb, client, event):
    r = post(client, fk_url(sb), event, fk_headers())
    assert r.status_code == 400
    assert set(r.json()) == {"error", "message"}
    assert sb.accepted("flokit") == []


@pytest.mark.parametrize(
    "body", [{"events": []}, {"events": {}}, {"evts": []}, []], ids=["empty", "object", "missing", "list"]
)
def test_malformed_batch(sb, client, body):
    assert post(client, fk_url(sb, batch=True), body, fk_headers()).status_code == 400


def test_unparsable(sb, client):
    r = post(client, fk_url(sb, batch=True), None, fk_headers(), raw=b'{"events": [')
    assert r.status_code == 400
    assert set(r.json()) == {"error", "message"}
    r = post(client, fk_url(sb), None, fk_headers(), raw=b'{"event": NaN}')
    assert r.status_code == 400


def test_idempotency_key_expires_after_24_hours_on_the_sandbox_clock(clock, client):
    """FloKit dedupes an Idempotency-Key "within 24 hours"; the sandbox remembered keys for ever."""
    with Sandbox(clock=clock) as sb:
        first = post(client, fk_url(sb), fk_event(), fk_headers(**{"Idempotency-Key": "k-1"}))
        post(client, fk_url(sb), fk_event(event="b"), fk_headers(**{"Idempotency-Key": "k-2"}))
        clock.advance(24 * 3600 - 1)
        replay = post(client, fk_url(sb), fk_event(), fk_headers(**{"Idempotency-Key": "k-1"}))
        assert replay.json() == first.json()  # still within 24 h
        clock.advance(1)
        later = post(client, fk_url(sb), fk_event(), fk_headers(**{"Idempotency-Key": "k-1"}))
        assert later.status_code == 200
        assert later.json()["event_id"] != first.json()["event_id"]
        assert [e.replayed for e in sb.requests("flokit")] == [False, False, True, False]
        assert sb.stats()["providers"]["flokit"]["accepted_events"] == 3
        # Expired keys are pruned, not kept: k-2 went with k-1, and k-1 is held once, anew.
        assert list(sb._core.apis["flokit"]._idempotent) == ["k-1"]
