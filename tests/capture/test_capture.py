"""The framework-neutral core: options, filters, consent, privacy, the event's properties."""

from __future__ import annotations

import base64
import enum
import functools
import gc
import uuid
import warnings

import pytest
from capture_helpers import request_events
from werkzeug.routing import Map, Rule
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

import evmiddleware
from evmiddleware import capture as capture_module
from evmiddleware import context
from evmiddleware.capture import Capture, CaptureOptions, looks_secret
from evmiddleware.context import RequestContext
from evmiddleware.errors import ConfigurationError
from evmiddleware.wsgi import EventMiddleware

UA = "Mozilla/5.0 (test)"


def start(capture: Capture, path: str = "/", query: str = "", method: str = "GET", **headers: str):
    return capture.start(method, "http", path, query, {k.replace("_", "-"): v for k, v in headers.items()})


def test_one_event_with_the_documented_properties(tracked, clock):
    capture = Capture()
    state = start(
        capture,
        "/items/3",
        "utm_source=news&utm_medium=mail&q=shoes&token=abc&utm_campaign=spring%20sale",
        user_agent=UA,
        referer="https://example.org/page?session=secret#frag",
        cookie="ev_anon_id=visitor-1",
        x_custom="nope",
    )
    assert state is not None and state.set_cookie is None
    clock.advance(0.0125)
    state.status = 200
    capture.finish(state)
    (event,) = request_events(tracked)
    assert event.anonymous_id == "visitor-1"
    assert event.user_id is None
    assert event.properties == {
        "method": "GET",
        "path": "/items/3",
        "route": "/items/3",
        "status_code": 200,
        "duration_ms": 12.5,
        "user_agent": UA,
        "referrer": "https://example.org/page",
        "utm_source": "news",
        "utm_medium": "mail",
        "utm_campaign": "spring sale",
    }


@pytest.mark.parametrize(
    ("referer", "referrer"),
    [
        ("https://alice:hunter2@intranet.example.com/admin?x=1#top", "https://intranet.example.com/admin"),
        ("https://alice@example.com", "https://example.com"),
        ("https://a:b@c@example.com:8443/p", "https://example.com:8443/p"),  # the last @ ends userinfo
        ("//bob:pw@example.com/x", "//example.com/x"),
        ("https://example.org/@someone/post", "https://example.org/@someone/post"),  # the path's @
        ("https://example.org/p?next=a@b.example", "https://example.org/p"),
        ("/relative//x@y", "/relative//x@y"),  # no authority to strip
    ],
)
def test_the_referrer_keeps_no_userinfo(tracked, referer, referrer):
    capture = Capture()
    capture.finish(start(capture, referer=referer), 200)
    assert request_events(tracked)[0].properties["referrer"] == referrer


def test_finish_records_once(tracked):
    capture = Capture()
    state = start(capture)
    capture.finish(state, 200)
    capture.finish(state, 500)
    assert [e.properties["status_code"] for e in request_events(tracked)] == [200]


def test_configured_headers_query_params_and_ip_are_captured(tracked):
    capture = Capture(capture_headers=("X-Plan",), capture_query_params=("ref",), capture_ip=True)
    state = capture.start("GET", "http", "/", "ref=ad1&other=x", {"x-plan": "pro"}, "10.1.2.3")
    capture.finish(state, 200)
    props = request_events(tracked)[0].properties
    assert props["header_x_plan"] == "pro"
    assert props["query_ref"] == "ad1"
    assert props["ip"] == "10.1.2.3"
    assert "query_other" not in props


@pytest.mark.parametrize(
    "name",
    ["token", "password", "api_key", "auth", "session_id", "code", "secret", "Authorization", "cookie"],
)
def test_secret_looking_names_cannot_be_configured(name):
    assert looks_secret(name)
    with pytest.raises(ConfigurationError, match="credential"):
        CaptureOptions(capture_query_params=(name,))
    with pytest.raises(ConfigurationError, match="credential"):
        CaptureOptions(capture_headers=(name,))


