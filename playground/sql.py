"""The SQL page: DuckDB with ``ai_query`` in the browser, for signed-in users.

The page posts the editor's SQL; the query runs in a thread of this process, as the signed-in
user, on the same engine as ``python manage.py sql`` (:mod:`endpoints.sql`). The run's partial
polls itself (htmx, every half second) while it runs, showing the ai_query rows done of those
handed over so far, and becomes the results table, the error or the cancellation when it ends.
Cancel interrupts DuckDB and the requests in flight.

Each run is a :class:`~playground.models.SqlRun` row, saved when it starts and when it ends (with
its rows, within FONDASI_SQL_MAX_ROWS / FONDASI_SQL_MAX_RESULT_BYTES): the page lists a person's
runs newest first (their last FONDASI_SQL_HISTORY), each reachable by its link after a reload or a
restart. Only the engine of a running run lives in memory (its progress and Cancel), so a run
this process did not start and that still says ``running`` was left by a process that stopped: it
is marked failed when next seen. A person has one run going at a time; a second Run while one
runs is refused with a message that points at the running one (it stays on the page, with its
Cancel). Everyone sees and cancels only their own runs: another's is a 404 on every URL.

Superusers' queries may read and write files on the server (``FROM 'reviews.csv'``); everyone
else's run with DuckDB's external access off.

Routes (under ``/sql/``, in the ``pages`` namespace; see ``playground/urls_pages.py``)::

    GET  /sql/                     the editor, the latest run and the run history
                                   (``?run=<id>``: with that run; the no-JavaScript path)
    POST /sql/run                  start a run: its partial (htmx) or a redirect to the page
    GET  /sql/runs                 the run history (htmx partial)
    GET  /sql/runs/<id>            the run's partial
    POST /sql/runs/<id>/cancel     cancel it
    GET  /sql/runs/<id>/csv        its rows as CSV
"""
from __future__ import annotations

import csv
import io
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import push_url, reswap, retarget, trigger_client_event

from endpoints import registry
from endpoints.schemas import EMBEDDINGS

from .models import SqlRun

if TYPE_CHECKING:
    from endpoints.sql import Engine


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
POLL = "500ms"
HISTORY_POLL = "1s"
#: The htmx event that makes the run history reload itself.
CHANGED = "sql-runs-changed"
INTERRUPTED = "The server stopped while this query was running, so it has no rows. Run it again."


@dataclass
class Progress:
    """ai_query rows done of those handed over (a running run's comes from its engine)."""

    done: int = 0
    total: int = 0


@dataclass
class Active:
    """A run going on in this process: what shows its progress and cancels it."""

    run_id: str
    user_id: int
    engine: Engine
    started: float = field(default_factory=time.monotonic)


_active: dict[str, Active] = {}
_lock = threading.Lock()


class Busy(Exception):
    def __init__(self, run: SqlRun) -> None:
        super().__init__(run.pk)
        self.run = run


def start(user: Any, sql: str) -> SqlRun:
    """Save and start ``sql`` for ``user`` in a thread; Busy (with that run) while one of theirs runs."""
    with _lock:
        _settle(user.pk)
        running = next((a for a in _active.values() if a.user_id == user.pk), None)
        if running is not None:
            raise Busy(SqlRun.objects.get(pk=running.run_id))
        engine = _sql().Engine(user.get_username(), external_access=user.is_superuser)
        run = SqlRun.objects.create(user=user, sql=sql)
        active = _active[run.pk] = Active(run.pk, user.pk, engine)
    _forget_old(user.pk)
    threading.Thread(target=_execute, args=(active, sql), name=f"sql-run-{run.pk[:8]}", daemon=True).start()
    return run


def _execute(active: Active, sql: str) -> None:
    """Run the query and save how it ended (then it leaves memory)."""
    engine = active.engine
    fields: dict[str, Any] = {}
    try:
        result = engine.run(sql)
        fields = {"state": SqlRun.DONE, "columns": result.columns, "types": result.types, "note": result.note,
                  "rows": [[None if v is None else _sql().cell_text(v) for v in row] for row in result.rows],
                  "row_count": len(result.rows), "seconds": result.seconds}
    except _sql().SqlError as exc:
        fields = {"state": SqlRun.CANCELLED if engine.cancelled else SqlRun.FAILED, "error": exc.message}
    except Exception:  # noqa: BLE001 - the page shows a reference, never a traceback
        ref = uuid.uuid4().hex[:12]
        log.exception("Internal error %s in SQL run %s", ref, active.run_id)
        fields = {"state": SqlRun.FAILED, "error": f"Internal error (reference {ref}); the server log has the details."}
    finally:
        fields.setdefault("seconds", time.monotonic() - active.started)
        fields.update(ai_done=engine.progress.done, ai_total=engine.progress.total)
        try:
            SqlRun.objects.filter(pk=active.run_id).update(**fields)
        except Exception:  # noqa: BLE001 - the run must still leave memory
            log.exception("Could not save SQL run %s", active.run_id)
        finally:
            with _lock:
                _active.pop(active.run_id, None)
            connection.close()  # this thread's own database connection


