"""The example shop under WSGI with its pipeline settings in ``settings.EVMIDDLEWARE`` only (see
``settings_in_settings``; served by test_server.py)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.integrations.django.settings_in_settings"
application = get_wsgi_application()
