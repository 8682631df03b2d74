"""Make property values JSON-safe once, on the caller's thread, so nothing downstream can fail on them.

The common case (a flat dict of str, int, float, bool, None) is a copy, a loop over its values' types
and one JSON call that checks the rest and measures it; anything else takes the recursive path, which
converts known types and drops the rest key by key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from ._json import dumps, flat_json_size
from ._log import limited
from .errors import EventError

JSONValue = Any  # str | int | float | bool | None | list[JSONValue] | dict[str, JSONValue]

#: Values ``flat_copy`` takes as they are (floats too, when finite).
_PLAIN = frozenset((str, int, bool, type(None)))
_DROP = object()

DropCallback = Callable[[str, str], None]
"""Called with (dotted key, why) for each value that was dropped."""


def warn_dropped_property(key: str, why: str) -> None:
    """The library's :data:`DropCallback`: a warning naming the key (rate-limited per key)."""
    limited.log(logging.WARNING, f"property:{key}", "evmiddleware: property %r dropped: %s", key, why)


def normalize_properties(
    properties: Mapping[str, Any] | None,
    max_depth: int,
    max_bytes: int,
    on_drop: DropCallback,
) -> dict[str, JSONValue]:
    """Return a JSON-safe copy of ``properties`` or raise :class:`EventError` (too deep or too large)."""
    copied = flat_copy(properties, max_bytes)
    if copied is not None:
        return copied
    if type(properties) is not dict and not isinstance(properties, Mapping):
        raise EventError(
            "invalid_properties", f"properties must be a mapping, not {type(properties).__name__}"
        )
    converted = _convert(properties, "", 1, max_depth, on_drop, set())
    if not isinstance(converted, dict):
        raise EventError("invalid_properties", f"properties ({type(properties).__name__}) could not be read")
    _check_size(converted, max_bytes)
    return converted


def flat_copy(properties: Mapping[str, Any] | None, max_bytes: int) -> dict[str, JSONValue] | None:
    """The common case of :func:`normalize_properties` alone: a copy of a flat mapping of str keys
    and str, int, finite float, bool and None values whose JSON fits ``max_bytes``; ``None`` for
    anything else (then :func:`normalize_properties` decides). ``track()`` calls it directly.
    """
    if not properties:
        return {}
    if type(properties) is not dict and not isinstance(properties, Mapping):  # ABC check: 0.2 µs
        return None
    copied = dict(properties)  # checked below, so another thread's change cannot slip in unchecked
    # Exact ``type`` checks on purpose (no subclasses, Enums): the slow path converts those. A float
    # minus itself is 0.0 unless it is NaN or infinite (then NaN, which is true).
    for value in copied.values():
        if type(value) not in _PLAIN and (type(value) is not float or value - value):
            return None
    # One C call checks the rest (keys, ints' range, UTF-8) and measures exactly: checking each value
    # in this loop cost the caller 0.5 µs more for a request event's six properties.
    size = flat_json_size(copied)
    return copied if size is not None and size <= max_bytes else None


def encodes_as_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _check_size(value: dict[str, JSONValue], max_bytes: int) -> None:
    try:
        size = len(dumps(value))
    except ValueError as exc:  # an int of over 4,300 digits, a lone surrogate (UnicodeEncodeError)
        raise EventError("invalid_properties", f"properties cannot be sent as JSON: {exc}") from None
    if size > max_bytes:
        raise EventError("too_large", f"properties take {size} bytes of JSON, over the limit of {max_bytes}")


def _convert(
    value: Any, path: str, depth: int, max_depth: int, on_drop: DropCallback, seen: set[int]
) -> JSONValue:
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, Enum):
        return _convert(value.value, path, depth, max_depth, on_drop, seen)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        on_drop(path, "not a finite number")
        return _DROP
    if isinstance(value, Decimal):
        if not value.is_finite():
            on_drop(path, "not a finite number")
            return _DROP
        # int() of Decimal("1e999999") takes 30 s on the caller's thread: exact ints only to 20 digits.
        if value.adjusted() < 20 and value == value.to_integral_value():
            return int(value)
        number = float(value)
        if not math.isfinite(number):
            on_drop(path, "out of range for a JSON number")
            return _DROP
        return number
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    try:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return _convert_dataclass(value, path, depth, max_depth, on_drop, seen)
        if isinstance(value, (Mapping, list, tuple, set, frozenset)):
            return _convert_container(value, path, depth, max_depth, on_drop, seen)
    except EventError:
        raise
    except Exception as exc:  # the value's own code failed: a property getter, __iter__, a set item's repr
        on_drop(path, f"{type(value).__name__} could not be read ({type(exc).__name__})")
        return _DROP
    on_drop(path, f"{type(value).__name__} is not JSON-safe")
    return _DROP


def _convert_dataclass(
    value: Any, path: str, depth: int, max_depth: int, on_drop: DropCallback, seen: set[int]
) -> JSONValue:
    """A dataclass instance as the dict of its fields. The instance itself is what may come round
    again (``node.parent.child``), not the new dict: it is what the cycle check must know."""
    fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return _convert_container(fields, path, depth, max_depth, on_drop, seen, marker=id(value))


def _convert_container(
    value: Any,
    path: str,
    depth: int,
    max_depth: int,
    on_drop: DropCallback,
    seen: set[int],
    marker: int | None = None,
) -> JSONValue:
    """``marker``: the identity to check for cycles, when ``value`` is a stand-in made for this call."""
    if depth > max_depth:
        raise EventError("too_deep", f"properties nest deeper than {max_depth} levels at {path or 'top'}")
    if marker is None:
        marker = id(value)
    if marker in seen:
        on_drop(path, "cyclic reference")
        return _DROP
    seen.add(marker)
    try:
        if isinstance(value, Mapping):
            out: dict[str, JSONValue] = {}
            for raw_key, item in value.items():
                key = raw_key.value if isinstance(raw_key, Enum) else raw_key
                if not isinstance(key, (str, int, float, bool)):
                    on_drop(f"{path}.{key!r}" if path else repr(key), "key is not a string")
                    continue
                name = str(key)
                sub = f"{path}.{name}" if path else name
                converted = _convert(item, sub, depth + 1, max_depth, on_drop, seen)
                if converted is not _DROP:
                    out[name] = converted
            return out
        items: list[JSONValue] = []
        iterable = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        for index, item in enumerate(iterable):
            converted = _convert(item, f"{path}[{index}]", depth + 1, max_depth, on_drop, seen)
            if converted is not _DROP:
                items.append(converted)
        return items
    finally:
        seen.discard(marker)
