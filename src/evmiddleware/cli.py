"""``evmiddleware demo | sandbox | check``: the command line."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._parse import MAX_SECONDS
from .errors import ConfigurationError

__all__ = ["main"]

#: More simulated visitors than the demo needs to show anything; each one is a few real requests.
MAX_VISITORS = 100_000


def _bounded(kind: Callable[[str], Any], low: float, high: float, what: str) -> Callable[[str], Any]:
    """An argparse type: ``kind`` of the text, from ``low`` to ``high``; anything else is a usage
    error (exit 2) rather than a traceback further on."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:  # nan fails too
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


# bind() raised OverflowError past 65535; nan, inf and 1e309 crashed flush()/shutdown(); 0 visitors or
# fewer served nothing and still said all was well.
_port = _bounded(int, 0, 65535, "a port (0-65535; 0 picks a free one)")
_timeout = _bounded(float, 0, MAX_SECONDS, f"a number of seconds from 0 to {MAX_SECONDS:.0f}")
_visitors = _bounded(int, 1, MAX_VISITORS, f"a number of visitors from 1 to {MAX_VISITORS:,}")


def _check(_: argparse.Namespace) -> int:
    from .config import load_settings
    from .spool import check_spool

    try:
        settings = load_settings({})
        # What configure() checks beyond the settings (runtime.Runtime); a spool not there yet is not
        # created by a mere check.
        if settings.spool and not settings.disabled:
            check_spool(settings.spool, create=False)
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if settings.disabled:
        print("tracking is disabled (EVMIDDLEWARE_DISABLED): nothing would be sent; once enabled,")
    print("events would be sent to:")
    for provider in settings.providers:
        limits = provider.limits
        rate = ", ".join(f"{n} per {w:g} s" for n, w in limits.rate) or "no published rate limit"
        print(f"  {provider.describe()}  [≤ {limits.max_events} events/request, {rate}]")
    if not settings.providers:
        # An explicit choice to discard: tracking is off, as with EVMIDDLEWARE_DISABLED.
        print("  nowhere (local_sink=off): events are discarded, not counted")
    print(
        f"flush every {settings.flush_interval:g} s; at most {settings.max_queue} queued events per provider "
        f"({settings.overflow}); spool: {settings.spool or 'off'}"
    )
    if settings.exclude_paths:
        print(f"paths not tracked: {', '.join(settings.exclude_paths)}")
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from .sandbox import serve

    try:
        serve(args.port, host="127.0.0.1")
    except OSError as exc:  # the port is taken, or not ours to bind
        print(f"error: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(visitors=args.visitors)


def _spool(args: argparse.Namespace) -> int:
    from . import api, spool

    try:
        if args.action == "inspect":
            summary = spool.summarize(args.path)
            if not summary:
                print(f"{args.path}: empty")
            for provider, row in sorted(summary.items()):
                print(
                    f"{provider:<10} {row['events']:>8} events  {row['leased']:>8} leased by a live process"
                    f"  oldest {row['oldest_seconds']:g} s"
                )
        elif args.action == "purge":
            print(f"deleted {spool.purge(args.path, args.provider)} spooled events")
        else:  # retry: send them now with the configured providers
            freed = spool.release_all(args.path)
            api.configure(spool=args.path)
            delivered = api.flush(args.timeout)
            api.shutdown(args.timeout)
            left = sum(row["events"] for row in spool.summarize(args.path).values())
            print(f"{freed} spooled events retried; {left} still in the spool")
            return 0 if delivered and not left else 1
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evmiddleware", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run the whole pipeline against a built-in sandbox of the five APIs"
    )
    demo.add_argument("--visitors", type=_visitors, default=40, help="simulated visitors (default 40)")
    demo.set_defaults(run=_demo)
    sandbox = commands.add_parser("sandbox", help="serve the five providers' sandbox on 127.0.0.1")
    sandbox.add_argument("--port", type=_port, default=8765, help="0 picks a free port (default 8765)")
    sandbox.set_defaults(run=_sandbox)
    check = commands.add_parser("check", help="validate the configuration and say what would be sent where")
    check.set_defaults(run=_check)
    spool = commands.add_parser("spool", help="inspect, retry or purge a durable spool file")
    spool.add_argument("action", choices=["inspect", "retry", "purge"])
    spool.add_argument("path")
    spool.add_argument("--provider", help="purge: only this provider's events")
    spool.add_argument("--timeout", type=_timeout, default=30.0, help="retry: seconds to deliver")
    spool.set_defaults(run=_spool)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
