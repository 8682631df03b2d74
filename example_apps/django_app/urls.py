from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.home),
    path("items/<int:item_id>", views.item),  # recorded as /items/{item_id}
    path("login", views.login),
    path("checkout", views.checkout),
    path("stream", views.stream),
    path("boom", views.boom),
    path("health", views.health),
]
