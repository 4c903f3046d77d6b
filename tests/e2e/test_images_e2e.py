"""Images on the pages (issue 11, items 8 and 11), in a real browser against the live server.

Item 8: "Attach image" and "Describe image" show only while some pane's endpoint can see images,
which is the served entity's ``vision`` setting: ``fake-vision`` says ``vision: true``; the
embedded model and an openai-compatible endpoint that says nothing cannot.
Item 11: a refused upload is named by its file in plain words, and the message goes when the
images are removed; the Query dialog numbers images from 1.
"""
from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import shot

LOOPBACK = "loopback-text-chat"


def png(width: int = 240, height: int = 240) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def loopback_endpoint(fondasi_server, live_vendor):
    """An openai-compatible endpoint on loopback that does not say it sees images (as issue 11 found)."""
    headers = {"Authorization": f"Bearer {fondasi_server.token}"}
    url = fondasi_server.url + "/api/2.0/serving-endpoints"
    httpx.delete(f"{url}/{LOOPBACK}", headers=headers)
    response = httpx.post(url, headers=headers, json={"name": LOOPBACK, "config": {"served_entities": [{
        "name": "text-model", "external_model": {"name": "a-text-model", "provider": "openai-compatible",
                                                  "task": "llm/v1/chat",
                                                  "openai_config": {"openai_api_base": live_vendor.base_url}}}]}})
    assert response.status_code == 200, response.text
    yield LOOPBACK
    httpx.delete(f"{url}/{LOOPBACK}", headers=headers)


def add_pane(page, endpoint: str) -> None:
    count = page.locator(".pane").count()
    page.select_option("#new-endpoint", endpoint)
    page.click("#add-pane")
    page.wait_for_function(f"document.querySelectorAll('.pane').length === {count + 1}")


def image_controls_shown(page) -> dict:
    return {"attach": page.locator("label.attach").is_visible(),
            "describe": page.get_by_role("button", name="Describe image").is_visible()}


def test_image_controls_show_only_while_a_pane_can_see_images(page, loopback_endpoint):
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto("/playground/")
    page.wait_for_selector(".pane")
    assert page.locator(".pane").count() == 1 and page.locator(".pane").get_attribute("data-vision") == "false"
    assert image_controls_shown(page) == {"attach": False, "describe": False}
    shot(page, "images-1-text-only-pane-no-attach")

    # The loopback openai-compatible endpoint says nothing about images: it cannot see them.
    add_pane(page, loopback_endpoint)
    pane = page.locator(".pane").last
    assert pane.get_attribute("data-vision") == "false"
    assert "text only" in pane.locator(".pane-head").inner_text()
    assert image_controls_shown(page) == {"attach": False, "describe": False}

    add_pane(page, "fake-vision")
    assert page.locator(".pane").last.get_attribute("data-vision") == "true"
    assert image_controls_shown(page) == {"attach": True, "describe": True}
    # A pane that cannot see images says so once images are attached.
    page.set_input_files("#image-input", files=[{"name": "cat.png", "mimeType": "image/png", "buffer": png()}])
    page.wait_for_selector("#attachments .thumb")
    expect_notice = page.locator(".pane").first.locator(".no-vision")
    assert expect_notice.is_visible(), "a text-only pane says its images will not be sent"
    shot(page, "images-2-vision-pane-attach-shown")

    page.locator(".pane").last.locator(".remove-pane").click()
    page.wait_for_function("document.querySelectorAll('.pane').length === 2")
    assert image_controls_shown(page) == {"attach": False, "describe": False}
    shot(page, "images-3-vision-pane-removed")


def test_a_refused_upload_is_named_by_its_file_in_plain_words_and_goes_with_the_images(page):
    page.goto("/playground/")
    page.wait_for_selector(".pane")
    add_pane(page, "fake-vision")
    page.set_input_files("#image-input", files=[
        {"name": "photo.png", "mimeType": "image/png", "buffer": b"this is not a picture at all"},
        {"name": "cat.png", "mimeType": "image/png", "buffer": png()},
    ])
    error = page.locator("#attachments .thumb-error")
    error.wait_for()
    assert error.inner_text() == "photo.png is not a supported image (JPEG, PNG, GIF or WebP)."
    assert "Image 0" not in page.inner_text("#attachments")
    shot(page, "images-4-upload-error-plain")

    page.locator("#attachments .thumb .remove-image").click()
    assert page.locator("#attachments .thumb").count() == 0
    assert page.locator("#attachments .thumb-error").count() == 0, "the error went with the images"
    shot(page, "images-5-upload-error-cleared")


def test_the_query_dialog_numbers_images_from_1_in_plain_words(page):
    page.goto("/endpoints/fake-vision/")
    page.click("#open-query")
    page.wait_for_selector("#query-dialog[open]")
    bad = "data:image/png;base64," + base64.b64encode(b"this is not a picture at all").decode()
    good = "data:image/png;base64," + base64.b64encode(png()).decode()
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": good}},
        {"type": "image_url", "image_url": {"url": bad}},
    ]}], "max_tokens": 8}
    page.fill("#query-body", json.dumps(body, indent=2))
    page.click("#send-request")
    error = page.locator("#query-error")
    error.wait_for()
    assert error.inner_text() == "Image 2 is not a supported image (JPEG, PNG, GIF or WebP)."
    shot(page, "images-6-query-dialog-image-error")
