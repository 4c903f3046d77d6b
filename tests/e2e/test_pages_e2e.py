"""The serving-endpoint pages in a real browser: filter, open an endpoint, query it from the dialog."""
from __future__ import annotations

import json

import pytest

from playwright.sync_api import expect

from tests.e2e.conftest import shot

CHAT = "local-smollm2-chat"


def test_it_filters_opens_and_queries_an_endpoint(page):
    page.goto("/endpoints/")
    results = page.locator("#endpoint-results")
    expect(results.get_by_role("link", name=CHAT, exact=True)).to_be_visible()
    shot(page, "pages-01-endpoints")

    page.fill("#filter-q", "smollm2")
    expect(results.get_by_role("link", name="local-minilm-embeddings")).to_have_count(0)
    page.select_option("#filter-task", "llm/v1/chat")
    expect(results.get_by_role("link", name="local-smollm2-completions")).to_have_count(0)
    expect(page).to_have_url("/endpoints/?q=smollm2&task=llm%2Fv1%2Fchat")
    shot(page, "pages-02-filtered")

    page.fill("#filter-q", "zzz-nothing")
    expect(results).to_contain_text("No endpoints match “zzz-nothing”")
    page.fill("#filter-q", "smollm2")

    results.get_by_role("link", name=CHAT, exact=True).click()
    page.wait_for_url(f"**/endpoints/{CHAT}/")
    expect(page.get_by_role("heading", name=CHAT, level=1)).to_be_visible()
    expect(page.locator("#code-openai")).to_contain_text(f'model="{CHAT}"')
    shot(page, "pages-03-detail")

    page.get_by_role("button", name="Query endpoint").click()
    dialog = page.locator("#query-dialog")
    expect(dialog).to_be_visible()
    shot(page, "pages-04-dialog")

    page.fill("#query-body", "")
    page.select_option("#example-select", label="Mixture of experts")
    dialog.get_by_role("button", name="Show Example").click()
    assert "mixture of experts" in page.input_value("#query-body")
    shot(page, "pages-05-example")

    dialog.get_by_role("button", name="Send Request").click()
    expect(page.locator("#query-status")).to_have_text("200 OK", timeout=60_000)
    expect(page.locator("#query-response")).to_contain_text('"choices"')
    expect(page.locator("#query-latency")).to_contain_text("ms")
    shot(page, "pages-06-response")

    stream = {"messages": [{"role": "user", "content": "Tell me a joke."}], "max_tokens": 12, "temperature": 0, "stream": True}
    page.fill("#query-body", json.dumps(stream))
    dialog.get_by_role("button", name="Send Request").click()
    events = page.locator("#stream-events li")
    expect(events.last).to_have_text("[DONE]", timeout=60_000)
    assert events.count() >= 3
    expect(page.locator("#query-latency")).to_contain_text("first event")
    shot(page, "pages-07-stream")

    page.fill("#query-body", "[1, 2]")
    dialog.get_by_role("button", name="Send Request").click()
    expect(page.locator("#query-status")).to_have_text("400 Bad Request")
    expect(page.locator("#query-error")).to_contain_text("must be a JSON object")
    shot(page, "pages-08-error")

    page.fill("#query-body", json.dumps(stream))
    page.fill("#example-name", "E2E joke")
    dialog.get_by_role("button", name="Save as example").click()
    expect(page.locator("#save-example-status")).to_contain_text("Saved “E2E joke”")
    expect(page.locator("#examples")).to_contain_text("E2E joke")
    expect(page.locator("#example-select option", has_text="E2E joke")).to_have_count(1)
    shot(page, "pages-09-saved")

    page.set_viewport_size({"width": 420, "height": 900})
    shot(page, "pages-12-narrow-dialog")


def test_it_creates_a_token_and_shows_it_once(page):
    page.goto("/tokens/")
    page.fill("#id_name", "e2e-laptop")
    page.get_by_role("button", name="Create token").click()
    value = page.input_value("#new-token")
    assert value.startswith("dapi")
    shot(page, "pages-10-token-created")
    page.get_by_role("link", name="Done").click()
    expect(page.locator("table.tokens")).to_contain_text("e2e-laptop")
    assert value not in page.content()
    shot(page, "pages-11-tokens")

    page.once("dialog", lambda confirm: confirm.accept())
    page.get_by_role("button", name="Revoke token e2e-laptop").click()
    expect(page.locator("table.tokens")).to_contain_text("revoked")
    expect(page.get_by_role("status")).to_contain_text("Token 'e2e-laptop' is revoked")


def test_it_sends_anonymous_visitors_to_sign_in(anonymous_page):
    anonymous_page.goto(f"/endpoints/{CHAT}/")
    anonymous_page.wait_for_url(lambda url: "/login/?next=" in url)
    expect(anonymous_page.get_by_role("button", name="Sign in")).to_be_visible()
    shot(anonymous_page, "pages-00-sign-in")


@pytest.mark.parametrize("path", ["/endpoints/", "/endpoints/local-smollm2-chat/", "/playground/", "/tokens/"])
def test_pages_fit_a_phone_screen_without_scrolling_sideways(page, path):
    if path == "/tokens/":  # with a token listed, the widest state of that page
        page.goto("/tokens/")
        page.fill("input[name=name]", "a phone-width check")
        page.click("form.create-token button[type=submit]")
        page.wait_for_load_state("networkidle")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(path)
    page.wait_for_load_state("networkidle")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    shot(page, "narrow" + path.replace("/", "-").rstrip("-"))
    assert overflow <= 1, f"{path} is {overflow}px wider than the screen"
