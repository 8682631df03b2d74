"""Settings shared by the HTTP providers: key, base URL, rate-limit override, concurrency."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .._parse import check_base_url, parse_rate, positive_int
from ..errors import ConfigurationError
from .base import Limits

COMMON_OPTIONS = ("api_key", "url", "rate_limit", "max_in_flight")


@dataclasses.dataclass(frozen=True)
class HttpOptions:
    """Common settings after validation. ``repr`` never shows the key."""

    api_key: str = dataclasses.field(repr=False)
    base_url: str
    limits: Limits


def read_http_options(
    provider: str,
    options: Mapping[str, Any],
    *,
    default_url: str,
    limits: Limits,
    key_option: str = "api_key",
) -> HttpOptions | None:
    """Validate the common options, or ``None`` when no key is set (the provider is off)."""
    # Stripped first: a key of only white space is no key (it switched the provider on, every batch a 401).
    key = str(options.get(key_option) or "").strip()
    if not key:
        return None
    if any(ch.isspace() for ch in key):
        raise ConfigurationError(f"{provider}_{key_option}: the key contains white space")
    if not (key.isascii() and key.isprintable()):  # else every request would fail to encode its header
        raise ConfigurationError(
            f"{provider}_{key_option}: the key has characters other than printable ASCII"
        )
    url = check_base_url(str(options.get("url") or default_url), f"{provider}_url")
    if "rate_limit" in options:
        try:
            limits = dataclasses.replace(limits, rate=parse_rate(options["rate_limit"]))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigurationError(f"{provider}_rate_limit: {exc}") from None
    if "max_in_flight" in options:
        try:
            in_flight = positive_int(options["max_in_flight"])
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigurationError(f"{provider}_max_in_flight: {exc}") from None
        limits = dataclasses.replace(limits, max_in_flight=in_flight)
    return HttpOptions(api_key=key, base_url=url, limits=limits)
