"""Accessibility in Chromium (issue 11, item 13 and the accessibility pass).

axe-core (the copy that ships inside the ``axe-playwright-python`` wheel, so nothing downloads at
run time) checks every page in the states a person sees them in: the sign-in page, the endpoint
list, an endpoint page with the Query dialog open and answered, the access tokens with one listed,
the SQL page with a result, and the playground with a streamed pane and Get code open, in light
and dark colours, at 1440×900 and on a phone (390×844). A serious or critical violation fails.

The phone checks: metadata labels never break inside a word, Copy never covers code, the tokens
table's status and Revoke stay on screen; and the prompt box and the conversation menu have names.

Screenshots: ``test-artifacts/e2e/a11y-*.png``.
"""
from __future__ import annotations

import json
import re

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

from tests.e2e.conftest import shot

PHONE = {"width": 390, "height": 844}
WIDE = {"width": 1440, "height": 900}
FAKE = "fake-vision"  # served by the in-process fake vendor: answers at once, no model to load
IDLE = "!document.querySelector('#send').disabled"

_axe = Axe()


def assert_accessible(page, name: str) -> None:
    """axe-core on the page as it is now, in light and in dark colours: no serious or critical violation."""
    found = []
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        results = _axe.run(page)
        for violation in results.response["violations"]:
            if violation["impact"] in ("serious", "critical"):
                nodes = "; ".join(f"{n['target']} {n['html'][:100]}" for n in violation["nodes"][:4])
                found.append(f"[{scheme}] {violation['id']} ({violation['impact']}): {violation['help']}: {nodes}")
    page.emulate_media(color_scheme="light")
    shot(page, f"a11y-{name}")
    assert not found, f"{name}: axe-core found\n" + "\n".join(found)


@pytest.fixture
def vendor(live_vendor):
    live_vendor.reset()
    yield live_vendor
    live_vendor.reset()


def test_the_sign_in_page_passes_axe(anonymous_page):
    anonymous_page.goto("/login/")
    assert_accessible(anonymous_page, "login")
    anonymous_page.fill("input[name=username]", "nobody")
    anonymous_page.fill("input[name=password]", "wrong")
    anonymous_page.click("button[type=submit]")
    expect(anonymous_page.get_by_role("alert")).to_be_visible()
    assert_accessible(anonymous_page, "login-error")


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["wide", "phone"])
def test_the_pages_pass_axe(page, vendor, viewport):
    tag = "wide" if viewport == WIDE else "phone"
    page.set_viewport_size(viewport)
    page.goto("/endpoints/")
    assert_accessible(page, f"endpoints-{tag}")

    page.goto("/tokens/")
    page.fill("#id_name", f"a11y {tag}")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#new-token")).to_be_visible()
    assert_accessible(page, f"token-created-{tag}")
    page.goto("/tokens/")
    expect(page.locator("table.tokens")).to_contain_text(f"a11y {tag}")
    assert_accessible(page, f"tokens-{tag}")

    page.goto("/sql/")
    page.fill("#sql-editor", f"SELECT ai_query('{FAKE}', 'row ' || i) AS answer, i, repeat('long text ', 40) AS wide FROM range(3) t(i)")
    page.click("#sql-run-button")
    expect(page.locator("#sql-run .sql-run[data-state=done] table")).to_be_visible(timeout=30_000)
    assert_accessible(page, f"sql-{tag}")

    page.goto(f"/endpoints/{FAKE}/")
    assert_accessible(page, f"endpoint-{tag}")
    page.get_by_role("button", name="Query endpoint").click()
    dialog = page.locator("#query-dialog")
    expect(dialog).to_be_visible()
    assert_accessible(page, f"query-dialog-{tag}")
    dialog.get_by_role("button", name="Send Request").click()
    expect(page.locator("#query-status")).to_have_text("200 OK")
    assert_accessible(page, f"query-dialog-answered-{tag}")
    page.fill("#query-body", json.dumps({"messages": [{"role": "user", "content": "Hi"}], "stream": True}))
    dialog.get_by_role("button", name="Send Request").click()
    expect(page.locator("#stream-events li").last).to_have_text("[DONE]")
    assert_accessible(page, f"query-dialog-streamed-{tag}")


