"""The AI Playground's saved state: conversations (one thread per pane) and uploaded images."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Conversation(models.Model):
    """A comparison of one or more chat endpoints, each pane keeping its own thread.

    ``panes`` is a list, one dict per pane, in pane order::

        {"endpoint": "local-smollm2-chat", "system": "…", "params": {…},
         "messages": [...],   # what the model sees: user turns and its OWN answers, as returned
         "turns": [...]}      # what the page shows: prompt, image reports, reasoning, answer, figures

    ``messages`` hold assistant answers exactly as the API returned them (reasoning blocks with
    their signatures), so sending them back verifies.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, default="New conversation")
    panes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title


class PlaygroundImage(models.Model):
    """An image uploaded to the playground, already through the API's image pipeline.

    ``data_url`` is what is sent to the model; ``report`` is ``PreparedImage.report()``.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="playground_images")
    name = models.CharField(max_length=255, blank=True)
    data_url = models.TextField()
    report = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name or str(self.id)
