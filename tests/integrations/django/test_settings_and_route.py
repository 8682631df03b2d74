"""Found walking through the README on real servers: ``EXCLUDE_PATHS`` in ``settings.EVMIDDLEWARE``
made Django's start-up call ``configure()`` (replacing the project's pipeline, and raising for the
environment's values before the system checks could report them); events tracked in a view lost their
route when an evmiddleware WSGI/ASGI middleware around Django owned the request; a bad pipeline value
in the setting was reported under its environment variable's name."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import sys
from os import environ
from typing import Any

import pytest

import evmiddleware
from evmiddleware import runtime
from evmiddleware.capture import CaptureOptions

pytest.importorskip("django")
import httpx
from asgiref.sync import iscoroutinefunction
from django.apps import apps
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpResponse
from django.test import override_settings
from werkzeug.test import Client as WerkzeugClient

from evmiddleware.asgi import EventMiddleware as ASGIEventMiddleware
from evmiddleware.wsgi import EventMiddleware as WSGIEventMiddleware
from evmiddleware_django import EventMiddleware, checks, conf

from .site import SITE
from .test_middleware import SET_UP_AND_CHECKED

OURS = "evmiddleware_django.EventMiddleware"


def site(**settings: Any) -> Any:
    return override_settings(ROOT_URLCONF=SITE, MIDDLEWARE=[OURS], **settings)


def ready() -> None:
    """What ``django.setup()`` does for the app, with the current settings."""
    apps.get_app_config("evmiddleware_django").ready()


# -- 1. a capture option in EVMIDDLEWARE is never a pipeline setting ---------------------------------


def test_capture_options_in_the_setting_are_never_pipeline_settings():
    every_option = {field.name.upper(): "/x" for field in dataclasses.fields(CaptureOptions)}
    assert conf.pipeline_of(every_option) == {}
    assert conf.read({"EXCLUDE_PATHS": "/health"}).pipeline == {}


def test_exclude_paths_in_the_setting_leaves_the_projects_own_configuration_in_place(sink, events):
    evmiddleware.configure(providers=[sink])  # e.g. in wsgi.py, before get_wsgi_application()
    configured = runtime.peek()
    with site(EVMIDDLEWARE={"EXCLUDE_PATHS": "/api"}):
        ready()
        assert runtime.peek() is configured, "django.setup() replaced the project's configuration"
        response = WerkzeugClient(WSGIHandler()).get("/api/orders/red/")
        response.close()
        response = WerkzeugClient(WSGIHandler()).get("/me")
        response.close()
    assert evmiddleware.flush(2)
    # The setting still excludes its paths: it is the middleware's option.
    assert [(event.name, event.properties.get("path")) for event in sink.events] == [
        ("profile_viewed", None),
        ("http_request", "/me"),
    ]


# SET_UP_AND_CHECKED does what `manage.py check` does: settings, django.setup(), the checks. A bad
# *environment* value was raised at setup (a traceback) once EXCLUDE_PATHS was in the setting; it
# is the checks' to report.
@pytest.mark.parametrize(
    ("environment", "outcome"),
    [
        ({"EVMIDDLEWARE_FLAMEUP_API_KEY": "fu_key"}, "checks: ['evmiddleware.E003']"),
        ({"EVMIDDLEWARE_FLUSH_INTERVAL": "soon"}, "checks: ['evmiddleware.E005']"),
    ],
)
def test_exclude_paths_in_the_setting_leaves_a_bad_environment_value_to_the_checks(environment, outcome):
    run = subprocess.run(
        [sys.executable, "-c", SET_UP_AND_CHECKED, '{"EXCLUDE_PATHS": "/health"}'],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **environment},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(outcome), run.stdout


# -- 2. the route inside a view when an evmiddleware WSGI/ASGI middleware owns the request ----------


def tracked_in_view(events: list[Any]) -> Any:
    return next(event for event in events if event.name == "profile_viewed")


def test_an_event_tracked_in_a_view_carries_the_route_under_the_wsgi_middleware(events):
    with site():
        response = WerkzeugClient(WSGIEventMiddleware(WSGIHandler())).get("/me")
        response.close()
    assert [event.name for event in events] == ["profile_viewed", "http_request"]  # tracked once
    assert dict(tracked_in_view(events).context) == {"method": "GET", "path": "/me", "route": "/me"}
    assert events[-1].properties["route"] == "/me"


def test_an_event_tracked_in_a_view_carries_the_route_under_the_asgi_middleware(events):
    async def get() -> int:
        transport = httpx.ASGITransport(app=ASGIEventMiddleware(ASGIHandler()))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return (await client.get("/me")).status_code

    with site():
        assert asyncio.run(get()) == 200
    assert [event.name for event in events] == ["profile_viewed", "http_request"]
    assert dict(tracked_in_view(events).context) == {"method": "GET", "path": "/me", "route": "/me"}


def test_process_view_runs_in_the_handlers_mode_so_django_adds_no_thread_hop():
    def sync_view(request: Any) -> HttpResponse:
        return HttpResponse()

    async def async_view(request: Any) -> HttpResponse:
        return HttpResponse()

    assert not iscoroutinefunction(EventMiddleware(sync_view).process_view)
    assert iscoroutinefunction(EventMiddleware(async_view).process_view)


# -- 4. a bad pipeline value in the setting is named as the setting's key ---------------------------


def test_a_bad_pipeline_value_in_the_setting_names_the_settings_key_not_the_variable():
    named = re.escape("flush_interval (EVMIDDLEWARE['FLUSH_INTERVAL'])")
    with (
        site(EVMIDDLEWARE={"FLUSH_INTERVAL": "soon"}),
        pytest.raises(evmiddleware.ConfigurationError, match=named) as raised,
    ):
        ready()
    assert "EVMIDDLEWARE_FLUSH_INTERVAL" not in str(raised.value)
    with override_settings(EVMIDDLEWARE={"FLUSH_INTERVAL": "soon"}):
        [error] = checks.check_settings()
    assert error.id == "evmiddleware.E005" and "EVMIDDLEWARE['FLUSH_INTERVAL']" in error.msg


def test_a_pipeline_key_set_to_none_is_not_set_as_configure_takes_it():
    # {"SHUTDOWN_TIMEOUT": env("X", default=None)}: configure() skips None; the setting must too.
    with override_settings(EVMIDDLEWARE={"SHUTDOWN_TIMEOUT": None, "MAX_QUEUE": None}):
        assert checks.check_settings() == []
    with site(EVMIDDLEWARE={"SHUTDOWN_TIMEOUT": None}):
        ready()


def test_a_bad_environment_value_is_still_named_as_the_variable(monkeypatch):
    monkeypatch.setenv("EVMIDDLEWARE_FLUSH_INTERVAL", "soon")
    with override_settings(EVMIDDLEWARE={"TRACK_USER": False}):
        [error] = checks.check_settings()
    assert error.id == "evmiddleware.E005" and "EVMIDDLEWARE_FLUSH_INTERVAL" in error.msg


# -- 3. numbers in the setting may be strings, as in the environment --------------------------------


def test_a_cookie_max_age_in_the_setting_may_be_a_string():
    with site(EVMIDDLEWARE={"COOKIE_MAX_AGE": "3600"}):
        response = WerkzeugClient(WSGIHandler()).get("/me")
        response.close()
    [cookie] = response.headers.getlist("Set-Cookie")
    assert "; Max-Age=3600;" in cookie