def test_secret_looking_utm_keys_are_never_captured(tracked):
    capture = Capture()
    state = start(capture, "/", "utm_token=abc&utm_source=x")
    capture.finish(state, 200)
    props = request_events(tracked)[0].properties
    assert "utm_token" not in props
    assert props["utm_source"] == "x"


@pytest.mark.parametrize(
    "overrides",
    [
        {"sample_rate": 1.5},
        {"sample_rate": "often"},
        {"event_name": ""},
        {"cookie_name": "a b"},
        {"cookie_max_age": -1},
        {"cookie_domain": "bad domain"},
        {"trusted_proxies": ("not-an-ip",)},
        {"exclude_regexes": ("(",)},
        {"exclude_status_codes": ("four hundred",)},
        {"consent": "yes"},
        {"no_such_option": 1},
    ],
)
def test_misconfiguration_fails_at_start_up(overrides):
    with pytest.raises(ConfigurationError):
        Capture(**overrides)


def test_options_accept_lists_and_comma_separated_strings():
    options = CaptureOptions(exclude_paths="/health, /static", exclude_methods=["options"])
    assert options.exclude_paths == ("/health", "/static")
    assert options.exclude_methods == ("options",)
    assert CaptureOptions(adopt_cookies=False).adopt_cookies == ()


@pytest.mark.parametrize("off", [False, "false", "0", "no", "off", ""])
def test_switches_given_as_strings_mean_what_they_say(tracked, off):
    # Flask's app.config and Django's settings may hold "false": as a truth value it was on, and the
    # visitor's IP address went to every provider.
    capture = Capture(capture_ip=off, respect_dnt=off)
    state = capture.start("GET", "http", "/", "", {"dnt": "1"}, "203.0.113.7")
    assert state is not None  # DNT not respected
    capture.finish(state, 200)
    assert "ip" not in request_events(tracked)[0].properties
    on = CaptureOptions(capture_ip="true", respect_dnt="1", install_signal_handler="no")
    assert (on.capture_ip, on.respect_dnt, on.install_signal_handler) == (True, True, False)


@pytest.mark.parametrize("name", ["capture_ip", "respect_dnt", "install_signal_handler"])
def test_a_switch_that_is_not_a_boolean_is_refused(name):
    with pytest.raises(ConfigurationError, match=name):
        CaptureOptions(**{name: "sometimes"})


def test_flush_timeout_is_a_number_of_seconds_and_0_means_no_wait():
    assert CaptureOptions(flush_timeout="2").flush_timeout == 2.0
    assert Capture(flush_timeout=0).flush_timeout == 0.0  # it became the 5 s default
    assert Capture().flush_timeout == evmiddleware.config.Settings().shutdown_timeout
    for bad in ("soon", float("nan"), -1, float("inf"), True):
        with pytest.raises(ConfigurationError, match="flush_timeout"):
            CaptureOptions(flush_timeout=bad)


def test_exclude_paths_default_to_the_configured_setting(monkeypatch):
    evmiddleware.configure(providers=[], exclude_paths="/health,/static", local_sink="memory")
    capture = Capture()
    assert capture.options.exclude_paths == ("/health", "/static")
    assert Capture(exclude_paths=()).options.exclude_paths == ()


def test_flush_timeout_defaults_to_the_shutdown_timeout():
    evmiddleware.configure(local_sink="memory", shutdown_timeout=3.5)
    assert Capture().flush_timeout == 3.5
    assert Capture(flush_timeout=1.0).flush_timeout == 1.0


