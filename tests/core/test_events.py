from __future__ import annotations

import datetime as dt
import uuid

import pytest

from evmiddleware import events
from evmiddleware.errors import EventError
from evmiddleware.events import clean_id, make_event, new_event_id, stamp


def build(name="signup", **kwargs):
    kwargs.setdefault("user_id", "u1")
    kwargs.setdefault("anonymous_id", None)
    return make_event(
        name,
        kwargs.pop("properties", None),
        max_depth=10,
        max_bytes=32768,
        on_drop=lambda k, w: None,
        **kwargs,
    )


def test_ids_are_unique_uuid4_strings():
    ids = {new_event_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(uuid.UUID(i).version == 4 for i in list(ids)[:100])


def test_ids_count_on_across_the_4096_ids_made_from_one_head(monkeypatch: pytest.MonkeyPatch) -> None:
    # The counter's last three hex digits come from a table, the nine before them once per 4,096 ids:
    # start two ids before a head changes, and at the very last counter of its 46 random bits.
    for counter_bits in ((0x123456789 << 12) | 0xFFE, (1 << 46) - 2):
        monkeypatch.setattr(events, "_randbits", lambda bits, low=counter_bits: low if bits == 46 else 0)
        events._reseed()
        ids = [new_event_id() for _ in range(5)]
        start = (1 << 47) | counter_bits
        assert [int(i[-12:], 16) for i in ids] == list(range(start, start + 5))
        assert all(len(i) == 36 and uuid.UUID(i).version == 4 for i in ids)
    monkeypatch.undo()
    events._reseed()  # a fresh random prefix for the tests after this one


def test_event_is_immutable_and_replaceable():
    event = build()
    with pytest.raises(AttributeError):
        event.name = "x"  # type: ignore[misc]
    assert event._replace(name="other").name == "other"


@pytest.mark.parametrize("name", ["", "   ", "x" * 256, None, 42, "caf\udcff"])
def test_bad_names_are_refused(name):
    with pytest.raises(EventError) as info:
        build(name)
    assert info.value.reason == "invalid_name"


def test_a_non_ascii_name_that_encodes_is_kept():
    assert build("café ✓").name == "café ✓"


def test_name_is_stripped_and_255_characters_pass():
    assert build("  signup ").name == "signup"
    assert build("x" * 255).name == "x" * 255


def test_naive_timestamp_is_taken_as_utc():
    event = build(timestamp=dt.datetime(2024, 1, 2, 3, 4, 5))
    assert event.timestamp == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def test_aware_timestamp_is_converted_to_utc():
    plus2 = dt.timezone(dt.timedelta(hours=2))
    event = build(timestamp=dt.datetime(2024, 1, 2, 5, 0, tzinfo=plus2))
    assert event.timestamp == dt.datetime(2024, 1, 2, 3, 0, tzinfo=dt.timezone.utc)
    assert event.timestamp.tzinfo == dt.timezone.utc


def test_iso_string_and_epoch_timestamps_are_accepted():
    assert build(timestamp="2024-03-15T14:22:00Z").timestamp.hour == 14
    assert build(timestamp=0).timestamp.year == 1970


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00.5Z", (12, 0, 500000)),
        ("2024-05-01T12:00:00.1234Z", (12, 0, 123400)),
        ("2024-05-01T12:00:00+0000", (12, 0, 0)),
        ("2024-05-01T14:30:00+02:30", (12, 0, 0)),
        ("20240501T120000Z", (12, 0, 0)),
        ("2024-05-01 12:00:00.123456789", (12, 0, 123456)),
        ("2024-05-01T12:00", (12, 0, 0)),
        ("2024-05-01", (0, 0, 0)),
    ],
)
def test_iso_8601_forms_are_read_alike_on_every_python(text, expected):
    # Python 3.10's fromisoformat refused all but the first-to-last of these (3.11 reads them all).
    timestamp = build(timestamp=text).timestamp
    assert (timestamp.date(), (timestamp.hour, timestamp.minute, timestamp.microsecond)) == (
        dt.date(2024, 5, 1),
        expected,
    )
    assert timestamp.tzinfo == dt.timezone.utc


