"""Django configured once for these tests, with the example app's settings."""

from __future__ import annotations

import os

import pytest

django = pytest.importorskip("django")
from django.conf import settings  # noqa: E402

if not settings.configured:
    # Only for setup(): the variable would otherwise leak into every subprocess of the test session.
    previous = os.environ.pop("DJANGO_SETTINGS_MODULE", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "django_app.settings"
    try:
        django.setup()
    finally:
        os.environ.pop("DJANGO_SETTINGS_MODULE")
        if previous is not None:
            os.environ["DJANGO_SETTINGS_MODULE"] = previous
