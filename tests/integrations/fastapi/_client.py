"""Starlette's test client for these tests (pyproject's filterwarnings quiets recent Starlette's
import-time note that it prefers httpx2)."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient


def client_for(app: Any, **kwargs: Any) -> Any:
    return TestClient(app, **kwargs)
