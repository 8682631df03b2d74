"""Pipeline benchmark: evmiddleware's ``track()`` against PostHog's and Segment's Python SDKs.

Each library runs in a child process of its own, pointed at the same local counting server, with its
shipped defaults (batch size, sender threads, no gzip) except the server's URL, a queue that holds
the whole burst (so none drops events) and the same flush interval for all; and for ours, FloKit's
published rate limit (100 requests a minute) lifted, since the rounds together send more than that
to one account (within a round it makes no measurable difference):

1. ``track()`` on the caller's thread while the library's sender thread runs, each call timed on
   its own, in three regimes: *steady* (bursts of 1,000 back to back, paced at ``--rate``), *after
   idle* (bursts of 20 at the same rate: most calls follow a 10 ms pause, in which this VM's CPU
   cools down) and *burst* (``--events`` calls back to back, racing the sender for the GIL);
2. end to end: as many calls again (their arguments built beforehand) as fast as the caller can make
   them, in a plain loop (not timed one by one: the stopwatch's cost per call would weigh 15-20 % on
   ours and 1-2 % on the SDKs), then the library's own ``flush()`` (so no library's last, partly
   filled batch waits for the flush interval), timed from the first call to the moment the server
   counted the last event (the server stamps it);
3. memory per queued event, with delivery impossible (a closed port, an hour's flush interval):
   tracemalloc's bytes, split into the library's own objects and the caller's values it keeps
   alive, and the growth of the resident set, divided by the events queued.

Steps 1 and 2 run ``--rounds`` times with the libraries in rotated order; the tables show medians
over rounds, and every ratio is taken within a round (side by side on the same noisy machine)
before its median.

    python -m benchmarks.pipeline            # about three minutes on two cores
    python -m benchmarks.pipeline --quick    # one short round, to check the set-up
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import socket
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks._common import (
    Call,
    Latency,
    fmt_bytes,
    fmt_int,
    fmt_ratio,
    fmt_us,
    median,
    print_table,
    rotated,
    run_child,
    time_calls,
    timer_overhead_ns,
)
from benchmarks.server import CountingServer, ServerCounts

OURS = "evmiddleware"
LIBRARIES = (OURS, "posthog", "segment")
SDKS = tuple(lib for lib in LIBRARIES if lib != OURS)

#: Step 1's regimes: name shown, calls back to back per burst (``None``: ``--events`` of them).
REGIMES: tuple[tuple[str, int | None], ...] = (("steady", 1000), ("after idle", 20), ("burst", None))

#: The issue's targets for evmiddleware.
TARGET_MEDIAN_US = 5.0
TARGET_P99_US = 50.0
TARGET_THROUGHPUT_RATIO = 10.0
TARGET_BYTES_PER_EVENT = 1024

_MEMORY_WARMUP = 50

#: (module, distribution) of each SDK compared.
_SDK_MODULES = (("posthog", "posthog"), ("segment.analytics", "segment-analytics-python"))


# -- the events -------------------------------------------------------------------------------
class RequestEvent(NamedTuple):
    name: str
    properties: dict[str, Any]
    user_id: str
    anonymous_id: str


_ROUTES = (
    ("GET", "/products/{slug}", "/products/item-{}"),
    ("GET", "/orders/{order_id}", "/orders/{}"),
    ("POST", "/api/cart/items", "/api/cart/items"),
    ("GET", "/search", "/search"),
    ("PUT", "/users/{user_id}/settings", "/users/{}/settings"),
    ("DELETE", "/api/cart/items/{item_id}", "/api/cart/items/{}"),
)
_USER_AGENT = (
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    b"Version/17.1 Safari/605.1.15"
)


def request_event(i: int) -> RequestEvent:
    """The automatic event of request ``i``: a handful of short strings and numbers.

    Values a web server decodes per request (path, user agent, ids) are fresh string objects, so
    the memory step counts what a queued event really keeps alive.
    """
    method, route, path = _ROUTES[i % len(_ROUTES)]
    properties = {
        "method": method,
        "route": route,
        "path": path.format(10_000 + i * 7),
        "status_code": 404 if i % 23 == 0 else 200,
        "duration_ms": round(2.5 + (i % 211) * 0.377, 3),
        "user_agent": _USER_AGENT.decode(),
    }
    return RequestEvent("http_request", properties, f"user-{i % 5000}", f"{i:08x}-6b0c-4d1e-9f2a-{i:012x}")


# -- the libraries (inside a child) -----------------------------------------------------------
class Library(NamedTuple):
    to_call: Callable[[RequestEvent], Call]
    queued: Callable[[], int]
    close: Callable[[], None]
    flush: Callable[[], object]


def open_library(name: str, url: str, *, queue_cap: int, interval: float) -> Library:
    """Configure library ``name`` to send to ``url``; its defaults otherwise (see the module doc)."""
    if name == OURS:
        import evmiddleware

        evmiddleware.configure(
            flokit_api_key="k",
            flokit_url=url,
            flokit_rate_limit="100000/60",
            flush_interval=interval,
            max_queue=queue_cap,
        )
        track = evmiddleware.track

        def ours(e: RequestEvent) -> Call:
            return track, (e.name, e.properties), {"user_id": e.user_id, "anonymous_id": e.anonymous_id}

        def ours_queued() -> int:
            counters = evmiddleware.stats()  # records not admitted yet are "waiting", apart
            return int(counters["providers"]["flokit"]["queued"] + counters["waiting"])

        return Library(
            ours, ours_queued, lambda: evmiddleware.shutdown(30.0), lambda: evmiddleware.flush(60.0)
        )
    if name == "posthog":
        from posthog import Posthog

        posthog = Posthog("phc_benchmark", host=url, max_queue_size=queue_cap, flush_interval=interval)
        capture = posthog.capture

        def ph(e: RequestEvent) -> Call:
            return capture, (e.name,), {"distinct_id": e.user_id, "properties": e.properties}

        return Library(ph, lambda: _qsize(posthog), posthog.shutdown, posthog.flush)
    if name == "segment":
        from segment.analytics import Client

        segment = Client("wk_benchmark", host=url, max_queue_size=queue_cap, upload_interval=interval)
        track_segment = segment.track

        def sg(e: RequestEvent) -> Call:
            kwargs = {"event": e.name, "properties": e.properties, "anonymous_id": e.anonymous_id}
            return track_segment, (e.user_id,), kwargs

        return Library(sg, lambda: int(segment.queue.qsize()), segment.shutdown, segment.flush)
    raise ValueError(f"unknown library {name!r}")


def _qsize(client: Any) -> int:
    """Recent PostHog releases keep a queue per lane; older ones one ``client.queue``."""
    queue = getattr(client, "queue", None)
    if queue is not None:
        return int(queue.qsize())
    return sum(int(lane.queue.qsize()) for lane in getattr(client, "_lanes", {}).values())


# -- child jobs -------------------------------------------------------------------------------
def pipeline_job(job: dict[str, Any]) -> dict[str, Any]:
    """Steps 1 and 2 for one library, against the counting server on ``job["port"]``."""
    name = job["lib"]
    server = ServerCounts(job["port"])
    n_burst = job["events"]
    lib = open_library(name, server.url, queue_cap=2 * n_burst, interval=job["interval"])
    made = 0

    def make(_: int) -> Call:
        nonlocal made
        made += 1
        return lib.to_call(request_event(made))

    def delivered_all(count: int, since: int) -> None:
        counts = server.wait_for(since + count, 60.0)
        if counts["events"] < since + count:
            raise RuntimeError(f"{name}: {counts['events'] - since} of {count} events delivered")

    result: dict[str, Any] = {"lib": name}
    base = server.counts()["events"]
    delivered_all(len(time_calls(make, job["warmup"])), base)  # imports, connections, first batches

    for regime, burst in REGIMES:
        if burst is None:
            continue
        base = server.counts()["events"]
        spans = time_calls(make, job["latency_events"], rate=job["rate"], burst=burst, time_limit=30.0)
        delivered_all(len(spans), base)
        result[regime] = Latency.from_ns(spans).as_dict()
    if name == OURS:  # the same call through the harness, to an empty function of track()'s signature
        harness = time_calls(lambda i: (_empty_track, *make(i)[1:]), 5000)
        result["harness"] = Latency.from_ns(harness).as_dict()

    # Built beforehand: what is timed is the library's work, not the application's.
    prepared = [make(i) for i in range(n_burst)]
    # The burst regime: these calls timed one by one, racing the sender for the GIL.
    base = server.counts()["events"]
    spans = time_calls(prepared.__getitem__, n_burst, time_limit=60.0)
    lib.flush()
    delivered_all(len(spans), base)
    result["burst"] = Latency.from_ns(spans).as_dict()

    # End to end: as many calls again (fresh ones: an SDK may have added to the properties it was
    # given), in a plain loop. Not timed one by one: two clock reads and a list append per call
    # (1-2 µs) are the stopwatch's work, and cost ours, at 5-8 µs an event, 15-20 % of its
    # throughput where they cost the SDKs, at 80-100 µs, 1-2 %.
    prepared = [make(i) for i in range(n_burst)]
    gc.collect()
    before = server.counts()
    started = time.monotonic()
    for fn, call_args, call_kwargs in prepared:
        fn(*call_args, **call_kwargs)
    produced = time.monotonic() - started
    # Each library's own flush, at once: else whichever last batch is partly filled waits for the
    # flush interval, and whether ours was depended on N (20,000 is a whole number of our batches).
    lib.flush()
    counts = server.wait_for(before["events"] + n_burst, job["timeout"])
    delivered = counts["events"] - before["events"]
    seconds = (counts["last"] if delivered >= n_burst else time.monotonic()) - started
    lib.close()
    time.sleep(0.2)
    result.update(
        {
            "produce_seconds": produced,
            "sent": n_burst,
            "delivered": delivered,
            "extra": server.counts()["events"] - before["events"] - n_burst,
            "seconds": seconds,
            "events_per_second": delivered / seconds if seconds > 0 else math.nan,
            "requests": counts["requests"] - before["requests"],
        }
    )
    return result


def _empty_track(
    name: str,
    properties: Any = None,
    *,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    timestamp: Any = None,
) -> None:
    """``evmiddleware.track``'s signature, doing nothing: what the harness adds to each sample."""


