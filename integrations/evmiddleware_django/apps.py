"""The Django app: settings read once when the app registry is ready, checks, the sign-in hook."""

from __future__ import annotations

import contextlib

from django.apps import AppConfig  # type: ignore[import-untyped]
from django.core.signals import setting_changed  # type: ignore[import-untyped]

from evmiddleware.errors import ConfigurationError

from . import conf


class EvMiddlewareConfig(AppConfig):  # type: ignore[misc]  # Django has no type information
    name = "evmiddleware_django"
    verbose_name = "evmiddleware"

    def ready(self) -> None:
        from . import checks, signals

        checks.register()
        signals.connect()
        setting_changed.connect(conf.reset, dispatch_uid="evmiddleware_django.conf.reset")
        # Read once, now; a bad setting is reported by the checks and raised by the middleware.
        with contextlib.suppress(ConfigurationError):
            conf.config()
