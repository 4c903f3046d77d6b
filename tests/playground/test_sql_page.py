"""The SQL page (playground/sql.py): editor, runs with progress, Cancel, results and CSV, errors."""
from __future__ import annotations

import logging
import re
import time

import pytest
from django.test import Client

from endpoints.config import apply, load_file, parse_text
from playground import sql as sql_page
from tests.conftest import ROOT
from tests.fakes.openai_upstream import openai_upstream  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

HX = {"HTTP_HX_REQUEST": "true"}
FAKE = """
endpoints:
  - name: fake-chat
    task: llm/v1/chat
    served_entities:
      - name: fake-chat-model
        external_model: {{name: gpt-fake, provider: openai-compatible, openai_config: {{openai_api_base: "{base}"}}}}
"""


@pytest.fixture(autouse=True)
def _no_runs_left():
    """Runs go on in threads of the process: each test leaves none running."""
    yield
    for active in list(sql_page._active.values()):
        active.engine.cancel()
    deadline = time.monotonic() + 10
    while sql_page._active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not sql_page._active, "a run did not stop"


@pytest.fixture
def fake(openai_upstream, db):  # noqa: F811
    apply(load_file(ROOT / "endpoints.yaml") + parse_text(FAKE.format(base=openai_upstream.base_url)))
    return openai_upstream


@pytest.fixture
def signed_in(client: Client, alice, fake) -> Client:
    client.force_login(alice)
    return client


def start(client: Client, sql: str) -> tuple[str, str]:
    """Run ``sql`` as htmx does; the run's id and the first partial."""
    response = client.post("/sql/run", {"sql": sql}, **HX)
    assert response.status_code == 200, response.content
    html = response.content.decode()
    return re.search(r'hx-get="/sql/runs/([0-9a-f]+)"', html).group(1), html


