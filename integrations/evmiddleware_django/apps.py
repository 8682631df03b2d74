"""The Django app: settings read once when the app registry is ready, pipeline settings applied
there, checks, the sign-in hook."""

from __future__ import annotations

from django.apps import AppConfig  # type: ignore[import-untyped]
from django.core.signals import setting_changed  # type: ignore[import-untyped]

from . import conf


class EvMiddlewareConfig(AppConfig):  # type: ignore[misc]  # Django has no type information
    name = "evmiddleware_django"
    verbose_name = "evmiddleware"

    def ready(self) -> None:
        from . import checks, signals

        checks.register()
        signals.connect()
        setting_changed.connect(conf.reset, dispatch_uid="evmiddleware_django.conf.reset")
        # The pipeline settings (provider keys, LOCAL_SINK, SPOOL, ...) applied now: management
        # commands, workers and scripts never build the middleware, and would otherwise deliver where
        # the environment alone says. configure() starts no thread (the dispatcher starts at the first
        # event, or at once to empty a SPOOL, as at any configure()), and the runtime is fork-aware
        # (gunicorn --preload runs this in the master). A pipeline value configure() refuses raises
        # here: the process's pipeline cannot be what the settings ask, so it fails at start-up,
        # loudly, rather than deliver elsewhere. The middleware's own options and unknown keys are
        # not read here: the system checks report them (E001-E005), the middleware raises them.
        conf.apply_pipeline()
