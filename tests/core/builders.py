"""Events for tests that need an ``Event`` without going through ``track()``."""

from __future__ import annotations

from evmiddleware.events import Event, make_event


def an_event(number: int = 0, key: str = "i") -> Event:
    """Event ``e`` of user ``u`` with one property, ``{key: number}``."""
    return make_event(
        "e",
        {key: number},
        user_id="u",
        anonymous_id=None,
        max_depth=10,
        max_bytes=10_000,
        on_drop=lambda k, w: None,
    )
