"""Event ids (and so batch keys, FloKit's Idempotency-Key) stay apart between processes whose app
seeded the ``random`` module before importing us."""

from __future__ import annotations

import subprocess
import sys
import uuid

_CHILD = """
import random
random.seed(1)  # as scripts, ML jobs and test runners do, before importing the library
from evmiddleware.events import new_event_id
print(" ".join(new_event_id() for _ in range(3)))
"""


def ids_of_a_seeded_process() -> list[str]:
    done = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_two_processes_that_seed_random_alike_get_different_ids():
    first, second = ids_of_a_seeded_process(), ids_of_a_seeded_process()
    assert len(first) == len(second) == 3
    assert set(first).isdisjoint(second), f"both processes made {first}"
    assert first[0][:24] != second[0][:24]  # the random prefix itself differs
    for event_id in first + second:
        parsed = uuid.UUID(event_id)
        assert (str(parsed), parsed.version, parsed.variant) == (event_id, 4, uuid.RFC_4122)
