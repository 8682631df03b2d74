"""Flywheel Track User Event: one event per request, ``{"event": {...}}`` to ``/v1/events``.

Spec: shared/providers/003 (Flywheel — Track user event). Auth is the bare key in ``Authorization``
("without 'Bearer ' prefix") plus ``Auth-Type: api``. Event names must match ``^[a-zA-Z0-9_-]+$``
and property values must be strings, numbers or booleans, so names are sanitised and properties
flattened here. ``event_id`` (our event id) lets Flywheel drop a retried duplicate; ``identify: true``
on identify events makes Flywheel update the profile from their properties (the traits).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from ..events import Event
from ..normalize import JSONValue
from ._http import COMMON_OPTIONS, read_http_options
from .base import (
    Batch,
    HttpProvider,
    HttpRequest,
    Limits,
    SkipEvent,
    dumps,
    iso_utc,
    payload_properties,
    put_ids,
)

DEFAULT_URL = "https://api.flywheel.cx"
# No published rate limit or body limit: single-event requests overlap (8 in flight) and stay
# under 1 MB, the usual default of HTTP front ends.
LIMITS = Limits(max_events=1, max_bytes=1_000_000, max_in_flight=8)

_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9_-]+")

Scalar = str | int | float | bool


def sanitize_name(name: str) -> str:
    """The name made to fit ``^[a-zA-Z0-9_-]+$``: ``"Page Viewed!"`` → ``"Page_Viewed"``.

    Each run of other characters becomes one ``_``; leading and trailing ``_`` are stripped. The
    result may be empty (nothing usable was left).
    """
    return _NOT_ALLOWED.sub("_", name).strip("_")


def flatten_properties(properties: Mapping[str, JSONValue]) -> dict[str, Scalar]:
    """Scalar-only properties: nested objects become dotted keys, lists JSON strings, ``None`` goes.

    ``{"a": {"b": 1}, "tags": ["x"], "gone": None}`` → ``{"a.b": 1, "tags": '["x"]'}``. Where two
    paths meet on one dotted key (``{"a.b": 1, "a": {"b": 2}}``) the later one wins.
    """
    flat: dict[str, Scalar] = {}
    _flatten_into(flat, "", properties)
    return flat


def _flatten_into(flat: dict[str, Scalar], prefix: str, mapping: Mapping[str, JSONValue]) -> None:
    # Depth is bounded by the event's normalisation (``max_depth``), so recursion is safe.
    for key, value in mapping.items():
        name = prefix + key
        if value is None:
            continue
        if isinstance(value, Mapping):
            _flatten_into(flat, name + ".", value)
        elif isinstance(value, (list, tuple)):
            flat[name] = dumps(value).decode()
        else:
            flat[name] = value


class Flywheel(HttpProvider):
    """Sends to Flywheel with ``Authorization: <key>`` (no ``Bearer``) and ``Auth-Type: api``::

    evmiddleware.configure(flywheel_api_key="…")
    """

    name: ClassVar[str] = "flywheel"
    options: ClassVar[tuple[str, ...]] = COMMON_OPTIONS
    key_setting: ClassVar[str] = "EVMIDDLEWARE_FLYWHEEL_API_KEY (sent without 'Bearer ')"

    def __init__(self, api_key: str, *, base_url: str = DEFAULT_URL, limits: Limits = LIMITS) -> None:
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.limits = limits

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Flywheel | None:
        common = read_http_options("flywheel", options, default_url=DEFAULT_URL, limits=LIMITS)
        if common is None:
            return None
        return cls(common.api_key, base_url=common.base_url, limits=common.limits)

    def encode(self, event: Event) -> bytes:
        name = sanitize_name(event.name)
        if not name:
            raise SkipEvent(
                "invalid_name", f"event name {event.name[:60]!r} has no character Flywheel accepts"
            )
        body: dict[str, Any] = {
            "event": name,
            "event_id": event.id,
            "timestamp": iso_utc(event.timestamp),
        }
        put_ids(body, event, "user_id", "anonymous_id")
        if event.kind == "identify":
            body["identify"] = True
        body["properties"] = flatten_properties(payload_properties(event))
        return dumps({"event": body})

    def build_request(self, batch: Batch) -> HttpRequest:
        return HttpRequest(
            "POST",
            f"{self.base_url}/v1/events",
            {"Authorization": self._api_key, "Auth-Type": "api", "Content-Type": "application/json"},
            batch.data,
        )

    def secrets(self) -> tuple[str, ...]:
        return (self._api_key,)

    def describe(self) -> str:
        return f"flywheel → {self.base_url}/v1/events"