def memory_job(job: dict[str, Any]) -> dict[str, Any]:
    """Step 3 for one library: bytes kept alive per queued event while nothing can be delivered."""
    n = job["events"]
    lib = open_library(job["lib"], job["url"], queue_cap=2 * n, interval=3600.0)
    for i in range(_MEMORY_WARMUP):  # start the sender thread, let it reach the closed port
        fn, args, kwargs = lib.to_call(request_event(i))
        fn(*args, **kwargs)
    time.sleep(0.5)
    gc.collect()
    traced = job["mode"] == "tracemalloc"
    if traced:
        tracemalloc.start()
        first = tracemalloc.take_snapshot()
    else:
        rss_before = _rss()
    for i in range(_MEMORY_WARMUP, _MEMORY_WARMUP + n):
        fn, args, kwargs = lib.to_call(request_event(i))
        fn(*args, **kwargs)
    del fn, args, kwargs
    gc.collect()
    result: dict[str, Any] = {"lib": job["lib"], "mode": job["mode"], "events": n, "queued": lib.queued()}
    if traced:
        here = str(Path(__file__).resolve().parent)
        caller = library = 0
        for stat in tracemalloc.take_snapshot().compare_to(first, "filename"):
            if stat.traceback[0].filename.startswith(here):
                caller += stat.size_diff
            else:
                library += stat.size_diff
        tracemalloc.stop()
        result.update(bytes=caller + library, caller_bytes=caller, library_bytes=library)
    else:
        result["bytes"] = _rss() - rss_before
    return result


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- the run ------------------------------------------------------------------------------------
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Rounds = Sequence[dict[str, dict[str, Any]]]


