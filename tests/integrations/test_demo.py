"""``evmiddleware demo`` drives the example apps of every installed framework, and still accounts for
every event."""

from __future__ import annotations

import importlib.util

import pytest

from evmiddleware.demo import run_demo

from .conftest import EXAMPLES

pytestmark = pytest.mark.server  # it serves the sandbox on a loopback port


def test_the_demo_sends_visitors_through_each_installed_frameworks_example_app(monkeypatch, capsys):
    monkeypatch.setenv("EVMIDDLEWARE_EXAMPLES_DIR", str(EXAMPLES))
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)  # the demo sets it for its Django app
    assert run_demo(visitors=10) == 0
    out = capsys.readouterr().out
    served = out.split("requests served (", 1)[1].split(")", 1)[0]
    expected = ["raw WSGI", "raw ASGI"]
    expected += [label for label, module in [("Flask", "flask"), ("FastAPI", "fastapi"), ("Django", "django")]
                 if importlib.util.find_spec(module) is not None]  # fmt: skip
    assert [part.rsplit(" ", 1)[0] for part in served.split(", ")] == expected
    assert all(int(part.rsplit(" ", 1)[1]) > 0 for part in served.split(", "))
    assert "every event accounted for" in out


def test_without_the_example_apps_the_demo_serves_the_raw_shop_only(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("EVMIDDLEWARE_EXAMPLES_DIR", str(tmp_path / "nowhere"))
    assert run_demo(visitors=4) == 0
    assert "(raw WSGI " in capsys.readouterr().out


def test_the_demo_runs_with_its_own_settings_only(monkeypatch, tmp_path, capsys):
    """The user's EVMIDDLEWARE_* variables are set aside: with them the demo sent a production spool's
    events to the sandbox and deleted them, or ran disabled and still said every event was accounted for."""
    import os
    import sqlite3

    from evmiddleware.events import make_event
    from evmiddleware.spool import Spool

    path = str(tmp_path / "prod.db")
    spool = Spool(path)
    event = make_event("purchase", {}, user_id="u", anonymous_id=None, max_depth=10, max_bytes=1000,
                       on_drop=lambda key, why: None)  # fmt: skip
    spool.release(spool.add("flokit", [event]))  # free for any process to send at once
    spool.close()
    monkeypatch.setenv("EVMIDDLEWARE_EXAMPLES_DIR", str(tmp_path / "nowhere"))  # the demo's own, kept
    monkeypatch.setenv("EVMIDDLEWARE_SPOOL", path)
    monkeypatch.setenv("EVMIDDLEWARE_DISABLED", "1")
    assert run_demo(visitors=2) == 0
    out = capsys.readouterr().out
    assert "ignoring EVMIDDLEWARE_DISABLED, EVMIDDLEWARE_SPOOL: the demo runs with its own settings" in out
    assert "(raw WSGI " in out and "every event accounted for" in out
    table = out.split("-\n", 1)[1].split("\n\n", 1)[0].splitlines()  # the rows under the rule
    assert [row.split()[0] for row in table] == ["userflux", "flokit", "flameup", "flywheel", "klaviyo"]
    assert all(int(row.split()[1]) > 0 for row in table)  # captured: tracking was not disabled
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT event_id FROM events").fetchall() == [(event.id,)]
    assert os.environ["EVMIDDLEWARE_SPOOL"] == path  # put back after the run
    assert os.environ["EVMIDDLEWARE_DISABLED"] == "1"
