"""Valid requests for each emulated provider; tests change one thing at a time."""

from __future__ import annotations

import json
from typing import Any

import httpx

from evmiddleware.sandbox import DEFAULT_KLAVIYO_REVISION, Sandbox, SandboxKeys

KEYS = SandboxKeys()
DROP: Any = object()  # a field value meaning "leave this field out"


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = {**base, **over}
    return {k: v for k, v in out.items() if v is not DROP}


def post(
    client: httpx.Client,
    url: str,
    body: Any,
    headers: dict[str, str],
    raw: bytes | None = None,
) -> httpx.Response:
    content = raw if raw is not None else json.dumps(body).encode()
    return client.post(url, content=content, headers=headers)


# UserFlux
def uf_headers(key: str = KEYS.userflux_api_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def uf_event(**over: Any) -> dict[str, Any]:
    base = {
        "name": "page_view",
        "timestamp": 1_700_000_000_000,
        "anonymousId": "anon-1",
        "properties": {"path": "/"},
    }
    return merged(base, over)


def uf_url(sb: Sandbox, batch: bool = False) -> str:
    return sb.base_url("userflux") + ("/event/ingest/batch" if batch else "/event/ingest")


# FloKit
def fk_headers(key: str = KEYS.flokit_api_key, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **extra}


def fk_event(**over: Any) -> dict[str, Any]:
    base = {
        "event": "paywall_viewed",
        "user_id": "usr_abc123",
        "timestamp": "2024-03-15T14:22:00Z",
        "properties": {"paywall_id": "pw_1"},
    }
    return merged(base, over)


def fk_url(sb: Sandbox, batch: bool = False) -> str:
    return sb.base_url("flokit") + ("/v1/batch/events" if batch else "/v1/events")


# Flameup
def fu_headers(key: str = KEYS.flameup_api_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def fu_event(**over: Any) -> dict[str, Any]:
    base = {
        "userId": "user-1",
        "event": "page_view",
        "properties": {"path": "/"},
        "timestamp": "2024-12-25T10:00:00Z",
    }
    return merged(base, over)


def fu_url(sb: Sandbox, workspace: str = KEYS.flameup_workspace_id) -> str:
    return f"{sb.base_url('flameup')}/workspaces/{workspace}/events"


# Flywheel
def fw_headers(key: str = KEYS.flywheel_api_key, auth_type: str | None = "api") -> dict[str, str]:
    headers = {"Authorization": key, "Content-Type": "application/json"}
    if auth_type is not None:
        headers["Auth-Type"] = auth_type
    return headers


def fw_event(**over: Any) -> dict[str, Any]:
    base = {
        "event": "product_purchased",
        "user_id": "user456",
        "timestamp": "2024-01-15T10:30:00Z",
        "event_id": "evt_1",
        "properties": {"price": 99.99, "plan": "premium", "trial": False},
    }
    return merged(base, over)


def fw_url(sb: Sandbox) -> str:
    return sb.base_url("flywheel") + "/v1/events"


# Klaviyo
def kl_headers(
    revision: str | None = DEFAULT_KLAVIYO_REVISION,
    content_type: str = "application/vnd.api+json",
) -> dict[str, str]:
    headers = {"Content-Type": content_type, "Accept": "application/vnd.api+json"}
    if revision is not None:
        headers["revision"] = revision
    return headers


def kl_event(name: str = "Viewed Page", unique_id: Any = "u-1", **over: Any) -> dict[str, Any]:
    attrs = {
        "metric": {"data": {"type": "metric", "attributes": {"name": name}}},
        "properties": {"path": "/"},
        "time": "2024-03-15T14:22:00Z",
        "value": 9.99,
        "value_currency": "USD",
        "unique_id": unique_id,
    }
    return {"type": "event", "attributes": merged(attrs, over)}


def kl_body(events: list[dict[str, Any]] | None = None, **profile: Any) -> dict[str, Any]:
    attrs = merged({"external_id": "user-1", "anonymous_id": "anon-1"}, profile)
    return {
        "data": {
            "type": "event-bulk-create",
            "attributes": {
                "profile": {"data": {"type": "profile", "attributes": attrs}},
                "events": {"data": events if events is not None else [kl_event()]},
            },
        }
    }


def kl_url(sb: Sandbox, company_id: str | None = KEYS.klaviyo_company_id) -> str:
    url = sb.base_url("klaviyo") + "/client/event-bulk-create/"
    return url if company_id is None else f"{url}?company_id={company_id}"