def run(args: argparse.Namespace) -> int:
    missing = [dist for module, dist in _SDK_MODULES if importlib.util.find_spec(module) is None]
    if missing:
        print(f"missing: {', '.join(missing)}; install the bench extra: pip install -e '.[bench]'")
        return 2
    started = time.monotonic()
    overhead_ns = timer_overhead_ns()
    rounds: list[dict[str, dict[str, Any]]] = []
    memory: dict[str, dict[str, dict[str, Any]]] = {lib: {} for lib in LIBRARIES}
    with CountingServer() as server:
        for round_index in range(args.rounds):
            results: dict[str, dict[str, Any]] = {}
            for lib in rotated(LIBRARIES, round_index):
                job = {
                    "kind": "pipeline",
                    "lib": lib,
                    "port": server.port,
                    "warmup": 1000,
                    "latency_events": args.latency_events,
                    "rate": args.rate,
                    "events": args.events,
                    "interval": args.interval,
                    "timeout": 90.0,
                }
                results[lib] = run_child("benchmarks.pipeline", job, timeout=240.0)
                _progress(f"round {round_index + 1}/{args.rounds} {lib}: {_brief(results[lib])}")
            rounds.append(results)
        server_counts = server.counts()
    url = f"http://127.0.0.1:{closed_port()}"
    for lib in LIBRARIES:
        for mode in ("tracemalloc", "rss"):
            job = {"kind": "memory", "lib": lib, "url": url, "events": args.memory_events, "mode": mode}
            memory[lib][mode] = run_child("benchmarks.pipeline", job, timeout=240.0)
            _progress(f"memory {lib} {mode}: {memory[lib][mode]['bytes'] / args.memory_events:,.0f} B/event")
    report(args, rounds, memory, server_counts, overhead_ns, time.monotonic() - started)
    return 0


