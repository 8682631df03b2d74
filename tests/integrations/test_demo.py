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
