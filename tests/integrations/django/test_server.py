"""The Django example app under real servers: gunicorn (WSGI, forked workers) and uvicorn (ASGI, which
Django serves without lifespan); a graceful stop delivers every event once."""

from __future__ import annotations

import pytest

from .._servers import check_delivered_exactly_once, free_port, gunicorn, serve_visit_and_stop, uvicorn

pytestmark = pytest.mark.server
pytest.importorskip("django")


def test_gunicorn_with_preloaded_forked_workers_delivers_each_event_once_at_a_graceful_stop(sandbox):
    pytest.importorskip("gunicorn")
    port = free_port()
    responses = serve_visit_and_stop(gunicorn("django_app.wsgi:application", port), port, sandbox)
    check_delivered_exactly_once(sandbox, responses)


def test_gunicorn_preloaded_with_the_providers_in_settings_only_delivers_each_event_once(sandbox):
    """The providers named in ``settings.EVMIDDLEWARE`` alone: the app's ready() applies them in the
    master, before the fork, and the workers deliver (each its own dispatcher, started after it)."""
    pytest.importorskip("gunicorn")
    port = free_port()
    command = gunicorn("tests.integrations.django.settings_in_settings_wsgi:application", port)
    responses = serve_visit_and_stop(command, port, sandbox)
    check_delivered_exactly_once(sandbox, responses)


def test_uvicorn_serving_django_over_asgi_delivers_each_event_once_at_a_graceful_stop(sandbox):
    pytest.importorskip("uvicorn")
    port = free_port()
    responses = serve_visit_and_stop(uvicorn("django_app.asgi:application", port), port, sandbox)
    check_delivered_exactly_once(sandbox, responses)


def test_uvicorn_serving_djangos_own_asgi_app_delivers_through_the_sigterm_handler(sandbox):
    """Without the lifespan wrapper, uvicorn (which imports the app before taking over the signals)
    re-raises SIGTERM through the handler the middleware installed: it delivers, then the process
    dies of the signal."""
    config = pytest.importorskip("uvicorn.config")
    if not hasattr(config.Config, "load_app"):  # its run() imports the app before serving
        pytest.skip("this uvicorn imports the app only after taking over the signals")
    port = free_port()
    command = uvicorn("tests.integrations.django.plain_asgi:application", port)
    responses = serve_visit_and_stop(command, port, sandbox)
    check_delivered_exactly_once(sandbox, responses)
