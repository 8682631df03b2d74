"""``evmiddleware_flask.EventTracking``: installation, configuration, route templates, user ids, and
``track()`` in hooks and in threads."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
import threading
import uuid
from typing import Any

import pytest

import evmiddleware
from evmiddleware import capture, runtime
from evmiddleware.providers.sinks import MemorySink
from evmiddleware.wsgi import EventMiddleware

from .._contract import request_events

flask = pytest.importorskip("flask")
evmiddleware_flask = pytest.importorskip("evmiddleware_flask")
EventTracking = evmiddleware_flask.EventTracking


def new_app(**config: Any) -> Any:
    app = flask.Flask("shop")
    app.config.update(SECRET_KEY="test", **config)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> str:
        return f"item {item_id}"

    @app.get("/health")
    def health() -> str:
        return "ok"

    return app


def get(app: Any, path: str, **kwargs: Any) -> Any:
    response = app.test_client().get(path, **kwargs)
    response.get_data()
    response.close()
    return response


def get_as(app: Any, visitor: str, path: str) -> Any:
    """``get`` for a returning visitor: the anonymous id cookie set."""
    client = app.test_client()
    client.set_cookie("ev_anon_id", visitor)
    response = client.get(path)
    response.get_data()
    response.close()
    return response


def test_one_line_installs_the_wsgi_middleware_and_registers_the_extension(events):
    app = new_app()
    EventTracking(app)
    assert isinstance(app.extensions["evmiddleware"], EventMiddleware)
    get(app, "/items/5")
    [event] = events
    assert event.properties["route"] == "/items/{item_id}"


def test_init_app_supports_the_application_factory_and_installs_once(events):
    tracking = EventTracking(exclude_paths="/health")
    apps = [new_app(), new_app()]
    for app in apps:
        tracking.init_app(app)
        installed = app.extensions["evmiddleware"]
        tracking.init_app(app)
        EventTracking(app)
        assert app.extensions["evmiddleware"] is installed
        assert app.wsgi_app is installed and not isinstance(installed.app, EventMiddleware)
    for app in apps:
        get(app, "/items/1")
        get(app, "/health")
    assert len(events) == 2  # one per app, none for /health


def test_app_config_overrides_the_environment(monkeypatch, sink, events):
    monkeypatch.setenv("EVMIDDLEWARE_EXCLUDE_PATHS", "/items")
    evmiddleware.configure(providers=[sink])  # the process's settings, as read at start-up
    app = new_app(EVMIDDLEWARE_EXCLUDE_PATHS="/health")
    EventTracking(app)
    get(app, "/items/1")
    get(app, "/health")
    assert [event.properties["path"] for event in events] == ["/items/1"]


def test_the_environment_applies_where_app_config_is_silent(monkeypatch, sink, events):
    monkeypatch.setenv("EVMIDDLEWARE_EXCLUDE_PATHS", "/items")
    evmiddleware.configure(providers=[sink])
    app = new_app()
    EventTracking(app)
    get(app, "/items/1")
    assert events == []


def test_capture_options_from_app_config(events):
    app = new_app(EVMIDDLEWARE_COOKIE_NAME="shop_visitor", EVMIDDLEWARE_EVENT_NAME="page_hit")
    EventTracking(app)
    response = get(app, "/items/2")
    assert response.headers["Set-Cookie"].startswith("shop_visitor=")
    assert [event.name for event in events] == ["page_hit"]


def test_pipeline_settings_in_app_config_configure_the_process():
    app = new_app(EVMIDDLEWARE_FLUSH_INTERVAL="0.7", EVMIDDLEWARE_LOCAL_SINK="memory")
    EventTracking(app)
    assert runtime.current().settings.flush_interval == 0.7


def test_an_unknown_setting_fails_at_install_time():
    with pytest.raises(evmiddleware.ConfigurationError, match="no_such_option"):
        EventTracking(new_app(EVMIDDLEWARE_NO_SUCH_OPTION=1))


def test_a_bad_option_fails_at_install_time():
    with pytest.raises(evmiddleware.ConfigurationError, match="sample_rate"):
        EventTracking(new_app(EVMIDDLEWARE_SAMPLE_RATE=3))


@pytest.mark.parametrize(
    ("rule", "template"),
    [
        ("/items/<int:item_id>", "/items/{item_id}"),
        ("/items/<item_id>", "/items/{item_id}"),
        ("/files/<path:name>", "/files/{name}"),
        ("/<any(about, help):page>/<uuid:id>", "/{page}/{id}"),
        ("/n/<int(signed=True):n>", "/n/{n}"),
        ("/", "/"),
    ],
)
def test_flask_rules_become_route_templates_with_parameter_names(rule, template):
    assert evmiddleware_flask.flask_route_template(rule) == template


def test_a_blueprint_prefix_is_part_of_the_template(events):
    app = new_app()
    shop = flask.Blueprint("shop", __name__, url_prefix="/shop")

    @shop.get("/orders/<int:order_id>")
    def order(order_id: int) -> str:
        return "order"

    app.register_blueprint(shop)
    EventTracking(app)
    get(app, "/shop/orders/9")
    assert events[0].properties["route"] == "/shop/orders/{order_id}"


def test_user_id_resolver_runs_in_the_request_and_tags_every_event(events):
    app = new_app()

    @app.get("/me")
    def me() -> str:
        evmiddleware.track("profile_viewed")
        return "me"

    EventTracking(app, user_id_resolver=lambda request: request.headers.get("X-User"))
    get(app, "/me", headers={"X-User": "u-1"})
    assert [(event.name, event.user_id) for event in events] == [
        ("profile_viewed", "u-1"),
        ("http_request", "u-1"),
    ]


def test_a_user_signed_in_during_the_request_is_on_its_event(events):
    app = new_app()

    @app.post("/signin")
    def signin() -> str:
        flask.session["user"] = "u-2"  # no identify(): the resolver sees it at the end
        return "ok"

    EventTracking(app, user_id_resolver=lambda request: flask.session.get("user"))
    response = app.test_client().post("/signin")
    response.close()
    assert [event.user_id for event in events] == ["u-2"]


def test_a_failing_user_id_resolver_costs_the_request_nothing_but_the_user_id(events):
    app = new_app()
    EventTracking(app, user_id_resolver=lambda request: 1 / 0)
    assert get(app, "/items/3").status_code == 200
    [event] = events
    assert event.user_id is None and event.properties["route"] == "/items/{item_id}"
    assert set(capture.errors()) == {"user_id"}
    capture.reset_errors()


async def _lookup(request: Any) -> str:
    return "42"


@pytest.mark.parametrize(
    ("answer", "user_id", "failed"),
    [
        ("u" * 256, None, True),  # no event could carry it: refused, the request keeps its events
        (" ", None, False),  # blank: no user, as identify() reads it
        (" u-7 ", "u-7", False),
        (uuid.UUID(int=7), "00000000-0000-0000-0000-000000000007", False),  # str() of it
        (7, "7", False),
    ],
)
def test_a_user_id_resolver_answer_is_checked_as_the_middlewares_check_it(events, answer, user_id, failed):
    # Unchecked, an over-long id had every event of the request refused (invalid_id).
    app = new_app()

    @app.get("/me")
    def me() -> str:
        evmiddleware.track("profile_viewed")
        return "me"

    EventTracking(app, user_id_resolver=lambda request: answer)
    assert get_as(app, "visitor-1", "/me").status_code == 200
    assert [(event.name, event.anonymous_id, event.user_id) for event in events] == [
        ("profile_viewed", "visitor-1", user_id),
        ("http_request", "visitor-1", user_id),
    ]
    assert evmiddleware.stats()["dropped"] == {}
    assert set(capture.errors()) == ({"user_id"} if failed else set())
    capture.reset_errors()


def test_a_user_id_resolver_returning_an_awaitable_is_a_failed_hook_and_the_awaitable_closed(events):
    # A plain function (it passes the start-up check for async hooks) that returns a coroutine: its
    # repr was the user id sent to every provider.
    made: list[Any] = []

    def resolver(request: Any) -> Any:
        made.append(_lookup(request))
        return made[-1]

    app = new_app()
    EventTracking(app, user_id_resolver=resolver)
    get_as(app, "visitor-2", "/items/4")
    assert [(event.anonymous_id, event.user_id) for event in events] == [("visitor-2", None)]
    assert made and all(inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED for coro in made)
    assert set(capture.errors()) == {"user_id"}
    capture.reset_errors()


def test_track_works_in_before_and_after_request_hooks(events):
    app = new_app()

    @app.before_request
    def before() -> None:
        evmiddleware.track("before_hook")

    @app.after_request
    def after(response: Any) -> Any:
        evmiddleware.track("after_hook")
        return response

    @app.teardown_request
    def teardown(error: BaseException | None) -> None:
        evmiddleware.track("teardown_hook")

    EventTracking(app)
    response = get(app, "/items/4")
    anonymous_id = response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    names = [event.name for event in events]
    assert names == ["before_hook", "after_hook", "teardown_hook", "http_request"]
    assert {event.anonymous_id for event in events} == {anonymous_id}
    assert events[0].context["route"] == "/items/{item_id}"  # known from the start of the request


def test_track_works_in_a_thread_started_with_copy_current_request_context(events):
    app = new_app()
    done = threading.Event()

    @app.get("/report")
    def report() -> str:
        @flask.copy_current_request_context
        def work() -> None:
            evmiddleware.track("report_built")
            done.set()

        threading.Thread(target=work).start()
        assert done.wait(5)
        return "queued"

    EventTracking(app, user_id_resolver=lambda request: "u-3")
    get(app, "/report")
    by_name = {event.name: event for event in events}
    built, request_event = by_name["report_built"], by_name["http_request"]
    assert (built.anonymous_id, built.user_id) == (request_event.anonymous_id, "u-3")
    assert built.context["route"] == "/report"


def test_skip_request_works_in_a_thread_started_with_copy_current_request_context(events):
    app = new_app()

    @app.get("/quiet")
    def quiet() -> str:
        @flask.copy_current_request_context
        def work() -> None:
            evmiddleware.skip_request()

        thread = threading.Thread(target=work)
        thread.start()
        thread.join(5)
        return "not recorded"

    EventTracking(app)
    assert get(app, "/quiet").status_code == 200
    assert [event.name for event in events] == []


def test_a_thread_without_the_request_context_sees_no_request(events):
    app = new_app()
    outcome: list[str | None] = []

    @app.get("/plain")
    def plain() -> str:
        thread = threading.Thread(target=lambda: outcome.append(evmiddleware.track("lost")))
        thread.start()
        thread.join()
        return "ok"

    EventTracking(app)
    get(app, "/plain")
    assert outcome == [None]  # no ids: dropped and counted, never attributed to a random visitor
    assert [event.name for event in events] == ["http_request"]


def test_flask_on_the_generic_wsgi_middleware_is_tracked_once_with_flasks_route(events):
    app = new_app()
    app.wsgi_app = EventMiddleware(app.wsgi_app)  # someone installed the generic middleware first
    EventTracking(app)
    response = get(app, "/items/6")
    assert len(response.headers.getlist("Set-Cookie")) == 1
    [event] = events
    assert event.properties["route"] == "/items/{item_id}"


def test_flask_login_current_user_is_the_default_user_id(events):
    flask_login = pytest.importorskip("flask_login")
    app = new_app()
    manager = flask_login.LoginManager(app)

    class User(flask_login.UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    manager.user_loader(User)

    @app.post("/signin")
    def signin() -> str:
        flask_login.login_user(User("42"))
        return "ok"

    EventTracking(app)
    client = app.test_client()
    client.get("/items/1").close()
    client.post("/signin").close()
    client.get("/items/2").close()
    assert [event.user_id for event in request_events(events)] == [None, "42", "42"]


def test_importing_the_integration_starts_nothing():
    code = (
        "import signal, evmiddleware_flask\n"
        "from evmiddleware import runtime\n"
        "assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL\n"
        "assert runtime.peek() is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_without_a_user_id_resolver_nothing_runs_at_the_end_of_a_request(events, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)  # no Flask-Login either
    app = new_app()
    EventTracking(app)
    assert not flask.signals.request_finished.has_receivers_for(app)
    assert flask.signals.request_started.has_receivers_for(app)


@pytest.mark.parametrize("hook", ["consent", "route_resolver", "user_id_resolver"])
def test_an_async_hook_fails_at_install_time(hook):
    async def answer(request):
        return None

    with pytest.raises(evmiddleware.ConfigurationError, match=f"{hook}: .* is async"):
        EventTracking(new_app(), **{hook: answer})


def test_the_readmes_testing_recipe_sees_the_request_once_the_response_is_closed():
    # README "Testing your app": a MemorySink, strict mode, the response closed by a with block.
    sink = MemorySink()
    evmiddleware.configure(providers=[sink], strict=True)
    app = new_app()

    @app.get("/viewed/<int:item_id>")
    def viewed(item_id: int) -> str:
        evmiddleware.track("item_viewed", {"item_id": item_id})
        return "ok"

    EventTracking(app)
    response = app.test_client().get("/viewed/6")
    assert response.get_data() == b"ok"
    assert evmiddleware.flush(timeout=2)
    assert [e.name for e in sink.events] == ["item_viewed"]  # werkzeug's client has not closed it
    response.close()
    with app.test_client().get("/viewed/7") as response:
        assert response.status_code == 200
    assert evmiddleware.flush(timeout=2)
    names = [(e.name, e.properties.get("route")) for e in sink.events]
    assert names == [
        ("item_viewed", None),
        ("http_request", "/viewed/{item_id}"),
        ("item_viewed", None),
        ("http_request", "/viewed/{item_id}"),
    ]


@pytest.mark.parametrize(
    ("handled", "expected"),
    [(500, (500, "KeyError")), (Exception, (503, None)), (KeyError, (503, None))],
)
def test_an_exception_the_apps_handler_answers_records_the_handlers_status(events, handled, expected):
    # README: errorhandler(500) runs for unhandled exceptions (Flask signals them: error_type kept);
    # a handler for the exception's class is the app's own answer.
    app = new_app()
    app.register_error_handler(handled, lambda exc: ("sorry", expected[0]))

    @app.get("/boom")
    def boom() -> str:
        raise KeyError("missing")

    EventTracking(app)
    assert get(app, "/boom").status_code == expected[0]
    [event] = request_events(events)
    assert (event.properties["status_code"], event.properties.get("error_type")) == expected
