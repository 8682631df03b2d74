"""The shared wire helpers: JSON bytes (orjson or the stdlib, the same bytes) and ISO timestamps."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import tracemalloc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evmiddleware import _json
from evmiddleware.providers.base import iso_utc

UTC = dt.timezone.utc

# What normalised properties can hold. Floats are left out of the byte-for-byte check: orjson writes
# 1e+16 as 1e16, the same number in JSON.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_dumps_writes_the_stdlibs_compact_utf8_bytes(value: Any) -> None:
    try:
        expected = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # lone surrogates: both refuse
        with pytest.raises(ValueError):
            _json.dumps(value)
        return
    assert _json.dumps(value) == expected


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_dumps_writes_floats_that_read_back_the_same(number: float) -> None:
    assert json.loads(_json.dumps({"x": number})) == {"x": number}


def test_what_orjson_refuses_goes_through_the_stdlib() -> None:
    huge = 10**30  # past 64 bits
    assert _json.dumps({"n": huge}) == b'{"n":1000000000000000000000000000000}'
    with pytest.raises(ValueError):
        _json.dumps({"s": "\ud800"})


@given(st.lists(json_values, min_size=1, max_size=5))
def test_dumps_items_is_each_item_s_json_joined_by_commas(values: list[Any]) -> None:
    try:
        expected = b",".join(_json.dumps(value) for value in values)
    except ValueError:  # lone surrogates: refused as a whole too
        with pytest.raises(ValueError):
            _json.dumps_items(values)
        return
    assert _json.dumps_items(values) == expected


def test_stdlib_dumps_refuses_nan() -> None:
    with pytest.raises(ValueError):
        _json.stdlib_dumps({"x": float("nan")})


@given(st.datetimes(timezones=st.just(UTC) | st.timezones()))
def test_iso_utc_is_isoformat_in_utc_with_milliseconds_and_z(moment: dt.datetime) -> None:
    in_utc = moment.astimezone(UTC)
    assert iso_utc(moment) == in_utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_iso_utc_changes_with_the_second_it_caches() -> None:
    base = dt.datetime(2026, 11, 23, 23, 59, 59, 999_000, tzinfo=UTC)
    assert iso_utc(base) == "2026-11-23T23:59:59.999Z"
    assert iso_utc(base + dt.timedelta(milliseconds=1)) == "2026-11-24T00:00:00.000Z"
    assert iso_utc(base) == "2026-11-23T23:59:59.999Z"


@given(st.lists(st.datetimes(timezones=st.just(UTC) | st.timezones()), max_size=20))
def test_iso_utc_is_right_for_any_sequence_of_times_whatever_second_it_cached(
    moments: list[dt.datetime],
) -> None:
    for moment in moments:
        expected = moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for _ in range(2):  # the second time, the same object: what ``iso_utc`` formatted last
            assert iso_utc(moment) == expected


def test_iso_utc_formats_the_last_second_there_is() -> None:
    last = dt.datetime.max.replace(tzinfo=UTC)
    assert iso_utc(last) == "9999-12-31T23:59:59.999Z"
    assert iso_utc(last - dt.timedelta(seconds=1)) == "9999-12-31T23:59:58.999Z"
    assert iso_utc(last) == "9999-12-31T23:59:59.999Z"


def test_encoded_events_keep_no_slack_memory() -> None:
    # Encoded events wait in open batches: a short event must not hold a 4 KiB buffer.
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [_json.dumps({"event": "page_view", "n": i}) for i in range(1000)]
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(kept) == 1000
    assert grown < 1000 * 200


def test_without_orjson_the_stdlib_writes_the_same_bytes() -> None:
    # On an interpreter without orjson wheels the library must still work, byte for byte the same.
    script = (
        "import sys; sys.modules['orjson'] = None\n"
        "from evmiddleware import _json\n"
        "assert _json.dumps is _json.stdlib_dumps\n"
        "value = {'name': 'caf\\u00e9', 'n': [1, True, None], 'big': 10**30}\n"
        "sys.stdout.buffer.write(_json.dumps(value) + b'|' + _json.dumps_items([value, value]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    value = {"name": "café", "n": [1, True, None], "big": 10**30}
    assert done.stdout == _json.dumps(value) + b"|" + _json.dumps_items([value, value])
