"""Klaviyo's data limits applied to one event: what is trimmed, what is refused, what goes to the profile.

One event Klaviyo refuses fails the whole request (all of a profile's events), so everything is made
to fit before it is batched. From Klaviyo's documentation: at most 400 properties, nesting depth 10
(a flat object is depth 1), 100 kB per string, metric names under 128 characters; profile ``email``
must be an address and ``phone_number`` E.164, or the request is refused.
"""

from __future__ import annotations

import logging
import re

from .._log import limited
from ..events import MAX_ID_LENGTH, Event
from ..normalize import JSONValue
from .base import SkipEvent, dumps, payload_properties

MAX_METRIC_NAME = 127
MAX_PROPERTIES = 400
MAX_DEPTH = 10
# "100 kB": 100,000 bytes is under the limit whether Klaviyo counts kB as 1,000 or 1,024 bytes.
MAX_STRING_BYTES = 100_000

#: Identify traits copied to the profile, with the check each must pass (Klaviyo refuses the request
#: otherwise; a trait that fails stays an event property only).
# fullmatch, with [0-9]: "$" also matches before a final "\n", and \d takes full-width digits, which
# Klaviyo's E.164 check refuses, losing the profile's events with it.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
PROFILE_TRAITS: dict[str, re.Pattern[str] | None] = {
    "email": _EMAIL,
    "phone_number": _E164,
    "first_name": None,
    "last_name": None,
    "organization": None,
    "title": None,
}


def fit_properties(event: Event) -> dict[str, JSONValue]:
    """The event's properties within Klaviyo's limits.

    Strings over 100 kB are cut (at a character boundary) and objects nested past depth 10 are sent
    as their JSON text, each with a warning; more than 400 properties cannot be trimmed without
    choosing what to lose, so such an event is skipped (``too_many_properties``).
    """
    properties = payload_properties(event)
    if len(properties) > MAX_PROPERTIES:
        raise SkipEvent(
            "too_many_properties", f"{len(properties)} properties; Klaviyo takes at most {MAX_PROPERTIES}"
        )
    trimmed: list[str] = []
    fitted = {key: _fit(value, 2, key, trimmed) for key, value in properties.items()}
    if trimmed:
        limited.log(
            logging.WARNING,
            "klaviyo:trimmed",
            "evmiddleware: klaviyo: trimmed %s to fit Klaviyo's limits (100 kB strings, depth 10)",
            ", ".join(trimmed[:5]),
        )
    return fitted


def _fit(value: JSONValue, depth: int, path: str, trimmed: list[str]) -> JSONValue:
    """``depth``: the nesting depth ``value`` reaches if it is an object or a list."""
    if isinstance(value, str):
        return _cut(value, path, trimmed)
    if isinstance(value, (dict, list)):
        if depth > MAX_DEPTH:
            text = dumps(value).decode()
            trimmed.append(path)
            return _cut(text, path, [])
        if isinstance(value, dict):
            return {k: _fit(v, depth + 1, f"{path}.{k}", trimmed) for k, v in value.items()}
        return [_fit(v, depth + 1, f"{path}[{i}]", trimmed) for i, v in enumerate(value)]
    return value


def _cut(text: str, path: str, trimmed: list[str]) -> str:
    if len(text) * 4 <= MAX_STRING_BYTES:  # no UTF-8 character takes more than 4 bytes
        return text
    data = text.encode()
    if len(data) <= MAX_STRING_BYTES:
        return text
    trimmed.append(path)
    return data[:MAX_STRING_BYTES].decode("utf-8", "ignore")


def profile_traits(event: Event) -> dict[str, str]:
    """Profile attributes from an identify event: its anonymous id (the visitor it ties to the user)
    and the traits Klaviyo's profile takes, when they are strings it will accept."""
    traits: dict[str, str] = {}
    if event.user_id and event.anonymous_id:
        traits["anonymous_id"] = event.anonymous_id
    for name, pattern in PROFILE_TRAITS.items():
        value = event.properties.get(name)
        if not isinstance(value, str):
            continue
        value = value.strip()
        if value and len(value) <= MAX_ID_LENGTH and (pattern is None or pattern.fullmatch(value)):
            traits[name] = value
    return traits