@pytest.mark.parametrize(
    ("options", "method", "path", "tracked_at_all"),
    [
        ({"exclude_paths": ("/health",)}, "GET", "/health", False),
        ({"exclude_paths": ("/health",)}, "GET", "/health/db", False),
        ({"exclude_paths": ("/health",)}, "GET", "/", True),
        ({"exclude_regexes": (r"\.(png|css)$",)}, "GET", "/a/b.png", False),
        ({"exclude_regexes": (r"\.(png|css)$",)}, "GET", "/a/b.html", True),
        ({"exclude_methods": ("options", "HEAD")}, "OPTIONS", "/", False),
        ({"exclude_methods": ("options", "HEAD")}, "GET", "/", True),
    ],
)
def test_excluded_requests_are_not_tracked_at_all(options, method, path, tracked_at_all):
    state = Capture(**options).start(method, "http", path, "", {})
    assert (state is not None) is tracked_at_all


def test_excluded_status_codes_set_the_cookie_but_record_nothing(tracked):
    capture = Capture(exclude_status_codes=(404,))
    state = start(capture)
    assert state.set_cookie is not None
    capture.finish(state, 404)
    assert request_events(tracked) == []


def test_sampling_keeps_the_visitor_but_drops_the_automatic_event(tracked, monkeypatch):
    capture = Capture(sample_rate=0.25)
    draws = iter([0.9, 0.1])
    monkeypatch.setattr(capture_module, "_random", lambda: next(draws))
    out = start(capture, cookie="ev_anon_id=v1")
    kept = start(capture, cookie="ev_anon_id=v1")
    assert out.ctx.anonymous_id == "v1" and not out.ctx.tracked
    capture.finish(out, 200)
    capture.finish(kept, 200)
    assert len(request_events(tracked)) == 1


def test_sample_rate_zero_records_no_automatic_event(tracked):
    capture = Capture(sample_rate=0)
    state = start(capture)
    assert state.set_cookie is not None and not state.ctx.tracked


def test_skip_request_from_the_handler_suppresses_the_event(tracked):
    capture = Capture()
    state = start(capture)
    state.ctx.tracked = False  # what evmiddleware.skip_request() does inside the request
    capture.finish(state, 200)
    assert request_events(tracked) == []


def test_global_privacy_control_opts_out_without_a_cookie():
    capture = Capture()
    assert start(capture, sec_gpc="1") is None
    assert start(capture, dnt="1") is not None
    assert Capture(respect_dnt=True).start("GET", "http", "/", "", {"dnt": "1"}) is None


def test_consent_hook_overrides_the_default():
    seen = []

    def consent(request):
        seen.append(request)
        return request == "consented"

    capture = Capture(consent=consent)
    assert capture.start("GET", "http", "/", "", {"sec-gpc": "1"}, None, "consented") is not None
    assert capture.start("GET", "http", "/", "", {}, None, "refused") is None
    assert seen == ["consented", "refused"]


def test_failing_hooks_are_counted_and_never_break_the_request(tracked):
    def boom(request):
        raise RuntimeError("hook bug")

    assert Capture(consent=boom).start("GET", "http", "/", "", {}) is None  # fails closed
    capture = Capture(user_id_resolver=boom, route_resolver=boom)
    state = start(capture)
    capture.finish(state, 200)
    (event,) = request_events(tracked)
    assert event.user_id is None and event.properties["route"] == "/"
    assert capture_module.errors() == {"consent": 1, "user_id": 1, "route": 1}
    capture_module.reset_errors()


def test_user_id_resolver_and_route_resolver(tracked):
    capture = Capture(user_id_resolver=lambda request: 42, route_resolver=lambda request: "/items/{id}")
    state = start(capture, "/items/7")
    capture.finish(state, 200)
    (event,) = request_events(tracked)
    assert event.user_id == "42"
    assert event.properties["route"] == "/items/{id}"


_rules = Map([Rule("/items/<int:item_id>", endpoint="item")])


@Request.application
def _rule_app(request):
    # What Flask keeps as ``request.url_rule``: werkzeug's Rule object, a tempting route_resolver answer.
    rule, _ = _rules.bind_to_environ(request.environ).match(return_rule=True)
    request.environ["example.rule"] = rule
    return Response("item")


