"""The AI Playground in a real browser against the live server: streaming panes, Stop, thinking, images.

The embedded model runs one job at a time, so two panes on it take turns; the side-by-side
streaming check pairs it with ``fake-vision``, whose fake vendor (in this process) streams slowly.
"""
from __future__ import annotations

import time

import pytest
from PIL import Image

from tests.e2e.conftest import shot

IDLE = "!document.querySelector('#send').disabled"
LENGTHS = """() => [0, 1].map(p => {
  const raw = document.querySelector(`#thread-${p} .turn[data-streaming] .answer-raw`);
  return raw ? raw.textContent.length : -1;
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
    page.wait_for_selector("#pane-0[data-endpoint=local-smollm2-chat]")
    shot(page, "playground-01-empty")

    # A second pane: the fake vision endpoint.
    page.select_option("#new-endpoint", "fake-vision")
    page.click("#add-pane")
    page.wait_for_selector("#pane-1[data-endpoint=fake-vision]")
    set_param(page, 0, "max_tokens", "160")
    set_param(page, 0, "temperature", "0.7")
    shot(page, "playground-02-two-panes")

    # Both panes' text grows while streaming, not all at once at the end.
    vendor.pieces = [f"word{i} " for i in range(100)]
    vendor.chunk_delay = 0.05
    send(page, "Write a long story about a dragon and a knight.")
    samples = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        lengths = page.evaluate(LENGTHS)
        samples.append(lengths)
        if lengths == [-1, -1] and len(samples) > 3:
            break
        if len(samples) == 12:
            shot(page, "playground-03-streaming")
        time.sleep(0.1)
    page.wait_for_function(IDLE)
    for pane in (0, 1):
        growing = sorted({s[pane] for s in samples if s[pane] > 0})
        assert len(growing) >= 3, f"pane {pane} did not grow while streaming: {samples}"
    assert any(a > 0 and b > 0 for a, b in samples), f"the panes never streamed at the same time: {samples}"
    assert "word99" in page.inner_text("#thread-1 .turn:last-child .markdown")
    assert page.locator("#pane-0 .turn:last-child .figures").is_visible()
    assert "tok/s" in page.inner_text("#pane-0 .turn:last-child .figures")
    shot(page, "playground-04-answered")

    # Stop: both panes end at once, marked stopped.
    vendor.pieces = [f"word{i} " for i in range(400)]
    set_param(page, 0, "max_tokens", "400")
    send(page, "Now write an even longer one.")
    page.wait_for_function("""() => [0, 1].every(p => {
      const raw = document.querySelector(`#thread-${p} .turn[data-streaming] .answer-raw`);
      return raw && raw.textContent.length > 0;
    })""", timeout=60_000)
    page.click("#stop")
    page.wait_for_function(IDLE, timeout=10_000)
    for pane in (0, 1):
        assert "Stopped." in page.inner_text(f"#thread-{pane} .turn:last-child")
    shot(page, "playground-05-stopped")

    # Thinking: reasoning streams into its own column beside the answer.
    vendor.reset()
    page.click("#pane-1 .remove-pane")
    page.check("#pane-0 [name=thinking]")
    set_param(page, 0, "budget_tokens", "48")
    set_param(page, 0, "max_tokens", "120")
    send(page, "Why is the sky blue?")
    page.wait_for_selector("#thread-0 .turn[data-streaming] .reasoning:not([hidden])", timeout=60_000)
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
    assert "Write a long story" in page.inner_text("#conversations")
