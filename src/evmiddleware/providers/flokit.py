"""FloKit Events API: batches of up to 1,000 to ``/v1/batch/events``, 100 requests a minute.

Spec: shared/providers/001 (FloKit — Events API). The batch answer lists refused events in
``errors[{index, reason}]`` and keeps the accepted ones, so only the listed ones are reported as
rejected and nothing is sent again. ``Idempotency-Key`` (deduplicated 24 h by FloKit) is the batch
key, identical on every retry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from .._log import logger, redact
from ..events import Event
from ._http import COMMON_OPTIONS, read_http_options
from .base import (
    Batch,
    HttpProvider,
    HttpRequest,
    Limits,
    SendResult,
    SkipEvent,
    iso_utc,
    payload_properties,
    put_ids,
)

DEFAULT_URL = "https://api.flokit.ai"
LIMITS = Limits(max_events=1000, max_bytes=5_000_000, rate=((100, 60.0),), max_in_flight=2)


class FloKit(HttpProvider):
    name: ClassVar[str] = "flokit"
    options: ClassVar[tuple[str, ...]] = COMMON_OPTIONS
    key_setting: ClassVar[str] = "EVMIDDLEWARE_FLOKIT_API_KEY"

    def __init__(self, api_key: str, *, base_url: str = DEFAULT_URL, limits: Limits = LIMITS) -> None:
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.limits = limits

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FloKit | None:
        common = read_http_options("flokit", options, default_url=DEFAULT_URL, limits=LIMITS)
        if common is None:
            return None
        return cls(common.api_key, base_url=common.base_url, limits=common.limits)

    def wire(self, event: Event) -> dict[str, Any]:
        if not event.user_id and not event.anonymous_id:
            raise SkipEvent("no_identity", "FloKit needs a user id or an anonymous id")
        body: dict[str, Any] = {"event": event.name, "timestamp": iso_utc(event.timestamp)}
        put_ids(body, event, "user_id", "anonymous_id")
        body["properties"] = payload_properties(event)
        return body

    def build_request(self, batch: Batch) -> HttpRequest:
        return HttpRequest(
            "POST",
            f"{self.base_url}/v1/batch/events",
            {
                "Authorization": f"Bearer {self._api_key}",
                "Content-Type": "application/json",
                "Idempotency-Key": batch.key,
            },
            b"".join((b'{"events":[', batch.data, b"]}")),  # one copy of the body, where + makes two
        )

    def interpret(self, response: httpx.Response, batch: Batch) -> SendResult:
        result = super().interpret(response, batch)
        if result.outcome != "ok":
            return result
        try:
            answer = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            # A 200 means FloKit stored the batch; an unreadable body only hides per-event errors.
            logger.warning("FloKit answered %s with a body that is not JSON", response.status_code)
            return result
        rejected: dict[int, str] = {}
        errors = answer.get("errors") if isinstance(answer, dict) else None
        for error in errors if isinstance(errors, list) else ():
            if isinstance(error, dict) and isinstance(error.get("index"), int):
                index = error["index"]
                if 0 <= index < len(batch.items):
                    # "invalid_event" is the counter key; FloKit's own reason follows for the report.
                    reason = str(error.get("reason") or "rejected by FloKit")
                    rejected[index] = f"invalid_event: {redact(reason, self.secrets())[:300]}"
        return SendResult("ok", rejected=rejected) if rejected else result

    def secrets(self) -> tuple[str, ...]:
        return (self._api_key,)

    def describe(self) -> str:
        return f"flokit → {self.base_url}/v1/batch/events"