def _settle(user_id: int) -> None:
    """Mark ``user_id``'s runs that say running but are not going on here as failed: the process
    that ran them stopped. Call with ``_lock`` held (a run is saved and made active under it)."""
    stale = SqlRun.objects.filter(user_id=user_id, state=SqlRun.RUNNING).exclude(
        pk__in=[a.run_id for a in _active.values() if a.user_id == user_id])
    if stale.exists():
        stale.update(state=SqlRun.FAILED, error=INTERRUPTED)


def _forget_old(user_id: int) -> None:
    """Keep ``user_id``'s last SQL_HISTORY runs (a running one is never forgotten)."""
    keep = max(1, int(settings.SQL_HISTORY))
    old = list(SqlRun.objects.filter(user_id=user_id).values_list("pk", flat=True)[keep:])
    if old:
        SqlRun.objects.filter(pk__in=old).exclude(state=SqlRun.RUNNING).delete()


def _live(run: SqlRun) -> SqlRun:
    """``run`` as it stands now, with ``progress`` and ``elapsed`` (seconds) for the templates."""
    active = _active.get(run.pk)
    if active is None and run.state == SqlRun.RUNNING:
        run.refresh_from_db()  # it ended since it was read
    if active is not None and run.state == SqlRun.RUNNING:
        run.progress = active.engine.progress
        run.elapsed = time.monotonic() - active.started
    else:
        run.progress = Progress(run.ai_done, run.ai_total)
        run.elapsed = run.seconds or 0.0
    return run


def _history(user: Any) -> list[SqlRun]:
    """``user``'s runs, newest first, without their rows."""
    with _lock:
        _settle(user.pk)
    return [_live(r) for r in SqlRun.objects.filter(user=user).defer("rows", "columns", "types")]


def _run_of(request: HttpRequest, run_id: str) -> SqlRun:
    """The signed-in user's run; someone else's is a 404, like one that does not exist."""
    with _lock:
        _settle(request.user.pk)
    run = SqlRun.objects.filter(pk=run_id, user=request.user).first()
    if run is None:
        raise Http404("No such query run of yours: it was forgotten (you keep your last "
                      f"{settings.SQL_HISTORY}), or it is not yours.")
    return _live(run)


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


def _page(request: HttpRequest, sql: str, run: SqlRun | None = None, problem: str = "", status: int = 200,
          busy: SqlRun | None = None) -> HttpResponse:
    endpoints = sorted(registry.snapshot().values(), key=lambda e: e.name)
    runs = _history(request.user)
    shown = run or busy
    context = {
        "section": "sql",
        "sql": sql,
        # When the editor's text is a run's (a newer draft typed in this browser wins: static/js/sql.js).
        "sql_at": int(shown.created_at.timestamp() * 1000) if shown and shown.sql == sql else 0,
        "now_ms": int(time.time() * 1000),
        "examples": EXAMPLES,
        "endpoints": endpoints,
        "embeddings": EMBEDDINGS,
        "superuser": request.user.is_superuser,
        "problem": problem,
        "busy": busy,
        **_history_context(runs, shown),
        **(_run_context(shown) if shown else {}),
    }
    return render(request, "pages/sql.html", context, status=status)


def _history_context(runs: list[SqlRun], current: SqlRun | None) -> dict[str, Any]:
    return {"runs": runs, "current_id": current.pk if current else "", "history_poll": HISTORY_POLL,
            "any_running": any(r.state == SqlRun.RUNNING for r in runs), "history_size": settings.SQL_HISTORY}


def _run_context(run: SqlRun) -> dict[str, Any]:
    context: dict[str, Any] = {"run": run, "state": run.state, "progress": run.progress, "poll": POLL}
    if run.state == SqlRun.DONE:
        context["rows"] = [[_shown(v) for v in row] for row in run.rows[:DISPLAY_ROWS]]
        context["columns"] = list(zip(run.columns, run.types))
        context["hidden_rows"] = max(0, run.row_count - DISPLAY_ROWS)
    return context


