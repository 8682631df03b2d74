"""gunicorn serving ``gunicorn_app.py`` (wrapped in ``evmiddleware.wsgi.EventMiddleware``) against the
sandbox: a worker killed with SIGKILL mid-traffic loses nothing that reached the spool, and
``--preload`` with four workers sends every event once, none lost at the graceful stop.

Events are identified at the providers by their ``path`` property (``/e/<n>``). Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.harness import CLIENT_LIMITS, PROVIDERS, SandboxProcess, bounded_wait, copies

pytestmark = pytest.mark.server
pytest.importorskip("gunicorn")

HERE = Path(__file__).resolve().parent
START_DEADLINE = 20.0
STOP_DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(sandbox: SandboxProcess, **settings: object) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EVMIDDLEWARE_")}
    env.update(sandbox.env)
    for name, value in {**CLIENT_LIMITS, **settings}.items():
        env[f"EVMIDDLEWARE_{name.upper()}"] = str(value)
    env["EVMIDDLEWARE_FLAMEUP_ANONYMOUS_AS_USER_ID"] = "1"  # request events carry the cookie's id only
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return env


@contextlib.contextmanager
def gunicorn(
    env: dict[str, str], workers: int, *, preload: bool = False
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """gunicorn on 127.0.0.1; the block gets (process, port). Stopped with SIGTERM after it."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"127.0.0.1:{port}"]
    command += ["--graceful-timeout", "20", "--log-level", "warning"]
    command += ["--preload"] if preload else []
    command += ["gunicorn_app:application"]
    process = subprocess.Popen(command, env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(process, port)
        yield process, port
        stop(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_listening(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited early: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # polling the port, with a deadline
    pytest.fail("gunicorn did not start listening")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Graceful stop: SIGTERM to the master, which stops its workers and waits for them.

    A worker stuck at exit is killed by the master after ``--graceful-timeout`` (20 s): a stop that
    long means a worker hung (a fork that inherited a held lock did exactly that), so it fails here.
    """
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail("gunicorn did not stop within the deadline")
    errors = process.stderr.read().decode() if process.stderr else ""
    assert code == 0, errors
    assert time.monotonic() - began < 15, f"a worker hung at exit until the graceful timeout:\n{errors}"


def workers_of(master: int) -> list[int]:
    """Child processes of ``master`` (a /proc scan: field 4 of /proc/<pid>/stat is the parent)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == master:
            children.append(int(entry.name))
    return children


def spooled(path: Path) -> list[tuple[str, str, str | None]]:
    """(provider, request path or event name, lease owner) of every row in the spool."""
    if not path.exists():
        return []
    connection = sqlite3.connect(path, timeout=5)
    try:
        rows = connection.execute("SELECT provider, payload, lease_owner FROM events").fetchall()
    finally:
        connection.close()
    found = []
    for provider, payload, owner in rows:
        event = json.loads(payload)
        found.append((provider, event["properties"].get("path") or event["name"], owner))
    return found


def delivered(sandbox: SandboxProcess) -> dict[str, Counter[str]]:
    return {provider: copies(sandbox, provider, "path") for provider in PROVIDERS}


def test_a_worker_killed_mid_traffic_loses_nothing_that_reached_the_spool_and_sends_it_once(
    sandbox, tmp_path
):
    """The providers answer 503 while the worker dies (so nothing it had on the wire was stored), then
    recover. After a graceful stop and a restart on the same spool, every event that was in the spool
    when the worker died, and every event of a request another worker answered, is at each provider
    exactly once. Only what the dead worker had not yet spooled (its last ``spool_interval``) can be
    missing."""
    spool = tmp_path / "spool.db"
    env = server_env(
        sandbox,
        spool=spool,
        spool_lease=3,  # a dead worker's rows go to a live process 3 s after its last renewal
        flush_interval=0.05,
        retry_base_delay=0.05,
        retry_max_delay=0.5,
        shutdown_timeout=5,
    )
    sandbox.inject_all(kind="status", status=503, count=None)
    answered: dict[str, tuple[int, float]] = {}  # path -> (pid that answered, when)
    failed: list[str] = []
    killed: dict[str, float] = {}

    def traffic(port: int, first: int, count: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for n in range(first, first + count):
                path = f"/e/{n}"
                try:
                    response = client.get(path)
                except httpx.TransportError:
                    failed.append(path)  # the worker died while answering
                    continue
                pid, _ = response.text.split(" ", 1)
                answered[path] = (int(pid), time.monotonic())
                time.sleep(0.002)

    with gunicorn(env, workers=2) as (master, port):
        traffic(port, 0, 100)  # both workers are up and have spooled events
        assert bounded_wait(lambda: len(spooled(spool)) >= 100 * len(PROVIDERS), 10)
        driver = threading.Thread(target=traffic, args=(port, 100, 200))
        driver.start()
        time.sleep(0.3)  # mid-traffic
        owners = Counter(owner.split(":")[1] for _, _, owner in spooled(spool) if owner)
        victim = max(workers_of(master.pid), key=lambda pid: owners.get(str(pid), 0))
        os.kill(victim, signal.SIGKILL)
        killed["at"] = time.monotonic()
        in_spool_at_kill = {(provider, path) for provider, path, _ in spooled(spool)}
        driver.join(30)
        assert not driver.is_alive()
        assert owners[str(victim)] > 0  # the dead worker held spooled events
        sandbox.clear()  # the providers are back
    # Restart on the same spool: what is left goes out (the dead worker's rows once its lease lapsed).
    with gunicorn(env, workers=2):
        assert bounded_wait(lambda: not spooled(spool), 30), spooled(spool)[:5]

    got = delivered(sandbox)
    stats = sandbox.stats()
    by_survivors = {path for path, (pid, _) in answered.items() if pid != victim}
    for provider in PROVIDERS:
        twice = {path: times for path, times in got[provider].items() if times > 1}
        assert twice == {}, provider
        assert stats[provider]["duplicates"] == 0, provider
        spooled_paths = {path for p, path in in_spool_at_kill if p == provider and path.startswith("/e/")}
        assert spooled_paths - set(got[provider]) == set(), provider
        assert by_survivors - set(got[provider]) == set(), provider
        assert set(got[provider]) <= set(answered) | set(failed), provider
        # What is missing was answered by the dead worker in the moment before it died.
        for path in set(answered) - set(got[provider]):
            pid, when = answered[path]
            assert pid == victim and killed["at"] - when < 1.0, (provider, path, pid, killed["at"] - when)


@pytest.mark.parametrize("with_spool", [False, True], ids=["memory", "spool"])
def test_preload_with_four_workers_sends_every_event_once_and_loses_none_at_the_graceful_stop(
    sandbox, tmp_path, with_spool
):
    """The app module is imported once, in the master, before the fork. The flush interval is an
    hour, so partly filled batches leave only through the graceful stop's flush."""
    settings: dict[str, object] = {"flush_interval": 3600, "shutdown_timeout": 10}
    if with_spool:
        settings["spool"] = tmp_path / "spool.db"
    env = server_env(sandbox, **settings)
    count = 120
    with gunicorn(env, workers=4, preload=True) as (master, port):
        assert bounded_wait(lambda: len(workers_of(master.pid)) == 4, 10)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            pids = {client.get(f"/e/{n}").text.split(" ", 1)[0] for n in range(count)}
    assert len(pids) >= 2  # the requests were spread over the workers
    got = delivered(sandbox)
    loaded = {provider: copies(sandbox, provider, "pid") for provider in PROVIDERS}
    expected = {f"/e/{n}": 1 for n in range(count)}
    for provider in PROVIDERS:
        assert dict(got[provider]) == expected, provider
        assert sandbox.stats()[provider]["duplicates"] == 0, provider
        # Tracked once, in the master: not copied into the four workers by the fork.
        assert sum(loaded[provider].values()) == 1, provider
    if with_spool:
        assert spooled(settings["spool"]) == []  # type: ignore[arg-type]
