"""The SQL page: DuckDB with ``ai_query`` in the browser, for signed-in users.

The page posts the editor's SQL; the query runs in a thread of this process, as the signed-in
user, on the same engine as ``python manage.py sql`` (:mod:`endpoints.sql`). The run's partial
polls itself (htmx, every half second) while it runs, showing the ai_query rows done of those
handed over so far, and becomes the results table, the error or the cancellation when it ends.
Cancel interrupts DuckDB and the requests in flight. Runs live in this process's memory: each
person sees only their own, one runs at a time per person, and finished ones are forgotten after
:data:`KEEP_SECONDS` (their CSV with them).

Superusers' queries may read and write files on the server (``FROM 'reviews.csv'``); everyone
else's run with DuckDB's external access off.

Routes (under ``/sql/``, in the ``pages`` namespace; see ``playground/urls_pages.py``)::

    GET  /sql/                     the editor (``?run=<id>``: with that run; the no-JavaScript path)
    POST /sql/run                  start a run: its partial (htmx) or a redirect to the page
    GET  /sql/runs/<id>            the run's partial
    POST /sql/runs/<id>/cancel     cancel it
    GET  /sql/runs/<id>/csv        its rows as CSV
"""
from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from endpoints import registry
from endpoints.schemas import EMBEDDINGS

if TYPE_CHECKING:
    from endpoints.sql import Engine, SqlResult


def _sql():
    """endpoints.sql, imported with the first SQL run: DuckDB and pyarrow take ~50 MiB that a
    server whose SQL page is never used should not carry."""
    from endpoints import sql

    return sql

log = logging.getLogger("fondasi.sql")

#: Rows shown on the page (the CSV has every row the engine kept).
DISPLAY_ROWS = 500
#: Longest value shown in a cell (an embedding is thousands of characters; the CSV has it whole).
DISPLAY_CHARS = 300
KEEP_SECONDS = 3600
KEEP_PER_USER = 5
POLL = "500ms"


@dataclass
class Run:
    """One query of one person, running or finished."""

    id: str
    user_id: int
    sql: str
    engine: Engine
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    result: SqlResult | None = None
    error: str | None = None

    @property
    def state(self) -> str:
        if self.finished is None:
            return "running"
        if self.result is not None:
            return "done"
        return "cancelled" if self.engine.cancelled else "failed"

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def execute(self) -> None:
        try:
            self.result = self.engine.run(self.sql)
        except _sql().SqlError as exc:
            self.error = exc.message
        except Exception:  # noqa: BLE001 - the page shows a reference, never a traceback
            ref = uuid.uuid4().hex[:12]
            log.exception("Internal error %s in SQL run %s", ref, self.id)
            self.error = f"Internal error (reference {ref}); the server log has the details."
        finally:
            self.finished = time.monotonic()


_runs: dict[str, Run] = {}
_lock = threading.Lock()


class Busy(Exception):
    pass


def start(user: Any, sql: str) -> Run:
    """Start ``sql`` for ``user`` in a thread; Busy when one of theirs is still running."""
    with _lock:
        _forget_old(user.pk)
        if any(r.user_id == user.pk and r.finished is None for r in _runs.values()):
            raise Busy
        run_id = uuid.uuid4().hex
        engine = _sql().Engine(user.get_username(), external_access=user.is_superuser)
        run = _runs[run_id] = Run(run_id, user.pk, sql, engine)
    threading.Thread(target=run.execute, name=f"sql-run-{run.id[:8]}", daemon=True).start()
    return run


def _forget_old(user_id: int) -> None:
    now = time.monotonic()
    for key in [k for k, r in _runs.items() if r.finished is not None and now - r.finished > KEEP_SECONDS]:
        del _runs[key]
    mine = sorted((r for r in _runs.values() if r.user_id == user_id and r.finished is not None), key=lambda r: r.started)
    for run in mine[: max(0, len(mine) - KEEP_PER_USER + 1)]:
        del _runs[run.id]


def _run_of(request: HttpRequest, run_id: str) -> Run:
    """The signed-in user's run; someone else's is a 404, like one that does not exist."""
    run = _runs.get(run_id)
    if run is None or run.user_id != request.user.pk:
        raise Http404("No such query run: it finished more than an hour ago, or is not yours.")
    return run


# --- views ------------------------------------------------------------------------------------


class SqlForm(forms.Form):
    sql = forms.CharField(max_length=100_000, strip=False, error_messages={"required": "Write a query first."})


