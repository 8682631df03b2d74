"""Parsers for setting values: each accepts the environment's string or an already typed value."""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import Any

from .errors import ConfigurationError


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not a boolean (use 1/0, true/false)")


def positive_float(value: Any) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"{value!r} must be a positive number")
    return number


def positive_int(value: Any) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"{value!r} must be a positive whole number")
    return number


def csv_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(str(part) for part in value)


def overflow_policy(value: Any) -> str:
    text = str(value).strip().lower().replace("-", "_")
    if text not in ("drop_newest", "drop_oldest"):
        raise ValueError(f"{value!r} is not an overflow policy (drop_newest or drop_oldest)")
    return text


def optional_str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def parse_rate(value: Any) -> tuple[tuple[int, float], ...]:
    """``"10/1,150/60"`` (requests/seconds windows) or a sequence of pairs."""
    if isinstance(value, str):
        pairs = []
        for part in value.split(","):
            count, _, window = part.strip().partition("/")
            pairs.append((int(count), float(window or 1)))
        value = pairs
    result = tuple((int(count), float(window)) for count, window in value)
    if any(count <= 0 or window <= 0 for count, window in result):
        raise ValueError(f"{value!r}: counts and windows must be positive")
    return result


def check_base_url(url: str, setting: str) -> str:
    """https only; plain http only to a loopback address (sandboxes and tests)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "https" and parsed.hostname:
        return url.rstrip("/")
    if parsed.scheme == "http" and parsed.hostname:
        host = parsed.hostname
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if loopback:
            return url.rstrip("/")
        raise ConfigurationError(f"{setting}: plain http is allowed only to a loopback address, not {host}")
    raise ConfigurationError(f"{setting}: {url!r} is not an https URL")
