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


def _run_id() -> str:
    return uuid.uuid4().hex


class SqlRun(models.Model):
    """One query run on the SQL page (``playground/sql.py``): its text, how it ended and its rows.

    A run is saved when it starts and again when it ends, so the history survives a restart; a run
    left ``running`` by a process that stopped is marked failed when next seen. ``rows`` hold each
    cell as the page and the CSV show it (text; None for NULL), within FONDASI_SQL_MAX_ROWS and
    FONDASI_SQL_MAX_RESULT_BYTES; a person keeps their last FONDASI_SQL_HISTORY runs.
    """

    RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"

    id = models.CharField(primary_key=True, max_length=32, default=_run_id, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sql_runs")
    sql = models.TextField()
    state = models.CharField(max_length=10, default=RUNNING)
    created_at = models.DateTimeField(auto_now_add=True)
    seconds = models.FloatField(null=True, blank=True)  # how long it ran; None while it runs
    ai_done = models.PositiveIntegerField(default=0)  # ai_query rows answered, of ...
    ai_total = models.PositiveIntegerField(default=0)  # ... those handed over
    error = models.TextField(blank=True)
    columns = models.JSONField(default=list)
    types = models.JSONField(default=list)
    rows = models.JSONField(default=list)
    row_count = models.PositiveIntegerField(default=0)
    note = models.TextField(blank=True)  # which limit cut the rows, if one did

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "-created_at"], name="sqlrun_user_created")]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.sql[:60]}"