EXAMPLES = (
    ("Ask once", "SELECT ai_query('local-smollm2-chat', 'Can you explain AI in ten words?',\n"
                 "                modelParameters => {'max_tokens': 32}) AS answer;"),
    ("Batch over rows", "SELECT id, ai_query('local-smollm2-chat', 'Summarise in five words: ' || review,\n"
                        "                    modelParameters => {'max_tokens': 16}, failOnError => false) AS summary\n"
                        "FROM (VALUES (1, 'Great battery, poor screen.'), (2, 'Arrived late but works fine.')) AS reviews(id, review);"),
    ("Embeddings", "SELECT text, ai_query('local-minilm-embeddings', text) AS embedding\n"
                   "FROM (VALUES ('a cat sat on the mat'), ('stock markets fell')) AS t(text);"),
    ("JSON answer", "SELECT ai_query('local-smollm2-chat', 'Is the sky blue? Answer yes or no.',\n"
                    "                responseFormat => '{\"type\": \"json_schema\", \"json_schema\": {\"name\": \"a\", "
                    "\"schema\": {\"type\": \"object\", \"properties\": {\"answer\": {\"enum\": [\"yes\", \"no\"]}}, "
                    "\"required\": [\"answer\"]}}}',\n"
                    "                returnType => 'STRUCT(answer VARCHAR)') AS reply;"),
)


def _page(request: HttpRequest, sql: str, run: Run | None = None, problem: str = "", status: int = 200) -> HttpResponse:
    endpoints = sorted(registry.snapshot().values(), key=lambda e: e.name)
    context = {
        "section": "sql",
        "sql": sql,
        "examples": EXAMPLES,
        "endpoints": endpoints,
        "embeddings": EMBEDDINGS,
        "superuser": request.user.is_superuser,
        "problem": problem,
        **(_run_context(run) if run else {}),
    }
    return render(request, "pages/sql.html", context, status=status)


def _run_context(run: Run) -> dict[str, Any]:
    context: dict[str, Any] = {"run": run, "state": run.state, "progress": run.engine.progress, "poll": POLL}
    result = run.result
    if result is not None:
        context["rows"] = [[_shown(v) for v in row] for row in result.rows[:DISPLAY_ROWS]]
        context["columns"] = list(zip(result.columns, result.types))
        context["hidden_rows"] = max(0, len(result.rows) - DISPLAY_ROWS)
    return context


def _shown(value: Any) -> str | None:
    """A cell as the page shows it; None for SQL NULL."""
    if value is None:
        return None
    text = _sql().cell_text(value)
    return text if len(text) <= DISPLAY_CHARS else text[: DISPLAY_CHARS - 1] + "…"


def _run_partial(request: HttpRequest, run: Run | None, problem: str = "", status: int = 200) -> HttpResponse:
    context = {"problem": problem, **(_run_context(run) if run else {})}
    return render(request, "pages/_sql_run.html", context, status=status)


@login_required
@require_GET
def page(request: HttpRequest) -> HttpResponse:
    run = _runs.get(request.GET.get("run", ""))
    if run is not None and run.user_id != request.user.pk:
        run = None
    return _page(request, run.sql if run else EXAMPLES[0][1], run)


@login_required
@require_POST
def run_sql(request: HttpRequest) -> HttpResponse:
    """Start the posted SQL. htmx gets the run's partial (422 / 409 with the problem); a plain form
    post is redirected to the page showing the run."""
    form = SqlForm(request.POST)
    if not form.is_valid():
        problem = next(iter(form.errors.values()))[0]
        if request.htmx:
            return _run_partial(request, None, problem, status=422)
        return _page(request, request.POST.get("sql", ""), problem=problem, status=422)
    try:
        run = start(request.user, form.cleaned_data["sql"])
    except Busy:
        problem = "A query of yours is still running: cancel it, or wait for it to finish."
        if request.htmx:
            return _run_partial(request, None, problem, status=409)
        return _page(request, form.cleaned_data["sql"], problem=problem, status=409)
    if request.htmx:
        return _run_partial(request, run)
    return redirect(f"{reverse('pages:sql')}?run={run.id}")


@login_required
@require_GET
@never_cache
def run_status(request: HttpRequest, run_id: str) -> HttpResponse:
    return _run_partial(request, _run_of(request, run_id))


@login_required
@require_POST
def cancel(request: HttpRequest, run_id: str) -> HttpResponse:
    run = _run_of(request, run_id)
    run.engine.cancel()
    if request.htmx:
        return _run_partial(request, run)
    return redirect(f"{reverse('pages:sql')}?run={run.id}")


@login_required
@require_GET
def download(request: HttpRequest, run_id: str) -> HttpResponse:
    run = _run_of(request, run_id)
    if run.result is None:
        raise Http404("This query has no rows to download: it is still running, or it failed.")
    out = io.StringIO()
    _sql().write_csv(run.result, out)
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="fondasi-sql-{run.id[:8]}.csv"'
    return response


urlpatterns = [
    path("", page, name="sql"),
    path("run", run_sql, name="sql-run"),
    path("runs/<str:run_id>", run_status, name="sql-status"),
    path("runs/<str:run_id>/cancel", cancel, name="sql-cancel"),
    path("runs/<str:run_id>/csv", download, name="sql-csv"),
]
