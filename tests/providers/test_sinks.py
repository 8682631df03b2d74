"""The local sinks' own behaviour (their delivery through the pipeline is in tests/core)."""

from __future__ import annotations

import asyncio
import json
import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evmiddleware.providers.base import Encoded
from evmiddleware.providers.sinks import JsonlSink

from ._helpers import batch_of, event


@contextmanager
def file_size_limit() -> Iterator[None]:
    """Writes past 2,000 bytes fail with EFBIG (a full disk, as far as the sink can tell)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the process killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_jsonl_write_cut_short_leaves_nothing_and_the_retry_writes_each_event_once(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"earlier": true}\n')
    sink = JsonlSink(path)
    events = [event(properties={"i": i, "pad": "x" * 200}, id=f"id-{i}") for i in range(20)]
    batch = batch_of([Encoded(e, sink.encode(e)) for e in events], None, "k")

    with file_size_limit():
        first = asyncio.run(sink.send(batch, None))  # type: ignore[arg-type]  # sinks use no client
    assert first.outcome == "retry"
    assert path.read_bytes() == b'{"earlier": true}\n'  # was half a line, glued to the retry's first
    assert asyncio.run(sink.send(batch, None)).outcome == "ok"  # type: ignore[arg-type]
    lines = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [line.get("id") for line in lines[1:]] == [f"id-{i}" for i in range(20)]
