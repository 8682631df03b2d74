"""Flameup Track event: POST /api/v1/workspaces/{workspaceId}/events, one event, 200.

Error shapes follow Flameup's errors page: ``{"error": {"code", "message"[, "details"]}}``,
422 for field validation with ``details.fields``; its rate-limit page gives the flat 429 body and
says every response carries ``X-RateLimit-Limit/Remaining/Reset`` (reset as a Unix timestamp).
"""

from __future__ import annotations

import math
import re
import time
import urllib.parse
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
from .ratelimit import Decision
from .validation import canonical_json, is_iso_datetime, is_string, parse_json

__all__ = ["FlameupAPI", "field_problems"]

_PATH = re.compile(r"/api/v1/workspaces/([^/]+)/events")
_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}


def field_problems(doc: dict[str, Any]) -> dict[str, str]:
    """Field name -> problem, as Flameup lists them in ``error.details.fields``."""
    problems: dict[str, str] = {}
    for key in ("userId", "event"):
        if key not in doc:
            problems[key] = "Required field"
        elif not is_string(doc[key]):
            problems[key] = "Must be a non-empty string"
    if "properties" in doc and not isinstance(doc["properties"], dict):
        problems["properties"] = "Must be an object"
    # OpenAPI "date-time" is RFC 3339, which requires an offset.
    if "timestamp" in doc and not is_iso_datetime(doc["timestamp"], require_offset=True):
        problems["timestamp"] = "Must be an RFC 3339 date-time"
    return problems


def _rate_headers(decision: Decision) -> dict[str, str]:
    if decision.limit is None:
        return {}
    return {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(math.ceil(time.time() + decision.reset_after)),
    }


class FlameupAPI(ProviderAPI):
    name = "flameup"

    def error(self, status: int, message: str) -> Reply:
        code = _CODES.get(status, "server_error" if status >= 500 else "error")
        return json_reply(status, {"error": {"code": code, "message": message}})

    def throttled(self, retry_after: str, decision: Decision | None = None) -> Reply:
        doc = {"error": "Rate limit exceeded", "message": "Too many requests. Please try again later."}
        reply = json_reply(429, doc)
        if decision is not None:
            reply.headers.update(_rate_headers(decision))
        reply.headers["Retry-After"] = retry_after
        return reply

    def handle(self, req: Request) -> Reply:
        match = _PATH.fullmatch(req.path)
        if match is None:
            return self.error(404, f"No route for {req.path}")
        if req.method != "POST":
            return self.error(405, f"{req.method} is not allowed here")
        token = bearer_token(req)
        if token != self.keys.flameup_api_key:
            return self.error(401, "Invalid or missing API key")
        throttled, decision = self.limited(token, req)
        if throttled is not None:
            return throttled
        # The path arrives as sent, percent-encoded; the workspace id is compared decoded, as the real
        # API does (a client must quote an id such as "team one", and a "/" inside one as %2F).
        reply = self._track(req, urllib.parse.unquote(match.group(1)))
        reply.headers.update(_rate_headers(decision))
        return reply

    def _track(self, req: Request, workspace: str) -> Reply:
        if workspace != self.keys.flameup_workspace_id:
            return self.error(404, f"Workspace '{workspace}' not found")
        if media_type(req) != "application/json":
            return self.error(400, "Content-Type must be application/json")
        try:
            doc = parse_json(req.body)
        except ValueError as exc:
            return self.error(400, str(exc))
        if not isinstance(doc, dict):
            return self.error(400, "Request body must be a JSON object")
        problems = field_problems(doc)
        if problems:
            error = {
                "code": "validation_error",
                "message": "Validation failed",
                "details": {"fields": problems},
            }
            return json_reply(422, {"error": error})
        event_id = new_id("evt_")
        accepted = [Accepted(doc, canonical_json(doc))]
        return json_reply(200, {"success": True, "event_id": event_id}, accepted=accepted)
