"""Flywheel Track User Event: POST /v1/events with ``{"event": {...}}``, 200.

Auth is the bare key in ``Authorization`` (the spec: "without 'Bearer ' prefix") plus
``Auth-Type: api``. The spec gives no 401 body; ``{"error", "code": "UNAUTHORIZED"}`` is used,
in the shape of its documented 400.
"""

from __future__ import annotations

import re
from typing import Any

from .common import Accepted, ProviderAPI, Reply, Request, json_reply, media_type
from .validation import canonical_json, is_iso_datetime, is_number, is_string, parse_json

__all__ = ["FlywheelAPI", "event_problem"]

_PATH = "/v1/events"
# Matched whole: "$" would also match before a final "\n", which the spec's pattern refuses.
_NAME = re.compile(r"[a-zA-Z0-9_-]+")
_CODES = {401: "UNAUTHORIZED", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 429: "RATE_LIMITED"}


def event_problem(event: Any) -> str | None:
    """Why the inner event object is invalid, or None (message after "Validation failed: ")."""
    if not isinstance(event, dict):
        return "event must be an object"
    name = event.get("event")
    if name is None:
        return "event name is required"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return "event name must match ^[a-zA-Z0-9_-]+$"
    for key in ("user_id", "anonymous_id", "event_id"):
        if key in event and not is_string(event[key]):
            return f"{key} must be a non-empty string"
    if "timestamp" in event and not is_iso_datetime(event["timestamp"], require_offset=True):
        return "timestamp must be an ISO 8601 date-time with a timezone offset"
    if "identify" in event and not isinstance(event["identify"], bool):
        return "identify must be a boolean"
    if "properties" in event:
        props = event["properties"]
        if not isinstance(props, dict):
            return "properties must be an object"
        for key, value in props.items():
            if not (isinstance(value, (str, bool)) or is_number(value)):
                return f"property {key!r} must be a string, number or boolean"
    return None


class FlywheelAPI(ProviderAPI):
    name = "flywheel"

    def error(self, status: int, message: str) -> Reply:
        code = _CODES.get(status, "VALIDATION_ERROR" if status < 500 else "INTERNAL_ERROR")
        return json_reply(status, {"error": message, "code": code})

    def events_in(self, doc: Any, path: str) -> int:
        return 1 if isinstance(doc, dict) and isinstance(doc.get("event"), dict) else 0

    def handle(self, req: Request) -> Reply:
        if req.path != _PATH:
            return self.error(404, f"No route for {req.path}")
        if req.method != "POST":
            return self.error(405, f"{req.method} is not allowed here")
        auth = req.header("authorization")
        if auth is None or auth != self.keys.flywheel_api_key:
            hint = " (send the key without a 'Bearer ' prefix)" if auth and " " in auth else ""
            return self.error(401, "Unauthorized: invalid or missing API key" + hint)
        if req.header("auth-type") != "api":
            return self.error(401, "Unauthorized: the Auth-Type header must be 'api'")
        # No published limit: this only bites when a test sets one through ``rate_limits``.
        throttled, _ = self.limited(auth, req)
        if throttled is not None:
            return throttled
        if media_type(req) != "application/json":
            return self.error(400, "Validation failed: Content-Type must be application/json")
        try:
            doc = parse_json(req.body)
        except ValueError as exc:
            return self.error(400, f"Validation failed: {exc}")
        if not isinstance(doc, dict) or "event" not in doc:
            return self.error(400, "Validation failed: body must be an object with 'event'")
        problem = event_problem(doc["event"])
        if problem is not None:
            return self.error(400, f"Validation failed: {problem}")
        event = doc["event"]
        # Flywheel dedupes on event_id; without one it makes its own, so only an exact repeat
        # of the whole event is a visible duplicate.
        identity = f"id:{event['event_id']}" if "event_id" in event else canonical_json(event)
        return json_reply(
            200,
            {"success": True, "message": "Event tracked successfully"},
            accepted=[Accepted(event, identity)],
        )
