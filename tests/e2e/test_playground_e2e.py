"""The AI Playground in a real browser against the live server: streaming panes, Stop, thinking, images.

The two streaming panes are both local endpoints, ``local-smollm2-chat`` and
``local-smollm2-chat-2``: the embedded model serves two requests at once (one instance each), so
neither pane waits for the other. Images go to ``fake-vision``, whose fake vendor runs in this
process.
"""
from __future__ import annotations

import time

import pytest
from PIL import Image

from tests.e2e.conftest import shot

LOCAL, LOCAL_2 = "local-smollm2-chat", "local-smollm2-chat-2"
IDLE = "!document.querySelector('#send').disabled"
# Per pane: the streaming answer's text length (-1 when not streaming) and whether it holds
# rendered Markdown (paragraphs, lists…) rather than bare text.
SAMPLE = """() => [0, 1].map(p => {
  const live = document.querySelector(`#thread-${p} .turn[data-streaming] .answer-live`);
  return live ? [live.textContent.length, !!live.querySelector("p, li, pre, h1, h2, h3, table")] : [-1, false];
})"""


@pytest.fixture
def vendor(live_vendor):
    live_vendor.reset()
    yield live_vendor
    live_vendor.reset()


def set_param(page, pane: int, name: str, value: str) -> None:
    settings = page.locator(f"#pane-{pane} details.settings")
    if settings.get_attribute("open") is None:
        settings.locator("summary").click()
    page.fill(f"#pane-{pane} [name={name}]", value)


