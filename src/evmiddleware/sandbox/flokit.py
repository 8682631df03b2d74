"""FloKit Events API: POST /v1/events and /v1/batch/events (≤ 1,000, partial acceptance)."""

from __future__ import annotations

from typing import Any

from .common import (
    Accepted,
    ProviderAPI,
    Reply,
    Request,
    bearer_token,
    json_reply,
    media_type,
    new_id,
)
from .validation import canonical_json, is_iso_datetime, is_string, parse_json

__all__ = ["IDEMPOTENCY_SECONDS", "MAX_BATCH", "FloKitAPI"]

MAX_BATCH = 1000
# FloKit's page: a request's Idempotency-Key is "deduplicated within 24 hours".
IDEMPOTENCY_SECONDS = 24 * 3600.0
_SINGLE = "/v1/events"
_BATCH = "/v1/batch/events"
_ERROR_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    429: "rate_limit_exceeded",
}


def event_problem(event: Any) -> str | None:
    """Why a FloKit event is invalid, or None."""
    if not isinstance(event, dict):
        return "event must be an object"
    if not is_string(event.get("event")):
        return "event is required and must be a non-empty string"
    if "timestamp" not in event:
        return "timestamp is required"
    # The spec says only "ISO 8601 datetime", so a local time without offset is allowed.
    if not is_iso_datetime(event["timestamp"], require_offset=False):
        return "timestamp must be an ISO 8601 datetime string"
    for key in ("user_id", "anonymous_id"):
        if key in event and not is_string(event[key]):
            return f"{key} must be a non-empty string"
    if "user_id" not in event and "anonymous_id" not in event:
        return "one of user_id or anonymous_id is required"
    if "properties" in event and not isinstance(event["properties"], dict):
        return "properties must be an object"
    return None


class FloKitAPI(ProviderAPI):
    name = "flokit"
    batch_path = _BATCH
    throttle_message = "Rate limit exceeded: at most 100 requests per minute"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # key -> (arrival on the sandbox clock, the first answer's body), oldest first
        self._idempotent: dict[str, tuple[float, bytes]] = {}

    def reset(self) -> None:
        self._idempotent.clear()

    def error(self, status: int, message: str) -> Reply:
        code = _ERROR_CODES.get(status, "validation_error" if status == 422 else "server_error")
        return json_reply(status, {"error": code, "message": message})

    def handle(self, req: Request) -> Reply:
        if req.path not in (_SINGLE, _BATCH):
            return self.error(404, f"No route for {req.path}")
        if req.method != "POST":
            return self.error(405, f"{req.method} is not allowed here")
        token = bearer_token(req)
        if token == self.keys.flokit_read_only_key:
            return self.error(403, "This API key is read-only and cannot send events")
        if token != self.keys.flokit_api_key:
            return self.error(401, "Missing or invalid API key")
        throttled, _ = self.limited(token, req)
        if throttled is not None:
            return throttled
        idem = req.header("idempotency-key")
        if idem is not None:
            if not idem.strip():
                return self.error(400, "Idempotency-Key must not be empty")
            self._forget_expired(req.arrival)
            original = self._idempotent.get(idem)
            if original is not None:
                return Reply(200, original[1], "application/json", idempotent_replay=True)
        reply = self._ingest(req)
        if idem is not None and reply.status == 200:
            # Only a success is remembered: a refused request may be fixed and retried.
            self._idempotent[idem] = (req.arrival, reply.body)
        return reply

    def _forget_expired(self, now: float) -> None:
        # Arrivals are stamped in order under the sandbox lock and an expired key is deleted before
        # it is stored again, so the dict stays oldest first: the expired keys are at its front.
        while self._idempotent:
            key, (stored, _) = next(iter(self._idempotent.items()))
            if now - stored < IDEMPOTENCY_SECONDS:
                return
            del self._idempotent[key]

    def _ingest(self, req: Request) -> Reply:
        if media_type(req) != "application/json":
            return self.error(400, "Content-Type must be application/json")
        try:
            doc = parse_json(req.body)
        except ValueError as exc:
            return self.error(400, str(exc))
        if req.path == _SINGLE:
            problem = event_problem(doc)
            if problem is not None:
                return json_reply(400, {"error": "validation_error", "message": problem})
            event_id = new_id("evt_")
            accepted = [Accepted(doc, canonical_json(doc))]
            return json_reply(200, {"status": "ok", "event_id": event_id}, accepted=accepted)
        if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
            return self.error(400, "body must be an object with an 'events' array")
        events = doc["events"]
        if not 1 <= len(events) <= MAX_BATCH:
            return self.error(400, f"events must hold 1 to {MAX_BATCH} items, got {len(events)}")
        accepted = []
        event_ids = []
        errors = []
        for index, event in enumerate(events):
            problem = event_problem(event)
            if problem is None:
                accepted.append(Accepted(event, canonical_json(event)))
                event_ids.append(new_id("evt_"))
            else:
                errors.append({"index": index, "reason": problem})
        answer = {
            "status": "ok",
            "accepted": len(accepted),
            "rejected": len(errors),
            "event_ids": event_ids,
            "errors": errors,
        }
        return json_reply(200, answer, accepted=accepted, rejected_events=len(errors))
