"""Capture options as configuration files and the environment spell them (found walking through the
README): every number and switch may be a string, one status code may stand alone, and a value of
the wrong kind is a ``ConfigurationError`` naming its option."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import Client

import evmiddleware
from evmiddleware.capture import CaptureOptions
from evmiddleware.errors import ConfigurationError
from evmiddleware.wsgi import EventMiddleware


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    status = "404 Not Found" if environ["PATH_INFO"] == "/missing" else "200 OK"
    start_response(status, [("Content-Type", "text/plain")])
    return [b"ok"]


def get(middleware: EventMiddleware, path: str) -> Any:
    response = Client(middleware).get(path)
    response.get_data()
    response.close()
    return response


@pytest.mark.parametrize(
    ("option", "text", "value"),
    [
        ("cookie_max_age", "3600", 3600),
        ("sample_rate", "0.5", 0.5),
        ("flush_timeout", "2", 2.0),
        ("exclude_status_codes", "404", (404,)),
        ("respect_dnt", "false", False),
        ("capture_ip", "true", True),
        ("install_signal_handler", "0", False),
    ],
)
def test_every_number_and_switch_may_be_given_as_a_string(option, text, value):
    assert getattr(CaptureOptions(**{option: text}), option) == value


def test_a_cookie_max_age_given_as_a_string_reaches_the_cookie():
    response = get(EventMiddleware(app, cookie_max_age="3600"), "/")
    [cookie] = response.headers.getlist("Set-Cookie")
    assert "; Max-Age=3600;" in cookie


@pytest.mark.parametrize("bad", ["an hour", "36.5", 0, -1, True, 36.5])
def test_a_cookie_max_age_that_is_not_a_positive_whole_number_is_refused(bad):
    with pytest.raises(ConfigurationError, match=r"^cookie_max_age: "):
        CaptureOptions(cookie_max_age=bad)


def test_one_status_code_may_stand_alone_as_one_path_or_method_does(tracked):
    options = CaptureOptions(exclude_status_codes=404, exclude_paths="/health", exclude_methods="HEAD")
    assert (options.exclude_status_codes, options.exclude_paths, options.exclude_methods) == (
        (404,),
        ("/health",),
        ("HEAD",),
    )
    middleware = EventMiddleware(app, exclude_status_codes=404)
    get(middleware, "/missing")
    get(middleware, "/")
    assert [event.properties["status_code"] for event in tracked] == [200]


@pytest.mark.parametrize(
    ("option", "bad"),
    [
        ("exclude_status_codes", True),
        ("exclude_status_codes", [404.5]),
        ("exclude_status_codes", "not found"),
        ("exclude_methods", 5),
        ("exclude_paths", 5),
        ("capture_headers", 1.5),
        ("adopt_cookies", 7),
        ("sample_rate", "often"),
    ],
)
def test_a_value_of_the_wrong_kind_is_refused_naming_its_option(option, bad):
    with pytest.raises(ConfigurationError, match=rf"^{option}: "):
        CaptureOptions(**{option: bad})


def test_inside_an_opted_out_request_only_calls_with_an_explicit_id_are_sent(sink):
    """As the README's Consent section says: no request context, so ``track()`` needs an id."""

    def opted_out_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        evmiddleware.track("without_id")
        evmiddleware.track("with_id", user_id="42")
        evmiddleware.identify("42", email="a@example.com")
        return app(environ, start_response)

    response = Client(EventMiddleware(opted_out_app)).get("/", headers={"Sec-GPC": "1"})
    response.close()
    assert response.headers.getlist("Set-Cookie") == []
    assert evmiddleware.flush(2)
    assert [(e.name, e.user_id, e.anonymous_id, dict(e.context)) for e in sink.events] == [
        ("with_id", "42", None, {}),
        ("identify", "42", None, {}),
    ]
    assert evmiddleware.stats()["dropped"] == {"no_identity": 1}
