"""The Django app: settings read once when the app registry is ready, pipeline settings applied
there, checks, the sign-in hook."""

from __future__ import annotations

from django.apps import AppConfig  # type: ignore[import-untyped]
from django.conf import settings  # type: ignore[import-untyped]
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
        # Read once, now, and the pipeline settings (provider keys, LOCAL_SINK, SPOOL, ...) applied:
        # management commands, workers and scripts never build the middleware, and would otherwise
        # deliver where the environment alone says. configure() starts no thread (the dispatcher
        # starts at the first event, or at once to empty a SPOOL, as at any configure()), and the
        # runtime is fork-aware (gunicorn --preload runs this in the master).
        try:
            conf.apply_pipeline()
        except ConfigurationError:
            if conf.names_pipeline(getattr(settings, conf.SETTING, None)):
                # The process's pipeline cannot be what the settings ask: fail at start-up, loudly,
                # as the middleware does, rather than deliver elsewhere.
                raise
            # Only the middleware's own options are wrong: reported by the system checks
            # (evmiddleware.E001-E005) and raised when the middleware is created.
