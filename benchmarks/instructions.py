"""Instructions per event and per request, counted by callgrind: a yardstick that noise cannot move.

Timings on a shared VM swing by 2x from one minute to the next (the pipeline and middleware
benchmarks show it), which hides any change of less than about 20 %. The number of instructions a
piece of code executes hardly moves, so this benchmark counts them under valgrind's callgrind,
per thread, and is the one to compare two versions of the code with. It does not replace the
timed benchmarks: the issue's targets are in µs, and an instruction that misses the cache costs
far more than one that hits.

Each scenario runs twice in a child process under callgrind, with a small and a large number of
operations; the difference divided by the difference in operations is the cost of one operation,
with start-up and imports cancelled out:

* ``track()``: instructions per call on the caller's thread, and per event on the dispatcher thread
  delivering through FloKit's encoder and HTTP client to the local counting server (1,000 events a
  request);
* each middleware on a raw ASGI app, a Flask app and a Django app (the apps and set-ups of
  ``benchmarks.middleware``), driven in process: instructions per request on the request thread and
  in the middleware's other threads, and the request thread's instructions added to the bare app.

    python -m benchmarks.instructions            # about five minutes on two cores; needs valgrind
    python -m benchmarks.instructions --quick    # fewer operations and scenarios (~1.5 min)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks._common import ROOT, child_env, fmt_int, fmt_ratio, print_table

_MODULE = "benchmarks.instructions"
#: Calls of ``track()`` in the two runs, and requests per run for the middlewares.
_TRACK_CALLS = (2000, 12000)
_REQUESTS = (200, 1200)
#: Flask and Django allocate far more per request, so the garbage collector's full passes (a few
#: million instructions each) come often enough to need more requests to average out.
_FRAMEWORK_REQUESTS = (200, 3200)


class Scenario(NamedTuple):
    label: str
    kind: str  # "track" or an app of benchmarks.middleware
    config: str  # the middleware (or "evmiddleware" for track)
    returning: bool


class Count(NamedTuple):
    """Instructions per operation: the first thread (the caller's), and every other thread."""

    caller: float
    others: float


# -- inside the child (under callgrind) -----------------------------------------------------------
def _child(scenario: Scenario, count: int) -> None:
    sys.path.insert(0, str(ROOT))
    if scenario.kind == "track":
        _child_track(count)
    else:
        _child_app(scenario, count)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: the same in both runs, but slow under valgrind


def _child_track(count: int) -> None:
    import evmiddleware
    from benchmarks.pipeline import request_event
    from benchmarks.server import CountingServer

    warmup = 1000
    with CountingServer() as server:
        evmiddleware.configure(
            flokit_api_key="k", flokit_url=server.url, flokit_rate_limit="100000/60", max_queue=10**6
        )
        track = evmiddleware.track
        # The same list in both runs (of the longer run's length): only the calls differ.
        prepared = [request_event(i) for i in range(warmup + _TRACK_CALLS[1])][: warmup + count]
        for event in prepared[:warmup]:
            track(event.name, event.properties, user_id=event.user_id, anonymous_id=event.anonymous_id)
        # flush() waits on a lock; the server's wait_for polls, which would count its own loop.
        evmiddleware.flush(300.0)
        for event in prepared[warmup:]:
            track(event.name, event.properties, user_id=event.user_id, anonymous_id=event.anonymous_id)
        evmiddleware.flush(600.0)
        counts = server.counts()
        if counts["events"] != warmup + count:
            raise RuntimeError(f"the server counted {counts['events']} of {warmup + count} events")


def _child_app(scenario: Scenario, count: int) -> None:
    from benchmarks._middleware_apps import ASGI_APPS, build
    from benchmarks.middleware import asgi_driver, wsgi_driver

    built = build(scenario.kind, scenario.config)
    driver = (asgi_driver if scenario.kind in ASGI_APPS else wsgi_driver)(built.app)
    driver.run(300, scenario.returning)
    built.settle()
    driver.run(count, scenario.returning)
    built.settle()  # the events of these requests built and delivered: counted in the other threads


# -- the parent ----------------------------------------------------------------------------------
def measure(scenario: Scenario, small: int, large: int, folder: Path) -> Count:
    """Instructions per operation of ``scenario``: runs with ``small`` and ``large`` operations."""
    totals = []
    for count in (small, large):
        out = folder / f"{scenario.label.replace(' ', '_').replace('/', '_')}.{count}"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            _MODULE,
            "--child",
            ",".join([scenario.kind, scenario.config, str(int(scenario.returning)), str(count)]),
        ]
        done = subprocess.run(
            command, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=1800
        )
        if done.returncode != 0:
            raise RuntimeError(f"{scenario.label}: the child failed:\n{done.stderr[-2000:]}")
        totals.append(_thread_totals(out))
    (caller_small, others_small), (caller_large, others_large) = totals
    per = large - small
    return Count((caller_large - caller_small) / per, (others_large - others_small) / per)


