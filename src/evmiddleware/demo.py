"""``evmiddleware demo``: the whole pipeline on this machine, against the built-in sandbox.

Simulated visitors (cookies kept, some signing in, some checking out) browse a shop served through
the real WSGI and ASGI middleware; every event goes through the buffer and the dispatcher to the five
emulated APIs, with a few injected faults (a 503, a 429 with ``Retry-After``, a dropped connection)
to show retries. The table at the end accounts for every event; the exit code is 0 only when each
one was delivered or counted with a reason.

When Flask, FastAPI or Django is installed and the example apps are found (``example_apps/`` in the
current directory, or ``EVMIDDLEWARE_EXAMPLES_DIR``), some visitors browse those apps instead, in
process, through each framework's test client; a plain install serves the raw WSGI and ASGI shop.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from werkzeug.test import Client

from . import api, runtime
from ._demo_app import asgi_app, route_of, wsgi_app
from .asgi import EventMiddleware as AsgiMiddleware
from .sandbox import Fault, Sandbox
from .wsgi import EventMiddleware as WsgiMiddleware

__all__ = ["run_demo"]


#: Read by the demo itself (where the example apps are), never by the library.
_DEMO_VARIABLES = frozenset({"EVMIDDLEWARE_EXAMPLES_DIR"})


#: Where the demo's sandbox listens. A proxy from HTTP_PROXY (which sends the library through httpx)
#: cannot reach this machine's loopback, so the demo failed after minutes of retries.
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _no_proxy_for_loopback() -> dict[str, str]:
    """NO_PROXY and no_proxy as they are, plus the loopback hosts (tools read one or the other)."""
    values: dict[str, str] = {}
    for name in ("NO_PROXY", "no_proxy"):
        hosts = [host.strip() for host in os.environ.get(name, "").split(",") if host.strip()]
        values[name] = ",".join([*hosts, *(host for host in _LOOPBACK_HOSTS if host not in hosts)])
    return values


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[list[str]]:
    """Exactly ``values`` as the library's settings; yields the names of the user's own ``EVMIDDLEWARE_*``
    variables, set aside until the end: with them the demo took a production spool's events to the
    sandbox and deleted them, or ran disabled and still reported every event accounted for. Loopback
    is added to NO_PROXY too (all put back at the end)."""
    values = {**values, **_no_proxy_for_loopback()}
    ignored = sorted(
        name
        for name in os.environ
        if name.startswith("EVMIDDLEWARE_") and name not in values and name not in _DEMO_VARIABLES
    )
    saved = {name: os.environ.get(name) for name in [*values, *ignored]}
    for name in ignored:
        del os.environ[name]
    os.environ.update(values)
    try:
        yield ignored
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


Plan = list[tuple[str, str, dict[str, Any] | None]]
Driver = Callable[[list[Plan]], int]


def _visit_plan(rng: random.Random, visitor: int) -> Plan:
    """What one visitor does: browse, maybe sign in, maybe check out."""
    plan: Plan = [("GET", "/", None), ("GET", "/health", None)]
    plan += [("GET", f"/items/{rng.randint(1, 500)}", None) for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.6:
        plan.append(("POST", "/login", {"user_id": f"user-{visitor}"}))
        plan.append(("GET", f"/items/{rng.randint(1, 500)}", None))
        if rng.random() < 0.6:
            plan.append(("POST", "/checkout", {"total": round(rng.uniform(5, 200), 2), "items": ["sku-1"]}))
    if rng.random() < 0.3:
        plan.append(("GET", "/stream", None))
    if rng.random() < 0.1:
        plan.append(("GET", "/boom", None))
    return plan


def _drive_wsgi(plans: list[Plan]) -> int:
    app = WsgiMiddleware(wsgi_app, route_resolver=route_of)
    requests = 0
    for plan in plans:
        client = Client(app)  # one cookie jar per visitor
        for method, path, body in plan:
            try:
                response = client.open(path, method=method, json=body)
                response.close()
            except RuntimeError:  # /boom raises through the middleware, as in a real app
                pass
            requests += 1
    return requests


async def _drive_asgi(plans: list[Plan], app: Any = None) -> int:
    if app is None:
        app = AsgiMiddleware(asgi_app, route_resolver=route_of)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    requests = 0
    for plan in plans:
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
            for method, path, body in plan:
                await client.request(method, path, json=body)
                requests += 1
    return requests


# -- the example apps, when their frameworks are installed -----------------------------------------
def _examples_dir() -> Path | None:
    configured = os.environ.get("EVMIDDLEWARE_EXAMPLES_DIR")
    directory = Path(configured) if configured else Path.cwd() / "example_apps"
    return directory if directory.is_dir() else None


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """The frameworks log every ``/boom`` with its traceback; the demo provokes them on purpose."""
    loggers = [logging.getLogger(name) for name in names]
    saved = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = True
    try:
        yield
    finally:
        for logger, disabled in zip(loggers, saved, strict=True):
            logger.disabled = disabled


def _flask_driver(app: Any) -> Driver:
    def drive(plans: list[Plan]) -> int:
        requests = 0
        for plan in plans:
            client = app.test_client()  # one cookie jar per visitor
            for method, path, body in plan:
                client.open(path, method=method, json=body).close()  # close(): the server's end
                requests += 1
        return requests

    return drive


def _fastapi_driver(app: Any) -> Driver:
    return lambda plans: asyncio.run(_drive_asgi(plans, app))


def _django_driver(client_class: Any) -> Driver:
    def drive(plans: list[Plan]) -> int:
        requests = 0
        for plan in plans:
            client = client_class(raise_request_exception=False)
            for method, path, body in plan:
                data = "" if body is None else json.dumps(body)
                response = client.generic(method, path, data, content_type="application/json")
                if response.streaming:
                    b"".join(response.streaming_content)
                response.close()
                requests += 1
        return requests

    return drive


def _example_drivers() -> list[tuple[str, Driver]]:
    """The example apps whose framework is installed, loaded in process (after ``configure()``)."""
    directory = _examples_dir()
    if directory is None:
        return []
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    drivers: list[tuple[str, Driver]] = []
    loaders: list[tuple[str, str, Callable[[], Driver]]] = [
        ("Flask", "flask", lambda: _flask_driver(importlib.import_module("flask_app").app)),
        ("FastAPI", "fastapi", lambda: _fastapi_driver(importlib.import_module("fastapi_app").app)),
        ("Django", "django", _load_django),
    ]
    for label, framework, load in loaders:
        if importlib.util.find_spec(framework) is None:
            continue
        try:
            drivers.append((label, load()))
        except Exception as exc:  # an example that cannot load costs the demo that example only
            print(f"  (skipping the {label} example app: {type(exc).__name__}: {exc})")
    return drivers


def _load_django() -> Driver:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")
    importlib.import_module("django").setup()
    return _django_driver(importlib.import_module("django.test").Client)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())) or "-"


def run_demo(visitors: int = 40, seed: int = 7) -> int:
    rng = random.Random(seed)
    plans = [_visit_plan(rng, visitor) for visitor in range(visitors)]
    with (
        Sandbox(port=0) as sandbox,
        _environment({**sandbox.env(), "EVMIDDLEWARE_EXCLUDE_PATHS": "/health"}) as ignored,
    ):
        api.configure(flush_interval=0.2, retry_base_delay=0.1, retry_max_delay=1.0)
        sandbox.inject("flokit", Fault("status", status=503))
        sandbox.inject("userflux", Fault("retry_after", retry_after=1))
        sandbox.inject("flywheel", Fault("close"))
        print(f"evmiddleware demo: {visitors} visitors against the sandbox at {sandbox.url}")
        if ignored:  # names only: a value may be a key
            print(f"  ignoring {', '.join(ignored)}: the demo runs with its own settings only")
        print("  faults injected once each: flokit 503, userflux 429 + Retry-After 1, flywheel hang-up")
        drivers: list[tuple[str, Driver]] = [
            ("raw WSGI", _drive_wsgi),
            ("raw ASGI", lambda share: asyncio.run(_drive_asgi(share))),
            *_example_drivers(),
        ]
        started = time.monotonic()
        with _quiet("flask_app", "django.request"):  # each visitor browses one of the shops
            served = [(label, drive(plans[i :: len(drivers)])) for i, (label, drive) in enumerate(drivers)]
        requests = sum(count for _, count in served)
        through = ", ".join(f"{label} {count}" for label, count in served)
        print(f"  {requests} requests served ({through}); delivering…")
        delivered_all = api.flush(timeout=120)
        api.shutdown(10)
        elapsed = time.monotonic() - started
        pipeline = runtime.current().stats()
        emulated = sandbox.stats()["providers"]

    header = ["provider", "captured", "requests", "largest batch", "retries", "429s honoured",
              "rejected", "skipped", "dropped", "delivered"]  # fmt: skip
    rows, accounted = [header], delivered_all
    for name, counters in pipeline["providers"].items():
        remote = emulated.get(name, {})
        delivered = remote.get("accepted_events", 0) - remote.get("duplicates", 0)
        finished = (
            counters["sent"] + counters["rejected"] + sum(counters["dropped"].values())
            + sum(counters["skipped"].values()) + counters["left_in_spool"]
        )  # fmt: skip
        accounted &= finished == counters["enqueued"] and delivered == counters["sent"]
        accounted &= remote.get("duplicates", 0) == 0
        rows.append([
            name, str(counters["enqueued"]), str(remote.get("requests", counters["requests"])),
            str(counters["largest_batch"]), str(counters["retried"]), str(counters["rate_limited"]),
            _reasons(counters["rejected_reasons"]), _reasons(counters["skipped"]),
            _reasons(counters["dropped"]), str(delivered),
        ])  # fmt: skip
    print()
    print(_table(rows))
    print()
    if pipeline["dropped"]:
        print(f"dropped before any provider: {_reasons(pipeline['dropped'])}")
    verdict = "every event accounted for" if accounted else "NOT every event is accounted for"
    print(f"{verdict} ({elapsed:.1f} s)")
    return 0 if accounted else 1
