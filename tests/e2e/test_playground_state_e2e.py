"""The playground's state never lies (issue 11, items 1–3), in a real browser against the live server.

What a pane shows is what is sent, after any number of saves and reopenings; every turn says what
it was sent with; the panes a conversation was left with are the ones it reopens with. The panes
are on ``fake-vision`` (its fake vendor, in this process, records each request), so nothing waits
for a model.
"""
from __future__ import annotations

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.conftest import shot

FAKE = "fake-vision"
IDLE = "!document.querySelector('#send').disabled"


@pytest.fixture
def vendor(live_vendor):
    live_vendor.reset()
    yield live_vendor
    live_vendor.reset()


def open_settings(page, pane: int) -> None:
    settings = page.locator(f"#pane-{pane} details.settings")
    if settings.get_attribute("open") is None:
        settings.locator("summary").click()


def fill(page, pane: int, **fields: str) -> None:
    open_settings(page, pane)
    for name, value in fields.items():
        page.fill(f"#pane-{pane} [name={name}]", value)


def fields(page, pane: int) -> dict:
    return page.evaluate("""(pane) => Object.fromEntries(
      Array.from(document.querySelectorAll(`#pane-${pane} .settings [name]`))
        .map(el => [el.name, el.type === "checkbox" ? el.checked : el.value]))""", pane)


def add_pane(page, endpoint: str, number: int) -> None:
    page.select_option("#new-endpoint", endpoint)
    page.click("#add-pane")
    page.wait_for_selector(f"#pane-{number}[data-endpoint={endpoint}]")


