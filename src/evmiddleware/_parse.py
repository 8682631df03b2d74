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


#: The longest duration (seconds) a setting may hold: a year, far below what a thread can wait for a
#: lock or a join (``threading.TIMEOUT_MAX``, which ``shutdown()`` passes with a second added). Beyond
#: that (or at ``inf``) ``shutdown()`` raised ``OverflowError``; ``nan`` compared false everywhere.
MAX_SECONDS = 365 * 24 * 3600.0

#: The most events ``max_queue`` may hold per provider; far above any real need, and small enough for
#: every place the number goes (a spool claim's SQLite ``LIMIT`` overflowed at 2**63).
MAX_QUEUE_LIMIT = 10_000_000


def positive_float(value: Any) -> float:
    """A duration in seconds: positive and finite (at most :data:`MAX_SECONDS`)."""
    number = float(value)
    if not 0 < number <= MAX_SECONDS:  # also false for nan
        raise ValueError(f"{value!r} must be a positive number of seconds, at most {MAX_SECONDS:.0f}")
    return number


def whole_number(value: Any) -> int:
    """An int, or a string or float that is one: ``int()`` alone turned 1.9 into 1 and True into 1."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


def positive_int(value: Any) -> int:
    number = whole_number(value)
    if number <= 0:
        raise ValueError(f"{value!r} must be a positive whole number")
    return number


def queue_size(value: Any) -> int:
    number = positive_int(value)
    if number > MAX_QUEUE_LIMIT:
        raise ValueError(f"{value!r} is more than the most allowed, {MAX_QUEUE_LIMIT:,}")
    return number


def csv_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(str(part) for part in value)


def local_sink_spec(value: Any) -> str:
    """``log``, ``jsonl:PATH``, ``memory`` or ``off``: checked whether or not a provider is configured,
    so a typo fails where it is made, not later in an environment without keys."""
    text = str(value).strip()
    kind, colon, argument = text.partition(":")
    kind = kind.lower()
    if (kind in ("", "log", "memory", "off") and not colon) or (kind == "jsonl" and argument.strip()):
        return text
    raise ValueError(f"{value!r} is not one of log, jsonl:PATH, memory, off")


def optional_seconds(value: Any) -> float | None:
    """A wait in seconds, 0 (no wait) to :data:`MAX_SECONDS`, or ``None`` (the default applies)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number of seconds")
    number = float(value)
    if not 0 <= number <= MAX_SECONDS:  # also false for nan
        raise ValueError(f"{value!r} must be a number of seconds from 0 to {MAX_SECONDS:.0f}")
    return number


def overflow_policy(value: Any) -> str:
    text = str(value).strip().lower().replace("-", "_")
    if text not in ("drop_newest", "drop_oldest"):
        raise ValueError(f"{value!r} is not an overflow policy (drop_newest or drop_oldest)")
    return text


def optional_str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def parse_rate(value: Any) -> tuple[tuple[int, float], ...]:
    """``"10/1,150/60"`` (requests/seconds windows) or a sequence of pairs."""
    pairs = value
    if isinstance(value, str):
        pairs = []
        for part in value.split(","):
            count, _, window = part.strip().partition("/")
            pairs.append((whole_number(count), float(window or 1)))
    result = tuple((whole_number(count), float(window)) for count, window in pairs)
    # A nan window turned the limit off and an infinite one stalled the lane for good.
    if any(count <= 0 or not 0 < window <= MAX_SECONDS for count, window in result):
        raise ValueError(f"{value!r}: counts and windows must be positive, windows finite")
    return result


def check_base_url(url: str, setting: str) -> str:
    """https only; plain http only to a loopback address (sandboxes and tests).

    The endpoint's path is appended to the base, so a query, a fragment or user credentials in it would
    be mangled; a bad port would fail every request. All are refused here, at start-up.
    """
    try:
        parsed = urllib.parse.urlsplit(url)
        host = parsed.hostname
        if host is not None and "[" in parsed.netloc:
            ipaddress.ip_address(host)  # a bracketed host must be an IP (older Pythons do not check)
    except ValueError:  # e.g. "http://[::1" or "https://[zz]/"
        shown = "the URL" if "@" in url else repr(url)  # user:password@ stays out of the message
        raise ConfigurationError(f"{setting}: {shown} is not a valid URL") from None
    if "@" in parsed.netloc:  # the message leaves the URL out: it may hold a password
        raise ConfigurationError(f"{setting}: a base URL may not hold user credentials (user@host)")
    if "?" in url or "#" in url:
        raise ConfigurationError(f"{setting}: a base URL may not have a query or a fragment: {url!r}")
    try:
        port = parsed.port
    except ValueError:  # not a number, or out of 0-65535
        port = 0
    if port == 0:
        raise ConfigurationError(f"{setting}: {url!r} has an invalid port")
    if parsed.scheme == "https" and host:
        return url.rstrip("/")
    if parsed.scheme == "http" and host:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if loopback:
            return url.rstrip("/")
        raise ConfigurationError(f"{setting}: plain http is allowed only to a loopback address, not {host}")
    raise ConfigurationError(f"{setting}: {url!r} is not an https URL")
