"""The playground's layout for comparing (issue 11, items 5–7), in a real browser against the live server.

Panes are equal columns side by side, labelled A, B, C… with a chip of what each sends; turns line
up in rows across panes; the composer stays on screen; Esc stops; a reopened conversation opens at
its latest turn; each answer can be copied and regenerated, the last prompt edited and sent again;
a pane's endpoint switches in place; on a phone the panes are tabs. Geometry is measured with the
elements' bounding boxes at 1440×900 and 390×844. The panes are on ``fake-vision`` (its fake
vendor, in this process, records each request), so nothing waits for a model, except the endpoint
switch, which sends one short greedy request to the embedded model.
"""
from __future__ import annotations

import pytest

from tests.e2e.conftest import shot

FAKE = "fake-vision"
LOCAL = "local-smollm2-chat"
IDLE = "!document.querySelector('#send').disabled"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def vendor(live_vendor):
    live_vendor.reset()
    yield live_vendor
    live_vendor.reset()


def add_pane(page, endpoint: str, number: int) -> None:
    page.select_option("#new-endpoint", endpoint)
    page.click("#add-pane")
    page.wait_for_selector(f"#pane-{number}[data-endpoint={endpoint}]", state="attached")


def fake_panes(page, count: int) -> list[int]:
    """``count`` panes on the fake endpoint (the default pane, on the embedded model, removed)."""
    page.goto("/playground/")
    page.click("#pane-0 .remove-pane")
    for number in range(1, count + 1):
        add_pane(page, FAKE, number)
    return list(range(1, count + 1))


def fill(page, pane: int, **fields: str) -> None:
    settings = page.locator(f"#pane-{pane} details.settings")
    if settings.get_attribute("open") is None:
        settings.locator("summary").click()
    for name, value in fields.items():
        page.fill(f"#pane-{pane} [name={name}]", value)


def send(page, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.click("#send")
    page.wait_for_function(IDLE, timeout=30_000)
    assert page.inner_text("#composer-error") == ""


def box(page, selector: str) -> dict:
    found = page.locator(selector).bounding_box()
    assert found is not None, f"{selector} is not shown"
    return found


def in_viewport(page, selector: str) -> bool:
    b, size = box(page, selector), page.viewport_size
    return b["y"] >= 0 and b["y"] + b["height"] <= size["height"] and b["x"] >= 0 and b["x"] + b["width"] <= size["width"]


def test_panes_are_equal_labelled_columns_with_turns_aligned_in_rows(page, vendor):
    page.set_viewport_size(DESKTOP)
    panes = fake_panes(page, 3)
    fill(page, 1, temperature="0.2", max_tokens="64")
    fill(page, 2, temperature="0.9", max_tokens="200")
    page.check("#pane-2 [name=thinking]")
    fill(page, 3, system="Answer in one line.")
    for p in (1, 3):  # closed again: only B's settings are open above its thread
        page.locator(f"#pane-{p} details.settings summary").click()
    vendor.pieces = ["A first answer, ", "long enough to wrap over several lines in a column. " * 4]
    send(page, "First question.")
    vendor.pieces = ["Short."]
    send(page, "Second question.")
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "playground-layout-01-three-panes-1440")

    # Three equal columns side by side at 1440 px (not wrapped 2 + 1), labelled A, B, C.
    boxes = [box(page, f"#pane-{p}") for p in panes]
    assert len({round(b["y"]) for b in boxes}) == 1, boxes
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"], boxes
    assert max(b["width"] for b in boxes) - min(b["width"] for b in boxes) <= 1, boxes
    assert all(b["x"] + b["width"] <= 1440 for b in boxes), boxes
    assert [page.inner_text(f"#pane-{p} .pane-letter") for p in panes] == ["A", "B", "C"]
    # The chips tell two panes of the same model apart at a glance.
    chips = [page.inner_text(f"#pane-{p} .pane-chip") for p in panes]
    assert all(FAKE in chip for chip in chips), chips
    assert "temp 0.2" in chips[0] and "max 64" in chips[0] and "no thinking" in chips[0], chips
    assert "temp 0.9" in chips[1] and "thinking" in chips[1] and "no thinking" not in chips[1], chips
    assert len(set(chips)) == 3, chips
    fill(page, 1, temperature="0.5")  # the chip follows the fields
    assert "temp 0.5" in page.inner_text("#pane-1 .pane-chip")
    page.locator("#pane-1 details.settings summary").click()

    # Turn k of every pane starts at the same height, though B's settings are open above its thread.
    for k in (0, 1):
        tops = [box(page, f"#turn-{p}-{k}")["y"] for p in panes]
        assert max(tops) - min(tops) <= 1, (k, tops)

    # A fourth pane: the columns scroll sideways instead of wrapping.
    add_pane(page, FAKE, 4)
    tops = [box(page, f"#pane-{p}")["y"] for p in (*panes, 4)]
    assert max(tops) - min(tops) <= 1, tops
    assert page.evaluate("document.documentElement.scrollWidth") <= 1440
    assert page.evaluate("(() => { const p = document.querySelector('#panes'); return p.scrollWidth > p.clientWidth; })()")
    shot(page, "playground-layout-02-four-panes-scroll")


