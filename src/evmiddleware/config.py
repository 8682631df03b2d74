"""Settings: read once from ``configure(**settings)`` over the environment, validated, then frozen.

Every setting has an environment variable ``EVMIDDLEWARE_<NAME>`` and a ``configure`` keyword with
the same name in snake_case. Provider settings are prefixed with the provider's name
(``flokit_api_key`` ↔ ``EVMIDDLEWARE_FLOKIT_API_KEY``); a provider is on when its key is set.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

from ._parse import (
    check_base_url,
    csv_tuple,
    local_sink_spec,
    optional_str,
    overflow_policy,
    parse_bool,
    parse_rate,
    positive_float,
    positive_int,
    queue_size,
)
from .errors import ConfigurationError
from .providers.base import Provider

__all__ = ["CORE_PARSERS", "Settings", "check_base_url", "load_settings", "parse_bool", "parse_rate"]

ENV_PREFIX = "EVMIDDLEWARE_"


#: Each core setting (not a provider's) and the parser of its value; the Django settings use them too.
CORE_PARSERS: dict[str, Callable[[Any], Any]] = {
    "flush_interval": positive_float,
    "max_queue": queue_size,
    "overflow": overflow_policy,
    "exclude_paths": csv_tuple,
    "local_sink": local_sink_spec,
    "spool": optional_str,
    "spool_interval": positive_float,
    "spool_lease": positive_float,
    "disabled": parse_bool,
    "strict": parse_bool,
    "max_event_bytes": positive_int,
    "max_depth": positive_int,
    "shutdown_timeout": positive_float,
    "retry_deadline": positive_float,
    "retry_base_delay": positive_float,
    "retry_max_delay": positive_float,
    "request_timeout": positive_float,
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The validated configuration of one process. Build it with :func:`load_settings`."""

    providers: tuple[Provider, ...] = ()
    flush_interval: float = 1.0
    max_queue: int = 10_000
    overflow: str = "drop_newest"
    exclude_paths: tuple[str, ...] = ()
    local_sink: str = "log"
    spool: str | None = None
    spool_interval: float = 0.1
    #: Seconds a process holds spooled rows without renewing before another process may take them.
    spool_lease: float = 30.0
    disabled: bool = False
    strict: bool = False
    max_event_bytes: int = 32 * 1024
    max_depth: int = 10
    shutdown_timeout: float = 5.0
    retry_deadline: float = 300.0
    retry_base_delay: float = 0.5
    retry_max_delay: float = 30.0
    request_timeout: float = 10.0


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def load_settings(overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from keyword ``overrides`` over ``environ`` (default ``os.environ``).

    Raises :class:`ConfigurationError` naming the setting for anything unknown or invalid.
    """
    from .providers import REGISTRY, build_local_sink

    env = os.environ if environ is None else environ
    remaining = dict(overrides)
    values: dict[str, Any] = {}
    for name, parse in CORE_PARSERS.items():
        raw = remaining.pop(name) if name in remaining else env.get(_env_name(name))
        if raw is None:
            continue
        try:
            values[name] = parse(raw)
        except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(float("inf"))
            raise ConfigurationError(f"{name} ({_env_name(name)}): {exc}") from None

    explicit = remaining.pop("providers", None)
    providers: list[Provider] = []
    for provider_name, provider_cls in REGISTRY.items():
        options: dict[str, Any] = {}
        for option in provider_cls.options:
            key = f"{provider_name}_{option}"
            raw = remaining.pop(key) if key in remaining else env.get(_env_name(key))
            if raw is not None and raw != "":
                options[option] = raw
        if explicit is None:
            provider = provider_cls.from_options(options)
            if provider is not None:
                providers.append(provider)
    if remaining:
        provider_options = [f"{name}_{option}" for name, cls in REGISTRY.items() for option in cls.options]
        known = sorted([*CORE_PARSERS, "providers", *provider_options])
        unknown = ", ".join(sorted(remaining))
        raise ConfigurationError(f"unknown setting(s): {unknown}. Known settings: {', '.join(known)}")
    if explicit is not None:
        providers = list(explicit)
        for provider in providers:
            if not isinstance(provider, Provider):
                raise ConfigurationError(f"providers: {provider!r} is not an evmiddleware Provider")
    if not providers:
        sink = build_local_sink(values.get("local_sink", "log"))
        if sink is not None:
            providers.append(sink)
    names = [p.name for p in providers]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"providers: each provider may appear once, got {names}")
    return Settings(providers=tuple(providers), **values)
