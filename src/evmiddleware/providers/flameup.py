"""Flameup Track event: one event per request to ``{base}/workspaces/{workspace_id}/events``.

Spec: shared/providers/002 (Flameup — Track event). ``userId`` is required, so an event without a
user id is skipped (``no_user_id``) unless ``flameup_anonymous_as_user_id`` sends the anonymous id in
its place. Beyond the file, from Flameup's own pages: 120 requests a minute per API key (rate-limit
page), validation errors are 422 with ``error.details.fields`` (errors page), and 429 answers carry
``X-RateLimit-Reset`` as a Unix timestamp, used when ``Retry-After`` is absent.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from .._log import redact
from .._parse import parse_bool
from ..errors import ConfigurationError
from ..events import Event
from ._http import COMMON_OPTIONS, read_http_options
from .base import (
    Batch,
    HttpProvider,
    HttpRequest,
    Limits,
    SendResult,
    SkipEvent,
    dumps,
    iso_utc,
    payload_properties,
)

DEFAULT_URL = "https://api.flameup.ai/api/v1"
# One event per request; no body limit is published, 1 MB is the usual front-end default.
RATE_WINDOW = 60.0
LIMITS = Limits(max_events=1, max_bytes=1_000_000, rate=((120, RATE_WINDOW),), max_in_flight=4)


class Flameup(HttpProvider):
    """Sends to one Flameup workspace with ``Authorization: Bearer <key>``::

    evmiddleware.configure(flameup_api_key="…", flameup_workspace_id="ws_…")
    """

    name: ClassVar[str] = "flameup"
    options: ClassVar[tuple[str, ...]] = (*COMMON_OPTIONS, "workspace_id", "anonymous_as_user_id")
    key_setting: ClassVar[str] = "EVMIDDLEWARE_FLAMEUP_API_KEY"

    def __init__(
        self,
        api_key: str,
        workspace_id: str,
        *,
        base_url: str = DEFAULT_URL,
        limits: Limits = LIMITS,
        anonymous_as_user_id: bool = False,
    ) -> None:
        if not workspace_id or not workspace_id.strip():
            raise ConfigurationError("flameup_workspace_id: a workspace id is required")
        self._api_key = api_key
        self.workspace_id = workspace_id.strip()
        self.base_url = base_url.rstrip("/")
        self.limits = limits
        self.anonymous_as_user_id = anonymous_as_user_id
        self._url = f"{self.base_url}/workspaces/{urllib.parse.quote(self.workspace_id, safe='')}/events"

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Flameup | None:
        common = read_http_options("flameup", options, default_url=DEFAULT_URL, limits=LIMITS)
        if common is None:
            return None
        workspace = str(options.get("workspace_id") or "").strip()
        if not workspace:
            raise ConfigurationError(
                "flameup_workspace_id (EVMIDDLEWARE_FLAMEUP_WORKSPACE_ID) is required when "
                "flameup_api_key is set: events go to /workspaces/{workspace_id}/events"
            )
        try:
            anonymous = parse_bool(options.get("anonymous_as_user_id", False))
        except ValueError as exc:
            raise ConfigurationError(f"flameup_anonymous_as_user_id: {exc}") from None
        return cls(
            common.api_key,
            workspace,
            base_url=common.base_url,
            limits=common.limits,
            anonymous_as_user_id=anonymous,
        )

    def encode(self, event: Event) -> bytes:
        user_id = event.user_id or (event.anonymous_id if self.anonymous_as_user_id else None)
        if not user_id:
            raise SkipEvent("no_user_id", "Flameup requires userId; set flameup_anonymous_as_user_id")
        return dumps(
            {
                "userId": user_id,
                "event": event.name,
                "properties": payload_properties(event),
                "timestamp": iso_utc(event.timestamp),
            }
        )

    def build_request(self, batch: Batch) -> HttpRequest:
        return HttpRequest(
            "POST",
            self._url,
            {"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json"},
            batch.data,
        )

    def interpret(self, response: httpx.Response, batch: Batch) -> SendResult:
        result = super().interpret(response, batch)
        status = response.status_code
        if status == 429 and result.retry_after is None:
            reset = _reset_delay(response.headers.get("x-ratelimit-reset"))
            return dataclasses.replace(result, retry_after=reset) if reset is not None else result
        if status == 422:
            return SendResult("rejected", reason=f"http_422: {self._field_details(response)}")
        if status == 404:
            return dataclasses.replace(
                result, reason=f"{result.reason}; check EVMIDDLEWARE_FLAMEUP_WORKSPACE_ID"
            )
        return result

    def _field_details(self, response: httpx.Response) -> str:
        """``error.details.fields`` as ``field: problem; …``, else the raw error text."""
        try:
            error = response.json().get("error")
            fields = error["details"]["fields"]
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError):
            return self.error_text(response)
        if isinstance(fields, Mapping):
            parts = [f"{name}: {problem}" for name, problem in fields.items()]
        elif isinstance(fields, list):
            parts = [str(item) for item in fields]
        else:
            return self.error_text(response)
        message = error.get("message") if isinstance(error, Mapping) else None
        return redact(f"{message or 'validation failed'} ({'; '.join(parts)})", self.secrets())[:300]

    def secrets(self) -> tuple[str, ...]:
        return (self._api_key,)

    def describe(self) -> str:
        return f"flameup → {self._url}"


def _reset_delay(value: str | None, now: float | None = None) -> float | None:
    """Seconds until ``X-RateLimit-Reset`` (a Unix timestamp), or ``None`` when unreadable.

    Capped at the 60-second window, so a reset sent in another unit cannot stall the lane.
    """
    try:
        reset = float(value) if value else math.nan
    except ValueError:
        return None
    if not math.isfinite(reset):
        return None
    return min(RATE_WINDOW, max(0.0, reset - (time.time() if now is None else now)))