def _progress(message: str) -> None:
    print(f"  ... {message}", file=sys.stderr, flush=True)


def _brief(result: dict[str, Any]) -> str:
    steady = result["steady"]
    return (
        f"steady median {steady['median']:.2f} µs, p99 {steady['p99']:.1f} µs; "
        f"{result['events_per_second']:,.0f} events/s"
    )


def _value(results: dict[str, dict[str, Any]], lib: str, keys: Sequence[str]) -> float:
    value: Any = results[lib]
    for key in keys:
        value = value[key]
    return float(value)


def _med(rounds: Rounds, lib: str, *keys: str) -> float:
    """The median over rounds of one library's figure."""
    return median([_value(results, lib, keys) for results in rounds])


def _ratio(rounds: Rounds, top: str, bottom: str, *keys: str) -> float:
    """The median over rounds of ``top``'s figure divided by ``bottom``'s in the same round."""
    return median([_value(results, top, keys) / _value(results, bottom, keys) for results in rounds])


def report(
    args: argparse.Namespace,
    rounds: Rounds,
    memory: dict[str, dict[str, dict[str, Any]]],
    server_counts: dict[str, Any],
    overhead_ns: int,
    elapsed: float,
) -> None:
    print()
    print(
        f"Pipeline benchmark: {len(rounds)} round(s), libraries in rotated order, medians over rounds, "
        f"ratios taken within each round; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs."
    )
    print()

    rows = []
    for regime, _ in REGIMES:
        for lib in LIBRARIES:
            cells = [lib if lib == OURS else f"  {lib}", regime]
            cells += [fmt_us(_med(rounds, lib, regime, stat)) for stat in ("median", "p99", "p999")]
            if lib == OURS:
                cells += ["", ""]
            else:
                cells += [fmt_ratio(_ratio(rounds, lib, OURS, regime, stat)) for stat in ("median", "p99")]
            rows.append(cells)
    print_table(
        f"1. track() on the caller's thread, sender thread running (µs per call; {args.latency_events:,} "
        f"calls per regime at {args.rate:,}/s; burst: {args.events:,} back to back)",
        ["library", "regime", "median", "p99", "p99.9", "median vs ours", "p99 vs ours"],
        rows,
    )

    rows = []
    for lib in LIBRARIES:
        rates = [r[lib]["events_per_second"] for r in rounds]
        sizes = [r[lib]["delivered"] / max(1, r[lib]["requests"]) for r in rounds]
        exact = all(r[lib]["delivered"] == r[lib]["sent"] and r[lib]["extra"] == 0 for r in rounds)
        rows.append(
            [
                lib,
                fmt_int(median(rates)),
                f"{fmt_int(min(rates))} to {fmt_int(max(rates))}",
                "" if lib == OURS else fmt_ratio(_ratio(rounds, OURS, lib, "events_per_second")),
                f"{_med(rounds, lib, 'produce_seconds'):.2f}",
                f"{_med(rounds, lib, 'seconds'):.2f}",
                fmt_int(median(sizes)),
                "yes" if exact else "NO",
            ]
        )
    print_table(
        f"2. End to end: {args.events:,} calls as fast as the caller can, until the local server counted "
        f"them all (flush interval {args.interval:g} s for all)",
        [
            "library",
            "events/s",
            "over rounds",
            "ours vs it",
            "calls took (s)",
            "delivered in (s)",
            "events/request",
            "exactly once",
        ],
        rows,
    )

    rows = []
    for lib in LIBRARIES:
        traced, rss = memory[lib]["tracemalloc"], memory[lib]["rss"]
        n = traced["events"]
        rows.append(
            [
                lib,
                fmt_bytes(traced["bytes"] / n),
                fmt_bytes(traced["library_bytes"] / n),
                fmt_bytes(traced["caller_bytes"] / n),
                fmt_bytes(rss["bytes"] / rss["events"]),
                fmt_int(traced["queued"]),
            ]
        )
    print_table(
        f"3. Memory per queued event, delivery impossible ({args.memory_events:,} events queued after "
        f"{_MEMORY_WARMUP} to start the sender)",
        ["library", "tracemalloc", "own objects", "caller's values", "RSS growth", "in its queue"],
        rows,
    )

    best_sdk = median(
        [r[OURS]["events_per_second"] / max(r[sdk]["events_per_second"] for sdk in SDKS) for r in rounds]
    )
    per_event = memory[OURS]["tracemalloc"]["bytes"] / memory[OURS]["tracemalloc"]["events"]
    targets = [
        (f"track() {stat}, {regime}", f"<= {limit:g} µs", _med(rounds, OURS, regime, stat), limit)
        for regime in ("steady", "after idle")
        for stat, limit in (("median", TARGET_MEDIAN_US), ("p99", TARGET_P99_US))
    ]
    rows = [[what, goal, fmt_us(value), _verdict(value <= limit)] for what, goal, value, limit in targets]
    rows.append(
        [
            "end to end vs the better SDK",
            f">= {TARGET_THROUGHPUT_RATIO:g}x",
            fmt_ratio(best_sdk),
            _verdict(best_sdk >= TARGET_THROUGHPUT_RATIO),
        ]
    )
    rows.append(
        [
            "memory per queued event",
            f"< {TARGET_BYTES_PER_EVENT:,} B",
            fmt_bytes(per_event),
            _verdict(per_event < TARGET_BYTES_PER_EVENT),
        ]
    )
    print_table(
        "4. evmiddleware against the issue's targets", ["target", "goal", "measured", "verdict"], rows
    )

    print(
        f"Every sample includes the harness (perf_counter_ns twice: {overhead_ns} ns; the call made "
        f"through *args/**kwargs): an empty function with track()'s signature measures "
        f"{_med(rounds, OURS, 'harness', 'median'):.2f} µs median."
    )
    print(
        "'after idle': most calls follow a 10 ms sleep, after which this VM's CPU runs cold for tens of "
        "µs (the first call after a sleep costs several times a steady one, for any library)."
    )
    print(
        f"The server counted {server_counts['events']:,} events in {server_counts['requests']:,} requests "
        f"({server_counts['bad']} unreadable). Run took {elapsed:.0f} s."
    )


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="evmiddleware's pipeline against PostHog's and Segment's SDKs."
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of steps 1 and 2 (default 5)")
    parser.add_argument("--events", type=int, default=20_000, help="calls in step 2 (default 20,000)")
    parser.add_argument("--latency-events", type=int, default=4_000, help="calls per regime in step 1")
    parser.add_argument("--rate", type=int, default=2_000, help="calls per second in step 1 (default 2,000)")
    parser.add_argument("--interval", type=float, default=0.1, help="every library's flush interval (s)")
    parser.add_argument("--memory-events", type=int, default=20_000, help="events queued in step 3")
    parser.add_argument("--quick", action="store_true", help="one short round, to check the set-up")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        result = pipeline_job(job) if job["kind"] == "pipeline" else memory_job(job)
        print(json.dumps(result), flush=True)
        return 0
    if args.quick:
        args.rounds, args.events, args.latency_events, args.memory_events = 1, 5_000, 1_000, 5_000
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
