"""Klaviyo client bulk-create: one profile per request, JSON:API body, public key only, data limits."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from evmiddleware.config import load_settings
from evmiddleware.errors import ConfigurationError
from evmiddleware.events import MAX_ID_LENGTH
from evmiddleware.providers._klaviyo_fit import MAX_STRING_BYTES
from evmiddleware.providers.base import SkipEvent, dumps
from evmiddleware.providers.klaviyo import DEFAULT_REVISION, LIMITS, MEDIA_TYPE, Klaviyo

from ._helpers import UTC, batch, body, encoded, event, response, send_through

KEY = "AbC123"


def attributes(e) -> dict:
    return encoded(Klaviyo(KEY), e)["attributes"]


def depth(value) -> int:
    """Klaviyo's nesting depth: a flat object is 1."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


# -- configuration -----------------------------------------------------------------------------------


@pytest.mark.parametrize("private", ["pk_0123456789abcdef0123456789abcdef01", "PK_abc"])
def test_a_private_key_is_refused_without_echoing_it(private):
    with pytest.raises(ConfigurationError, match="private") as error:
        load_settings({}, {"EVMIDDLEWARE_KLAVIYO_PUBLIC_KEY": private})
    assert private not in str(error.value)
    assert "klaviyo_public_key" in str(error.value)


def test_key_setting_is_klaviyo_public_key():
    [provider] = load_settings({}, {"EVMIDDLEWARE_KLAVIYO_PUBLIC_KEY": KEY}).providers
    assert isinstance(provider, Klaviyo)
    assert "public_key" in Klaviyo.options
    assert "api_key" not in Klaviyo.options


def test_revision_has_a_current_default_and_a_setting():
    assert DEFAULT_REVISION == "2025-10-15"
    assert Klaviyo(KEY).revision == DEFAULT_REVISION
    [provider] = load_settings(
        {}, {"EVMIDDLEWARE_KLAVIYO_PUBLIC_KEY": KEY, "EVMIDDLEWARE_KLAVIYO_REVISION": "2024-10-15.pre"}
    ).providers
    assert isinstance(provider, Klaviyo)
    assert provider.build_request(batch(provider, event())).headers["revision"] == "2024-10-15.pre"


@pytest.mark.parametrize("revision", ["2025-13-01", "latest", "2025/10/15", "2025-02-30"])
def test_an_invalid_revision_is_a_configuration_error(revision):
    with pytest.raises(ConfigurationError, match="klaviyo_revision"):
        Klaviyo.from_options({"public_key": KEY, "revision": revision})


# -- grouping and the body -----------------------------------------------------------------------------


def test_group_key_is_the_user_id_else_the_anonymous_id():
    provider = Klaviyo(KEY)
    assert provider.group_key(event(user_id="u1", anonymous_id="a1")) == "external_id:u1"
    assert provider.group_key(event(user_id="u1", anonymous_id="a2")) == "external_id:u1"
    assert provider.group_key(event(user_id=None, anonymous_id="a1")) == "anonymous_id:a1"
    # A user id that happens to equal an anonymous id is still another profile.
    assert provider.group_key(event(user_id="x")) != provider.group_key(event(user_id=None, anonymous_id="x"))


def test_one_request_carries_one_profile_and_its_events():
    provider = Klaviyo(KEY)
    events = [
        event("Viewed Product", user_id="u1", aliases={"klaviyo_exchange_id": "kx-1"}),
        event("Added To Cart", user_id="u1", id="2a6f1d4e-2c1a-4c55-9f1e-7a1d2b3c4d5e"),
    ]
    request = provider.build_request(batch(provider, *events))
    assert request.method == "POST"
    assert request.url == "https://a.klaviyo.com/client/event-bulk-create/"
    assert request.params == {"company_id": KEY}
    assert request.headers == {"revision": DEFAULT_REVISION, "Content-Type": MEDIA_TYPE, "Accept": MEDIA_TYPE}
    sent = json.loads(request.content)
    assert sent["data"]["type"] == "event-bulk-create"
    profile = sent["data"]["attributes"]["profile"]["data"]
    assert profile == {"type": "profile", "attributes": {"external_id": "u1", "_kx": "kx-1"}}
    items = sent["data"]["attributes"]["events"]["data"]
    assert [item["attributes"]["metric"]["data"]["attributes"]["name"] for item in items] == [
        "Viewed Product",
        "Added To Cart",
    ]
    assert [item["attributes"]["unique_id"] for item in items] == [e.id for e in events]
    assert all(item["type"] == "event" for item in items)
    assert all(item["attributes"]["metric"]["data"]["type"] == "metric" for item in items)


