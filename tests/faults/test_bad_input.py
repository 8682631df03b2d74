"""Bad input never raises into the app, never changes a response and never costs another event.

Property values of every Python type (hypothesis and hand-picked), cyclic and very deep structures,
very long strings, odd event names, and provider answers that are not JSON: each is tracked, trimmed or
refused with a counted reason, and good events tracked in between, for the same visitor (so in the same
batches and, for Klaviyo, the same profile request), all reach every provider exactly once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import fractions
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

import evmiddleware
from evmiddleware.wsgi import EventMiddleware
from tests.faults import harness
from tests.faults.harness import PROVIDERS, SandboxProcess, copies

#: The property that numbers the good events (a name hypothesis will not draw for a bad one).
MARK = "good_event_number_in_this_test"
#: Why an event may be refused before any provider sees it (``stats()["dropped"]``).
REFUSED = {"invalid_name", "invalid_id", "invalid_properties", "too_deep", "too_large"}
#: Why a provider may drop or skip an event it cannot take (``stats()["providers"][p]``).
PROVIDER_REASONS = {"encode_error", "too_large", "invalid_name", "too_many_properties", "no_identity"}


class Color(enum.Enum):
    RED = 1


class Flavour(str, enum.Enum):
    SWEET = "sweet"


@dataclasses.dataclass
class Point:
    x: int
    y: Any


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


class BadEquality:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no ==")

    def __hash__(self) -> int:
        raise RuntimeError("no hash")


class ExplodingMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1


ODDITIES: list[Any] = [
    object(),
    BadRepr(),
    BadEquality(),
    Color.RED,
    Flavour.SWEET,
    Point(1, object()),
    Point(2, [Decimal("1.5"), {"deep": (1, 2)}]),
    print,
    len,
    int,
    type,
    Ellipsis,
    NotImplemented,
    range(3),
    memoryview(b"abc"),
    bytearray(b"abc"),
    threading.Lock(),
    ValueError("an exception"),
    1 + 2j,
    fractions.Fraction(1, 3),
    Decimal("NaN"),
    Decimal("sNaN"),
    Decimal("-Infinity"),
    Decimal("1e999999"),  # int() of it takes 30 s: must not reach the caller's thread
    Decimal("123456789012345678901234567890.5"),
    float("nan"),
    float("-inf"),
    -0.0,
    10**5000,  # past Python's 4,300-digit limit for int -> str
    2**64,
    dt.datetime.max,
    dt.datetime.min.replace(tzinfo=dt.timezone.utc),
    dt.time(23, 59, tzinfo=dt.timezone(dt.timedelta(hours=5))),
    dt.timedelta(days=-1),
    uuid.UUID(int=0),
    "\ud800 lone surrogate",
    "\x00\x1f control \u2028 separator",
    "é" * 30_000,
    ExplodingMapping(),
]


def pick(options: list[Any]) -> st.SearchStrategy[Any]:
    """``sampled_from`` without ever calling ``repr`` on the options (some refuse)."""

    def option(index: int) -> Any:
        return options[index]

    return st.integers(0, len(options) - 1).map(option)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.decimals(),
    st.fractions(),
    st.complex_numbers(),
    st.text(),
    st.text(st.characters(categories=["Cs", "Cc", "Zl", "So"])),
    st.binary(),
    st.datetimes(),
    st.datetimes(
        timezones=st.builds(dt.timezone, st.timedeltas(dt.timedelta(hours=-23), dt.timedelta(hours=23)))
    ),
    st.dates(),
    st.times(),
    st.timedeltas(),
    st.uuids(),
    pick(ODDITIES),
)
keys = st.one_of(
    st.text(), st.integers(), st.none(), st.booleans(), st.floats(), st.binary(), st.tuples(st.integers())
)
hashable = st.one_of(st.integers(), st.text(), st.none(), pick([Color.RED, BadRepr(), object()]))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.frozensets(hashable, max_size=4),
        st.sets(hashable, max_size=4),
        st.dictionaries(keys, inner, max_size=4),
    ),
    max_leaves=16,
)


class Ledger:
    """Tracks bad input, each followed by a good event of the same visitor, and checks the outcome."""

    def __init__(self) -> None:
        self.good = 0

    def bad(self, name: Any, properties: Any, **ids: Any) -> str | None:
        result = evmiddleware.track(name, properties, **(ids or {"user_id": "visitor"}))  # never raises
        assert result is None or isinstance(result, str)
        assert evmiddleware.track("good", {MARK: self.good}, user_id="visitor") is not None
        self.good += 1
        return result

    def check(self, sandbox: SandboxProcess) -> dict[str, Any]:
        evmiddleware.flush(60)
        stats = evmiddleware.stats()
        assert set(stats["dropped"]) <= REFUSED, stats["dropped"]
        wanted = {m: 1 for m in range(self.good)}
        for provider in PROVIDERS:
            row = stats["providers"][provider]
            assert dict(copies(sandbox, provider, MARK)) == wanted, provider  # no good event lost or doubled
            assert row["rejected"] == 0, (provider, row["rejected_reasons"])
            assert set(row["dropped"]) | set(row["skipped"]) <= PROVIDER_REASONS, (provider, row)
            finished = row["sent"] + sum(row["dropped"].values()) + sum(row["skipped"].values())
            assert (row["queued"], finished) == (0, row["enqueued"]), (provider, row)  # every one counted
        return stats


@pytest.fixture
def ledger(sandbox: SandboxProcess) -> Ledger:
    harness.configure(sandbox)
    return Ledger()


def track_every_type(ledger: Ledger, examples: int) -> None:
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(key=keys, value=values)
    def one(key: Any, value: Any) -> None:
        ledger.bad("typed", {key: value, "plain": "ok"})

    one()
    for value in ODDITIES:  # each at least once, whatever hypothesis drew
        ledger.bad("typed", {"v": value})
        ledger.bad("typed", {"v": [value], "w": {"nested": value}})


def test_property_values_of_every_python_type_are_sent_trimmed_or_refused_with_a_reason(sandbox, ledger):
    track_every_type(ledger, 200)
    ledger.check(sandbox)


@pytest.mark.soak
def test_soak_property_values_of_every_python_type(sandbox, ledger):
    track_every_type(ledger, 5_000)
    ledger.check(sandbox)


def cyclic_list() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


def cyclic_dict() -> dict[str, Any]:
    mapping: dict[str, Any] = {"a": 1}
    mapping["self"] = mapping
    return mapping


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"down": value}
    return value


def test_hand_picked_structures_names_and_sizes_each_have_a_counted_outcome(sandbox, ledger):
    cases: list[tuple[str, Any, Any, str]] = [
        # (name, properties, ids, expected: "sent" or the refusal reason)
        ("cyclic", {"list": cyclic_list(), "dict": cyclic_dict()}, None, "sent"),
        ("nested", {"v": nested(9)}, None, "sent"),  # with the top level: depth 10, the limit
        ("nested", {"v": nested(100_000)}, None, "too_deep"),
        ("long", {"v": "x" * 20_000_000}, None, "too_large"),
        ("long", {"k" * 1_000_000: 1}, None, "too_large"),
        ("many", {f"p{i}": i for i in range(5_000)}, None, "too_large"),
        ("huge_int", {"v": [10**5000]}, None, "invalid_properties"),
        ("surrogate", {"v": ["\udfff"]}, None, "invalid_properties"),
        ("not_a_mapping", ["a", "list"], None, "invalid_properties"),
        ("", {}, None, "invalid_name"),
        ("   \n\t", {}, None, "invalid_name"),
        ("x" * 256, {}, None, "invalid_name"),
        ("x" * 1_000_000, {}, None, "invalid_name"),
        (None, {}, None, "invalid_name"),
        (42, {}, None, "invalid_name"),
        (b"bytes", {}, None, "invalid_name"),
        ("!!!", {}, None, "sent"),  # Flywheel skips it (no character it accepts); the others take it
        ("?", {}, None, "sent"),
        ("名前 ✓", {}, None, "sent"),
        ("\x00", {}, None, "sent"),
        ("a" * 255, {}, None, "sent"),
        ("ids", {}, {"user_id": "u" * 256}, "invalid_id"),
        ("ids", {}, {"user_id": object()}, "invalid_id"),
        ("ids", {}, {"anonymous_id": ["a"]}, "invalid_id"),
    ]
    refused: Counter[str] = Counter()
    for name, properties, ids, expected in cases:
        result = ledger.bad(name, properties, **(ids or {}))
        outcome = "sent" if result is not None else "refused"
        assert outcome == ("sent" if expected == "sent" else "refused"), (repr(name)[:40], expected)
        if expected != "sent":
            refused[expected] += 1
    stats = ledger.check(sandbox)
    assert stats["dropped"] == dict(refused)
    # Flywheel takes [a-zA-Z0-9_-] only: "!!!", "?", "名前 ✓" and "\x00" keep nothing it accepts.
    assert stats["providers"]["flywheel"]["skipped"] == {"invalid_name": 4}


def test_values_no_provider_could_encode_are_refused_by_track_itself(sandbox, ledger):
    """A lone surrogate (in a value, a key or the name) cannot be written as UTF-8, and an int past the
    4,300 digits Python writes cannot be written at all: track() refuses each, counted, even on its
    fast path for flat dicts, rather than every provider dropping it later as ``encode_error``."""
    assert ledger.bad("flat", {"v": "\ud800"}) is None
    assert ledger.bad("flat", {"k\udc00": 1}) is None
    assert ledger.bad("flat", {"v": 10**5000}) is None
    assert ledger.bad("\udfff", {}) is None
    stats = ledger.check(sandbox)
    assert stats["dropped"] == {"invalid_properties": 3, "invalid_name": 1}
    for provider in PROVIDERS:
        assert stats["providers"][provider]["dropped"] == {}, provider


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    index = int(environ["PATH_INFO"].strip("/"))
    evmiddleware.track(*BAD_CALLS[index][:2])
    evmiddleware.track("good_in_request", {MARK: index})
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-App", "yes")])
    return [f"body {index}".encode()]


BAD_CALLS: list[tuple[Any, Any]] = [
    ("cyclic", {"v": cyclic_list()}),
    ("deep", {"v": nested(50_000)}),
    ("long", {"v": "y" * 5_000_000}),
    ("odd", {"v": ODDITIES}),
    ("", {}),
    (None, None),
    ("decimal", {"v": Decimal("1e999999")}),
    ("surrogate", {"v": "\ud800"}),
]


def test_bad_input_inside_a_request_never_changes_the_response(sandbox):
    harness.configure(sandbox, flameup_anonymous_as_user_id=True)  # request events: the cookie's id
    plain = Client(wsgi_app)
    wrapped = Client(EventMiddleware(wsgi_app, install_signal_handler=False))
    for index in range(len(BAD_CALLS)):
        expected = plain.get(f"/{index}")
        got = wrapped.get(f"/{index}")
        assert (got.status, got.get_data()) == (expected.status, expected.get_data()), index
        headers = [(k, v) for k, v in got.headers.items() if k.lower() != "set-cookie"]
        assert headers == list(expected.headers.items()), index
    evmiddleware.flush(60)
    for provider in PROVIDERS:
        # Each request's good event made it, despite the bad one tracked just before it.
        assert sorted(copies(sandbox, provider, MARK)) == list(range(len(BAD_CALLS))), provider


# -- provider answers ------------------------------------------------------------------------------
def test_an_answer_that_is_not_json_is_refused_with_its_status_and_text_and_costs_no_other_event(sandbox):
    harness.configure(sandbox)
    for provider in PROVIDERS:
        sandbox.inject(
            provider, kind="status", status=400, body="<html><body>Bad Request</body></html>", count=1
        )
    harness.track_paced(60)
    evmiddleware.flush(60)
    stats = evmiddleware.stats()["providers"]
    for provider in PROVIDERS:
        first = sandbox.requests(provider)[0]
        assert first["fault"] == "status"
        assert stats[provider]["rejected_reasons"] == {"http_400": first["events"]}, provider
        assert stats[provider]["retried"] == 0, provider  # a 400 is final: not sent again
        assert len(copies(sandbox, provider)) == 60 - first["events"], provider


def test_the_reason_of_a_non_json_refusal_is_readable_in_the_signal(sandbox):
    harness.configure(sandbox)
    reasons: list[tuple[str, str]] = []

    def on_dropped(sender: Any, event: Any, provider: str | None, reason: str, **extra: Any) -> None:
        reasons.append((provider or "", reason))

    sandbox.inject_all(kind="status", status=400, body="<html>Bad Request</html>", count=1)
    with evmiddleware.signals.event_dropped.connected_to(on_dropped):
        evmiddleware.track("one", user_id="visitor")
        evmiddleware.flush(30)
    assert sorted(reasons) == [(p, "rejected: http_400: <html>Bad Request</html>") for p in sorted(PROVIDERS)]
