from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import subprocess
import sys
import uuid
from decimal import Decimal

import pytest

from evmiddleware.errors import EventError
from evmiddleware.normalize import flat_copy, normalize_properties


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: float


def run(props, *, max_depth=10, max_bytes=32 * 1024):
    drops: list[tuple[str, str]] = []
    result = normalize_properties(
        props, max_depth=max_depth, max_bytes=max_bytes, on_drop=lambda k, why: drops.append((k, why))
    )
    return result, drops


def test_flat_json_values_are_copied_unchanged():
    props = {"a": "x", "b": 1, "c": 1.5, "d": True, "e": None}
    result, drops = run(props)
    assert result == props
    assert result is not props
    assert drops == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.datetime(2024, 3, 15, 14, 22, tzinfo=dt.timezone.utc), "2024-03-15T14:22:00+00:00"),
        (dt.datetime(2024, 3, 15, 14, 22), "2024-03-15T14:22:00+00:00"),  # naive is UTC
        (dt.date(2024, 3, 15), "2024-03-15"),
        (Decimal("19.90"), 19.9),
        (Decimal("20"), 20),
        (uuid.UUID("12345678-1234-5678-1234-567812345678"), "12345678-1234-5678-1234-567812345678"),
        (Color.RED, "red"),
        ((1, 2), [1, 2]),
        ({3, 1, 2}, [1, 2, 3]),
        (frozenset({"b", "a"}), ["a", "b"]),
        (Point(1, 2.5), {"x": 1, "y": 2.5}),
    ],
)
def test_known_types_become_json(value, expected):
    result, drops = run({"v": value})
    assert result == {"v": expected}
    assert drops == []


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, Decimal("NaN"), b"bytes", object(), 1j])
def test_unsafe_values_are_dropped_key_by_key(value):
    result, drops = run({"bad": value, "good": 1})
    assert result == {"good": 1}
    assert [key for key, _ in drops] == ["bad"]


def test_nested_drop_names_the_dotted_key():
    result, drops = run({"outer": {"inner": [1, math.nan]}})
    assert result == {"outer": {"inner": [1]}}
    assert drops[0][0] == "outer.inner[1]"


def test_cyclic_structure_is_cut_not_recursed():
    cyclic: dict = {"a": 1}
    cyclic["self"] = cyclic
    result, drops = run({"c": cyclic})
    assert result == {"c": {"a": 1}}
    assert drops == [("c.self", "cyclic reference")]


@dataclasses.dataclass
class Node:
    name: str
    parent: Node | None = None


def test_a_cycle_through_a_dataclass_is_cut_like_one_through_a_dict():
    root = Node("root")
    root.parent = root
    result, drops = run({"node": root, "ok": 1})
    assert result == {"node": {"name": "root"}, "ok": 1}
    assert drops == [("node.parent", "cyclic reference")]


@pytest.mark.parametrize(
    "props",
    [{"s": "caf\ud800"}, {"caf\udc00": "x"}, {"s": ["caf\ud800"]}],
    ids=["flat value", "flat key", "nested value"],
)
def test_a_lone_surrogate_refuses_the_event_flat_or_nested(props):
    # No provider can encode it as UTF-8; refused here, not dropped later at every provider.
    with pytest.raises(EventError) as info:
        run(props)
    assert info.value.reason == "invalid_properties"


def test_non_ascii_text_that_encodes_takes_the_flat_path_unchanged():
    props = {"città": "Zürich 🚲", "n": 1}
    assert run(props) == (props, [])


def nested(levels: int) -> dict:
    """Properties ``levels`` containers deep, the properties dict itself the first level."""
    props: dict = {"leaf": 1}
    for _ in range(levels - 1):
        props = {"n": props}
    return props


@pytest.mark.parametrize("max_depth", [1, 2, 5, 10])
def test_depth_exactly_at_the_limit_passes_and_one_more_refuses_the_event(max_depth):
    at_limit = nested(max_depth)
    assert run(at_limit, max_depth=max_depth) == (at_limit, [])
    with pytest.raises(EventError) as info:
        run(nested(max_depth + 1), max_depth=max_depth)
    assert info.value.reason == "too_deep"


def test_lists_count_as_levels_of_nesting():
    props = {"a": [{"b": [1]}]}  # dict, list, dict, list: four levels
    assert run(props, max_depth=4)[0] == props
    with pytest.raises(EventError) as info:
        run(props, max_depth=3)
    assert info.value.reason == "too_deep"


def test_depth_far_over_limit_refuses_the_event():
    with pytest.raises(EventError) as info:
        run(nested(13), max_depth=5)
    assert info.value.reason == "too_deep"


def test_size_over_limit_refuses_the_event_and_exact_limit_passes():
    ok = {"s": "x" * 100}
    size = len('{"s":""}') + 100
    assert run(ok, max_bytes=size)[0] == ok
    with pytest.raises(EventError) as info:
        run(ok, max_bytes=size - 1)
    assert info.value.reason == "too_large"


