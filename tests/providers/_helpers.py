"""Builders shared by the provider tests: events, batches and hand-made HTTP answers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from evmiddleware.events import Event
from evmiddleware.providers.base import Batch, Encoded, HttpProvider, SendResult

UTC = dt.timezone.utc
WHEN = dt.datetime(2024, 3, 15, 14, 22, tzinfo=UTC)


def event(
    name: str = "page_viewed",
    properties: Mapping[str, Any] | None = None,
    *,
    user_id: str | None = "usr_abc123",
    anonymous_id: str | None = None,
    timestamp: dt.datetime = WHEN,
    context: Mapping[str, Any] | None = None,
    kind: str = "track",
    aliases: Mapping[str, str] | None = None,
    id: str = "0b6f1d4e-2c1a-4c55-9f1e-7a1d2b3c4d5e",
) -> Event:
    return Event(
        id, name, user_id, anonymous_id, timestamp, dict(properties or {}), context or {}, kind, aliases or {}
    )


def batch_of(items: list[Encoded], group: str | None, key: str) -> Batch:
    """A batch of events encoded one by one, as the lane builds it."""
    return Batch(items, group, key, b",".join(item.data for item in items))


def batch(provider: HttpProvider, *events: Event, key: str = "batch-key-1") -> Batch:
    items = [Encoded(e, provider.encode(e)) for e in events]
    return batch_of(items, provider.group_key(events[0]), key)


def body(provider: HttpProvider, *events: Event) -> Any:
    """The decoded JSON body of the request carrying ``events``."""
    return json.loads(provider.build_request(batch(provider, *events)).content)


def encoded(provider: HttpProvider, e: Event) -> Any:
    return json.loads(provider.encode(e))


def response(
    status: int, payload: Any = None, *, headers: Mapping[str, str] | None = None, text: str | None = None
) -> httpx.Response:
    request = httpx.Request("POST", "https://provider.invalid/")
    if payload is not None:
        return httpx.Response(status, json=payload, headers=headers, request=request)
    return httpx.Response(status, text=text or "", headers=headers, request=request)


def send_through(
    provider: HttpProvider, the_batch: Batch, answer: Callable[[httpx.Request], httpx.Response]
) -> tuple[SendResult, list[httpx.Request]]:
    """``provider.send`` over an in-memory transport: what went on the wire, and the result."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return answer(request)

    async def run() -> SendResult:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await provider.send(the_batch, client)

    return asyncio.run(run()), seen
