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


def test_the_demo_bypasses_a_proxy_for_its_loopback_sandbox(monkeypatch):
    """With HTTP_PROXY set the library sends through httpx, which took the sandbox's 127.0.0.1 traffic
    to the proxy: nothing was delivered and the demo failed after minutes of retries."""
    import os

    import httpx

    from evmiddleware.demo import _environment
    from evmiddleware.sandbox import Sandbox

    monkeypatch.setenv("NO_PROXY", "corp.example, ::1")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    with Sandbox(port=0) as sandbox, _environment(sandbox.env()):
        assert os.environ["NO_PROXY"] == "corp.example,::1,127.0.0.1,localhost"
        assert os.environ["no_proxy"] == "127.0.0.1,localhost,::1"
        with httpx.Client(timeout=5) as client:  # reads the proxy settings as the dispatcher's does
            assert client.get(sandbox.url + "/_stats").status_code == 200
    assert os.environ["NO_PROXY"] == "corp.example, ::1"  # put back
    assert "no_proxy" not in os.environ


def test_the_demo_runs_with_a_proxy_set(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("EVMIDDLEWARE_EXAMPLES_DIR", str(tmp_path / "nowhere"))
    for name in (
        "NO_PROXY",
        "no_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "http_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert run_demo(visitors=2) == 0
    assert "every event accounted for" in capsys.readouterr().out


# -- the command line rejects bad values with a usage message, not a traceback ----------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sandbox", "--port", "99999"], "argument --port: '99999' is not a port"),
        (["sandbox", "--port", "-1"], "argument --port: '-1' is not a port"),
        (
            ["spool", "retry", "s.db", "--timeout", "nan"],
            "argument --timeout: 'nan' is not a number of seconds",
        ),
        (
            ["spool", "retry", "s.db", "--timeout", "inf"],
            "argument --timeout: 'inf' is not a number of seconds",
        ),
        (["spool", "retry", "s.db", "--timeout", "1e309"], "argument --timeout: '1e309'"),
        (["spool", "retry", "s.db", "--timeout", "-1"], "argument --timeout: '-1'"),
        (["spool", "retry", "s.db", "--timeout", "31536001"], "argument --timeout: '31536001'"),
        (["demo", "--visitors", "-3"], "argument --visitors: '-3' is not a number of visitors"),
        (["demo", "--visitors", "0"], "argument --visitors: '0' is not a number of visitors"),
    ],
)
def test_the_command_line_refuses_out_of_range_values(argv, message, capsys, tmp_path, monkeypatch):
    from evmiddleware import cli

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing ran


def test_the_command_line_takes_values_in_range_only():
    import argparse

    from evmiddleware import cli

    assert cli._port("0") == 0 and cli._port("65535") == 65535
    assert cli._timeout("0") == 0.0 and cli._timeout("2.5") == 2.5
    assert cli._visitors("1") == 1 and cli._visitors(str(cli.MAX_VISITORS)) == cli.MAX_VISITORS
    with pytest.raises(argparse.ArgumentTypeError):  # checked here: a demo that size would run for hours
        cli._visitors(str(cli.MAX_VISITORS + 1))


def test_sandbox_on_a_port_in_use_says_so_without_a_traceback():
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVMIDDLEWARE_")}
        result = subprocess.run([sys.executable, "-m", "evmiddleware", "sandbox", "--port", str(port)],
                                capture_output=True, text=True, env=env, timeout=30)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in result.stderr
