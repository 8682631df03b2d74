"""The Flask example app, through Flask's test client: every route of the contract."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .._contract import COOKIE, ExampleAppContract, Reply, request_events

flask = pytest.importorskip("flask")


class FlaskShop:
    defers_body = True

    def __init__(self, app: Any) -> None:
        self.client = app.test_client()

    def request(
        self, method: str, path: str, *, json: Any = None, form: dict[str, str] | None = None
    ) -> Reply:
        response = self.client.open(path, method=method, json=json, data=form)
        try:
            text = response.get_data(as_text=True)
        finally:
            response.close()  # the server's close(): when the WSGI middleware records the event
        cookies = [
            value for value in response.headers.getlist("Set-Cookie") if value.startswith(COOKIE + "=")
        ]
        return Reply(response.status_code, text, cookies)

    def open(self, path: str) -> Callable[[], str]:
        response = self.client.get(path, buffered=False)

        def read() -> str:
            try:
                return str(response.get_data(as_text=True))
            finally:
                response.close()

        return read


@pytest.fixture(scope="module")
def app() -> Any:
    import flask_app

    return flask_app.app


@pytest.fixture
def shop(app) -> FlaskShop:
    return FlaskShop(app)


class TestFlaskExampleApp(ExampleAppContract):
    def test_boom_still_reaches_flasks_error_handling(self, app, shop, events):
        seen: list[BaseException] = []

        def receive(sender: Any, exception: BaseException, **extra: Any) -> None:
            seen.append(exception)

        flask.got_request_exception.connect(receive, app)
        try:
            assert shop.request("GET", "/boom").status == 500
        finally:
            flask.got_request_exception.disconnect(receive, app)
        assert [type(error) for error in seen] == [RuntimeError]

    def test_boom_propagates_unchanged_when_flask_propagates_exceptions(self, app, events):
        app.config["PROPAGATE_EXCEPTIONS"] = True
        try:
            with pytest.raises(RuntimeError, match="boom"):
                app.test_client().get("/boom")
        finally:
            app.config["PROPAGATE_EXCEPTIONS"] = None
        [event] = request_events(events)
        assert (event.properties["status_code"], event.properties["error_type"]) == (500, "RuntimeError")

    def test_the_app_has_the_extension_installed_once(self, app):
        from evmiddleware.wsgi import EventMiddleware

        assert isinstance(app.extensions["evmiddleware"], EventMiddleware)
        assert app.wsgi_app is app.extensions["evmiddleware"]
