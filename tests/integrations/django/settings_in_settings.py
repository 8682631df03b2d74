"""The example shop's settings with the pipeline settings (the sandbox's provider keys and URLs, the
flush interval, ...) in ``EVMIDDLEWARE`` rather than the environment: moved out of it when Django
reads these settings, so only the app's ``ready()`` can apply them (served by test_server.py)."""

from __future__ import annotations

import os

from django_app.settings import *  # noqa: F403
from django_app.settings import EVMIDDLEWARE as _EXAMPLE

_PREFIX = "EVMIDDLEWARE_"
_moved = {
    name[len(_PREFIX) :]: os.environ.pop(name) for name in sorted(os.environ) if name.startswith(_PREFIX)
}
EVMIDDLEWARE = {**_moved, **_EXAMPLE}
