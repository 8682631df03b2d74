"""Fault injection, per provider: what became of every event under each fault the sandbox can throw.

    python -m benchmarks.faults [--events 500] [--outage-events 100000] [--max-queue 1000] [--only 503,slow]

Each scenario of ``tests/faults/harness.py`` (the ones the fault suite asserts on) runs once against
the sandbox, in a process of its own so client and emulated APIs each get a core, with all five
providers configured at once. The table says, per provider and fault: events tracked; delivered
(distinct events the provider accepted, i.e. accepted minus duplicates); duplicated (copies the
provider stored again, and the key it would drop them by); dropped, skipped and rejected by reason;
requests sent again; and, while the providers were down, the peak RSS growth of this process and
how much a ``track()`` call cost compared with before the outage. Bounded: about a minute.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Mapping, Sequence

from tests.faults.harness import PROVIDERS, SCENARIOS, Row, SandboxProcess, outage

import evmiddleware
from benchmarks._common import print_table


def _reasons(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason} {count:,}" for reason, count in sorted(counts.items())) or "-"


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1_048_576:.1f} MB"


def _row(row: Row) -> list[str]:
    duplicated = f"{row.duplicated:,}" + (f" ({row.dedup_key})" if row.duplicated else "")
    latency = "-" if row.latency_ratio is None else f"{row.latency_ratio:.1f}x"
    return [
        row.provider,
        row.fault,
        f"{row.tracked:,}",
        f"{row.delivered:,}",
        duplicated,
        _reasons(row.dropped),
        _reasons(row.skipped),
        _reasons(row.rejected),
        f"{row.retried:,}",
        _mb(row.rss_growth),
        latency,
    ]


HEADERS = [
    "provider",
    "fault",
    "sent",
    "delivered",
    "duplicated (dedup key)",
    "dropped",
    "skipped",
    "rejected",
    "retried",
    "RSS growth down",
    "track() down/up",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500, help="events per scenario (default 500)")
    parser.add_argument(
        "--outage-events", type=int, default=100_000, help="events tracked while down (default 100,000)"
    )
    parser.add_argument("--max-queue", type=int, default=1_000, help="max_queue during the outage")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    logging.basicConfig(level=logging.CRITICAL)  # the pipeline's own warnings would flood the table

    rows: list[list[str]] = []
    timings: list[str] = []
    sandbox = SandboxProcess()
    try:
        for scenario in SCENARIOS:
            if only and scenario.name not in only:
                continue
            sandbox.reset()
            began = time.monotonic()
            if scenario.name == "outage":
                result = outage(sandbox, args.outage_events, max_queue=args.max_queue)
            else:
                result = scenario.run(sandbox, args.events)
            evmiddleware.shutdown(5)
            timings.append(f"{scenario.name} {time.monotonic() - began:.1f} s")
            rows.extend(_row(result[provider]) for provider in PROVIDERS)
    finally:
        sandbox.close()
    rows.sort(key=lambda row: PROVIDERS.index(row[0]))
    print_table("Faults per provider (sandbox in its own process, all five providers at once)", HEADERS, rows)
    print("scenario times: " + "; ".join(timings))
    print(
        "duplicated: copies stored again after an answer was lost; a provider with a dedup key drops\n"
        "them (FloKit replays its answer for the same Idempotency-Key and stores nothing: 0 here)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
