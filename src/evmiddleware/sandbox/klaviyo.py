"""Klaviyo client API: POST /client/event-bulk-create/?company_id=KEY, one profile, 202.

Beyond the spec file, from Klaviyo's documentation: media type ``application/vnd.api+json``
(415 otherwise), ``properties`` and ``metric`` required per event, 5 MB per body, 400 properties,
nesting depth 10, 100 kB per string, metric names under 128 characters, a repeated ``unique_id``
for one profile and metric fails the whole request, E.164 phone numbers, and JSON:API errors
``{"errors": [{"id", "status", "code", "title", "detail", "source"}]}``. Like the real API,
attributes it does not know are refused ("'x' is not a valid field for the resource ...").
"""

from __future__ import annotations

import re
import uuid
from datetime import date
from typing import Any

from .common import Accepted, ProviderAPI, Reply, Request, json_reply, media_type
from .ratelimit import Decision
from .validation import (
    canonical_json,
    is_iso_datetime,
    is_number,
    is_string,
    json_depth,
    parse_json,
    strings_over,
    whole_second_utc,
)

__all__ = ["MAX_BODY_BYTES", "MAX_EVENTS", "KlaviyoAPI"]

PATH = "/client/event-bulk-create/"
MEDIA_TYPE = "application/vnd.api+json"
# Klaviyo writes "5 MB" and "100 kB"; binary units are assumed (the usual server setting).
# Clients should stay under 5,000,000 bytes to be safe either way.
MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_STRING_BYTES = 100 * 1024
MAX_EVENTS = 1000
MAX_PROPERTIES = 400
MAX_DEPTH = 10
MAX_METRIC_NAME = 127
IDENTIFIERS = ("email", "phone_number", "external_id", "anonymous_id", "_kx")
_PROFILE_FIELDS = {
    *IDENTIFIERS,
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
    "location",
    "properties",
}
_EVENT_FIELDS = {"properties", "time", "value", "value_currency", "unique_id", "metric"}
# Matched whole and with ASCII digits only, as the API's "YYYY-MM-DD" and E.164 mean: Python's "$"
# also matches before a final "\n", and its \d takes any Unicode digit (full-width ones too).
_REVISION = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(\.[A-Za-z0-9_-]+)?")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_TITLES = {
    400: ("invalid", "Invalid input."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    413: ("request_too_large", "Request entity too large."),
    415: ("unsupported_media_type", "Unsupported media type."),
    429: ("throttled", "Request was throttled."),
}


