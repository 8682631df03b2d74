"""System checks (``manage.py check``): a misconfiguration is reported before the server starts.

| id | problem |
| --- | --- |
| ``evmiddleware.E001`` | ``EVMIDDLEWARE`` is not a dict |
| ``evmiddleware.E002`` | ``EVMIDDLEWARE`` has keys this version does not know |
| ``evmiddleware.E003`` | Flameup has an API key but no workspace id |
| ``evmiddleware.E004`` | the Klaviyo key is a private API key (``pk_…``) |
| ``evmiddleware.E005`` | any other invalid value, in ``EVMIDDLEWARE`` or the environment |
| ``evmiddleware.E006`` | ``EventMiddleware`` before ``AuthenticationMiddleware``, with the user id wanted |
| ``evmiddleware.W001`` | ``EventMiddleware`` after ``FetchFromCacheMiddleware``: cached pages go untracked |

A setting that holds pipeline settings (provider keys, ``LOCAL_SINK``, …) is applied when Django
starts (the app's ``ready()``): an invalid one raises ``ConfigurationError`` there, before any check
runs. These checks report the rest: the middleware's own options, and the environment's values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from django.apps import AppConfig  # type: ignore[import-untyped]
from django.conf import settings  # type: ignore[import-untyped]
from django.core import checks  # type: ignore[import-untyped]

from evmiddleware.config import ENV_PREFIX, load_settings
from evmiddleware.errors import ConfigurationError

from . import conf

__all__ = ["check_middleware_order", "check_settings", "register"]

MIDDLEWARE_PATH = "evmiddleware_django.EventMiddleware"
AUTH_MIDDLEWARE_PATH = "django.contrib.auth.middleware.AuthenticationMiddleware"
FETCH_CACHE_MIDDLEWARE_PATH = "django.middleware.cache.FetchFromCacheMiddleware"


def register() -> None:
    checks.register(check_settings)
    checks.register(check_middleware_order)


def _value(raw: Mapping[str, Any], name: str) -> Any:
    """A setting as it will be used: ``EVMIDDLEWARE`` (any key case) over the environment."""
    for key, value in raw.items():
        if isinstance(key, str) and key.lower() == name:
            return value
    return os.environ.get(ENV_PREFIX + name.upper())


def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    raw = getattr(settings, conf.SETTING, None)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        return [
            checks.Error(
                f"{conf.SETTING} must be a dict, not {type(raw).__name__}.",
                hint=f'{conf.SETTING} = {{"EXCLUDE_PATHS": ["/health"]}}',
                id="evmiddleware.E001",
            )
        ]
    known = {key.lower() for key in conf.known_keys()}
    unknown = sorted(repr(key) for key in raw if not isinstance(key, str) or key.lower() not in known)
    if unknown:
        return [
            checks.Error(
                f"{conf.SETTING} has unknown key(s): {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join(conf.known_keys())}.",
                id="evmiddleware.E002",
            )
        ]
    errors: list[checks.CheckMessage] = []
    if _value(raw, "flameup_api_key") and not _value(raw, "flameup_workspace_id"):
        errors.append(
            checks.Error(
                "Flameup has an API key but no workspace id: its events go to /workspaces/{id}/events.",
                hint="Set FLAMEUP_WORKSPACE_ID in EVMIDDLEWARE or EVMIDDLEWARE_FLAMEUP_WORKSPACE_ID.",
                id="evmiddleware.E003",
            )
        )
    klaviyo_key = _value(raw, "klaviyo_public_key")
    if isinstance(klaviyo_key, str) and klaviyo_key.strip().startswith("pk_"):
        errors.append(
            checks.Error(
                "The Klaviyo key is a private API key (pk_…); the client API takes the public key "
                "(site id) and sends it in URLs.",
                hint="Use the six-character public key as KLAVIYO_PUBLIC_KEY, and revoke the private one "
                "if it was ever deployed.",
                id="evmiddleware.E004",
            )
        )
    if errors:
        return errors
    try:
        config = conf.read(raw)
        load_settings(config.pipeline)
    except ConfigurationError as exc:
        return [checks.Error(f"evmiddleware: {exc}", id="evmiddleware.E005")]
    return []


def check_middleware_order(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    if MIDDLEWARE_PATH not in middleware:
        return []
    messages: list[checks.CheckMessage] = []
    if FETCH_CACHE_MIDDLEWARE_PATH in middleware and middleware.index(MIDDLEWARE_PATH) > middleware.index(
        FETCH_CACHE_MIDDLEWARE_PATH
    ):
        messages.append(
            checks.Warning(
                f"{MIDDLEWARE_PATH} comes after {FETCH_CACHE_MIDDLEWARE_PATH}: a page served from the "
                "cache never reaches it and is not tracked.",
                hint="List it before FetchFromCacheMiddleware (and after AuthenticationMiddleware).",
                id="evmiddleware.W001",
            )
        )
    return messages + _auth_order(middleware)


def _auth_order(middleware: list[Any]) -> list[checks.CheckMessage]:
    if AUTH_MIDDLEWARE_PATH not in middleware:
        return []
    try:
        config = conf.read(getattr(settings, conf.SETTING, None))
    except ConfigurationError:
        return []  # check_settings reports it
    if not config.track_user or config.options.user_id_resolver is not None:
        return []
    if middleware.index(MIDDLEWARE_PATH) < middleware.index(AUTH_MIDDLEWARE_PATH):
        return [
            checks.Error(
                f"{MIDDLEWARE_PATH} comes before {AUTH_MIDDLEWARE_PATH}: it cannot know the user.",
                hint=f"Move it after AuthenticationMiddleware, or set {conf.SETTING}['TRACK_USER'] = False.",
                id="evmiddleware.E006",
            )
        ]
    return []