def test_composer_stays_reachable_esc_stops_and_threads_open_at_the_latest_turn(page, vendor):
    page.set_viewport_size(DESKTOP)
    panes = fake_panes(page, 2)
    vendor.pieces = ["Paragraph one of a long answer.\n\n"] + [f"Paragraph {i} of a long answer.\n\n" for i in range(2, 16)]
    for i in range(4):
        send(page, f"Question {i}.")
    conversation = page.evaluate("document.querySelector('#playground').dataset.conversation")

    # The threads grow the page, and Send and Stop stay on screen wherever it is scrolled.
    assert page.evaluate("document.documentElement.scrollHeight") > 2 * 900
    for y in (0, 1500, 10**6):
        page.evaluate(f"window.scrollTo(0, {y})")
        assert in_viewport(page, "#send") and in_viewport(page, "#stop"), y
    page.evaluate("window.scrollTo(0, 1500)")
    shot(page, "playground-layout-03-sticky-composer")

    # Reopened, the conversation opens scrolled to its latest turn, its figures in full.
    vendor.pieces = ["Short answer."]
    send(page, "Last question.")
    page.goto(f"/playground/?c={conversation}")
    page.wait_for_selector(f"#pane-{panes[0]}[data-endpoint={FAKE}]")
    page.wait_for_timeout(200)
    composer_top = box(page, "#composer")["y"]
    for p in panes:
        turn = box(page, f"#turn-{p}-4")
        assert 0 <= turn["y"] < composer_top, (turn, composer_top)
        figures = box(page, f"#turn-{p}-4 .figures")
        assert 0 <= figures["y"] and figures["y"] + figures["height"] <= composer_top, (figures, composer_top)
        # Not clipped or covered: the point at its centre is the figures row itself.
        assert page.evaluate("""(sel) => { const f = document.querySelector(sel), r = f.getBoundingClientRect();
          return f.contains(document.elementFromPoint(r.x + 5, r.y + r.height / 2)); }""", f"#turn-{p}-4 .figures")
        assert "Latency" in page.inner_text(f"#turn-{p}-4 .figures")
    shot(page, "playground-layout-04-reopened-at-latest-turn")

    # Esc stops the answers.
    vendor.pieces = ["slow "] * 200
    vendor.chunk_delay = 0.05
    page.fill("#prompt", "A slow one.")
    page.click("#send")
    page.wait_for_selector(f"#thread-{panes[0]} .turn[data-streaming]", state="attached")
    page.wait_for_timeout(300)
    page.keyboard.press("Escape")
    page.wait_for_function(IDLE, timeout=10_000)
    for p in panes:
        assert "Stopped." in page.inner_text(f"#thread-{p} .turn:last-child")
    shot(page, "playground-layout-05-esc-stopped")


