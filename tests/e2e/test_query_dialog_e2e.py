"""The Query dialog and Get code in Chromium (issue 11, items 9, 10 and 12).

Screenshots under ``test-artifacts/e2e/``.
"""
from __future__ import annotations

import json
import os

import pytest

from tests.conftest import LOOPBACK, start_daphne, stop_daphne
from tests.e2e.conftest import shot, sign_in

CHAT = "local-smollm2-chat"
PHONE = {"width": 390, "height": 844}


def open_dialog(page, endpoint: str = CHAT) -> None:
    page.goto(f"/endpoints/{endpoint}/")
    page.click("#open-query")
    page.wait_for_selector("#query-dialog[open]")


def send(page, body: dict) -> None:
    page.fill("#query-body", json.dumps(body, indent=2))
    page.click("#send-request")


def hidden_but_shown(page) -> list[str]:
    """Elements with the hidden attribute that the page displays anyway."""
    return page.evaluate("""() => [...document.querySelectorAll('[hidden]')]
        .filter((el) => getComputedStyle(el).display !== 'none')
        .map((el) => el.outerHTML.slice(0, 80))""")


def test_stop_and_the_status_pill_stay_hidden_while_idle(page):
    open_dialog(page)
    assert not page.is_visible("#stop-request")
    assert not page.is_visible("#query-status")
    shot(page, "query-dialog-idle")
    assert hidden_but_shown(page) == []


def test_on_a_phone_the_answer_is_scrolled_into_view(page):
    page.set_viewport_size(PHONE)
    open_dialog(page)
    shot(page, "query-dialog-phone-before")
    send(page, {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0})
    page.wait_for_selector("#query-status:not([hidden])")
    page.wait_for_timeout(600)  # the smooth scroll
    box = page.locator("#response-title").bounding_box()
    assert 0 <= box["y"] < PHONE["height"] - 100, box
    assert page.locator("#query-status").is_visible()
    shot(page, "query-dialog-phone-answer")


def test_reasoning_and_answer_stream_apart_without_think_tags(page):
    open_dialog(page)
    send(page, {"messages": [{"role": "user", "content": "Why is the sky blue?"}], "max_tokens": 48,
                "temperature": 0, "stream": True, "thinking": {"type": "enabled", "budget_tokens": 16}})
    page.wait_for_selector("#query-latency >> text=total")
    reasoning = page.inner_text("#stream-reasoning")
    answer = page.inner_text("#stream-text")
    shot(page, "query-dialog-reasoning")
    assert page.is_visible("#stream-reasoning-box") and reasoning.strip()
    assert answer.strip()
    for text in (reasoning, answer):
        assert "<think>" not in text and "</think>" not in text
    # The reasoning is collapsible: its summary folds it away.
    page.click("#stream-reasoning-box summary")
    assert not page.is_visible("#stream-reasoning")


def test_get_code_has_copy_buttons_the_shared_token_name_and_no_invented_prompt(browser, fondasi_server):
    context = browser.new_context(base_url=fondasi_server.url, viewport={"width": 1400, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=fondasi_server.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        sign_in(page, fondasi_server.username, fondasi_server.password)
        page.goto("/playground/")
        page.click("#pane-0 .get-code")
        page.wait_for_selector("#pane-0 .code-box")
        code = page.inner_text("#pane-0 .code-python")
        assert "Hello!" not in code and "'content': '<your prompt>'" in code
        assert 'os.environ["DATABRICKS_TOKEN"]' in code
        assert "token:$DATABRICKS_TOKEN" in page.inner_text("#pane-0 .code-curl")
        page.click("#pane-0 .code-box [data-copy='.code-python']")
        page.wait_for_selector("#pane-0 .code-box button.copy >> text=Copied")
        assert page.evaluate("navigator.clipboard.readText()") == code.rstrip()
        shot(page, "get-code-copied")
    finally:
        context.close()


# --- the first request after a start (item 10) ------------------------------------------------


@pytest.fixture
def cold_server(fondasi_server):
    """A second Fondasi on the live server's database, just started with FONDASI_WARMUP off: its
    embedded models are not loaded, as on the first request after a start."""
    var = fondasi_server.log.parent
    env = {**os.environ, "FONDASI_VAR_DIR": str(var), "FONDASI_ENDPOINTS_AUTO_LOAD": "1", "FONDASI_WARMUP": "0",
           "FONDASI_UPSTREAM_ALLOWED_NETWORKS": ",".join(LOOPBACK),
           "FONDASI_ENDPOINTS_FILE": str(var / "endpoints.yaml"), "DJANGO_SETTINGS_MODULE": "playground.settings"}
    env.pop("DATABASE_URL", None)
    proc, url = start_daphne(env, var / "cold-server.log")
    yield url
    stop_daphne(proc)


def test_the_first_request_after_start_says_the_model_is_loading(browser, fondasi_server, cold_server):
    context = browser.new_context(base_url=cold_server, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        sign_in(page, fondasi_server.username, fondasi_server.password)
        open_dialog(page)
        assert not page.is_visible("#query-loading")
        send(page, {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0})
        page.wait_for_selector("#query-loading >> text=Loading the model… (first request after start)")
        shot(page, "query-dialog-loading")
        page.wait_for_selector("#query-status:not([hidden])")
        assert not page.is_visible("#query-loading")
        assert json.loads(page.inner_text("#query-response"))["choices"][0]["message"]["content"]
        shot(page, "query-dialog-loaded")
    finally:
        context.close()


def test_the_playground_pane_says_the_model_is_loading(browser, fondasi_server, cold_server):
    context = browser.new_context(base_url=cold_server, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        sign_in(page, fondasi_server.username, fondasi_server.password)
        page.goto("/playground/")
        page.wait_for_function("document.getElementById('ws-status').textContent === ''")
        page.fill("#prompt", "Say hello.")
        page.click("#send")
        page.wait_for_selector("#pane-0 .loading-model >> text=Loading the model… (first request after start)")
        shot(page, "playground-loading")
        page.wait_for_selector("#pane-0 .turn:not([data-streaming]) .figures")
        assert page.locator("#pane-0 .loading-model").count() == 0
    finally:
        context.close()
