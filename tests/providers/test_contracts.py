"""Contract tests: what we send, checked against the providers' published pages in shared/providers.

Bodies are validated against the OpenAPI schemas of UserFlux (000) and Flywheel (003), closed so an
undocumented field fails too; the request examples of FloKit (001), Flameup (002), Flywheel (003) and
the body shape of Klaviyo (004) are rebuilt from equivalent events and compared field by field (event
ids and the spelling of timestamps aside: timestamps are compared as instants).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.parse
from typing import Any

import jsonschema
import pytest

from evmiddleware.providers.flameup import Flameup
from evmiddleware.providers.flokit import LIMITS as FLOKIT_LIMITS
from evmiddleware.providers.flokit import FloKit
from evmiddleware.providers.flywheel import Flywheel
from evmiddleware.providers.klaviyo import Klaviyo
from evmiddleware.providers.userflux import LIMITS as USERFLUX_LIMITS
from evmiddleware.providers.userflux import UserFlux

from ._helpers import batch, body, encoded, event
from ._specs import closed, curl_bodies, json_blocks, request_schema, spec_text, yaml_block

KEY = "test-key-123"


def instant(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, f"{value!r} has no offset"
    return parsed


def from_example(example: dict[str, Any], *, name_field: str, kind: str = "track") -> Any:
    """An Event equivalent to one provider example (FloKit/Flywheel spelling: user_id, anonymous_id)."""
    timestamp = instant(example["timestamp"]) if "timestamp" in example else dt.datetime.now(dt.timezone.utc)
    return event(
        example[name_field],
        example.get("properties"),
        user_id=example.get("user_id"),
        anonymous_id=example.get("anonymous_id"),
        timestamp=timestamp,
        kind=kind,
    )


def assert_same_fields(ours: dict[str, Any], theirs: dict[str, Any], *, extra_ok: set[str]) -> None:
    for field, value in theirs.items():
        assert field in ours, f"we do not send {field!r}"
        if field == "timestamp":
            assert instant(ours[field]) == instant(value)
        else:
            assert ours[field] == value, field
    assert set(ours) - set(theirs) <= extra_ok, f"fields the example does not have: {set(ours) - set(theirs)}"


# -- UserFlux (000): OpenAPI JSON ------------------------------------------------------------------


@pytest.fixture(scope="module")
def userflux_openapi() -> dict[str, Any]:
    blocks = {next(iter(b["paths"])): b for b in json_blocks(spec_text("000"))}
    return blocks["/event/ingest/batch"]


def test_userflux_batch_bodies_validate_against_the_published_schema(userflux_openapi):
    schema = closed(request_schema(userflux_openapi, "/event/ingest/batch"))
    provider = UserFlux(KEY)
    events = [
        event("signed_in", {"plan": "pro", "nested": {"a": [1, None]}}, user_id="u1", anonymous_id="a1"),
        event("page_viewed", anonymous_id="a2", user_id=None, context={"route": "/items/{item_id}"}),
    ]
    sent = body(provider, *events)
    jsonschema.validate(sent, schema)
    # The schema says "number"; UserFlux's own example (1690111645853) is integer epoch milliseconds.
    assert all(isinstance(item["timestamp"], int) for item in sent["events"])


def test_userflux_schema_check_can_fail(userflux_openapi):
    schema = closed(request_schema(userflux_openapi, "/event/ingest/batch"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"events": [{"name": "x", "timestamp": "2024-01-01T00:00:00Z"}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"events": [{"name": "x", "user_id": "snake"}]}, schema)


def test_userflux_endpoint_query_parameter_auth_and_success_match_the_spec(userflux_openapi):
    operation = userflux_openapi["paths"]["/event/ingest/batch"]["post"]
    assert [p["name"] for p in operation["parameters"]] == ["locationEnrichment"]
    assert "204" in operation["responses"]
    scheme = userflux_openapi["components"]["securitySchemes"]["WriteOnlyBearerAuth"]
    assert scheme["scheme"] == "bearer"
    request = UserFlux(KEY, location_enrichment=True).build_request(batch(UserFlux(KEY), event()))
    assert request.url == userflux_openapi["servers"][0]["url"] + "/event/ingest/batch"
    assert request.params == {"locationEnrichment": "true"}
    assert request.headers["Authorization"] == f"Bearer {KEY}"


def test_userflux_batch_size_is_the_published_one():
    match = re.search(r"accepts up to (\d+) events per request", spec_text("000"))
    assert match
    assert int(match.group(1)) == USERFLUX_LIMITS.max_events == 50


# -- FloKit (001): curl examples ---------------------------------------------------------------------


def test_flokit_single_event_examples_are_reproduced_field_by_field():
    examples = [b for url, b in curl_bodies(spec_text("001")) if url.endswith("/v1/events")]
    assert len(examples) == 2
    provider = FloKit(KEY)
    for example in examples:
        ours = encoded(provider, from_example(example, name_field="event"))
        assert_same_fields(ours, example, extra_ok=set())


def test_flokit_batch_example_is_reproduced_field_by_field():
    [(url, example)] = [(u, b) for u, b in curl_bodies(spec_text("001")) if u.endswith("/v1/batch/events")]
    provider = FloKit(KEY)
    events = [from_example(item, name_field="event") for item in example["events"]]
    request = provider.build_request(batch(provider, *events))
    assert request.url == url
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    ours = json.loads(request.content)
    assert list(ours) == ["events"]
    assert len(ours["events"]) == len(example["events"])
    for mine, theirs in zip(ours["events"], example["events"]):
        assert_same_fields(mine, theirs, extra_ok=set())


def test_flokit_limits_are_the_published_ones():
    text = spec_text("001")
    assert "| Events per request  | 1,000 " in text
    assert "| Requests per minute | 100 per workspace |" in text
    assert FLOKIT_LIMITS.max_events == 1000
    assert FLOKIT_LIMITS.rate == ((100, 60.0),)


# -- Flameup (002): curl example -----------------------------------------------------------------------


def test_flameup_example_is_reproduced_url_and_fields():
    [(url, example), *_] = curl_bodies(spec_text("002"))
    workspace = urllib.parse.urlsplit(url).path.split("/")[-2]  # .../workspaces/{workspaceId}/events
    provider = Flameup(KEY, workspace)
    e = event(
        example["event"],
        example["properties"],
        user_id=example["userId"],
        timestamp=instant(example["timestamp"]),
    )
    request = provider.build_request(batch(provider, e))
    assert request.url == url
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert_same_fields(json.loads(request.content), example, extra_ok=set())


def test_flameup_fields_named_by_the_page_are_the_ones_we_send():
    text = spec_text("002")
    ours = encoded(Flameup(KEY, "ws"), event())
    for field in ours:
        assert f"\n{field}" in text, field
    assert "userIdstring\nRequired" in text  # why events without a user id are skipped


# -- Flywheel (003): OpenAPI YAML with examples --------------------------------------------------------


@pytest.fixture(scope="module")
def flywheel_openapi() -> Any:
    return yaml_block(spec_text("003"))


def flywheel_schema(openapi: dict[str, Any]) -> Any:
    schema = closed(request_schema(openapi, "/v1/events"))
    # The published property values are ``oneOf`` [string, boolean, number, string/date-time]: any
    # string matches two branches, so read literally every string would fail. OpenAPI tools take the
    # intent, "any of these"; so do we.
    values = schema["properties"]["event"]["properties"]["properties"]["additionalProperties"]
    values["anyOf"] = values.pop("oneOf")
    return schema


def flywheel_examples(openapi: dict[str, Any]) -> dict[str, dict[str, Any]]:
    content = openapi["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    return {name: example["value"]["event"] for name, example in content["examples"].items()}


def test_flywheel_schema_accepts_its_own_examples(flywheel_openapi):
    schema = flywheel_schema(flywheel_openapi)
    for example in flywheel_examples(flywheel_openapi).values():
        jsonschema.validate({"event": example}, schema)


@pytest.mark.parametrize("name", ["user_signup", "product_purchased", "anonymous_event", "identify_user"])
def test_flywheel_examples_are_reproduced_and_validate(flywheel_openapi, name):
    example = flywheel_examples(flywheel_openapi)[name]
    kind = "identify" if example.get("identify") else "track"
    e = from_example(example, name_field="event", kind=kind)
    ours = encoded(Flywheel(KEY), e)
    jsonschema.validate(ours, flywheel_schema(flywheel_openapi))
    assert list(ours) == ["event"]
    assert_same_fields(ours["event"], example, extra_ok={"event_id", "timestamp"})
    assert ours["event"]["event_id"] == e.id


def test_flywheel_flattened_nested_properties_validate(flywheel_openapi):
    e = event("Page Viewed!", {"cart": {"items": [1, 2], "total": 9.5, "gone": None}}, context={"route": "/"})
    jsonschema.validate(encoded(Flywheel(KEY), e), flywheel_schema(flywheel_openapi))


def test_flywheel_schema_check_can_fail(flywheel_openapi):
    schema = flywheel_schema(flywheel_openapi)
    for bad in (
        {"event": {"event": "Page Viewed"}},  # name pattern
        {"event": {"event": "x", "properties": {"nested": {"a": 1}}}},  # not a scalar
        {"event": {"event": "x", "userId": "camel"}},  # undocumented field
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_flywheel_auth_headers_follow_the_security_schemes(flywheel_openapi):
    schemes = flywheel_openapi["components"]["securitySchemes"]
    assert schemes["apiKeyAuth"]["name"] == "Authorization"
    assert "without 'Bearer" in schemes["apiKeyAuth"]["description"]
    assert schemes["authTypeHeader"]["name"] == "Auth-Type"
    assert schemes["authTypeHeader"]["x-default"] == "api"
    request = Flywheel(KEY).build_request(batch(Flywheel(KEY), event()))
    assert request.headers["Authorization"] == KEY
    assert request.headers["Auth-Type"] == "api"
    assert request.url == flywheel_openapi["servers"][0]["url"] + "/v1/events"


# -- Klaviyo (004): request line and body shape ------------------------------------------------------


@pytest.fixture(scope="module")
def klaviyo_spec() -> str:
    return spec_text("004")


def klaviyo_example_body(text: str) -> Any:
    line = next(line for line in text.splitlines() if line.startswith('{"data"=>'))
    return json.loads(line.replace("=>", ":"))


def key_paths(value: Any, prefix: str = "") -> set[str]:
    """Every key path, lists as ``[]``: ``data.attributes.events.data[].type``."""
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            paths.add(path)
            paths |= key_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            paths |= key_paths(item, f"{prefix}[]")
    return paths


def type_values(value: Any, prefix: str = "") -> dict[str, Any]:
    """The ``type`` member at each path (JSON:API resource types)."""
    found: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            if key == "type":
                found[path] = item
            found.update(type_values(item, path))
    elif isinstance(value, list):
        for item in value:
            found.update(type_values(item, f"{prefix}[]"))
    return found


def klaviyo_events() -> list[Any]:
    return [
        event(
            "Placed Order",
            {"value": 49.99, "currency": "USD", "items": [{"sku": "A"}]},
            user_id="u1",
            aliases={"klaviyo_exchange_id": "kx-1"},
        ),
        event(
            "identify",
            {"email": "a@example.com", "phone_number": "+15550100123", "first_name": "A", "last_name": "B"},
            user_id="u1",
            anonymous_id="anon-1",
            kind="identify",
            id="1f6f1d4e-2c1a-4c55-9f1e-7a1d2b3c4d5f",
        ),
    ]


def test_klaviyo_body_has_the_published_shape(klaviyo_spec):
    example = klaviyo_example_body(klaviyo_spec)
    provider = Klaviyo("AbC123")
    ours = body(provider, *klaviyo_events())
    # Klaviyo's documentation requires ``properties`` on every event although the page's sample omits it.
    allowed = key_paths(example) | {"data.attributes.events.data[].attributes.properties"}
    extra = {
        p for p in key_paths(ours) if not p.startswith("data.attributes.events.data[].attributes.properties.")
    }
    assert extra <= allowed, extra - allowed
    assert type_values(ours) == {
        path: value for path, value in type_values(example).items() if path in type_values(ours)
    }
    assert type_values(ours)["data.type"] == "event-bulk-create"
    for item in ours["data"]["attributes"]["events"]["data"]:
        attributes = item["attributes"]
        assert {"metric", "properties", "time", "unique_id"} <= set(attributes)
        instant(attributes["time"])


def test_klaviyo_request_line_and_headers_match_the_page(klaviyo_spec):
    match = re.search(r"POST \{\{baseUrl\}\}(\S+)\?(\w+)=\{\{companyId\}\}", klaviyo_spec)
    assert match
    path, parameter = match.groups()
    assert "revisionstring(Required)" in klaviyo_spec
    provider = Klaviyo("AbC123")
    request = provider.build_request(batch(provider, *klaviyo_events()))
    assert request.url == "https://a.klaviyo.com" + path
    assert request.params == {parameter: "AbC123"}
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", request.headers["revision"])


def test_klaviyo_limits_are_the_published_ones(klaviyo_spec):
    assert "maximum of 1000 events per request" in klaviyo_spec
    assert "Burst: 10/s" in klaviyo_spec
    assert "Steady: 150/m" in klaviyo_spec
    limits = Klaviyo("AbC123").limits
    assert limits.max_events == 1000
    assert limits.rate == ((10, 1.0), (150, 60.0))
