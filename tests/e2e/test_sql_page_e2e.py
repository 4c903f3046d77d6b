"""The SQL page in Chromium (issue 11, items 4 and 13): every run stays reachable (the run history,
a second Run refused in its own place, Cancel from the history), the query text and the runs survive
a reload and the finished runs a server restart, and the column headers read as the query wrote them.

Screenshots: ``test-artifacts/e2e/sql-*.png``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.conftest import LIVE_PASSWORD, ROOT, _free_port, start_daphne, stop_daphne
from tests.e2e.conftest import shot, sign_in

SLOW = "SELECT ai_query('fake-vision', 'row ' || i) AS answer FROM range(3) t(i)"


def set_editor(page, text: str) -> None:
    page.fill("#sql-editor", text)


def test_a_run_stays_reachable_through_a_second_run_a_reload_and_cancel(page, live_vendor):
    live_vendor.delay = 20
    try:
        page.goto("/sql/")
        set_editor(page, SLOW)
        page.click("#sql-run-button")
        running = page.locator("#sql-run .sql-run[data-state=running]")
        expect(running).to_contain_text("ai_query: 0 of 3 rows")
        first = running.get_attribute("data-run")
        assert page.url.endswith(f"/sql/?run={first}")

        # A second Run while it runs is refused above it; its progress and Cancel stay.
        set_editor(page, "SELECT 'typed after the run' AS typed")
        page.click("#sql-run-button")
        expect(page.locator("#sql-problem [role=alert]")).to_contain_text("is still running: cancel it")
        expect(page.locator(f"#sql-run .sql-run[data-run='{first}'][data-state=running]")).to_be_visible()
        expect(page.locator("#sql-run button.danger", has_text="Cancel")).to_be_visible()
        shot(page, "sql-second-run-refused")

        # A reload keeps the run (page and history, each with Cancel) and the text typed since.
        page.reload()
        expect(page.locator(f"#sql-run .sql-run[data-run='{first}'][data-state=running]")).to_be_visible()
        item = page.locator(f".sql-history-item[data-run='{first}']")
        expect(item).to_have_attribute("data-state", "running")
        expect(item).to_have_attribute("aria-current", "true")
        expect(page.locator("#sql-editor")).to_have_value("SELECT 'typed after the run' AS typed")
        shot(page, "sql-reload-keeps-the-running-run")

        item.get_by_role("button", name="Cancel").click()
        expect(page.locator(f"#sql-run .sql-run[data-run='{first}']")).to_have_attribute("data-state", "cancelled")
        expect(item).to_have_attribute("data-state", "cancelled")
    finally:
        live_vendor.delay = 0

    # The next run: headers as written, in the page and the CSV.
    set_editor(page, "SELECT ai_query('fake-vision', q) FROM (VALUES ('hi')) t(q)")
    page.click("#sql-run-button")
    done = page.locator("#sql-run .sql-run[data-state=done]")
    expect(done.locator("th")).to_have_text("ai_query('fake-vision', q) VARCHAR")
    expect(page.locator("#sql-problem")).to_be_empty()
    with page.expect_download() as download:
        done.get_by_role("link", name="Download CSV").click()
    assert Path(download.value.path()).read_text().splitlines()[0] == "\"ai_query('fake-vision', q)\""
    second = done.get_attribute("data-run")
    expect(page.locator(f".sql-history-item[data-run='{second}']")).to_have_attribute("data-state", "done")
    shot(page, "sql-headers-as-written")

    # After a reload: the latest run and its query; the history newest first; its link reopens a run.
    page.goto("/sql/")
    expect(page.locator(f"#sql-run .sql-run[data-run='{second}']")).to_be_visible()
    expect(page.locator("#sql-editor")).to_have_value("SELECT ai_query('fake-vision', q) FROM (VALUES ('hi')) t(q)")
    runs = page.locator(".sql-history-item")
    assert runs.nth(0).get_attribute("data-run") == second and runs.nth(1).get_attribute("data-run") == first
    runs.nth(1).locator(".sql-history-open").click()
    expect(page.locator(f"#sql-run .sql-run[data-run='{first}']")).to_contain_text("Cancelled after")
    page.wait_for_url(f"**/sql/?run={first}")
    page.reload()
    expect(page.locator(f"#sql-run .sql-run[data-run='{first}']")).to_contain_text("Cancelled after")
    shot(page, "sql-history-reopens-a-run")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "sql-history-phone")


# --- a restart ----------------------------------------------------------------------------------


class _Server:
    """A Fondasi of this test's own (daphne on its own database), stopped and started again."""

    def __init__(self, var: Path) -> None:
        self.var, self.port, self.proc = var, _free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "FONDASI_VAR_DIR": str(var), "FONDASI_ENDPOINTS_AUTO_LOAD": "0",
                    "DJANGO_SETTINGS_MODULE": "playground.settings"}
        self.env.pop("DATABASE_URL", None)
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "--noinput"], env=self.env, check=True, capture_output=True)
        subprocess.run([*manage, "createsuperuser", "--noinput", "--username", "e2e", "--email", "e2e@example.com"],
                       env={**self.env, "DJANGO_SUPERUSER_PASSWORD": LIVE_PASSWORD}, check=True, capture_output=True)

    def start(self) -> None:
        self.proc, _ = start_daphne(self.env, self.var / "server.log", self.port)

    def stop(self) -> None:
        stop_daphne(self.proc)


@pytest.fixture
def own_server(tmp_path):
    server = _Server(tmp_path)
    yield server
    if server.proc and server.proc.poll() is None:
        server.stop()


def test_a_restart_keeps_the_finished_runs_and_ends_the_running_one(browser, own_server):
    own_server.start()
    context = browser.new_context(base_url=own_server.url, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    sign_in(page, "e2e", LIVE_PASSWORD)
    page.goto("/sql/")
    set_editor(page, "SELECT 42 AS answer")
    page.click("#sql-run-button")
    expect(page.locator("#sql-run .sql-run[data-state=done] td")).to_have_text("42")
    finished = page.locator("#sql-run .sql-run").get_attribute("data-run")
    # A pure DuckDB query that runs until the server stops.
    set_editor(page, "SELECT count(*) FROM range(1000000000000) t(i) WHERE i % 7 = 3")
    page.click("#sql-run-button")
    expect(page.locator("#sql-run .sql-run[data-state=running]")).to_be_visible()
    running = page.locator("#sql-run .sql-run").get_attribute("data-run")

    own_server.stop()
    own_server.start()
    page.goto("/sql/")  # the session cookie still holds: same database
    shown = page.locator(f"#sql-run .sql-run[data-run='{running}']")
    expect(shown).to_have_attribute("data-state", "failed")
    expect(shown).to_contain_text("The server stopped while this query was running")
    expect(page.locator(f".sql-history-item[data-run='{finished}']")).to_have_attribute("data-state", "done")
    page.locator(f".sql-history-item[data-run='{finished}'] .sql-history-open").click()
    expect(page.locator(f"#sql-run .sql-run[data-run='{finished}'] td")).to_have_text("42")
    shot(page, "sql-after-a-restart")
    context.close()
