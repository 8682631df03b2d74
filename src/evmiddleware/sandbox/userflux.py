"""UserFlux Integration API: POST /event/ingest and /event/ingest/batch (≤ 50 events), 204.

The spec names no error bodies; errors here are ``{"error": reason, "message": detail}``.
A batch with one bad event is refused whole: the spec documents no partial acceptance.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from .common import Accepted, ProviderAPI, Reply, Request, bearer_token, json_reply, media_type
from .validation import canonical_json, is_number, is_string, parse_json

__all__ = ["MAX_BATCH", "UserFluxAPI"]

MAX_BATCH = 50
_SINGLE = "/event/ingest"
_BATCH = "/event/ingest/batch"


def event_problem(event: Any) -> str | None:
    """Why an ingest event is invalid, or None."""
    if not isinstance(event, dict):
        return "event must be an object"
    if not is_string(event.get("name")):
        return "name is required and must be a non-empty string"
    if "timestamp" in event and not is_number(event["timestamp"]):
        return "timestamp must be a number (epoch milliseconds)"
    for key in ("userId", "anonymousId"):
        if key in event and not isinstance(event[key], str):
            return f"{key} must be a string"
    if "properties" in event and not isinstance(event["properties"], dict):
        return "properties must be an object"
    return None


class UserFluxAPI(ProviderAPI):
    name = "userflux"
    batch_path = _BATCH

    def error(self, status: int, message: str) -> Reply:
        return json_reply(status, {"error": HTTPStatus(status).phrase, "message": message})

    def handle(self, req: Request) -> Reply:
        if req.path not in (_SINGLE, _BATCH):
            return self.error(404, f"Cannot {req.method} {req.path}")
        if req.method != "POST":
            return self.error(405, f"{req.method} is not allowed here")
        token = bearer_token(req)
        if token != self.keys.userflux_api_key:
            return self.error(401, "Missing or invalid write-only API key")
        # No published limit: this only bites when a test sets one through ``rate_limits``.
        throttled, _ = self.limited(token, req)
        if throttled is not None:
            return throttled
        if media_type(req) != "application/json":
            return self.error(400, "Content-Type must be application/json")
        enrich = req.query.get("locationEnrichment")
        if enrich is not None and (len(enrich) != 1 or enrich[0] not in ("true", "false")):
            return self.error(400, "locationEnrichment must be true or false")
        try:
            doc = parse_json(req.body)
        except ValueError as exc:
            return self.error(400, str(exc))
        if req.path == _SINGLE:
            events = [doc]
        else:
            if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
                return self.error(400, "body must be an object with an 'events' array")
            events = doc["events"]
            if not 1 <= len(events) <= MAX_BATCH:
                return self.error(400, f"events must hold 1 to {MAX_BATCH} items")
        for index, event in enumerate(events):
            problem = event_problem(event)
            if problem is not None:
                where = f"events[{index}]: " if req.path == _BATCH else ""
                return self.error(400, where + problem)
        accepted = [Accepted(e, canonical_json(e)) for e in events]
        return Reply(204, accepted=accepted)