@pytest.mark.parametrize(
    "text",
    [
        "2024-13-01",
        "2024-05-01T25:00",
        "2024-05-01T12:00+25:00",
        "1 May 2024",
        "\u0662\u0660\u0662\u0664-\u0660\u0661-\u0661\u0665",  # Arabic-Indic digits, which \d took
        "2024-0501T10:3000Z",  # basic and extended form mixed
    ],
)
def test_impossible_iso_times_are_refused(text):
    with pytest.raises(EventError) as info:
        build(timestamp=text)
    assert info.value.reason == "invalid_timestamp"


def test_default_timestamp_is_now_utc_to_the_millisecond():
    before = dt.datetime.now(dt.timezone.utc)
    event = build()
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= event.timestamp
    assert event.timestamp <= dt.datetime.now(dt.timezone.utc)
    assert event.timestamp.tzinfo is dt.timezone.utc
    assert event.timestamp.microsecond % 1000 == 0  # what providers store; see stamp()


def test_stamp_is_the_millisecond_of_the_time_and_shared_within_it():
    first = stamp(1_795_000_000.123_4)
    assert first == dt.datetime(2026, 11, 18, 11, 6, 40, 123_000, tzinfo=dt.timezone.utc)
    assert stamp(1_795_000_000.123_9) is first  # the same millisecond: the same object
    later = stamp(1_795_000_000.124_0)
    assert later.microsecond == 124_000 and later is not first
    assert stamp(1_795_000_000.123_5) == first  # an earlier millisecond again: built anew, equal


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (-0.5, dt.datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=dt.timezone.utc)),
        (-1.0, dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)),
        (-0.0004, dt.datetime(1969, 12, 31, 23, 59, 59, 999_000, tzinfo=dt.timezone.utc)),
        (-14_182_940.25, dt.datetime(1969, 7, 20, 20, 17, 39, 750_000, tzinfo=dt.timezone.utc)),
        (253_402_300_799.123, dt.datetime(9999, 12, 31, 23, 59, 59, 123_000, tzinfo=dt.timezone.utc)),
    ],
)
def test_stamp_floors_times_before_1970_and_is_exact_in_any_year(at, expected):
    assert stamp(at) == expected


def test_stamp_rounds_to_the_microsecond_before_it_cuts_as_fromtimestamp_does():
    # 1795000000.001 is stored as 1795000000.000999927...: fromtimestamp reads .001000.
    assert stamp(1_795_000_000.001).microsecond == 1_000
    assert stamp(1_795_000_000.000_998).microsecond == 0
    assert stamp(1_795_000_000.000_999_8).microsecond == 1_000


def test_bad_timestamp_is_refused():
    with pytest.raises(EventError) as info:
        build(timestamp="yesterday")
    assert info.value.reason == "invalid_timestamp"


@pytest.mark.parametrize(
    "timestamp",
    [
        dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        "0001-01-01T00:00:00+01:00",
        dt.datetime(9999, 12, 31, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-1))),
    ],
    ids=["year 1 at +01:00", "its ISO string", "year 9999 at -01:00"],
)
def test_a_timestamp_outside_datetime_s_range_in_utc_is_an_invalid_timestamp(timestamp):
    with pytest.raises(EventError) as info:
        build(timestamp=timestamp)
    assert info.value.reason == "invalid_timestamp"


def test_integer_user_id_becomes_string_and_long_ids_are_refused():
    assert build(user_id=42).user_id == "42"
    with pytest.raises(EventError):
        build(user_id="u" * 256)


@pytest.mark.parametrize("padded", ["\u00a0u1", "u1\u2003", " u1", "u1\t"])
def test_ids_padded_with_any_whitespace_are_stripped(padded):
    # Unicode whitespace as well as ASCII: the common-case test and the full clean agree.
    assert clean_id(padded, "user_id") == "u1"
    event = build(user_id=padded, anonymous_id=padded)
    assert (event.user_id, event.anonymous_id) == ("u1", "u1")
