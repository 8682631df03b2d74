"""The SIGTERM handler: installed on first use, only over SIG_DFL, from the main thread; it delivers
what is queued, then lets the signal kill the process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from evmiddleware import lifecycle
from evmiddleware.asgi import EventMiddleware as ASGIEventMiddleware
from evmiddleware.wsgi import EventMiddleware as WSGIEventMiddleware


@pytest.fixture
def default_sigterm():
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, previous)


def raw_asgi(scope, receive, send):
    raise AssertionError("not called")


@pytest.mark.usefixtures("default_sigterm")
@pytest.mark.parametrize("middleware", [ASGIEventMiddleware, WSGIEventMiddleware])
def test_creating_a_middleware_installs_the_handler(middleware):
    middleware(raw_asgi)
    assert signal.getsignal(signal.SIGTERM) is lifecycle._on_sigterm
    lifecycle.uninstall_signal_handler()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.usefixtures("default_sigterm")
def test_an_existing_handler_is_never_replaced():
    def theirs(signum, frame):
        pass

    signal.signal(signal.SIGTERM, theirs)
    ASGIEventMiddleware(raw_asgi)
    assert signal.getsignal(signal.SIGTERM) is theirs
    assert lifecycle.install_signal_handler() is False


@pytest.mark.usefixtures("default_sigterm")
def test_not_installed_from_another_thread_or_when_turned_off():
    results = []
    thread = threading.Thread(target=lambda: results.append(lifecycle.install_signal_handler()))
    thread.start()
    thread.join()
    assert results == [False]
    ASGIEventMiddleware(raw_asgi, install_signal_handler=False)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_importing_installs_nothing():
    code = (
        "import signal, evmiddleware.asgi, evmiddleware.wsgi, evmiddleware.lifecycle, evmiddleware.capture\n"
    )
    code += "assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_sigterm_delivers_queued_events_then_dies_of_the_signal(tmp_path):
    sink = tmp_path / "events.jsonl"
    script = textwrap.dedent(
        f"""
        import os, signal
        import evmiddleware
        from werkzeug.test import Client
        from evmiddleware.wsgi import EventMiddleware

        evmiddleware.configure(local_sink="jsonl:{sink}", flush_interval=3600)
        app = EventMiddleware(lambda environ, start_response: (start_response("200 OK", []), [b"ok"])[1])
        client = Client(app)
        for _ in range(5):
            client.get("/", buffered=True)
        os.kill(os.getpid(), signal.SIGTERM)
        raise SystemExit("the signal did not end the process")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], timeout=30, capture_output=True)
    assert proc.returncode == -signal.SIGTERM, proc.stderr.decode()
    names = [json.loads(line)["name"] for line in sink.read_text().splitlines()]
    assert names == ["http_request"] * 5
