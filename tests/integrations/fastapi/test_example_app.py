"""The FastAPI example app, through Starlette's test client: every route of the contract."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .._contract import COOKIE, ExampleAppContract, Reply, request_events
from ._client import client_for

pytest.importorskip("fastapi")


class FastAPIShop:
    defers_body = False  # the test client reads the whole body before it returns

    def __init__(self, app: Any) -> None:
        self.client = client_for(app, raise_server_exceptions=False)

    def request(
        self, method: str, path: str, *, json: Any = None, form: dict[str, str] | None = None
    ) -> Reply:
        response = self.client.request(method, path, json=json, data=form)
        cookies = [
            value for value in response.headers.get_list("set-cookie") if value.startswith(COOKIE + "=")
        ]
        return Reply(response.status_code, response.text, cookies)

    def open(self, path: str) -> Callable[[], str]:
        response = self.client.get(path)
        return lambda: str(response.text)


@pytest.fixture(scope="module")
def app() -> Any:
    import fastapi_app

    return fastapi_app.app


@pytest.fixture
def shop(app) -> FastAPIShop:
    return FastAPIShop(app)


class TestFastAPIExampleApp(ExampleAppContract):
    def test_boom_still_reaches_starlettes_error_handling_and_the_server(self, app, events):
        client = client_for(app, raise_server_exceptions=True)
        with pytest.raises(RuntimeError, match="boom"):
            client.get("/boom")
        [event] = request_events(events)
        assert (event.properties["status_code"], event.properties["error_type"]) == (500, "RuntimeError")

    def test_background_tasks_keep_the_requests_ids(self, shop, events):
        shop.request("POST", "/login", json={"user_id": "user-5"})
        events.clear()
        shop.request("POST", "/checkout", json={"total": 3})
        names = [event.name for event in events]
        assert names.index("receipt_sent") > names.index("http_request")  # after the response
        receipt = events[names.index("receipt_sent")]
        request_event = events[names.index("http_request")]
        assert (receipt.anonymous_id, receipt.user_id) == (request_event.anonymous_id, "user-5")