def test_anonymous_profile_uses_anonymous_id():
    sent = body(Klaviyo(KEY), event(user_id=None, anonymous_id="a1"))
    assert sent["data"]["attributes"]["profile"]["data"]["attributes"] == {"anonymous_id": "a1"}


def test_event_attributes_time_unique_id_and_empty_properties():
    e = event("Checkout Started")
    attrs = attributes(e)
    assert attrs["time"] == "2024-03-15T14:22:00.000Z"
    assert attrs["unique_id"] == e.id
    assert attrs["properties"] == {}
    assert "value" not in attrs
    assert "value_currency" not in attrs


@pytest.mark.parametrize(
    ("properties", "value", "currency"),
    [
        ({"value": 49.99, "currency": "USD"}, 49.99, "USD"),
        ({"revenue": 10, "currency": "EUR"}, 10, "EUR"),
        ({"value": 5, "revenue": 7}, 5, None),
        ({"value": "5", "revenue": 7.5}, 7.5, None),
        ({"value": True}, None, None),
        ({"currency": "USD"}, None, None),
        ({"value": 0, "currency": " GBP "}, 0, "GBP"),
    ],
)
def test_value_and_currency_come_from_value_or_revenue_and_currency(properties, value, currency):
    attrs = attributes(event(properties=properties))
    assert attrs.get("value") == value
    assert attrs.get("value_currency") == currency
    assert attrs["properties"] == properties  # the properties themselves are kept


def test_identify_traits_and_the_anonymous_link_go_to_the_profile():
    provider = Klaviyo(KEY)
    events = [
        event("Viewed Page", user_id="u1"),
        event(
            "identify",
            {
                "email": "ada@example.com",
                "phone_number": "+442071838750",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "plan": "pro",
            },
            user_id="u1",
            anonymous_id="anon-1",
            kind="identify",
            id="3a6f1d4e-2c1a-4c55-9f1e-7a1d2b3c4d5e",
        ),
    ]
    profile = body(provider, *events)["data"]["attributes"]["profile"]["data"]["attributes"]
    assert profile == {
        "external_id": "u1",
        "anonymous_id": "anon-1",
        "email": "ada@example.com",
        "phone_number": "+442071838750",
        "first_name": "Ada",
        "last_name": "Lovelace",
    }


def test_traits_klaviyo_would_refuse_stay_out_of_the_profile():
    e = event(
        "identify",
        {"email": "not-an-address", "phone_number": "555-0123", "first_name": 7, "last_name": "x" * 300},
        kind="identify",
    )
    profile = body(Klaviyo(KEY), e)["data"]["attributes"]["profile"]["data"]["attributes"]
    assert profile == {"external_id": "usr_abc123"}


def test_traits_of_track_events_do_not_touch_the_profile():
    profile = body(Klaviyo(KEY), event(properties={"email": "a@example.com"}))["data"]["attributes"][
        "profile"
    ]
    assert "email" not in profile["data"]["attributes"]


# -- limits --------------------------------------------------------------------------------------------


def test_limits_are_the_published_ones():
    assert LIMITS.max_events == 1000
    assert LIMITS.max_bytes <= 5_000_000
    assert LIMITS.rate == ((10, 1.0), (150, 60.0))


def test_envelope_bytes_bound_the_largest_profile_wrapper():
    worst_id = "\x01" * MAX_ID_LENGTH  # six bytes each once JSON-escaped
    worst = event(
        "identify",
        {
            "email": "a" * (MAX_ID_LENGTH - 12) + "@example.com",
            "phone_number": "+123456789012345",
            "first_name": "\x01" * MAX_ID_LENGTH,
            "last_name": "\x01" * MAX_ID_LENGTH,
            "organization": "\x01" * MAX_ID_LENGTH,
            "title": "\x01" * MAX_ID_LENGTH,
        },
        user_id=worst_id,
        anonymous_id=worst_id,
        aliases={"klaviyo_exchange_id": worst_id},
        kind="identify",
    )
    provider = Klaviyo(KEY)
    b = batch(provider, worst)
    request = provider.build_request(b)
    assert len(request.content) - len(b.items[0].data) <= LIMITS.envelope_bytes
    assert LIMITS.envelope_bytes < 20_000


def test_metric_names_are_cut_under_128_characters():
    name = attributes(event("n" * 255))["metric"]["data"]["attributes"]["name"]
    assert len(name) == 127


def test_more_than_400_properties_is_skipped_with_a_counted_reason():
    with pytest.raises(SkipEvent) as skipped:
        Klaviyo(KEY).encode(event(properties={f"p{i}": i for i in range(401)}))
    assert skipped.value.reason == "too_many_properties"
    assert len(attributes(event(properties={f"p{i}": i for i in range(400)}))["properties"]) == 400


