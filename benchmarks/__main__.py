"""Run one benchmark by name: ``python -m benchmarks pipeline [options]``; without a name, list them."""

from __future__ import annotations

import importlib
import sys

#: Benchmark modules in this package; each has ``main(argv) -> int`` and a module docstring.
BENCHMARKS = ("pipeline", "middleware", "faults", "instructions")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print("usage: python -m benchmarks NAME [options]   (NAME --help for its options)\n")
        for name in BENCHMARKS:
            doc = importlib.import_module(f"benchmarks.{name}").__doc__ or ""
            print(f"  {name:12s} {doc.strip().splitlines()[0] if doc.strip() else ''}")
        return 0 if not argv else 2
    module = importlib.import_module(f"benchmarks.{argv[0]}")
    return int(module.main(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
