"""The FastAPI example app under uvicorn: a graceful stop delivers every event once (lifespan flush)."""

from __future__ import annotations

import pytest

from .._servers import check_delivered_exactly_once, free_port, serve_visit_and_stop, uvicorn

pytestmark = pytest.mark.server
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def test_uvicorn_graceful_stop_delivers_each_event_once(sandbox):
    port = free_port()
    responses = serve_visit_and_stop(uvicorn("fastapi_app:app", port), port, sandbox)
    check_delivered_exactly_once(sandbox, responses)
