"""``identify()`` when a user signs in, with ``EVMIDDLEWARE = {"IDENTIFY_ON_LOGIN": True}``."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in  # type: ignore[import-untyped]

import evmiddleware

from . import conf

__all__ = ["connect", "identify_on_login"]


def identify_on_login(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    """Tie the visitor of the current request to the user who just signed in (``user_logged_in``)."""
    if user is None or getattr(user, "pk", None) is None:
        return
    try:
        enabled = conf.config().identify_on_login
    except evmiddleware.ConfigurationError:
        return
    if enabled and evmiddleware.current_request() is not None:
        evmiddleware.identify(str(user.pk))


def connect() -> None:
    user_logged_in.connect(identify_on_login, dispatch_uid="evmiddleware_django.identify_on_login")