def test_strings_over_100_kb_are_cut_at_a_character_boundary(caplog):
    long_text = "é" * 60_000  # 120,000 bytes of UTF-8
    attrs = attributes(event(properties={"html": long_text, "nested": {"t": "x" * 150_000}, "ok": "short"}))
    cut = attrs["properties"]["html"]
    assert len(cut.encode()) <= MAX_STRING_BYTES
    assert long_text.startswith(cut)
    assert len(attrs["properties"]["nested"]["t"]) == MAX_STRING_BYTES
    assert attrs["properties"]["ok"] == "short"
    assert "trimmed" in caplog.text


def test_objects_nested_past_depth_10_are_sent_as_json_text():
    deep: dict = {"leaf": 1}
    for level in range(12):
        deep = {f"l{level}": deep}
    props = attributes(event(properties={"deep": deep, "flat": 1}))["properties"]
    assert depth(props) == 10
    text = props
    while isinstance(text, dict):
        text = next(iter(text.values()))
    assert isinstance(text, str)
    assert json.loads(text)  # the rest of the structure, kept as JSON


def test_properties_at_depth_10_are_untouched():
    deep: dict = {"leaf": 1}
    for level in range(8):
        deep = {f"l{level}": deep}
    props = {"deep": deep}
    assert depth(props) == 10
    assert attributes(event(properties=props))["properties"] == props


@pytest.mark.parametrize(
    "when", [dt.datetime(1999, 12, 31, tzinfo=UTC), dt.datetime.now(UTC) + dt.timedelta(days=400)]
)
def test_times_klaviyo_refuses_are_skipped(when):
    with pytest.raises(SkipEvent) as skipped:
        Klaviyo(KEY).encode(event(timestamp=when))
    assert skipped.value.reason == "invalid_timestamp"


def test_event_with_no_identifier_at_all_is_skipped():
    with pytest.raises(SkipEvent):
        Klaviyo(KEY).encode(event(user_id=None, anonymous_id=None))
    only_kx = event(user_id=None, anonymous_id=None, aliases={"klaviyo_exchange_id": "kx"})
    assert body(Klaviyo(KEY), only_kx)["data"]["attributes"]["profile"]["data"]["attributes"] == {"_kx": "kx"}


# -- answers -------------------------------------------------------------------------------------------


def test_202_is_success_and_company_id_goes_on_the_wire():
    provider = Klaviyo(KEY)
    result, seen = send_through(provider, batch(provider, event()), lambda r: response(202))
    assert result.outcome == "ok"
    [request] = seen
    assert request.url.path == "/client/event-bulk-create/"
    assert request.url.params["company_id"] == KEY
    assert request.headers["content-type"] == MEDIA_TYPE
    assert request.headers["accept"] == MEDIA_TYPE
    assert request.headers["revision"] == DEFAULT_REVISION


def jsonapi_error(detail: str, source: dict) -> dict:
    return {
        "errors": [
            {
                "id": "x",
                "status": 400,
                "code": "invalid",
                "title": "Invalid input.",
                "detail": detail,
                "source": source,
            }
        ]
    }


def test_invalid_company_id_is_a_credentials_rejection_with_a_hint():
    provider = Klaviyo(KEY)
    answer = jsonapi_error("Invalid Company ID", {"parameter": "company_id"})
    result = provider.interpret(response(400, answer), batch(provider, event()))
    assert result.outcome == "rejected"
    assert result.auth
    assert "EVMIDDLEWARE_KLAVIYO_PUBLIC_KEY" in result.reason
    assert KEY not in result.reason


def test_other_400s_say_what_and_where():
    provider = Klaviyo(KEY)
    answer = jsonapi_error(
        "'x' is not a valid field for the resource 'event'.", {"pointer": "/data/attributes"}
    )
    result = provider.interpret(response(400, answer), batch(provider, event()))
    assert result.outcome == "rejected"
    assert not result.auth
    assert result.reason == "http_400: 'x' is not a valid field for the resource 'event'. (/data/attributes)"
    plain = provider.interpret(response(400, text="bad"), batch(provider, event()))
    assert plain.reason == "http_400: bad"


def test_429_waits_as_told():
    provider = Klaviyo(KEY)
    result = provider.interpret(response(429, headers={"Retry-After": "2"}), batch(provider, event()))
    assert result.outcome == "retry"
    assert result.retry_after == 2.0


def test_request_body_is_the_joined_encoded_events():
    provider = Klaviyo(KEY)
    b = batch(provider, event("a"), event("b", id="4a6f1d4e-2c1a-4c55-9f1e-7a1d2b3c4d5e"))
    content = provider.build_request(b).content
    assert b",".join(item.data for item in b.items) in content
    assert content == provider.build_request(b).content  # same bytes on every retry
    assert dumps(json.loads(content)) == content
