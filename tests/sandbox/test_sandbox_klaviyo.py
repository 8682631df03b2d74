from __future__ import annotations

import json

import pytest

from ._payloads import DROP, kl_body, kl_event, kl_headers, kl_url, post


def _errors(r):
    doc = r.json()
    assert r.headers["Content-Type"].startswith("application/vnd.api+json")
    (error,) = doc["errors"]
    assert {"id", "status", "code", "title", "detail", "source"} <= set(error)
    assert error["status"] == r.status_code
    return error


def test_bulk_create_accepted(sb, client):
    events = [kl_event(unique_id="a"), kl_event("Added to Cart", unique_id="b")]
    r = post(client, kl_url(sb), kl_body(events), kl_headers())
    assert r.status_code == 202
    assert r.content == b""
    accepted = sb.accepted("klaviyo")
    assert [e["attributes"]["unique_id"] for e in accepted] == ["a", "b"]
    assert accepted[0]["profile"]["attributes"]["external_id"] == "user-1"


def test_batch_at_limit_accepted(sb, client):
    events = [kl_event(unique_id=f"u{i}") for i in range(1000)]
    assert post(client, kl_url(sb), kl_body(events), kl_headers()).status_code == 202
    assert sb.stats()["providers"]["klaviyo"]["accepted_events"] == 1000


def test_batch_one_past_limit_rejected(sb, client):
    events = [kl_event(unique_id=f"u{i}") for i in range(1001)]
    r = post(client, kl_url(sb), kl_body(events), kl_headers())
    assert r.status_code == 400
    _errors(r)


@pytest.mark.parametrize("company_id", ["pk_0123456789abcdef", "Zz9999", "", None])
def test_company_id_rejected(sb, client, company_id):
    r = post(client, kl_url(sb, company_id), kl_body(), kl_headers())
    assert r.status_code == 400
    assert _errors(r)["detail"] == "Invalid Company ID"


def test_private_key_as_bearer_does_not_help(sb, client):
    headers = {**kl_headers(), "Authorization": "Klaviyo-API-Key pk_x"}
    assert post(client, kl_url(sb, "pk_x"), kl_body(), headers).status_code == 400


@pytest.mark.parametrize(
    ("revision", "status"),
    [(None, 400), ("2024/10/15", 400), ("2024-13-01", 400), ("latest", 400), ("2024-10-15.pre", 202)],
)
def test_revision_header(sb, client, revision, status):
    r = post(client, kl_url(sb), kl_body(), kl_headers(revision=revision))
    assert r.status_code == status


def test_media_type_required(sb, client):
    r = post(client, kl_url(sb), kl_body(), kl_headers(content_type="application/json"))
    assert r.status_code == 415
    _errors(r)


def test_duplicate_unique_id_in_request_fails_whole_request(sb, client):
    events = [kl_event(unique_id="same"), kl_event(unique_id="other"), kl_event(unique_id="same")]
    r = post(client, kl_url(sb), kl_body(events), kl_headers())
    assert r.status_code == 400
    assert "unique_id" in _errors(r)["detail"]
    assert sb.accepted("klaviyo") == []


def test_same_unique_id_other_metric_accepted(sb, client):
    events = [kl_event("A", unique_id="same"), kl_event("B", unique_id="same")]
    assert post(client, kl_url(sb), kl_body(events), kl_headers()).status_code == 202


def test_repeat_across_requests_counted_as_duplicate(sb, client):
    for _ in range(2):
        assert post(client, kl_url(sb), kl_body(), kl_headers()).status_code == 202
    assert sb.stats()["providers"]["klaviyo"]["duplicates"] == 1


@pytest.mark.parametrize(
    ("first", "second", "duplicates"),
    [
        ("2025-01-01T10:00:00.100Z", "2025-01-01T10:00:00.900Z", 1),  # was 0: keyed on the millisecond
        ("2025-01-01T10:00:00Z", "2025-01-01T12:00:00+02:00", 1),  # the same second, other offset
        ("2025-01-01T10:00:00.900Z", "2025-01-01T10:00:01.100Z", 0),
    ],
)
def test_without_a_unique_id_the_time_to_the_second_is_the_key(sb, client, first, second, duplicates):
    for time in (first, second):
        body = kl_body([kl_event(unique_id=DROP, time=time)])
        assert post(client, kl_url(sb), body, kl_headers()).status_code == 202
    assert sb.stats()["providers"]["klaviyo"]["duplicates"] == duplicates