def open_playground_with_a_streamed_pane(page, viewport: dict = WIDE) -> None:
    """One pane on the fake endpoint (set up at 1440 px, where every pane shows), answered, Get code open."""
    page.set_viewport_size(WIDE)
    page.goto("/playground/")
    page.wait_for_selector("#pane-0")
    page.select_option("#new-endpoint", FAKE)
    page.click("#add-pane")
    page.wait_for_selector(f"[data-endpoint={FAKE}]")
    page.locator(f".pane[data-endpoint={FAKE}] .get-code").click()
    expect(page.locator(".code-box").first).to_be_visible()
    page.locator(".pane:not([data-endpoint=fake-vision]) .remove-pane").first.click()
    page.set_viewport_size(viewport)
    page.get_by_role("textbox", name="Prompt").fill("Say hello.")
    page.click("#send")
    page.wait_for_function(IDLE, timeout=30_000)
    expect(page.locator(f".pane[data-endpoint={FAKE}] .turn .answer")).to_contain_text("Hello, world!")


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["wide", "phone"])
def test_the_playground_with_a_streamed_pane_passes_axe(page, vendor, viewport):
    open_playground_with_a_streamed_pane(page, viewport)
    menu = page.locator(".conv-actions summary").first
    menu.click()
    assert_accessible(page, "playground-" + ("wide" if viewport == WIDE else "phone"))


def test_the_prompt_box_and_the_conversation_menu_have_names(page, vendor):
    open_playground_with_a_streamed_pane(page)  # the prompt box is found by its name there
    menu = page.locator(".conv-actions summary").first
    expect(menu).to_have_accessible_name(re.compile(r"^Conversation actions"))
    menu.click()
    expect(page.get_by_role("button", name="Rename")).to_be_visible()
    shot(page, "a11y-conversation-menu")


# One rect per line a word's text takes: a word on two lines was broken inside it.
BROKEN_WORDS = """(cells) => cells.flatMap(cell => {
  const broken = [];
  const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const m of node.data.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
      if (tops.size > 1) broken.push(m[0]);
    }
  }
  if (cell.scrollWidth > cell.clientWidth + 1) broken.push(`${cell.textContent} (overflows its cell)`);
  return broken;
})"""


@pytest.mark.parametrize("viewport", [PHONE, {"width": 1024, "height": 800}, WIDE], ids=["phone", "tablet", "wide"])
def test_metadata_labels_never_break_inside_a_word(page, viewport):
    page.set_viewport_size(viewport)
    page.goto("/endpoints/local-smollm2-chat/")
    labels = page.locator("table.kv th")
    expect(labels.filter(has_text="temperature")).to_have_count(1)
    shot(page, f"a11y-metadata-{viewport['width']}")
    assert labels.evaluate_all(BROKEN_WORDS) == []


def overlaps(a: dict, b: dict) -> bool:
    return a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"] and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"]


def assert_copy_buttons_clear_of_code(page, scope: str) -> int:
    checked = 0
    for button in page.locator(f"{scope} button.copy").all():
        if not button.is_visible():
            continue
        target = button.get_attribute("data-copy")
        code = page.locator(f"{scope} {target}").first
        pre = code.locator("xpath=ancestor-or-self::pre[1]")
        button_box, pre_box = button.bounding_box(), pre.bounding_box()
        assert not overlaps(button_box, pre_box), f"{button.get_attribute('aria-label')} covers the code it copies"
        checked += 1
    return checked


def test_copy_buttons_never_cover_the_code_on_a_phone(page, vendor):
    page.set_viewport_size(PHONE)
    page.goto("/endpoints/local-smollm2-chat/")
    tabs = page.locator("[role=tab]")
    for i in range(tabs.count()):
        tabs.nth(i).click()
        assert assert_copy_buttons_clear_of_code(page, ".code-samples") == 1
    shot(page, "a11y-copy-endpoint-phone")

    page.goto("/playground/")
    page.wait_for_selector("#pane-0")
    page.locator("#pane-0 .get-code").click()
    expect(page.locator(".code-box").first).to_be_visible()
    assert assert_copy_buttons_clear_of_code(page, ".code-box") == 2
    page.locator(".code-box").first.scroll_into_view_if_needed()
    shot(page, "a11y-copy-get-code-phone")


def test_the_tokens_table_fits_a_phone_with_status_and_revoke_on_screen(page):
    page.set_viewport_size(PHONE)
    page.goto("/tokens/")
    page.fill("#id_name", "phone-token-with-a-long-name")
    page.get_by_role("button", name="Create token").click()
    page.get_by_role("link", name="Done").click()
    row = page.locator("table.tokens tr", has_text="phone-token-with-a-long-name")
    status = row.locator(".badge")
    revoke = row.get_by_role("button", name="Revoke token phone-token-with-a-long-name")
    expect(revoke).to_be_visible()
    # On screen as the page opens: not only after scrolling the table sideways.
    shot(page, "a11y-tokens-phone")
    for what, box in (("status", status.bounding_box()), ("Revoke", revoke.bounding_box())):
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], f"the token's {what} is off-screen at x={box['x']:.0f}"
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.once("dialog", lambda confirm: confirm.accept())
    revoke.click()
    expect(row.locator(".badge")).to_contain_text("revoked")
    shot(page, "a11y-tokens-phone-revoked")