class _Invalid(Exception):
    def __init__(self, detail: str, pointer: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.pointer = pointer


def _error(status: int, detail: str, source: dict[str, str] | None = None) -> Reply:
    code, title = _TITLES.get(status, ("error", "An error occurred."))
    item = {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code,
        "title": title,
        "detail": detail,
        "source": source or {"pointer": "/data"},
        "links": {},
        "meta": {},
    }
    return json_reply(status, {"errors": [item]}, content_type=MEDIA_TYPE)


def _obj(parent: dict[str, Any], key: str, pointer: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise _Invalid(f"'{key}' is required and must be an object.", f"{pointer}/{key}")
    return value


def _only(obj: dict[str, Any], allowed: set[str], pointer: str, resource: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _Invalid(f"'{key}' is not a valid field for the resource '{resource}'.", pointer)


def _revision_ok(value: str | None) -> bool:
    m = _REVISION.fullmatch(value or "")
    if m is None:
        return False
    try:
        date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return False
    return True


def _check_profile(attrs: dict[str, Any], ptr: str) -> None:
    _only(attrs, _PROFILE_FIELDS, ptr, "profile")
    for key in _PROFILE_FIELDS - {"location", "properties"}:
        value = attrs.get(key)
        if value is not None and not isinstance(value, str):
            raise _Invalid(f"'{key}' must be a string.", f"{ptr}/{key}")
    for key in ("location", "properties"):
        if attrs.get(key) is not None and not isinstance(attrs[key], dict):
            raise _Invalid(f"'{key}' must be an object.", f"{ptr}/{key}")
    if not any(is_string(attrs.get(k)) for k in IDENTIFIERS):
        raise _Invalid("A profile needs at least one identifier: " + ", ".join(IDENTIFIERS) + ".", ptr)
    if attrs.get("email") and not _EMAIL.fullmatch(attrs["email"]):
        raise _Invalid("Invalid email address.", f"{ptr}/email")
    if attrs.get("phone_number") and not _E164.fullmatch(attrs["phone_number"]):
        raise _Invalid("Invalid phone number format (E.164 expected).", f"{ptr}/phone_number")


def _check_event(item: Any, ptr: str) -> tuple[str, dict[str, Any]]:
    """Validates one event resource; returns its metric name and attributes."""
    if not isinstance(item, dict) or item.get("type") != "event":
        raise _Invalid("Each event must be a resource of type 'event'.", f"{ptr}/type")
    attrs = _obj(item, "attributes", ptr)
    ptr += "/attributes"
    _only(attrs, _EVENT_FIELDS, ptr, "event")
    metric = _obj(_obj(attrs, "metric", ptr), "data", f"{ptr}/metric")
    if metric.get("type") != "metric":
        raise _Invalid("The metric must be a resource of type 'metric'.", f"{ptr}/metric/data/type")
    metric_attrs = _obj(metric, "attributes", f"{ptr}/metric/data")
    name = metric_attrs.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_METRIC_NAME:
        raise _Invalid(
            f"Metric name must be a string of 1 to {MAX_METRIC_NAME} characters.",
            f"{ptr}/metric/data/attributes/name",
        )
    props = _obj(attrs, "properties", ptr)
    if len(props) > MAX_PROPERTIES:
        raise _Invalid(f"At most {MAX_PROPERTIES} properties per event.", f"{ptr}/properties")
    if json_depth(props, MAX_DEPTH) > MAX_DEPTH:
        raise _Invalid(f"Properties nest deeper than {MAX_DEPTH} levels.", f"{ptr}/properties")
    if strings_over(props, MAX_STRING_BYTES):
        raise _Invalid("A property string is longer than 100 kB.", f"{ptr}/properties")
    if "time" in attrs and not is_iso_datetime(attrs["time"], require_offset=False):
        raise _Invalid("'time' must be an ISO 8601 datetime.", f"{ptr}/time")
    if "value" in attrs and not is_number(attrs["value"]):
        raise _Invalid("'value' must be a number.", f"{ptr}/value")
    if "value_currency" in attrs and not isinstance(attrs["value_currency"], str):
        raise _Invalid("'value_currency' must be a string.", f"{ptr}/value_currency")
    if "unique_id" in attrs and not is_string(attrs["unique_id"]):
        raise _Invalid("'unique_id' must be a non-empty string.", f"{ptr}/unique_id")
    return str(name), attrs


def _validate(doc: Any) -> tuple[dict[str, Any], list[Accepted]]:
    if not isinstance(doc, dict):
        raise _Invalid("The request body must be a JSON object.", "/")
    data = _obj(doc, "data", "")
    if data.get("type") != "event-bulk-create":
        raise _Invalid("The resource type must be 'event-bulk-create'.", "/data/type")
    attrs = _obj(data, "attributes", "/data")
    _only(attrs, {"profile", "events"}, "/data/attributes", "event-bulk-create")
    ptr = "/data/attributes/profile/data"
    profile = _obj(_obj(attrs, "profile", "/data/attributes"), "data", "/data/attributes/profile")
    if profile.get("type") != "profile":
        raise _Invalid("The profile must be a resource of type 'profile'.", f"{ptr}/type")
    _check_profile(_obj(profile, "attributes", ptr), f"{ptr}/attributes")
    items = _obj(attrs, "events", "/data/attributes").get("data")
    ptr = "/data/attributes/events/data"
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_EVENTS:
        raise _Invalid(f"'events.data' must be a list of 1 to {MAX_EVENTS} events.", ptr)
    who = canonical_json({k: profile["attributes"].get(k) for k in IDENTIFIERS})
    seen: set[tuple[str, str]] = set()
    accepted = []
    for index, item in enumerate(items):
        metric, event_attrs = _check_event(item, f"{ptr}/{index}")
        unique_id = event_attrs.get("unique_id")
        if unique_id is not None:
            if (metric, unique_id) in seen:
                raise _Invalid(
                    f"Duplicate unique_id {unique_id!r} for metric {metric!r} in one request.",
                    f"{ptr}/{index}/attributes/unique_id",
                )
            seen.add((metric, unique_id))
        # Without a unique_id Klaviyo keys an event on its time to the second.
        if unique_id is not None:
            key = unique_id
        elif "time" in event_attrs:
            key = whole_second_utc(event_attrs["time"])
        else:
            key = canonical_json(item)
        identity = canonical_json([who, metric, key])
        accepted.append(Accepted({**item, "profile": profile}, identity))
    return profile, accepted


class KlaviyoAPI(ProviderAPI):
    name = "klaviyo"

    def error(self, status: int, message: str) -> Reply:
        return _error(status, message)

    def throttled(self, retry_after: str, decision: Decision | None = None) -> Reply:
        reply = _error(429, f"Request was throttled. Expected available in {retry_after} seconds.")
        reply.headers["Retry-After"] = retry_after
        return reply

    def events_in(self, doc: Any, path: str) -> int:
        try:
            items = doc["data"]["attributes"]["events"]["data"]
        except (KeyError, TypeError):
            return 0
        return len(items) if isinstance(items, list) else 0

    def handle(self, req: Request) -> Reply:
        if req.path != PATH:
            return _error(404, f"No route for {req.path}")
        if req.method != "POST":
            return _error(405, f"{req.method} is not allowed here")
        if len(req.body) > MAX_BODY_BYTES:
            return _error(413, f"The request body is larger than {MAX_BODY_BYTES} bytes.")
        company = req.query.get("company_id", [])
        if len(company) != 1 or company[0] != self.keys.klaviyo_company_id:
            # A private pk_ key gets exactly this answer too: it is not a company id.
            return _error(400, "Invalid Company ID", {"parameter": "company_id"})
        throttled, _ = self.limited(company[0], req)
        if throttled is not None:
            return throttled
        revision = req.header("revision")
        if revision is None:
            return _error(400, "Missing required header: revision", {"header": "revision"})
        if not _revision_ok(revision):
            return _error(400, "Invalid revision: expected YYYY-MM-DD[.suffix]", {"header": "revision"})
        if media_type(req) != MEDIA_TYPE:
            return _error(415, f"Content-Type must be {MEDIA_TYPE}", {"header": "Content-Type"})
        try:
            doc = parse_json(req.body)
        except ValueError as exc:
            return _error(400, f"Malformed JSON: {exc}")
        try:
            _, accepted = _validate(doc)
        except _Invalid as exc:
            return _error(400, exc.detail, {"pointer": exc.pointer})
        return Reply(202, accepted=accepted)
