"""The AI Playground's pages (its WebSocket routes are in playground/routing.py)."""
from django.urls import path

from . import views

app_name = "playground"
urlpatterns = [
    path("playground/", views.playground, name="index"),
    path("playground/pane", views.pane, name="pane"),
    path("playground/conversations", views.conversations, name="conversations"),
    path("playground/conversations/<int:pk>/rename", views.rename, name="rename"),
    path("playground/conversations/<int:pk>/delete", views.delete, name="delete"),
    path("playground/images", views.upload_images, name="images"),
    path("playground/images/<uuid:pk>", views.image, name="image"),
    path("playground/code", views.code, name="code"),
]