def test_body_over_5_mb_rejected(sb, client):
    events = [kl_event(unique_id=f"u{i}", properties={"blob": "x" * 6000}) for i in range(1000)]
    r = post(client, kl_url(sb), kl_body(events), kl_headers())
    assert r.status_code == 413
    assert sb.accepted("klaviyo") == []


def _deep(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


@pytest.mark.parametrize(
    "props",
    [
        {f"p{i}": i for i in range(400)},
        _deep(10),
        {"s": "x" * 100 * 1024},
    ],
    ids=["400-properties", "depth-10", "string-100kB"],
)
def test_property_limits_at_limit_accepted(sb, client, props):
    body = kl_body([kl_event(properties=props)])
    assert post(client, kl_url(sb), body, kl_headers()).status_code == 202


def test_metric_name_127_accepted(sb, client):
    assert post(client, kl_url(sb), kl_body([kl_event("m" * 127)]), kl_headers()).status_code == 202


def _set(body, path, value):
    node = body
    for key in path[:-1]:
        node = node[key]
    if value is DROP:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return body


_P = ("data", "attributes", "profile", "data")
_E = ("data", "attributes", "events", "data")


@pytest.mark.parametrize(
    "body",
    [
        _set(kl_body(), ("data", "type"), "event"),
        _set(kl_body(), (*_P, "type"), "profiles"),
        kl_body(external_id=DROP, anonymous_id=DROP, first_name="Ann"),
        kl_body(email="not-an-email"),
        kl_body(phone_number="555-0123"),
        kl_body(external_id=42),
        kl_body(favourite_colour="red"),
        kl_body([]),
        kl_body([{"type": "metric", "attributes": kl_event()["attributes"]}]),
        kl_body([kl_event(metric=DROP)]),
        kl_body([kl_event(metric={"data": {"type": "event", "attributes": {"name": "x"}}})]),
        kl_body([kl_event(metric={"data": {"type": "metric", "attributes": {}}})]),
        kl_body([kl_event("m" * 128)]),
        kl_body([kl_event(properties=DROP)]),
        kl_body([kl_event(properties=["a"])]),
        kl_body([kl_event(properties={f"p{i}": i for i in range(401)})]),
        kl_body([kl_event(properties=_deep(11))]),
        kl_body([kl_event(properties={"s": "x" * (100 * 1024 + 1)})]),
        kl_body([kl_event(time="last tuesday")]),
        kl_body([kl_event(value="9.99")]),
        kl_body([kl_event(unique_id=7)]),
        kl_body([kl_event(profile={"email": "a@b.co"})]),
        _set(kl_body(), (*_E,), {"type": "event"}),
        [kl_body()],
    ],
    ids=[
        "data-type",
        "profile-type",
        "profile-no-identifier",
        "email-invalid",
        "phone-not-e164",
        "external_id-number",
        "profile-unknown-field",
        "no-events",
        "event-type",
        "metric-missing",
        "metric-type",
        "metric-name-missing",
        "metric-name-128",
        "properties-missing",
        "properties-list",
        "properties-401",
        "properties-depth-11",
        "string-over-100kB",
        "time-not-iso",
        "value-string",
        "unique_id-number",
        "event-unknown-field",
        "events-data-not-list",
        "body-is-list",
    ],
)
def test_body_rules(sb, client, body):
    r = post(client, kl_url(sb), body, kl_headers())
    assert r.status_code == 400, r.text
    error = _errors(r)
    assert error["code"] == "invalid"
    assert sb.accepted("klaviyo") == []


def test_unparsable(sb, client):
    r = post(client, kl_url(sb), None, kl_headers(), raw=json.dumps(kl_body()).encode()[:-3])
    assert r.status_code == 400
    _errors(r)


def test_identifier_kx_alone_is_enough(sb, client):
    body = kl_body(external_id=DROP, anonymous_id=DROP, _kx="kx-token")
    assert post(client, kl_url(sb), body, kl_headers()).status_code == 202