def _shown(value: str | None) -> str | None:
    """A cell as the page shows it; None for SQL NULL."""
    if value is None:
        return None
    return value if len(value) <= DISPLAY_CHARS else value[: DISPLAY_CHARS - 1] + "…"


def _run_partial(request: HttpRequest, run: SqlRun, status: int = 200) -> HttpResponse:
    return render(request, "pages/_sql_run.html", _run_context(run), status=status)


def _problem(request: HttpRequest, problem: str, status: int, busy: SqlRun | None = None) -> HttpResponse:
    """htmx: the problem in its own place above the run, which stays as it was."""
    response = render(request, "pages/_sql_problem.html", {"problem": problem, "busy": busy}, status=status)
    return reswap(retarget(response, "#sql-problem"), "innerHTML")


@login_required
@require_GET
def page(request: HttpRequest) -> HttpResponse:
    """The editor with a run: the one named by ``?run=`` (the user's own), or their latest."""
    run_id = request.GET.get("run")
    if run_id is not None:
        try:
            run = _run_of(request, run_id)
        except Http404 as exc:
            return _page(request, EXAMPLES[0][1], problem=str(exc), status=404)
    else:
        latest = SqlRun.objects.filter(user=request.user).first()
        run = _run_of(request, latest.pk) if latest else None
    return _page(request, run.sql if run else EXAMPLES[0][1], run)


def _busy_message(busy: SqlRun) -> str:
    return (f"Your query started at {timezone.localtime(busy.created_at):%H:%M:%S} is still running: cancel it, or wait for it to "
            "finish, before running another. It stays in Your runs, with its progress and Cancel.")


@login_required
@require_POST
def run_sql(request: HttpRequest) -> HttpResponse:
    """Start the posted SQL. htmx gets the run's partial (422 / 409 with the problem, in its own
    place); a plain form post is redirected to the page showing the run."""
    form = SqlForm(request.POST)
    if not form.is_valid():
        problem = next(iter(form.errors.values()))[0]
        if request.htmx:
            return _problem(request, problem, 422)
        return _page(request, request.POST.get("sql", ""), problem=problem, status=422)
    try:
        run = start(request.user, form.cleaned_data["sql"])
    except Busy as busy:
        problem = _busy_message(busy.run)
        if request.htmx:
            return _problem(request, problem, 409, _live(busy.run))
        return _page(request, form.cleaned_data["sql"], problem=problem, status=409, busy=_live(busy.run))
    if not request.htmx:
        return redirect(f"{reverse('pages:sql')}?run={run.pk}")
    response = render(request, "pages/_sql_run.html", {**_run_context(_live(run)), "clear_problem": True})
    push_url(response, f"{reverse('pages:sql')}?run={run.pk}")
    return trigger_client_event(response, CHANGED)


@login_required
@require_GET
@never_cache
def history(request: HttpRequest) -> HttpResponse:
    return render(request, "pages/_sql_history.html", _history_context(_history(request.user), None))


@login_required
@require_GET
@never_cache
def run_status(request: HttpRequest, run_id: str) -> HttpResponse:
    run = _run_of(request, run_id)
    response = _run_partial(request, run)
    if run.state != SqlRun.RUNNING:
        trigger_client_event(response, CHANGED)  # the history shows how it ended at once
    return response


@login_required
@require_POST
def cancel(request: HttpRequest, run_id: str) -> HttpResponse:
    run = _run_of(request, run_id)
    active = _active.get(run.pk)
    if active is not None:
        active.engine.cancel()
    if not request.htmx:
        return redirect(f"{reverse('pages:sql')}?run={run.pk}")
    return trigger_client_event(_run_partial(request, run), CHANGED)


@login_required
@require_GET
def download(request: HttpRequest, run_id: str) -> HttpResponse:
    run = _run_of(request, run_id)
    if run.state != SqlRun.DONE:
        raise Http404("This query has no rows to download: it is still running, or it did not finish.")
    out = io.StringIO()
    # The page's headers and cells: the engine's column names (as the user wrote them) and the
    # cells as text (endpoints.sql.cell_text; NULL is empty), as endpoints.sql.write_csv writes them.
    writer = csv.writer(out)
    writer.writerow(run.columns)
    writer.writerows([["" if v is None else v for v in row] for row in run.rows])
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="fondasi-sql-{run.pk[:8]}.csv"'
    return response


urlpatterns = [
    path("", page, name="sql"),
    path("run", run_sql, name="sql-run"),
    path("runs", history, name="sql-runs"),
    path("runs/<str:run_id>", run_status, name="sql-status"),
    path("runs/<str:run_id>/cancel", cancel, name="sql-cancel"),
    path("runs/<str:run_id>/csv", download, name="sql-csv"),
]
