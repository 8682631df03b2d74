"""What the fault suite and ``benchmarks/faults.py`` share: the sandbox in its own process, the fault
scenarios, and the accounting of what became of every event.

Each scenario configures the pipeline for all five providers at once against the sandbox, injects one
kind of fault, tracks events carrying a sequence number ``n``, lets the fault end, flushes, and reads
back from the sandbox which ``n`` each provider accepted and how often. Time is scaled down on both
sides (as in tests/integration): the sandbox enforces the scaled windows exactly as it enforces the
published ones, and the clients are configured with the same numbers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import evmiddleware

PROVIDERS = ("userflux", "flokit", "flameup", "flywheel", "klaviyo")

#: Scaled windows for the sandbox, and the same numbers for the clients.
SANDBOX_LIMITS: dict[str, list[tuple[int, float]]] = {
    "flameup": [(2000, 1.0)],
    "klaviyo": [(10, 0.1), (150, 1.0)],
    "flokit": [(100, 1.0)],
}
CLIENT_LIMITS = {
    "flameup_rate_limit": "2000/1",
    "klaviyo_rate_limit": "10/0.1,150/1",
    "flokit_rate_limit": "100/1",
}
#: Quick retries, so a scenario takes seconds.
FAST = {"flush_interval": 0.05, "retry_base_delay": 0.05, "retry_max_delay": 0.5}

#: What each provider deduplicates a re-sent event by (the shared providers README).
DEDUP_KEY = {
    "userflux": "none",
    "flokit": "Idempotency-Key",
    "flameup": "none",
    "flywheel": "event_id",
    "klaviyo": "unique_id",
}

_HERE = Path(__file__).resolve().parent
_WAIT = 0.02  # polling step of every bounded wait below


class SandboxProcess:
    """The sandbox in a child process (see ``sandbox_proc.py``); every call is bounded."""

    def __init__(self, rate_limits: Mapping[str, list[tuple[int, float]]] | None = None) -> None:
        limits = SANDBOX_LIMITS if rate_limits is None else rate_limits
        self._process = subprocess.Popen(
            [sys.executable, str(_HERE / "sandbox_proc.py"), json.dumps(limits)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lock = threading.Lock()
        hello = self._read()
        self.env: dict[str, str] = hello["env"]
        self.url: str = hello["url"]

    def _read(self) -> Any:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the sandbox process ended")
        return json.loads(line)

    def call(self, op: str, **arguments: Any) -> Any:
        with self._lock:
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
            self._process.stdin.flush()
            reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"sandbox {op}: {reply['error']}")
        return reply["ok"]

    # -- the sandbox's API ---------------------------------------------------------------------
    def settings(self, host: str = "127.0.0.1") -> dict[str, str]:
        """``configure()`` keywords pointing every provider here (``host`` replaces 127.0.0.1)."""
        return {
            name[len("EVMIDDLEWARE_") :].lower(): value.replace("127.0.0.1", host)
            for name, value in self.env.items()
        }

    def stats(self) -> dict[str, Any]:
        return self.call("stats")["providers"]  # type: ignore[no-any-return]

    def inject(self, provider: str, **fault: Any) -> None:
        self.call("inject", provider=provider, fault=fault)

    def inject_all(self, **fault: Any) -> None:
        for index, provider in enumerate(PROVIDERS):
            self.inject(provider, **{"seed": index, **fault})

    def clear(self, provider: str | None = None) -> None:
        self.call("clear", provider=provider)

    def requests(self, provider: str) -> list[dict[str, Any]]:
        return self.call("requests", provider=provider)  # type: ignore[no-any-return]

    def accepted(self, provider: str) -> list[dict[str, Any]]:
        return self.call("accepted", provider=provider)  # type: ignore[no-any-return]

    def reset(self) -> None:
        self.call("reset")

    def down(self) -> None:
        """Stop listening: connections are refused until :meth:`up` (the counters stay)."""
        self.call("down")

    def up(self) -> None:
        self.call("up")

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> bool:
        """Poll the counters until ``predicate`` holds (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self.stats()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(_WAIT)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self._process.stdin is not None
            self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


# -- reading what a provider accepted --------------------------------------------------------------
def properties_of(provider: str, accepted: Mapping[str, Any]) -> Mapping[str, Any]:
    """The event properties inside one accepted event, in each provider's wire shape."""
    if provider == "klaviyo":
        return accepted["attributes"]["properties"]  # type: ignore[no-any-return]
    return accepted.get("properties") or {}


def copies(sandbox: SandboxProcess, provider: str, prop: str = "n") -> Counter[Any]:
    """How many times the provider accepted each value of ``prop`` (events without it are ignored)."""
    found: Counter[Any] = Counter()
    for accepted in sandbox.accepted(provider):
        properties = properties_of(provider, accepted)
        if prop in properties:
            found[properties[prop]] += 1
    return found


def bounded_wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(_WAIT)
    return True


# -- memory -------------------------------------------------------------------------------------
def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakRss:
    """Samples the RSS every few milliseconds on a thread; ``growth`` is peak minus the start."""

    def __init__(self, every: float = 0.005) -> None:
        self.every = every
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.start


# -- DNS failure, in this process ------------------------------------------------------------------
@contextlib.contextmanager
def unresolvable(host: str) -> Iterator[None]:
    """``host`` fails to resolve (``socket.gaierror``) inside the block, as with a DNS outage.

    asyncio resolves through ``socket.getaddrinfo`` looked up at each call, so the dispatcher's
    connections fail exactly as they would with a resolver that cannot answer.
    """
    real = socket.getaddrinfo
    names = (host, host.encode("idna"))  # anyio passes the name IDNA-encoded, as bytes

    def failing(name: Any, *args: Any, **kwargs: Any) -> Any:
        if name in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(name, *args, **kwargs)

    socket.getaddrinfo = failing  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.getaddrinfo = real


# -- scenarios ----------------------------------------------------------------------------------
@dataclasses.dataclass
class Row:
    """What became of one provider's events in one scenario."""

    provider: str
    fault: str
    tracked: int  # events tracked with a sequence number
    delivered: int  # distinct events the provider accepted
    duplicated: int  # accepted copies beyond the first (the sandbox's own count)
    missing: list[int]  # sequence numbers the provider never accepted
    dropped: dict[str, int]
    skipped: dict[str, int]
    rejected: dict[str, int]
    retried: int
    requests: int
    faults: int  # requests the sandbox answered with the fault
    rss_growth: int | None = None  # peak RSS growth while the provider was down (bytes)
    latency_ratio: float | None = None  # median track() cost while down / before

    @property
    def dedup_key(self) -> str:
        return DEDUP_KEY[self.provider]


@dataclasses.dataclass
class Scenario:
    name: str
    describe: str
    run: Callable[[SandboxProcess, int], dict[str, Row]]


def configure(sandbox: SandboxProcess, host: str = "127.0.0.1", **settings: Any) -> None:
    evmiddleware.configure(**{**sandbox.settings(host), **CLIENT_LIMITS, **FAST, **settings})


def track_paced(count: int, start: int = 0, chunk: int = 5, pause: float = 0.01) -> None:
    """Track ``count`` events in small bursts, so batching providers send many small requests."""
    for n in range(start, start + count):
        # Four users: Klaviyo sends one profile per request, Flameup needs a user id.
        if evmiddleware.track("fault_probe", {"n": n}, user_id=f"user-{n % 4}") is None:
            raise AssertionError(f"track() refused event {n}")
        if n % chunk == chunk - 1:
            time.sleep(pause)


def collect(
    sandbox: SandboxProcess, fault: str, tracked: int, extra: Mapping[str, Any] | None = None
) -> dict[str, Row]:
    ours = evmiddleware.stats()["providers"]
    theirs = sandbox.stats()
    rows = {}
    for provider in PROVIDERS:
        seen = copies(sandbox, provider)
        rows[provider] = Row(
            provider=provider,
            fault=fault,
            tracked=tracked,
            delivered=len(seen),
            duplicated=theirs[provider]["duplicates"],
            missing=sorted(set(range(tracked)) - set(seen)),
            dropped=ours[provider]["dropped"],
            skipped=ours[provider]["skipped"],
            rejected=ours[provider]["rejected_reasons"],
            retried=ours[provider]["retried"],
            requests=theirs[provider]["requests"],
            faults=theirs[provider]["faults"],
            **(extra or {}),
        )
    return rows


def _faulted_then_cleared(fault: str, **spec: Any) -> Callable[[SandboxProcess, int], dict[str, Row]]:
    """Every request faulted at 30 % while events are tracked, then the fault ends (recovery)."""

    def run(sandbox: SandboxProcess, n: int) -> dict[str, Row]:
        configure(sandbox)
        sandbox.inject_all(count=None, rate=0.3, **spec)
        track_paced(n)
        # Let every provider meet the fault at least once before it ends.
        sandbox.wait(lambda s: all(s[p]["faults"] >= 1 for p in PROVIDERS), 10)
        sandbox.clear()
        evmiddleware.flush(60)
        return collect(sandbox, fault, n)

    return run


def retry_after_bursts(sandbox: SandboxProcess, n: int, in_flight: int | None = None) -> dict[str, Row]:
    """Bursts of 429 with ``Retry-After: 1``: the first two requests, and two more midway."""
    limits = {f"{p}_max_in_flight": in_flight for p in PROVIDERS} if in_flight else {}
    configure(sandbox, **limits)
    sandbox.inject_all(kind="retry_after", retry_after=1, count=2)
    track_paced(n // 2)
    sandbox.wait(lambda s: all(s[p]["faults"] >= 2 for p in PROVIDERS), 10)
    sandbox.inject_all(kind="retry_after", retry_after=1, count=2)
    track_paced(n - n // 2, start=n // 2)
    evmiddleware.flush(60)
    return collect(sandbox, "429 Retry-After: 1 (2 bursts)", n)


def _slow(sandbox: SandboxProcess, n: int) -> dict[str, Row]:
    """Two answers held 2 s, past a 1 s request timeout: the provider stored what it never confirmed."""
    configure(sandbox, request_timeout=1.0)
    sandbox.inject_all(kind="slow", seconds=2.0, count=2)
    track_paced(n)
    evmiddleware.flush(60)
    return collect(sandbox, "slow 2 s > 1 s timeout (x2)", n)


def _refused(sandbox: SandboxProcess, n: int) -> dict[str, Row]:
    """Nothing listens for a while: every connection is refused, then the server is back."""
    configure(sandbox)
    sandbox.down()
    try:
        track_paced(n)
        bounded_wait(lambda: all(evmiddleware.stats()["providers"][p]["retried"] >= 1 for p in PROVIDERS), 10)
    finally:
        sandbox.up()
    evmiddleware.flush(60)
    return collect(sandbox, "connection refused, then up", n)


def _dns(sandbox: SandboxProcess, n: int) -> dict[str, Row]:
    """The providers' host name does not resolve for a while (in this process), then it does."""
    configure(sandbox, host="localhost")
    with unresolvable("localhost"):
        track_paced(n)
        bounded_wait(lambda: all(evmiddleware.stats()["providers"][p]["retried"] >= 1 for p in PROVIDERS), 10)
    evmiddleware.flush(60)
    return collect(sandbox, "DNS failure, then resolves", n)


#: A 200 whose body says the request failed, in each provider's own error shape.
ERROR_BODIES = {
    "userflux": '{"error":"Internal Server Error","message":"ingest unavailable"}',
    "flokit": '{"error":"server_error","message":"ingest unavailable"}',
    "flameup": '{"success":false,"error":{"code":"internal","message":"ingest unavailable"}}',
    "flywheel": '{"success":false,"message":"ingest unavailable"}',
    "klaviyo": '{"status":"error","errors":[{"detail":"ingest unavailable"}]}',
}


def _error_body(sandbox: SandboxProcess, n: int) -> dict[str, Row]:
    """The first request of each provider is answered 200 with an error body (nothing stored)."""
    configure(sandbox)
    for provider, body in ERROR_BODIES.items():
        sandbox.inject(provider, kind="status", status=200, body=body, count=1)
    track_paced(n)
    evmiddleware.flush(60)
    return collect(sandbox, "200 with an error body (x1)", n)


def _track_cost(first: int, calls: int, prop: str) -> float:
    """Median wall time of one ``track()`` call over ``calls`` calls, in seconds (each timed alone)."""
    costs = []
    perf = time.perf_counter
    track = evmiddleware.track
    for i in range(first, first + calls):
        began = perf()
        track("fault_probe", {prop: i}, user_id=f"user-{i % 4}")
        costs.append(perf() - began)
    return statistics.median(costs)


def outage(sandbox: SandboxProcess, n: int, max_queue: int = 200) -> dict[str, Row]:
    """Every provider answers 503 while ``n`` events (far more than ``max_queue``) are tracked.

    The RSS is sampled throughout. ``track()`` is timed before (with the providers up, fewer calls
    than the queue holds, property ``w``, not counted below) and during the outage. Other processes
    share the machine, so each side is the best median of a few rounds: a sanity bound on what
    tracking costs the app, not a benchmark.
    """
    calls, rounds = max_queue * 3 // 4, 3
    if n < calls * rounds:
        raise ValueError(f"the outage scenario needs at least {calls * rounds} events")
    configure(sandbox, max_queue=max_queue)
    _track_cost(-calls, calls, "w")  # the dispatcher's start-up is not part of the baseline
    before = []
    for round_ in range(rounds):
        if not evmiddleware.flush(60):
            raise AssertionError("the events tracked before the outage were not all delivered")
        before.append(_track_cost(round_ * calls, calls, "w"))
    evmiddleware.flush(60)
    sandbox.inject_all(kind="status", status=503, count=None)
    step = n // rounds
    with PeakRss() as memory:
        during = [_track_cost(start, min(step, n - start), "n") for start in range(0, n, step)]
    sandbox.clear()
    evmiddleware.flush(60)
    extra = {"rss_growth": memory.growth, "latency_ratio": min(during) / min(before)}
    return collect(sandbox, f"down: {n} events, queue of {max_queue}", n, extra)


SCENARIOS = [
    Scenario(
        "503",
        "30 % of requests answered 503, then recovery",
        _faulted_then_cleared("503 on 30 %, then up", kind="status", status=503),
    ),
    Scenario("retry_after", "429 bursts with Retry-After", retry_after_bursts),
    Scenario("slow", "answers slower than the request timeout", _slow),
    Scenario(
        "close",
        "connections closed without an answer",
        _faulted_then_cleared("closed, no answer, 30 %", kind="close"),
    ),
    Scenario(
        "truncate", "200 with a truncated body", _faulted_then_cleared("truncated 200, 30 %", kind="truncate")
    ),
    Scenario(
        "not_json",
        "502 with an HTML body",
        _faulted_then_cleared(
            "502 HTML (not JSON), 30 %",
            kind="status",
            status=502,
            body="<html><body><h1>502 Bad Gateway</h1></body></html>",
        ),
    ),
    Scenario("error_body", "200 with an error body", _error_body),
    Scenario("refused", "connection refused", _refused),
    Scenario("dns", "DNS-style connect errors", _dns),
    Scenario("outage", "provider down longer than the queue holds", outage),
]
