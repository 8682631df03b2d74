"""Starlette's test client for these tests."""

from __future__ import annotations

import warnings
from typing import Any


def client_for(app: Any, **kwargs: Any) -> Any:
    """Starlette's TestClient (imported quietly: recent Starlette warns that it prefers httpx2)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    return TestClient(app, **kwargs)
