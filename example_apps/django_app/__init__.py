"""The example shop with Django: ``"evmiddleware_django.EventMiddleware"`` in ``MIDDLEWARE``.

Run it under a real server (from ``example_apps/``), with providers from the environment::

    gunicorn --workers 2 --preload --bind 127.0.0.1:8000 django_app.wsgi
    uvicorn django_app.asgi:application --host 127.0.0.1 --port 8000

No set-up step: no database, no migration, no CSRF token for these routes.
"""
