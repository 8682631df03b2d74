"""Value checks shared by the provider emulators: JSON, timestamps, types."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "canonical_json",
    "is_iso_datetime",
    "is_number",
    "is_string",
    "json_depth",
    "parse_json",
    "strings_over",
]

# RFC 3339 with 'T' and seconds optional fraction. OpenAPI "date-time" means RFC 3339, which
# requires an offset; "ISO 8601 datetime" without more is taken to allow a local time too. Matched
# whole and with ASCII digits only, as a JSON Schema or JavaScript pattern reads "^\d...$": Python's
# "$" also matches before a final "\n", and its \d takes any Unicode digit (full-width ones too).
_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,9}))?)?"
    r"(Z|z|[+-][0-9]{2}:[0-9]{2}|[+-][0-9]{4})?"
)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, bounded nesting. Raises ValueError."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("body is not UTF-8") from exc
    if not text.strip():
        raise ValueError("body is empty")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at position {exc.pos}") from exc


def canonical_json(value: Any) -> str:
    """One spelling per JSON value, so equal events compare equal whatever their key order."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def is_string(value: Any, *, non_empty: bool = True) -> bool:
    return isinstance(value, str) and (bool(value) or not non_empty)


def is_number(value: Any) -> bool:
    # JSON true/false decode to bool, a subclass of int, and are not numbers on the wire.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_iso_datetime(value: Any, *, require_offset: bool) -> bool:
    """A real calendar date-time in ISO 8601 extended form (the form every client library emits);
    with ``require_offset``, an RFC 3339 date-time: seconds and a ``Z`` or ``±HH:MM`` offset."""
    if not isinstance(value, str):
        return False
    m = _DATETIME.fullmatch(value)
    if m is None:
        return False
    year, month, day, hour, minute = (int(m.group(i)) for i in range(1, 6))
    second = int(m.group(6) or 0)
    offset = m.group(8)
    # RFC 3339 (OpenAPI "date-time") requires the seconds and an offset of Z or +HH:MM; ISO 8601
    # alone also allows them left out, and the basic-format +HHMM.
    if require_offset and (m.group(6) is None or offset is None or len(offset) == 5):  # +HHMM
        return False
    tz = None
    if offset is not None and offset not in ("Z", "z"):
        digits = offset[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            return False
        sign = 1 if offset[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError:
        return False
    return True


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of objects/arrays (a flat object is 1); stops counting past ``limit``."""
    if not isinstance(value, (dict, list)):
        return 0
    if limit <= 0:
        return 1
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((json_depth(c, limit - 1) for c in children), default=0)


def strings_over(value: Any, max_bytes: int) -> bool:
    """Whether any string value (not key) anywhere inside is longer than ``max_bytes`` in UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if len(item.encode("utf-8")) > max_bytes:
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def whole_second_utc(value: str) -> str:
    """An ISO 8601 time that :func:`is_iso_datetime` accepted, as UTC cut to the whole second: how
    Klaviyo keys an event that has no ``unique_id``. Without an offset the time is taken as UTC."""
    m = _DATETIME.fullmatch(value)
    if m is None:
        return value
    year, month, day, hour, minute = (int(m.group(i)) for i in range(1, 6))
    moment = datetime(year, month, day, hour, minute, int(m.group(6) or 0))
    offset = m.group(8)
    if offset is not None and offset not in ("Z", "z"):
        digits = offset[1:].replace(":", "")
        sign = 1 if offset[0] == "+" else -1
        moment -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return moment.isoformat()