def test_a_route_resolver_answer_that_is_not_a_str_is_a_hook_failure(tracked, sink):
    # A Rule as the route property would pass admission, then fail to encode in every provider: the
    # whole event lost, and nothing counted here. Refused, the event keeps the raw path.
    app = EventMiddleware(_rule_app, route_resolver=lambda environ: environ.get("example.rule"))
    assert Client(app).get("/items/7", buffered=True).text == "item"
    (event,) = request_events(tracked)
    assert event.properties["route"] == "/items/7"
    assert capture_module.errors() == {"route": 1}
    capture_module.reset_errors()
    evmiddleware.flush(timeout=5)
    assert [e.properties["route"] for e in sink.events] == ["/items/7"]


class _Route(str, enum.Enum):
    ITEM = "/items/{item_id}"


@pytest.mark.parametrize(
    ("answer", "route"),
    [
        (_Route.ITEM, "/items/{item_id}"),  # a str subclass: its value, as a plain str
        ("/r/" + "x" * 5000, "/r/" + "x" * 2045),  # bounded as the path is
    ],
)
def test_a_route_resolver_answer_is_recorded_as_a_plain_bounded_str(tracked, answer, route):
    capture = Capture(route_resolver=lambda request: answer)
    capture.finish(start(capture, "/items/7"), 200)
    recorded = request_events(tracked)[0].properties["route"]
    assert type(recorded) is str and recorded == route


def _tracking_app(environ, start_response):
    evmiddleware.track("page_viewed")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.mark.parametrize(
    ("answer", "user_id", "failures"),
    [
        ("u" * 256, None, {"user_id": 1}),  # no event could carry it: refused, the request stays anonymous
        (" ", None, {}),  # blank: no user, as identify() reads it
        (" u-7 ", "u-7", {}),
        (uuid.UUID(int=7), "00000000-0000-0000-0000-000000000007", {}),  # str() of it, as ever
    ],
)
def test_a_user_id_resolver_answer_is_checked_as_identify_checks_an_id(tracked, answer, user_id, failures):
    # Unchecked, an over-long id had every event of the request refused (invalid_id).
    app = EventMiddleware(_tracking_app, user_id_resolver=lambda environ: answer)
    client = Client(app)
    client.set_cookie("ev_anon_id", "visitor-1")
    client.get("/", buffered=True)
    events = [(e.name, e.anonymous_id, e.user_id) for e in tracked]
    assert events == [("page_viewed", "visitor-1", user_id), ("http_request", "visitor-1", user_id)]
    assert capture_module.errors() == failures
    capture_module.reset_errors()


def test_route_and_user_id_set_on_the_state_win(tracked):
    capture = Capture(route_resolver=lambda request: "/resolver")
    state = start(capture, "/items/7")
    state.route = "/items/{item_id}"
    state.user_id = "u1"
    assert state.ctx.facts["route"] == "/items/{item_id}"
    capture.finish(state, 200)
    (event,) = request_events(tracked)
    assert (event.user_id, event.properties["route"]) == ("u1", "/items/{item_id}")


def test_errors_and_disconnects_are_recorded(tracked):
    capture = Capture()
    failed = start(capture)
    failed.status = 200
    capture.finish(failed, error=KeyError("x"))
    gone_early = start(capture)
    capture.finish(gone_early, disconnected=True)
    gone_late = start(capture)
    gone_late.status = 200
    gone_late.disconnected = True
    capture.finish(gone_late)
    no_response = start(capture)
    capture.finish(no_response)
    props = [e.properties for e in request_events(tracked)]
    assert [(p["status_code"], p.get("error_type"), p.get("disconnected")) for p in props] == [
        (500, "KeyError", None),
        (499, None, True),
        (200, None, True),
        (500, None, None),
    ]


def test_tracking_disabled_means_no_capture():
    evmiddleware.configure(disabled=True, local_sink="memory")
    assert start(Capture()) is None


