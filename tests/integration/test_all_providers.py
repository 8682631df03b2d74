"""Done-when of the providers issue: 10,000 mixed events through all five providers into the sandbox."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import subprocess
import sys
import uuid

import httpx
import pytest

import evmiddleware

# Time scaled down on both sides: the sandbox enforces these windows exactly as it enforces the
# published ones, and the clients are configured with the same numbers.
SCALED = {"flameup": [(2000, 1.0)], "klaviyo": [(10, 0.1), (150, 1.0)], "flokit": [(100, 1.0)]}

NAMES = [
    "Page Viewed!",
    "añadir al carrito",
    "signup",
    "a/b test",
    "  spaced  ",
    "x" * 200,
    "!!!",
    "checkout",
]


def properties(i: int):
    return {
        "i": i,
        "price": decimal.Decimal("19.90"),
        "at": dt.datetime(2026, 1, 1, 12, 0),
        "order": uuid.UUID(int=i),
        "nested": {"a": {"b": [1, 2, {"c": "d"}]}, "empty": None},
        "tags": {"x", "y"},
        "blob": b"not json",
        "nan": float("nan"),
        "obj": object(),
    }


_SERVE = """
import json, sys, time
from evmiddleware.sandbox import Sandbox
sandbox = Sandbox(port=0, rate_limits=json.loads(sys.argv[1])).start()
print(json.dumps(sandbox.env()), flush=True)
sys.stdin.read()  # until the test closes our stdin
sandbox.stop()
"""


@pytest.fixture
def sandbox(monkeypatch):
    """The sandbox in its own process: the client and the emulated APIs each get a core."""
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVE, json.dumps(SCALED)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        env = json.loads(process.stdout.readline())
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        root = env["EVMIDDLEWARE_FLOKIT_URL"].rsplit("/", 1)[0]
        yield lambda: httpx.get(f"{root}/_stats", timeout=10).json()
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(10)


def test_ten_thousand_mixed_events_reach_every_provider_exactly(sandbox):
    evmiddleware.configure(
        flush_interval=0.2,
        max_queue=20_000,
        flameup_rate_limit="2000/1",
        klaviyo_rate_limit="10/0.1,150/1",
        flokit_rate_limit="100/1",
    )
    users = [f"user-{n}" for n in range(10)]
    visitors = [f"anon-{n}" for n in range(10)]
    for i in range(10_000):
        who = {"user_id": users[i // 2 % 10]} if i % 2 == 0 else {"anonymous_id": visitors[i // 2 % 10]}
        assert evmiddleware.track(NAMES[i % len(NAMES)], properties(i), **who) is not None
    assert evmiddleware.flush(180)
    ours = evmiddleware.stats()["providers"]
    theirs = sandbox()["providers"]

    punctuation_only = sum(1 for i in range(10_000) if NAMES[i % len(NAMES)] == "!!!")
    expected_sent = {
        "userflux": 10_000,
        "flokit": 10_000,
        "flameup": 5_000,  # only signed-in users' events
        "flywheel": 10_000 - punctuation_only,
        "klaviyo": 10_000,
    }
    expected_skipped = {
        "userflux": {},
        "flokit": {},
        "flameup": {"no_user_id": 5_000},
        "flywheel": {"invalid_name": punctuation_only},
        "klaviyo": {},
    }
    for name, sent in expected_sent.items():
        assert theirs[name]["accepted_events"] == sent, name
        assert theirs[name]["rejected_requests"] == 0, name
        assert theirs[name]["rate_limited"] == 0, name
        assert theirs[name]["duplicates"] == 0, name
        assert ours[name]["sent"] == sent, name
        assert ours[name]["skipped"] == expected_skipped[name], name
        assert ours[name]["dropped"] == {}, name
        assert ours[name]["rejected"] == 0, name
    assert theirs["userflux"]["largest_batch"] <= 50
    assert theirs["klaviyo"]["requests"] >= 20  # one profile per request
