from __future__ import annotations

import pytest

from evmiddleware.sandbox.validation import (
    canonical_json,
    is_iso_datetime,
    json_depth,
    parse_json,
    strings_over,
)


@pytest.mark.parametrize(
    ("value", "with_offset", "without_offset"),
    [
        ("2024-03-15T14:22:00Z", True, True),
        ("2024-03-15T14:22:00.123456Z", True, True),
        ("2024-03-15T14:22:00+05:30", True, True),
        ("2024-03-15T14:22:00z", True, True),
        # RFC 3339 (require_offset) wants seconds and a ±HH:MM offset; plain ISO 8601 does not.
        ("2024-03-15T14:22:00-0800", False, True),
        ("2024-12-25T10:00+0000", False, True),
        ("2024-12-25T10:00+00:00", False, True),
        ("2024-12-25T10:00Z", False, True),
        ("2024-03-15T14:22:00", False, True),
        ("2024-03-15T14:22", False, True),
        ("2024-03-15", False, False),
        ("2024-03-15 14:22:00Z", False, False),
        ("2024-02-30T00:00:00Z", False, False),
        ("2024-03-15T25:00:00Z", False, False),
        ("2024-03-15T14:22:00+24:00", False, False),
        (1710512520, False, False),
        ("", False, False),
    ],
)
def test_iso_datetime(value, with_offset, without_offset):
    assert is_iso_datetime(value, require_offset=True) is with_offset
    assert is_iso_datetime(value, require_offset=False) is without_offset


@pytest.mark.parametrize("raw", [b"", b"  ", b"{", b'{"a": NaN}', b"[Infinity]", b"\xff", b"[" * 100_000])
def test_parse_json_rejects(raw):
    with pytest.raises(ValueError):
        parse_json(raw)


def test_canonical_json_ignores_key_order():
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == canonical_json(
        {"a": [1, {"c": 3, "d": 2}], "b": 1}
    )


def test_json_depth_and_strings():
    assert json_depth({}, 10) == 1
    assert json_depth({"a": [{"b": 1}]}, 10) == 3
    assert json_depth(5, 10) == 0
    assert strings_over({"a": ["é" * 3]}, 5)
    assert not strings_over({"a": ["é" * 2]}, 5)