def test_an_exception_inside_finish_is_caught_and_counted(monkeypatch):
    capture = Capture()
    state = start(capture)

    def broken(*args):
        raise RuntimeError("encoder bug")

    monkeypatch.setattr(capture_module, "record_request_event", broken)
    capture.finish(state, 200)
    assert capture_module.errors() == {"finish": 1}
    capture_module.reset_errors()


@pytest.mark.parametrize(("peer", "secure"), [("::ffff:10.0.0.2", True), ("::ffff:11.0.0.2", False)])
def test_an_ipv4_proxy_seen_through_a_dual_stack_socket_is_trusted(tracked, peer, secure):
    capture = Capture(trusted_proxies=("10.0.0.0/8",))
    state = capture.start("GET", "http", "/", "", {"x-forwarded-proto": "https"}, peer)
    assert state.set_cookie.endswith("; Secure") is secure
    capture.finish(state, 200)


def test_the_environ_and_scope_helpers_read_the_same_facts(tracked, clock):
    capture = Capture(trusted_proxies=("10.0.0.0/8",), capture_headers=("content-type",))
    environ = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "/app",
        "PATH_INFO": "/caf\xc3\xa9",  # PEP 3333: UTF-8 bytes as latin-1
        "QUERY_STRING": "utm_source=x",
        "wsgi.url_scheme": "http",
        "REMOTE_ADDR": "10.0.0.2",
        "HTTP_X_FORWARDED_PROTO": "https",
        "CONTENT_TYPE": "text/plain",
        "HTTP_COOKIE": "a=1",
    }
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "path": "/app/café",
        "query_string": b"utm_source=x",
        "headers": [(b"x-forwarded-proto", b"https"), (b"content-type", b"text/plain"), (b"cookie", b"a=1")],
        "client": ("10.0.0.2", 1234),
    }
    from_environ = capture.start_environ(environ)
    from_scope = capture.start_scope(scope)
    assert from_environ.set_cookie.endswith("; Secure") and from_scope.set_cookie.endswith("; Secure")
    assert from_environ.request is environ and from_scope.request is scope
    capture.finish(from_environ, 200)
    capture.finish(from_scope, 200)
    by_environ, by_scope = (event.properties for event in request_events(tracked))
    assert by_environ == by_scope
    assert by_environ["path"] == "/app/café"


def test_the_state_is_the_requests_context(tracked):
    capture = Capture()
    state = start(capture, cookie="ev_anon_id=v-ctx")
    assert isinstance(state, RequestContext) and state.ctx is state
    token = context.enter(state)
    try:
        evmiddleware.track("inside")
    finally:
        context.leave(token)
    capture.finish(state, 200)
    assert [(e.name, e.anonymous_id, e.context.get("path")) for e in tracked] == [
        ("inside", "v-ctx", "/"),
        ("http_request", "v-ctx", None),
    ]


def test_finish_lets_go_of_the_request(tracked):
    # The scope or environ holds the state under STATE_KEY: holding the request back would make a
    # reference cycle that only the garbage collector frees.
    capture = Capture()
    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    state = capture.start_scope(scope)
    assert state.request is scope
    capture.finish(state, 200)
    assert state.request is None


def test_the_route_resolver_still_gets_the_request_at_finish(tracked):
    seen = []
    capture = Capture(route_resolver=lambda request: seen.append(request) or "/r/{id}")
    scope = {"type": "http", "method": "GET", "path": "/r/1", "headers": []}
    capture.finish(capture.start_scope(scope), 200)
    assert seen == [scope] and request_events(tracked)[0].properties["route"] == "/r/{id}"