def send(page, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.click("#send")
    page.wait_for_function(IDLE, timeout=30_000)
    assert page.inner_text("#composer-error") == ""


def sent(vendor, count: int) -> list[dict]:
    """The last ``count`` requests the vendor received (the panes' requests arrive in any order)."""
    return [r.json for r in vendor.requests[-count:]]


def layout_saved(page) -> None:
    """Wait (a little) until the page says the panes were saved; what the reload shows is the test."""
    try:
        page.wait_for_function("document.querySelector('#playground').dataset.layoutSaved", timeout=5_000)
    except PlaywrightTimeout:
        pass


def test_every_field_round_trips_through_save_reopen_send_and_get_code(page, vendor):
    page.goto("/playground/")
    add_pane(page, FAKE, 1)
    page.click("#pane-0 .remove-pane")
    fill(page, 1, system="Be brief.", temperature="0", max_tokens="7", top_p="0.9", stop="###\nEND", budget_tokens="32")
    shown = fields(page, 1)
    send(page, "Say hi.")
    first = vendor.last_request.json
    assert first["stop"] == ["###", "END"] and first["temperature"] == 0 and first["max_tokens"] == 7
    assert first["top_p"] == 0.9 and first["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "thinking" not in first

    # Reopened, the fields show exactly what was sent (the Stop field used to show a Python list),
    # and sending again sends exactly the same settings, three times over.
    conversation = page.evaluate("document.querySelector('#playground').dataset.conversation")
    for round_ in range(3):
        page.goto(f"/playground/?c={conversation}")
        page.wait_for_selector(f"#pane-1[data-endpoint={FAKE}]")
        if round_ == 0:
            open_settings(page, 1)
            shot(page, "playground-state-01-reopened-fields")
        assert fields(page, 1) == shown, round_
        send(page, f"Again {round_}.")
        again = vendor.last_request.json
        assert {k: again.get(k) for k in ("stop", "temperature", "max_tokens", "top_p")} == \
            {"stop": ["###", "END"], "temperature": 0, "max_tokens": 7, "top_p": 0.9}, round_

    # A stop sequence holding a newline is written \n in the field, and round-trips too.
    fill(page, 1, stop="###\nEND\\n")
    shown = fields(page, 1)
    send(page, "With a newline.")
    assert vendor.last_request.json["stop"] == ["###", "END\n"]
    page.reload()
    page.wait_for_selector(f"#pane-1[data-endpoint={FAKE}]")
    assert fields(page, 1) == shown
    send(page, "Once more.")
    assert vendor.last_request.json["stop"] == ["###", "END\n"]

    # The turn says what it was sent with; Get code shows the same stop sequences.
    line = page.inner_text("#thread-1 .turn:last-child .turn-settings")
    assert FAKE in line and "temperature 0" in line and "max tokens 7" in line and "top p 0.9" in line
    assert '["###", "END\\n"]' in line and "thinking off" in line
    page.click("#pane-1 .get-code")
    page.wait_for_selector("#pane-1 .code pre")
    code = page.inner_text("#pane-1 .code")
    assert "###" in code and "END\\n" in code and "'['" not in code and '"[' not in code and "[]" not in code
    shot(page, "playground-state-02-turn-settings-and-code")


def test_same_settings_for_all_panes_shows_what_every_pane_sends(page, vendor):
    page.goto("/playground/")
    add_pane(page, FAKE, 1)
    add_pane(page, FAKE, 2)
    page.click("#pane-0 .remove-pane")
    fill(page, 1, temperature="0.3", max_tokens="5", stop="###")
    fill(page, 2, temperature="1.2", max_tokens="9")
    page.check("#pane-2 [name=thinking]")
    page.check("#same-settings")
    shot(page, "playground-state-03-same-settings")
    # Pane 2 now shows pane 1's settings (it used to keep showing its own while sending pane 1's).
    assert fields(page, 2) == fields(page, 1)
    assert fields(page, 2)["temperature"] == "0.3" and fields(page, 2)["thinking"] is False
    send(page, "Hello.")
    requests = sent(vendor, 2)
    for request in requests:
        assert (request["temperature"], request["max_tokens"], request["stop"]) == (0.3, 5, ["###"])
        assert "thinking" not in request
    for pane in (1, 2):
        line = page.inner_text(f"#thread-{pane} .turn:last-child .turn-settings")
        assert "temperature 0.3" in line and "max tokens 5" in line and "thinking off" in line, line

    # An edit while the box is ticked goes to every pane, and so does a pane added later.
    fill(page, 1, temperature="0.7")
    add_pane(page, FAKE, 3)
    assert fields(page, 2)["temperature"] == fields(page, 3)["temperature"] == "0.7"
    page.click("#pane-3 .get-code")
    page.wait_for_selector("#pane-3 .code pre")
    assert "0.7" in page.inner_text("#pane-3 .code")
    send(page, "And again.")
    assert [r["temperature"] for r in sent(vendor, 3)] == [0.7, 0.7, 0.7]
    shot(page, "playground-state-04-same-settings-sent")


def test_panes_persist_new_conversation_keeps_them_and_a_deleted_one_leaves_a_clean_page(page, vendor):
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto("/playground/")
    add_pane(page, FAKE, 1)
    add_pane(page, FAKE, 2)
    page.click("#pane-0 .remove-pane")
    fill(page, 1, temperature="0.4")
    fill(page, 2, temperature="0.6")
    send(page, "First question.")
    conversation = page.evaluate("document.querySelector('#playground').dataset.conversation")

    # A pane removed after the last send stays removed when the conversation is reopened.
    page.click("#pane-2 .remove-pane")
    layout_saved(page)
    page.goto(f"/playground/?c={conversation}")
    page.wait_for_selector(f"#pane-1[data-endpoint={FAKE}]")
    shot(page, "playground-state-05-reopened-layout")
    assert page.locator(".pane").count() == 1, page.inner_text("#panes")
    assert "First question." in page.inner_text("#thread-1")
    # A pane added after the last send is kept too, with its settings (its number is a new one).
    add_pane(page, FAKE, 3)
    fill(page, 3, temperature="0.9")
    page.locator("#pane-3 [name=temperature]").blur()
    page.wait_for_timeout(400)  # the settings are saved a moment after the edit
    layout_saved(page)
    page.reload()
    page.wait_for_selector("#pane-3")
    assert [p.get_attribute("id") for p in page.locator(".pane").all()] == ["pane-1", "pane-3"]
    assert fields(page, 3)["temperature"] == "0.9"
    shot(page, "playground-state-06-reopened-with-added-pane")

    # New conversation: the same panes and settings, empty threads; and so after a reload.
    page.click("#new-conversation")
    for check in ("in place", "reloaded"):
        assert [p.get_attribute("id") for p in page.locator(".pane").all()] == ["pane-1", "pane-3"], check
        assert page.locator(".turn").count() == 0, check
        assert (fields(page, 1)["temperature"], fields(page, 3)["temperature"]) == ("0.4", "0.9"), check
        assert page.locator("#conversations li[aria-current]").count() == 0, check
        if check == "in place":
            page.reload()
            page.wait_for_selector("#pane-3")
    shot(page, "playground-state-07-new-conversation")
    send(page, "Second question.")
    second = page.evaluate("document.querySelector('#playground').dataset.conversation")
    assert second and second != conversation
    assert sorted(r["temperature"] for r in sent(vendor, 2)) == [0.4, 0.9]

    # Deleting the open conversation leaves a new, empty one with the same panes; Send works.
    page.wait_for_selector("#conversations li[aria-current]")
    page.wait_for_load_state("networkidle")  # the list is refreshed after a send: click the final one
    page.click("#conversations li[aria-current] .conv-actions summary")
    page.click("#conversations li[aria-current] .delete-conversation")
    page.wait_for_function("!document.querySelector('#playground').dataset.conversation")
    assert page.locator(".turn").count() == 0
    assert [p.get_attribute("id") for p in page.locator(".pane").all()] == ["pane-1", "pane-3"]
    assert "Second question." not in page.inner_text("#conversations")
    shot(page, "playground-state-08-deleted-open-conversation")
    send(page, "Third question.")
    third = page.evaluate("document.querySelector('#playground').dataset.conversation")
    assert third and third not in (conversation, second)
    assert page.locator(".turn").count() == 2
    shot(page, "playground-state-09-sent-after-delete")