def poll(client: Client, run_id: str, until: str = "", timeout: float = 30) -> str:
    """The run's partial once it stops running (or once it contains ``until``)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/sql/runs/{run_id}", **HX)
        assert response.status_code == 200
        html = response.content.decode()
        if (until and until in html) or (not until and 'data-state="running"' not in html):
            return html
        assert time.monotonic() < deadline, html
        time.sleep(0.05)


@pytest.mark.parametrize(("method", "url"), [("get", "/sql/"), ("post", "/sql/run"), ("get", "/sql/runs/abc")])
def test_it_sends_anonymous_visitors_to_sign_in(client, db, method, url):
    response = getattr(client, method)(url)
    assert response.status_code == 302 and response["Location"] == f"/login/?next={url}"


def test_the_page_has_an_editor_examples_and_the_endpoints(signed_in):
    html = signed_in.get("/sql/").content.decode()
    assert '<a href="/sql/" aria-current="page">SQL</a>' in html
    assert '<textarea id="sql-editor" name="sql"' in html and "ai_query(&#x27;local-smollm2-chat&#x27;" in html
    assert "<code>local-minilm-embeddings</code> <span class=\"muted small\">llm/v1/embeddings → FLOAT[]</span>" in html
    assert 'hx-post="/sql/run"' in html and "/static/js/sql.js" in html and "/static/css/sql.css" in html
    assert "without access to the server's files" in html  # alice is not a superuser


def test_a_run_shows_its_rows_and_downloads_them_as_csv(signed_in, fake, caplog):
    caplog.set_level(logging.INFO, logger="fondasi.sql")
    run_id, first = start(signed_in, "SELECT i AS id, ai_query('fake-chat', 'Summarise: review ' || i) AS summary "
                                     "FROM range(3) t(i) ORDER BY i")
    assert 'data-state="running"' in first and 'hx-trigger="load delay:500ms"' in first
    html = poll(signed_in, run_id)
    assert 'data-state="done"' in html and "3 rows" in html and "3 answered by ai_query" in html
    assert 'summary <span class="sql-type">VARCHAR</span>' in html
    assert html.count("<td>Hello, world!</td>") == 3
    assert f'href="/sql/runs/{run_id}/csv"' in html
    response = signed_in.get(f"/sql/runs/{run_id}/csv")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="fondasi-sql-{run_id[:8]}.csv"'
    assert response.content.decode().splitlines() == ["id,summary"] + [f'{i},"Hello, world!"' for i in range(3)]
    assert any(r.getMessage().startswith("sql user=alice rows=3") for r in caplog.records)


def test_a_run_past_the_time_limit_fails_saying_after_how_long(signed_in, settings):
    settings.SQL_TIMEOUT_SECONDS = 0.5
    run_id, _ = start(signed_in, "SELECT count(*) FROM range(100000000) a, range(100000000) b")
    html = poll(signed_in, run_id, timeout=10)
    assert 'data-state="failed"' in html
    assert "The query was stopped after 0.5 s, the time limit for a query (FONDASI_SQL_TIMEOUT)." in html


def test_a_result_cut_by_its_size_limit_says_so_above_the_rows(signed_in, settings):
    settings.SQL_MAX_RESULT_BYTES = 1024 * 1024
    run_id, _ = start(signed_in, "SELECT repeat('x', 20000) AS s FROM range(10000)")
    html = poll(signed_in, run_id)
    kept = re.search(r"Only the first (\d+) rows are kept: the result is larger than 1 MiB, "
                     r"the limit \(FONDASI_SQL_MAX_RESULT_BYTES\)\.", html)
    assert 'data-state="done"' in html and kept and f"{kept.group(1)} rows" in html
    csv_lines = signed_in.get(f"/sql/runs/{run_id}/csv").content.decode().splitlines()
    assert len(csv_lines) == 1 + int(kept.group(1)) < 100


def test_a_long_batch_shows_rows_done_of_total_and_can_be_cancelled(signed_in, fake):
    fake.delay = 10
    run_id, _ = start(signed_in, "SELECT ai_query('fake-chat', 'row ' || i) FROM range(3) t(i)")
    running = poll(signed_in, run_id, until="ai_query: 0 of 3 rows")
    assert "<progress value=\"0\" max=\"3\"" in running
    assert f'hx-post="/sql/runs/{run_id}/cancel"' in running
    deadline = time.monotonic() + 10
    while not fake.requests:  # cancel once the rows are at the vendor, so there is something to stop
        assert time.monotonic() < deadline, "no ai_query request reached the vendor"
        time.sleep(0.02)
    started = time.monotonic()
    response = signed_in.post(f"/sql/runs/{run_id}/cancel", **HX)
    assert response.status_code == 200
    html = poll(signed_in, run_id)
    assert time.monotonic() - started < 3
    assert 'data-state="cancelled"' in html and "with 0 of 3 ai_query rows answered" in html
    assert fake.wait_for_disconnect(2)
    assert signed_in.get(f"/sql/runs/{run_id}/csv").status_code == 404


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELEC 1", "syntax error at or near &quot;SELEC&quot;"),
    ("SELECT ai_query('no-such-endpoint', 'hi')", "Endpoint &#x27;no-such-endpoint&#x27; does not exist"),
    ("SELECT ai_query('fake-chat', 42)", "must be text (VARCHAR), not INTEGER"),
])
def test_a_mistake_shows_as_a_clear_error(signed_in, sql, expected):
    run_id, _ = start(signed_in, sql)
    html = poll(signed_in, run_id)
    assert 'data-state="failed"' in html and "The query failed" in html and 'role="alert"' in html
    assert expected in html and "Traceback" not in html


def test_an_empty_query_is_refused_in_place(signed_in):
    response = signed_in.post("/sql/run", {"sql": ""}, **HX)
    assert response.status_code == 422 and "Write a query first." in response.content.decode()


def test_one_query_at_a_time_per_person(signed_in, fake):
    fake.delay = 10
    start(signed_in, "SELECT ai_query('fake-chat', 'slow')")
    response = signed_in.post("/sql/run", {"sql": "SELECT 1"}, **HX)
    assert response.status_code == 409 and "still running" in response.content.decode()


def test_a_run_is_only_its_owners(signed_in, django_user_model):
    run_id, _ = start(signed_in, "SELECT 1")
    poll(signed_in, run_id)
    other = Client()
    other.force_login(django_user_model.objects.create_user("mallory"))
    assert other.get(f"/sql/runs/{run_id}").status_code == 404
    assert other.get(f"/sql/runs/{run_id}/csv").status_code == 404
    assert other.post(f"/sql/runs/{run_id}/cancel").status_code == 404
    assert "data-state" not in other.get(f"/sql/?run={run_id}").content.decode()


def test_model_text_is_escaped(signed_in, fake):
    fake.pieces = ["<script>alert(1)</script>"]
    run_id, _ = start(signed_in, "SELECT ai_query('fake-chat', 'hi') AS \"<b>answer</b>\"")
    html = poll(signed_in, run_id)
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>answer</b>" not in html and "&lt;b&gt;answer&lt;/b&gt;" in html


def test_only_a_superuser_reads_the_servers_files(signed_in, fake, tmp_path, django_user_model):
    data = tmp_path / "reviews.csv"
    data.write_text("id,review\n1,fine\n")
    run_id, _ = start(signed_in, f"SELECT * FROM '{data}'")
    assert "needs a superuser" in poll(signed_in, run_id)
    root = Client()
    root.force_login(django_user_model.objects.create_superuser("root", password="x-long-password"))
    run_id, _ = start(root, f"SELECT id, ai_query('fake-chat', review) AS answer FROM '{data}'")
    assert "<td>Hello, world!</td>" in poll(root, run_id)


def test_without_javascript_the_form_posts_and_the_page_shows_the_run(signed_in):
    response = signed_in.post("/sql/run", {"sql": "SELECT 41 + 1 AS answer"})
    assert response.status_code == 302
    run_id = response["Location"].rsplit("=", 1)[1]
    assert response["Location"] == f"/sql/?run={run_id}"
    poll(signed_in, run_id)
    html = signed_in.get(response["Location"]).content.decode()
    assert "SELECT 41 + 1 AS answer</textarea>" in html and "<td>42</td>" in html


# --- runs stay reachable: the run history (issue 11, item 4) ------------------------------------


def wait_for_request(fake, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not fake.requests:
        assert time.monotonic() < deadline, "no ai_query request reached the vendor"
        time.sleep(0.02)


def test_a_second_run_while_one_runs_is_refused_in_its_own_place_and_the_first_stays(signed_in, fake):
    fake.delay = 10
    first, _ = start(signed_in, "SELECT ai_query('fake-chat', 'slow ' || i) FROM range(2) t(i)")
    response = signed_in.post("/sql/run", {"sql": "SELECT 1"}, **HX)
    assert response.status_code == 409
    # The message goes above the run, whose progress and Cancel stay where they were.
    assert response["HX-Retarget"] == "#sql-problem" and response["HX-Reswap"] == "innerHTML"
    html = response.content.decode()
    assert "is still running: cancel it, or wait for it to finish, before running another" in html
    assert f'href="/sql/?run={first}"' in html and 'data-state="running"' not in html
    # A reload shows the running run, its progress and its Cancel, in the page and in the history.
    page = signed_in.get("/sql/").content.decode()
    assert f'<div class="sql-run" data-state="running" data-run="{first}"' in page
    assert page.count(f'hx-post="/sql/runs/{first}/cancel"') == 2
    assert "ai_query: 0 of 2 rows" in page or "Running…" in page
    wait_for_request(fake)
    assert signed_in.post(f"/sql/runs/{first}/cancel", **HX).status_code == 200
    assert 'data-state="cancelled"' in poll(signed_in, first)
    second, _ = start(signed_in, "SELECT 1")  # once it has ended, the next one runs
    assert second != first


def test_the_history_lists_each_run_newest_first_with_its_state_and_a_link_to_it(signed_in):
    ids = []
    for sql in ("SELECT 1 AS a", "SELEC 2", "SELECT 'three' AS c"):
        run_id, _ = start(signed_in, sql)
        poll(signed_in, run_id)
        ids.append(run_id)
    html = signed_in.get("/sql/runs", **HX).content.decode()
    items = re.findall(r'<li class="sql-history-item" data-run="([0-9a-f]+)" data-state="(\w+)"', html)
    assert items == [(ids[2], "done"), (ids[1], "failed"), (ids[0], "done")]
    assert "SELECT &#x27;three&#x27; AS c</pre>" in html and "syntax error" in html and "1 row · " in html
    assert f'href="/sql/?run={ids[0]}"' in html and f'hx-get="/sql/runs/{ids[0]}"' in html
    # The link reopens the run: its results and its query.
    page = signed_in.get(f"/sql/?run={ids[0]}").content.decode()
    assert "<td>1</td>" in page and "SELECT 1 AS a</textarea>" in page
    # The history is on the page too, the run shown marked.
    assert f'data-run="{ids[0]}" data-state="done" aria-current="true"' in page


def test_a_reload_shows_the_latest_run_and_its_query(signed_in):
    run_id, _ = start(signed_in, "SELECT 6 * 7 AS answer")
    poll(signed_in, run_id)
    html = signed_in.get("/sql/").content.decode()
    assert "SELECT 6 * 7 AS answer</textarea>" in html and "<td>42</td>" in html
    assert re.search(r'data-sql-at="[1-9]\d{12}"', html)  # when it ran, for the editor's newer-text rule


def test_a_run_left_running_by_a_stopped_server_shows_as_failed_and_does_not_block(signed_in, alice):
    from playground.models import SqlRun

    left = SqlRun.objects.create(user=alice, sql="SELECT 'from before the restart'")
    html = signed_in.get(f"/sql/runs/{left.pk}", **HX).content.decode()
    assert 'data-state="failed"' in html and "The server stopped while this query was running" in html
    assert "/cancel" not in html
    run_id, _ = start(signed_in, "SELECT 1")
    assert 'data-state="done"' in poll(signed_in, run_id)


def test_finished_runs_and_their_rows_are_kept_in_the_database(signed_in, alice):
    from playground.models import SqlRun

    run_id, _ = start(signed_in, "SELECT i, 'row ' || i AS label, NULL AS n FROM range(3) t(i)")
    poll(signed_in, run_id)
    assert not sql_page._active  # nothing of it is left in the process's memory
    run = SqlRun.objects.get(pk=run_id)
    assert (run.user, run.state, run.columns, run.row_count) == (alice, "done", ["i", "label", "n"], 3)
    assert run.rows[2] == ["2", "row 2", None]
    assert signed_in.get(f"/sql/runs/{run_id}/csv").content.decode().splitlines() == [
        "i,label,n", "0,row 0,", "1,row 1,", "2,row 2,"]


def test_a_person_keeps_their_last_runs_only(signed_in, settings):
    settings.SQL_HISTORY = 2
    ids = []
    for i in range(3):
        run_id, _ = start(signed_in, f"SELECT {i}")
        poll(signed_in, run_id)
        ids.append(run_id)
    html = signed_in.get("/sql/runs", **HX).content.decode()
    assert ids[0] not in html and ids[1] in html and ids[2] in html
    assert signed_in.get(f"/sql/runs/{ids[0]}", **HX).status_code == 404


def test_another_persons_runs_are_never_seen_or_cancelled_on_any_url(signed_in, fake, django_user_model):
    fake.delay = 10
    run_id, _ = start(signed_in, "SELECT ai_query('fake-chat', 'slow')")
    other = Client()
    other.force_login(django_user_model.objects.create_user("mallory"))
    for url in (f"/sql/runs/{run_id}", f"/sql/runs/{run_id}/csv"):
        assert other.get(url, **HX).status_code == 404
    assert other.post(f"/sql/runs/{run_id}/cancel", **HX).status_code == 404
    assert other.post(f"/sql/runs/{run_id}/cancel").status_code == 404
    page = other.get(f"/sql/?run={run_id}")
    assert page.status_code == 404 and "No such query run of yours" in page.content.decode()
    for html in (page.content.decode(), other.get("/sql/").content.decode(), other.get("/sql/runs", **HX).content.decode()):
        assert run_id not in html and "slow" not in html
    # mallory's own run is not refused because of alice's, and alice's still runs.
    mine, _ = start(other, "SELECT 1")
    assert 'data-state="done"' in poll(other, mine)
    assert 'data-state="running"' in signed_in.get(f"/sql/runs/{run_id}", **HX).content.decode()


def test_column_headers_and_the_csv_show_the_call_as_written(signed_in, fake):
    run_id, _ = start(signed_in, "SELECT ai_query('fake-chat', q) FROM (VALUES ('hi')) t(q)")
    html = poll(signed_in, run_id)
    assert '<th scope="col">ai_query(&#x27;fake-chat&#x27;, q) <span class="sql-type">VARCHAR</span></th>' in html
    assert "ai_query__" not in html
    assert signed_in.get(f"/sql/runs/{run_id}/csv").content.decode().splitlines()[0] == "\"ai_query('fake-chat', q)\""


def test_an_empty_query_is_refused_above_the_run_it_leaves_in_place(signed_in):
    response = signed_in.post("/sql/run", {"sql": ""}, **HX)
    assert response.status_code == 422 and response["HX-Retarget"] == "#sql-problem"
