"""Compact UTF-8 JSON for everything the library sends: orjson where it is installed, else the stdlib.

Encoding is the dispatcher's largest cost per event: the stdlib takes 4.8 µs for a typical request
event, orjson 0.6 µs (``python -m benchmarks.pipeline`` shows what that does end to end). Both write
the same compact form with non-ASCII characters as UTF-8. Events reach here normalised (no NaN, str
keys), so the one difference left is what orjson refuses: ints past 64 bits and types it does not
know go through the stdlib, which either writes them or raises its usual error.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps", "dumps_items", "flat_json_size", "stdlib_dumps"]

# json.dumps() with any non-default option builds a new JSONEncoder per call: a third of its cost.
_stdlib_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def stdlib_dumps(value: Any) -> bytes:
    """The stdlib's compact UTF-8 JSON; raises ``ValueError`` (NaN, lone surrogates) or ``TypeError``."""
    return _stdlib_encode(value).encode()


def _stdlib_items(values: list[Any]) -> bytes:
    return stdlib_dumps(values)[1:-1]


def _stdlib_flat_size(value: dict[Any, Any]) -> int | None:
    for key in value:
        if type(key) is not str:  # the stdlib would write 1 or None as a key; orjson refuses them
            return None
    try:
        return len(stdlib_dumps(value))
    except ValueError:  # a lone surrogate (UnicodeEncodeError)
        return None


try:
    import orjson
except ImportError:  # not a CPython wheel platform: the stdlib does it all
    dumps = stdlib_dumps
    dumps_items = _stdlib_items
    flat_json_size = _stdlib_flat_size
else:
    _orjson_dumps = orjson.dumps
    _OrjsonError = orjson.JSONEncodeError

    def dumps(value: Any) -> bytes:
        """Compact UTF-8 JSON, the form every provider accepts."""
        try:
            # orjson's bytes keep the 4 KiB buffer they were written into; encoded events wait in
            # open batches (a thousand per provider while it is down), so keep only what is used.
            return memoryview(_orjson_dumps(value)).tobytes()
        except _OrjsonError:
            return stdlib_dumps(value)

    def dumps_items(values: list[Any]) -> bytes:
        """The items of ``values`` as JSON joined by commas: the list without its brackets."""
        try:
            # One copy, right-sized: a batch's worth of events is hundreds of KiB.
            return memoryview(_orjson_dumps(values))[1:-1].tobytes()
        except _OrjsonError:
            return _stdlib_items(values)

    def flat_json_size(value: dict[Any, Any]) -> int | None:
        """The size of ``value``'s JSON, a dict of str, int, finite float, bool and None values; ``None``
        when it cannot be written as it is: a key that is not exactly a ``str``, an int past 64 bits,
        a string that is not UTF-8 (a lone surrogate). ``flat_copy`` leaves those checks to it."""
        try:
            return len(_orjson_dumps(value))
        except _OrjsonError:
            return None