@pytest.mark.parametrize(
    "headers",
    [
        [(b"user-agent", b"first"), (b"user-agent", b"second"), (b"cookie", b"ev_anon_id=v-dup")],
        ((b"user-agent", b"first"), (b"cookie", b"ev_anon_id=v-dup")),  # a tuple, not a list
        iter([(b"user-agent", b"first"), (b"cookie", b"ev_anon_id=v-dup")]),  # any iterable
    ],
)
def test_asgi_headers_keep_the_first_of_a_repeated_name_from_any_iterable(tracked, headers):
    capture = Capture()
    state = capture.start_scope({"type": "http", "method": "GET", "path": "/", "headers": headers})
    capture.finish(state, 200)
    assert state.anonymous_id == "v-dup" and request_events(tracked)[0].properties["user_agent"] == "first"


def test_an_empty_header_value_is_kept_as_an_empty_string(tracked):
    capture = Capture()
    state = capture.start_scope(
        {"type": "http", "method": "GET", "path": "/", "headers": [(b"user-agent", b"")]}
    )
    capture.finish(state, 200)
    assert request_events(tracked)[0].properties["user_agent"] == ""


def test_duration_is_recorded_to_the_microsecond(tracked, clock):
    capture = Capture()
    state = start(capture)
    clock.advance(0.0123456)
    capture.finish(state, 200)
    assert request_events(tracked)[0].properties["duration_ms"] == 12.346


def test_a_klaviyo_cookie_nested_too_deep_costs_the_visitor_nothing(tracked):
    deep = base64.b64encode(b"[" * 2000).decode()
    capture = Capture()
    state = start(capture, cookie=f"ev_anon_id=known; __kla_id={deep}")
    assert state is not None and state.anonymous_id == "known" and state.aliases == {}
    capture.finish(state, 200)
    assert len(request_events(tracked)) == 1  # and no capture error (checked by the fixture)


@pytest.mark.parametrize(
    "query",
    [
        "utm_source=caf\u00c3\u00a9",  # UTF-8 bytes as latin-1 text (PEP 3333, ASGI bytes): re-read
        "utm_source=caf\u00e9",  # decoded already (Django under ASGI), or latin-1 bytes: kept
        "utm_source=\u65e5\u672c",  # decoded already, beyond latin-1: kept
    ],
)
def test_a_non_ascii_query_string_is_read_as_utf8_when_it_is(tracked, query):
    capture = Capture()
    capture.finish(start(capture, query=query), 200)
    expected = "\u65e5\u672c" if "\u65e5" in query else "caf\u00e9"
    assert request_events(tracked)[0].properties["utm_source"] == expected


async def _async_hook(request):
    return "u1"


class _AsyncCallable:
    async def __call__(self, request):
        return "u1"


@pytest.mark.parametrize("hook", ["consent", "route_resolver"])
@pytest.mark.parametrize("value", [_async_hook, _AsyncCallable(), functools.partial(_async_hook)])
def test_async_consent_and_route_hooks_are_refused(hook, value):
    with pytest.raises(ConfigurationError, match=f"^{hook}: .* is async"):
        CaptureOptions(**{hook: value})


def test_an_async_user_id_resolver_is_left_to_the_integration_that_awaits_it(tracked):
    # Django's middleware awaits it on its async path: Capture must not call it (a coroutine's repr
    # as the user id, then the integration skipping its own call because a user id is set).
    calls = []

    async def resolver(request):
        calls.append(request)
        return "u1"

    capture = Capture(user_id_resolver=resolver)
    state = start(capture)
    assert state.user_id is None and calls == []


def test_a_hook_returning_an_awaitable_is_a_hook_failure(tracked):
    # A sync wrapper around an async function (what an integration wrapping hooks makes) slips past
    # the start-up check: the awaitable is closed, counted, and the default used.
    def wrapped(request):
        return _async_hook(request)

    capture = Capture(user_id_resolver=wrapped, route_resolver=wrapped)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = start(capture)
        capture.finish(state, 200)
        gc.collect()
    (event,) = request_events(tracked)
    assert event.user_id is None and event.properties["route"] == "/"
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert capture_module.errors() == {"user_id": 1, "route": 1}
    capture_module.reset_errors()