def send(page, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.click("#send")


def test_the_playground_streams_panes_side_by_side_stops_thinks_and_sends_images(page, vendor, tmp_path):
    page.goto("/playground/")
    page.wait_for_selector(f"#pane-0[data-endpoint={LOCAL}]")
    shot(page, "playground-01-empty")

    # A second pane on the second local endpoint.
    page.select_option("#new-endpoint", LOCAL_2)
    page.click("#add-pane")
    page.wait_for_selector(f"#pane-1[data-endpoint={LOCAL_2}]")
    # A first short answer in both panes loads the model's two instances (the second loads the
    # first time two requests run at once), so what follows measures streaming, not loading.
    # Every step samples greedily (the pages send no seed): what the model writes, and so how
    # long it streams before Stop, is the same on every run.
    for pane in (0, 1):
        set_param(page, pane, "max_tokens", "4")
        set_param(page, pane, "temperature", "0")
    send(page, "Name a colour.")
    page.wait_for_function(IDLE, timeout=120_000)
    for pane in (0, 1):
        set_param(page, pane, "max_tokens", "200")
    shot(page, "playground-02-two-panes")

    # Both panes' text grows while streaming, at the same time, as rendered Markdown; not all at
    # once at the end.
    send(page, "Write a long story about a dragon and a knight.")
    samples = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        sample = page.evaluate(SAMPLE)
        samples.append(sample)
        if all(length == -1 for length, _ in sample) and len(samples) > 3:
            break
        if sum(all(length > 0 for length, _ in taken) for taken in samples) == 10:  # both streaming for a while
            shot(page, "playground-03-streaming")
        time.sleep(0.1)
    page.wait_for_function(IDLE)
    lengths = [[length for length, _ in sample] for sample in samples]
    # The samples at which each pane's text grew: several, and both panes grew several times
    # while the other was growing too (between their first and last growth), so neither waited.
    grew = [[i for i in range(1, len(lengths)) if lengths[i - 1][p] < lengths[i][p] and lengths[i - 1][p] > 0]
            for p in (0, 1)]
    assert all(len(g) >= 3 for g in grew), f"a pane did not grow while streaming: {lengths}"
    start, end = max(g[0] for g in grew), min(g[-1] for g in grew)
    assert all(len([i for i in g if start <= i <= end]) >= 3 for g in grew), f"the panes took turns: {lengths}"
    assert any(rendered for sample in samples for length, rendered in sample if length > 0), "no Markdown while streaming"
    for pane in (0, 1):
        assert page.inner_text(f"#thread-{pane} .turn:last-child .markdown").strip()
        assert "tok/s" in page.inner_text(f"#pane-{pane} .turn:last-child .figures")
    shot(page, "playground-04-answered")

    # Stop: both panes end at once, marked stopped.
    for pane in (0, 1):
        set_param(page, pane, "max_tokens", "400")
    send(page, "Now write an even longer one.")
    page.wait_for_function("""() => [0, 1].every(p => {
      const live = document.querySelector(`#thread-${p} .turn[data-streaming] .answer-live`);
      return live && live.textContent.length > 0;
    })""", timeout=90_000)
    page.click("#stop")
    page.wait_for_function(IDLE, timeout=10_000)
    for pane in (0, 1):
        assert "Stopped." in page.inner_text(f"#thread-{pane} .turn:last-child")
    shot(page, "playground-05-stopped")

    # Thinking: reasoning streams into its own column beside the answer.
    page.click("#pane-1 .remove-pane")
    page.check("#pane-0 [name=thinking]")
    set_param(page, 0, "budget_tokens", "48")
    set_param(page, 0, "max_tokens", "120")
    # Enabled thinking always reasons for min(16, budget) tokens before it may close <think> (it
    # used to close it at once at times: an empty reasoning shows no column).
    send(page, "Why is the sky blue?")
    try:
        page.wait_for_selector("#thread-0 .turn[data-streaming] .reasoning:not([hidden])", timeout=60_000)
    except Exception:
        shot(page, "playground-06-thinking-FAILED")  # what the page showed instead
        raise AssertionError(f"no reasoning streamed; composer says: {page.inner_text('#composer-error')!r}") from None
    shot(page, "playground-06-thinking")
    page.wait_for_function(IDLE, timeout=90_000)
    turn = page.locator("#thread-0 .turn").last
    reasoning, answer = turn.locator(".reasoning"), turn.locator(".answer")
    assert reasoning.locator(".reasoning-text").inner_text().strip()
    assert "Thought for" in reasoning.locator("summary").inner_text()
    r, a = reasoning.bounding_box(), answer.bounding_box()
    assert r["x"] + r["width"] <= a["x"] + 1 and abs(r["y"] - a["y"]) < 40, (r, a)  # side by side
    shot(page, "playground-07-reasoning-beside-answer")

    # Images: a large PNG is scaled by the API's pipeline; the thumbnail says what is sent.
    page.uncheck("#pane-0 [name=thinking]")
    page.select_option("#new-endpoint", "fake-vision")
    page.click("#add-pane")
    page.wait_for_selector("#pane-2[data-endpoint=fake-vision]")
    path = tmp_path / "large.png"
    Image.new("RGB", (3000, 2000), (40, 160, 90)).save(path)
    page.set_input_files("#image-input", str(path))
    page.wait_for_selector("#attachments .thumb")
    assert "3000×2000 → 1341×894" in page.inner_text("#attachments .thumb .sent-size")
    assert page.locator("#pane-0 .no-vision").is_visible()  # said before sending
    assert not page.locator("#pane-2 .no-vision").is_visible()
    shot(page, "playground-08-image-attached")
    send(page, "Describe this image.")
    page.wait_for_function(IDLE, timeout=60_000)
    assert "1341×894" in page.inner_text("#thread-2 .turn:last-child .sent-images")
    assert "Hello, world!" in page.inner_text("#thread-2 .turn:last-child .markdown")
    assert "cannot see images" in page.inner_text("#thread-0 .turn:last-child")
    assert any(p.get("type") == "image_url" for p in vendor.last_request.json["messages"][-1]["content"])
    shot(page, "playground-09-image-answered")

    # The conversation was saved and is listed.
    page.wait_for_selector("#conversations li[aria-current]")
    assert "Name a colour." in page.inner_text("#conversations li[aria-current]")


def test_the_playground_fits_a_phone(page):
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/playground/")
    page.wait_for_selector(f"#pane-0[data-endpoint={LOCAL}]")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the screen
    prompt = page.locator("#prompt").bounding_box()
    composer = page.locator("#composer").bounding_box()
    assert prompt["width"] >= composer["width"] - 40, (prompt, composer)  # the prompt box spans the composer
    assert page.locator("label.attach").is_hidden()  # the embedded model sees no images: no Attach image
    for button in ("#send", "#stop"):
        box = page.locator(button).bounding_box()
        assert box["height"] >= 44 and box["width"] >= 80 and box["x"] + box["width"] <= 390, (button, box)
    set_param(page, 0, "max_tokens", "24")
    set_param(page, 0, "temperature", "0")
    page.locator("#pane-0 details.settings summary").click()  # closed again
    send(page, "Give me two tips for a rainy day.")
    page.wait_for_function(IDLE, timeout=90_000)
    assert page.inner_text("#thread-0 .turn:last-child .markdown").strip()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "playground-10-phone-390x844")
