"""Settings of the example shop: everything from the environment, nothing to set up."""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("EXAMPLE_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",")

INSTALLED_APPS = ["evmiddleware_django"]  # system checks and the optional identify() at sign-in
MIDDLEWARE = [
    "django_app.auth.SignedCookieUserMiddleware",  # stands in for AuthenticationMiddleware: sets request.user
    "evmiddleware_django.EventMiddleware",  # after it, so the events carry the user id
]
# Django's own setting for the integration; the environment supplies the providers.
EVMIDDLEWARE = {"EXCLUDE_PATHS": os.environ.get("EVMIDDLEWARE_EXCLUDE_PATHS", "/health")}

ROOT_URLCONF = "django_app.urls"
WSGI_APPLICATION = "django_app.wsgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}  # never used
USE_TZ = True
