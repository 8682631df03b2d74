"""The Flask example app under gunicorn: two forked workers, a graceful stop, every event once."""

from __future__ import annotations

import pytest

from .._servers import check_delivered_exactly_once, free_port, gunicorn, serve_visit_and_stop

pytestmark = pytest.mark.server
pytest.importorskip("flask")
pytest.importorskip("gunicorn")


def test_gunicorn_with_preloaded_forked_workers_delivers_each_event_once_at_a_graceful_stop(sandbox):
    port = free_port()
    responses = serve_visit_and_stop(gunicorn("flask_app:app", port), port, sandbox)
    check_delivered_exactly_once(sandbox, responses)