def test_copy_regenerate_edit_and_resend_and_switch_endpoint(page, vendor):
    page.set_viewport_size(DESKTOP)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    panes = fake_panes(page, 2)
    fill(page, 1, temperature="0", max_tokens="32")
    fill(page, 2, temperature="0", max_tokens="32")
    vendor.pieces = ["The **first** answer."]
    send(page, "Name a colour.")
    first = vendor.last_request.json

    # Copy puts the answer's text on the clipboard.
    page.click(f"#turn-{panes[0]}-0 .copy-answer")
    assert page.evaluate("navigator.clipboard.readText()") == "The **first** answer."

    # Regenerate: that pane's last answer again, same prompt and settings, in its place.
    count = len(vendor.requests)
    vendor.pieces = ["A second try."]
    page.click(f"#turn-{panes[1]}-0 .regenerate")
    page.wait_for_function(IDLE, timeout=30_000)
    page.wait_for_selector(f"#turn-{panes[1]}-0:not([data-streaming])")
    assert len(vendor.requests) == count + 1  # only that pane
    again = vendor.last_request.json
    assert again["messages"] == first["messages"]
    assert (again["temperature"], again["max_tokens"]) == (first["temperature"], first["max_tokens"])
    assert page.locator(f"#thread-{panes[1]} .turn").count() == 1
    assert "A second try." in page.inner_text(f"#thread-{panes[1]}")
    assert "first" in page.inner_text(f"#thread-{panes[0]} .markdown")
    shot(page, "playground-layout-06-regenerated")
    # It is saved so: the reopened conversation shows the new answer, and the thread sent next has it.
    page.reload()
    page.wait_for_selector(f"#turn-{panes[1]}-0")
    assert "A second try." in page.inner_text(f"#thread-{panes[1]}")

    # Edit and resend the last prompt: it replaces the last turn in every pane.
    page.click(f"#turn-{panes[0]}-0 .edit-prompt")
    assert page.input_value("#prompt") == "Name a colour."
    vendor.pieces = ["Green."]
    send(page, "Name a fruit.")
    for p in panes:
        assert page.locator(f"#thread-{p} .turn").count() == 1
        assert "Name a fruit." in page.inner_text(f"#thread-{p}") and "Name a colour." not in page.inner_text(f"#thread-{p}")
    assert [m["content"] for m in vendor.last_request.json["messages"] if m["role"] == "user"] == ["Name a fruit."]
    shot(page, "playground-layout-07-edited-and-resent")

    # Switch pane B's endpoint in place: its thread stays and goes with the next prompt.
    page.select_option(f"#pane-{panes[1]} select.pane-endpoint", LOCAL)
    assert page.get_attribute(f"#pane-{panes[1]}", "data-endpoint") == LOCAL
    assert LOCAL in page.inner_text(f"#pane-{panes[1]} .pane-chip")
    fill(page, panes[1], max_tokens="4")
    send(page, "And a vegetable?")
    page.wait_for_selector(f"#turn-{panes[1]}-1 .turn-settings")
    assert f"Sent to {LOCAL}" in page.inner_text(f"#turn-{panes[1]}-1 .turn-settings")
    assert f"Sent to {FAKE}" in page.inner_text(f"#turn-{panes[1]}-0 .turn-settings")
    assert "Name a fruit." in page.inner_text(f"#thread-{panes[1]}")
    shot(page, "playground-layout-08-endpoint-switched")


def test_on_a_phone_panes_are_tabs(page, vendor):
    page.set_viewport_size(PHONE)
    panes = fake_panes(page, 3)
    vendor.pieces = ["An answer of a few words, repeated. " * 20]
    send(page, "Compare these.")
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "playground-layout-09-phone-tabs")
    tabs = page.locator("#pane-tabs [role=tab]")
    assert [t.inner_text() for t in tabs.all()] == ["A", "B", "C"]
    # One pane shown at a time, not every pane stacked into one long column.
    shown = [p for p in panes if page.locator(f"#pane-{p}").bounding_box() is not None]
    assert shown == [panes[-1]], shown  # the pane added last is the one shown
    height = page.evaluate("document.documentElement.scrollHeight")
    tabs.nth(0).click()
    shown = [p for p in panes if page.locator(f"#pane-{p}").bounding_box() is not None]
    assert shown == [panes[0]], shown
    assert tabs.nth(0).get_attribute("aria-selected") == "true"
    assert "Compare these." in page.inner_text(f"#thread-{panes[0]}")
    assert height < 3 * 844, height
    for y in (0, 600, 10**6):  # Send and Stop stay on screen on a phone too
        page.evaluate(f"window.scrollTo(0, {y})")
        assert in_viewport(page, "#send") and in_viewport(page, "#stop"), y
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "playground-layout-10-phone-tab-a")
