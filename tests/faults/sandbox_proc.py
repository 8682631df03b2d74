"""The sandbox in a process of its own, driven over stdin/stdout with one JSON object per line.

``python sandbox_proc.py RATE_LIMITS_JSON`` prints ``{"env": ..., "url": ...}`` once it listens, then
answers each command line (``{"op": "stats"}``, ``{"op": "inject", "provider": ..., "fault": {...}}``,
...) with ``{"ok": result}`` or ``{"error": text}``. It stops when its stdin closes. The client and the
emulated APIs each get a core this way, and the request log (with arrival times on the machine's
monotonic clock, which every process shares) stays readable.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

from evmiddleware.sandbox import Fault, Sandbox


def _records(sandbox: Sandbox, provider: str) -> list[dict[str, Any]]:
    return [dataclasses.asdict(record) for record in sandbox.requests(provider)]


def _up(sandbox: Sandbox, port: int) -> None:
    # Bind the same port again, so clients configured with the old URL reach it.
    sandbox._port = port
    sandbox.start()


def main() -> None:
    sandbox = Sandbox(port=0, rate_limits=json.loads(sys.argv[1])).start()
    port = sandbox.port
    ops: dict[str, Any] = {
        "stats": lambda: sandbox.stats(),
        "inject": lambda provider, fault: sandbox.inject(provider, Fault(**fault)),
        "clear": lambda provider=None: sandbox.clear_faults(provider),
        "requests": lambda provider: _records(sandbox, provider),
        "accepted": lambda provider: sandbox.accepted(provider),
        "reset": lambda: sandbox.reset(),
        "down": lambda: sandbox.stop(),
        "up": lambda: _up(sandbox, port),
    }
    print(json.dumps({"env": sandbox.env(), "url": sandbox.url}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        try:
            reply: dict[str, Any] = {"ok": ops[command.pop("op")](**command)}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)
    sandbox.stop()


if __name__ == "__main__":
    main()