def _thread_totals(out: Path) -> tuple[int, int]:
    """Instructions of the first thread and of all others, from callgrind's per-thread files."""
    caller = others = 0
    for path in sorted(out.parent.glob(out.name + "-*")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("summary:"):
                value = int(line.split()[1])
                if path.name.endswith("-01"):
                    caller += value
                else:
                    others += value
                break
    return caller, others


def scenarios(quick: bool) -> list[Scenario]:
    found = [Scenario("track()", "track", "evmiddleware", True)]
    apps = ("raw-asgi", "flask") if quick else ("raw-asgi", "flask", "django")
    for app in apps:
        configs = ["bare", "floor", "evmiddleware"]
        if app == "raw-asgi" and not quick:
            configs.append("asgi-correlation-id")
        visitors = (True, False) if app == "raw-asgi" else (True,)
        for returning in visitors:
            for config in configs:
                visitor = "returning" if returning else "new"
                found.append(Scenario(f"{app}/{config}/{visitor}", app, config, returning))
    return found


def report(results: dict[Scenario, Count]) -> None:
    rows = []
    for scenario, count in results.items():
        if scenario.kind == "track":
            rows.append(
                ["track() to FloKit, 1,000 events a request", fmt_int(count.caller), fmt_int(count.others)]
            )
    print_table(
        "Instructions per event: the caller's thread (track) and the dispatcher thread (delivery)",
        ["scenario", "caller's thread", "dispatcher"],
        rows,
    )
    rows = []
    for scenario, count in results.items():
        if scenario.kind == "track":
            continue
        visitor = "returning" if scenario.returning else "new"
        bare = _find(results, scenario.kind, "bare", scenario.returning)
        floor = _find(results, scenario.kind, "floor", scenario.returning)
        added = count.caller - bare.caller if bare else float("nan")
        floor_added = floor.caller - bare.caller if bare and floor else float("nan")
        row = [
            scenario.kind,
            scenario.config,
            visitor,
            fmt_int(count.caller),
            fmt_int(count.others),
            "" if scenario.config == "bare" else fmt_int(added),
            "" if scenario.config in ("bare", "floor") else fmt_ratio(added / floor_added),
            "" if scenario.config == "bare" or not bare else f"{100 * added / bare.caller:.1f}%",
        ]
        rows.append(row)
    print_table(
        "Instructions per request: request thread, other threads, and what the request thread adds to the "
        "bare app",
        ["app", "middleware", "visitor", "request thread", "other threads", "added", "vs floor", "of bare"],
        rows,
    )


def _find(results: dict[Scenario, Count], kind: str, config: str, returning: bool) -> Count | None:
    for scenario, count in results.items():
        if (scenario.kind, scenario.config, scenario.returning) == (kind, config, returning):
            return count
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Instructions per event and per request, under callgrind.")
    parser.add_argument("--quick", action="store_true", help="fewer operations and scenarios")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="children at once (default: CPUs)"
    )
    parser.add_argument("--only", default="", help="scenarios whose label contains this (track, flask/, ...)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, config, returning, count = args.child.split(",")
        _child(Scenario("", kind, config, returning == "1"), int(count))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind); this benchmark needs it.")
        return 2
    small, large = (200, 700) if args.quick else _REQUESTS
    track_small, track_large = (2000, 7000) if args.quick else _TRACK_CALLS
    started = time.monotonic()
    results: dict[Scenario, Count] = {}
    with tempfile.TemporaryDirectory(prefix="evm-callgrind-") as folder:
        jobs: dict[Scenario, Any] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for scenario in scenarios(args.quick):
                if args.only not in scenario.label:
                    continue
                if scenario.kind == "track":
                    sizes = (track_small, track_large)
                elif scenario.kind in ("flask", "django") and not args.quick:
                    sizes = _FRAMEWORK_REQUESTS
                else:
                    sizes = (small, large)
                jobs[scenario] = pool.submit(measure, scenario, *sizes, Path(folder))
            for scenario, job in jobs.items():
                results[scenario] = job.result()
                print(
                    f"  ... {scenario.label}: {fmt_int(results[scenario].caller)} / "
                    f"{fmt_int(results[scenario].others)}",
                    flush=True,
                )
    print(
        f"\nInstruction counts under callgrind, Python {sys.version.split()[0]}; "
        "per operation, start-up cancelled out (two runs of different lengths).\n"
    )
    report(results)
    print(f"Run took {time.monotonic() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
