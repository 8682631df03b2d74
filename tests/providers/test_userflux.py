"""UserFlux: epoch-millisecond timestamps, camelCase ids, batches of 50, optional locationEnrichment."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from evmiddleware.config import load_settings
from evmiddleware.errors import ConfigurationError
from evmiddleware.providers.userflux import LIMITS, UserFlux, epoch_millis

from ._helpers import UTC, batch, body, encoded, event, response, send_through

KEY = "uf-write-only-key"


def test_timestamp_is_integer_epoch_milliseconds_as_in_userflux_example():
    # 1690111645853 is the timestamp of UserFlux's own request example.
    when = dt.datetime(2023, 7, 23, 11, 27, 25, 853_999, tzinfo=UTC)
    assert epoch_millis(when) == 1690111645853
    sent = encoded(UserFlux(KEY), event(timestamp=when))
    assert sent["timestamp"] == 1690111645853
    assert type(sent["timestamp"]) is int


def test_epoch_millis_before_1970_floors():
    assert epoch_millis(dt.datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=UTC)) == -1


def test_encode_uses_camel_case_ids_and_name():
    sent = encoded(UserFlux(KEY), event("signed_in", {"plan": "pro"}, user_id="u1", anonymous_id="a1"))
    assert sent == {
        "name": "signed_in",
        "timestamp": sent["timestamp"],
        "userId": "u1",
        "anonymousId": "a1",
        "properties": {"plan": "pro"},
    }


def test_missing_ids_are_left_out_not_sent_as_null():
    sent = encoded(UserFlux(KEY), event(user_id=None, anonymous_id="a1"))
    assert "userId" not in sent
    assert sent["anonymousId"] == "a1"


def test_request_context_travels_in_properties():
    sent = encoded(UserFlux(KEY), event(properties={"x": 1}, context={"route": "/items/{item_id}"}))
    assert sent["properties"] == {"x": 1, "context": {"route": "/items/{item_id}"}}


def test_batch_goes_to_the_batch_endpoint_wrapped_in_events():
    provider = UserFlux(KEY)
    events = [event(f"e{i}") for i in range(3)]
    request = provider.build_request(batch(provider, *events))
    assert request.method == "POST"
    assert request.url == "https://integration-api.userflux.co/event/ingest/batch"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert [e["name"] for e in json.loads(request.content)["events"]] == ["e0", "e1", "e2"]


def test_batches_hold_at_most_50_events():
    assert LIMITS.max_events == 50
    assert UserFlux(KEY).limits.max_events == 50
    assert LIMITS.rate == ()  # none published


def test_location_enrichment_is_omitted_when_unset():
    assert UserFlux(KEY).build_request(batch(UserFlux(KEY), event())).params == {}


@pytest.mark.parametrize(
    ("raw", "sent"), [("1", "true"), ("true", "true"), ("off", "false"), (False, "false")]
)
def test_location_enrichment_setting_becomes_the_query_parameter(raw, sent):
    provider = UserFlux.from_options({"api_key": KEY, "location_enrichment": raw})
    assert provider is not None
    assert provider.build_request(batch(provider, event())).params == {"locationEnrichment": sent}


def test_location_enrichment_from_the_environment():
    settings = load_settings(
        {}, {"EVMIDDLEWARE_USERFLUX_API_KEY": KEY, "EVMIDDLEWARE_USERFLUX_LOCATION_ENRICHMENT": "false"}
    )
    [provider] = settings.providers
    assert isinstance(provider, UserFlux)
    assert provider.location_enrichment is False


def test_location_enrichment_that_is_not_a_boolean_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="userflux_location_enrichment"):
        UserFlux.from_options({"api_key": KEY, "location_enrichment": "sometimes"})


def test_204_is_success_and_the_query_parameter_goes_on_the_wire():
    provider = UserFlux(KEY, location_enrichment=False)
    result, seen = send_through(provider, batch(provider, event(), event()), lambda r: response(204))
    assert result.outcome == "ok"
    [request] = seen
    assert request.url.path == "/event/ingest/batch"
    assert request.url.params["locationEnrichment"] == "false"
    assert len(json.loads(request.content)["events"]) == 2


def test_docstring_says_the_key_is_the_write_only_key():
    assert "write-only" in (UserFlux.__doc__ or "")
    assert "write-only" in UserFlux.key_setting


def test_a_batch_built_twice_gives_the_same_body_bytes():
    provider = UserFlux(KEY)
    b = batch(provider, event(), event("other"))
    assert provider.build_request(b).content == provider.build_request(b).content
    assert body(provider, event())["events"][0]["name"] == "page_viewed"
