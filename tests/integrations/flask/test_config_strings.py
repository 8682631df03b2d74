"""``app.config`` holds what the environment spells: ``EVMIDDLEWARE_COOKIE_MAX_AGE = "3600"`` (as from
``os.environ``) was refused at start-up, the one number option that was."""

from __future__ import annotations

import pytest

flask = pytest.importorskip("flask")
evmiddleware_flask = pytest.importorskip("evmiddleware_flask")


def test_a_cookie_max_age_from_app_config_as_a_string_reaches_the_cookie():
    app = flask.Flask(__name__)
    app.config["EVMIDDLEWARE_COOKIE_MAX_AGE"] = "3600"
    app.add_url_rule("/", "index", lambda: "ok")
    evmiddleware_flask.EventTracking(app)
    with app.test_client().get("/") as response:
        response.get_data()
    [cookie] = response.headers.getlist("Set-Cookie")
    assert "; Max-Age=3600;" in cookie