def test_non_ascii_size_is_counted_in_bytes():
    # 100 "é" are 100 characters but 200 bytes of UTF-8: {"s":"…"} takes 208 bytes, not 108.
    with pytest.raises(EventError) as info:
        run({"s": "é" * 100}, max_bytes=150)
    assert info.value.reason == "too_large"
    assert run({"s": "é" * 100}, max_bytes=208)[0] == {"s": "é" * 100}
    with pytest.raises(EventError) as info:
        run({"s": "é" * 100}, max_bytes=207)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("12345678901234567890"), 12345678901234567890),  # 20 digits: an exact int
        (Decimal("1e25"), 1e25),  # a whole number past 20 digits: a float, not int()
        (Decimal("-1.5e300"), -1.5e300),
    ],
)
def test_decimals_with_large_exponents_become_floats_not_ints(value, expected):
    result, drops = run({"v": value})
    assert result == {"v": expected}
    assert type(result["v"]) is type(expected)
    assert drops == []


@pytest.mark.parametrize("value", [Decimal("1e999999"), Decimal("-1e999999")])
def test_a_decimal_past_the_float_range_is_dropped_never_made_an_int(value):
    # int() of Decimal("1e999999") writes a million digits (30 s on the caller's thread); as a float it
    # is out of range, so the value is dropped with that reason and the event goes on without it.
    result, drops = run({"v": value, "plain": 1})
    assert result == {"plain": 1}
    assert drops == [("v", "out of range for a JSON number")]


def test_non_mapping_properties_are_refused():
    with pytest.raises(EventError) as info:
        run(["a"])  # type: ignore[arg-type]
    assert info.value.reason == "invalid_properties"


def test_non_string_keys_are_converted_or_dropped():
    result, drops = run({1: "one", (1, 2): "tuple"})
    assert result == {"1": "one"}
    assert len(drops) == 1


def test_control_characters_count_as_the_six_bytes_json_writes_for_each():
    # "\x01" is written \u0001: 8,000 of them take 48,000 bytes, over a 32 KiB limit.
    with pytest.raises(EventError) as info:
        run({"s": "\x01" * 8000})
    assert info.value.reason == "too_large"
    assert run({"s": "\x01" * 5000})[0] == {"s": "\x01" * 5000}  # 30,008 bytes: within


def test_long_ints_count_their_digits_against_the_size_limit():
    # Ten ints of 4,000 digits take 40 KB of JSON: over 32 KiB, though every value is a plain int.
    with pytest.raises(EventError) as info:
        run({f"n{i}": 10**3999 for i in range(10)})
    assert info.value.reason == "too_large"
    assert run({"n": 10**3999})[0] == {"n": 10**3999}  # 4,000 digits: within


def test_ints_past_64_bits_are_kept_exactly_and_past_json_s_digit_limit_refused():
    assert run({"big": 2**70, "low": -(2**63), "high": 2**64 - 1})[0] == {
        "big": 2**70,
        "low": -(2**63),
        "high": 2**64 - 1,
    }
    with pytest.raises(EventError) as info:
        run({"n": 10**5000})  # Python writes at most 4,300 digits of an int
    assert info.value.reason == "invalid_properties"


class Text(str):
    pass


@pytest.mark.parametrize(
    "props",
    [
        {"x": math.nan},
        {"x": math.inf},
        {"x": -math.inf},
        {"x": "\ud800"},
        {"\ud800": 1},
        {Text("k"): 1},  # a key that is not exactly a str
        {1: "x"},
        {"x": Text("v")},
        {"x": Color.RED},
        {"x": [1]},
    ],
    ids=repr,
)
def test_the_flat_path_leaves_anything_to_convert_or_refuse_to_the_slow_path(props):
    assert flat_copy(props, 32 * 1024) is None


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1])
def test_with_orjson_ints_past_64_bits_take_the_slow_path_which_writes_them_exactly(number):
    pytest.importorskip("orjson")  # the stdlib writes them on the flat path, to the same JSON
    assert flat_copy({"x": number}, 32 * 1024) is None
    assert run({"x": number}) == ({"x": number}, [])


@pytest.mark.parametrize("props", [{"a": "x", "b": 1, "c": -1.5, "d": False, "e": None}, {"x": 2**64 - 1}])
def test_the_flat_path_copies_plain_values_and_ints_within_64_bits(props):
    copied = flat_copy(props, 32 * 1024)
    assert copied == props and copied is not props


def test_the_flat_path_takes_a_dict_exactly_at_the_size_limit_and_not_one_byte_more():
    props = {"k": "é" * 10}  # {"k":"éééééééééé"}: 8 bytes around 20 of text
    assert flat_copy(props, 28) == props
    assert flat_copy(props, 27) is None


def test_without_orjson_the_flat_path_checks_keys_and_text_itself():
    script = (
        "import sys; sys.modules['orjson'] = None\n"
        "from evmiddleware.normalize import flat_copy\n"
        "assert flat_copy({'k': 'é' * 10, 'n': 10**30}, 28 + 37) == {'k': 'é' * 10, 'n': 10**30}\n"
        "assert flat_copy({'k': 'é' * 10}, 27) is None\n"
        "assert flat_copy({1: 'x'}, 100) is None\n"
        "assert flat_copy({'x': '\\ud800'}, 100) is None\n"
        "assert flat_copy({'x': float('nan')}, 100) is None\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
