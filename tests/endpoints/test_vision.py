"""Images in chat requests, through the HTTP API and the one query path (PRODUCT.md §5)."""
from __future__ import annotations

import base64
import io
import json

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from PIL import Image

from endpoints.config import apply, parse_text
from endpoints.providers import http
from tests.conftest import api_client
from tests.fakes.openai_upstream import openai_upstream  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

VISION = """
endpoints:
  - name: vision-chat
    task: llm/v1/chat
    served_entities:
      - name: vision-entity
        vision: true
        external_model:
          name: a-vision-model
          provider: openai-compatible
          openai_config: {{openai_api_base: "{base}"}}
"""


def data_url(width: int, height: int, fmt: str = "PNG", mime: str = "image/png", mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), (200, 30, 30) if mode == "RGB" else (200, 30, 30, 128)).save(buffer, fmt)
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode()


def ask(*urls: str, text: str = "What is in these pictures?") -> dict:
    parts = [{"type": "text", "text": text}] + [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {"messages": [{"role": "user", "content": parts}], "max_tokens": 16}


@pytest.fixture
def vision(openai_upstream, db):  # noqa: F811
    apply(parse_text(VISION.format(base=openai_upstream.base_url)))
    return openai_upstream


@pytest_asyncio.fixture(autouse=True)
async def pool():
    yield
    await http.aclose_client()


async def post(client, url, body):
    return await client.post(url, data=json.dumps(body), content_type="application/json")


async def test_the_vendor_receives_the_resized_re_encoded_image(vision, auth_headers):
    # A 3000×1000 PNG declared as JPEG: identified from its bytes, scaled to a 1568 px long edge.
    response = await post(api_client(auth_headers), "/serving-endpoints/vision-chat/invocations",
                          ask(data_url(3000, 1000, mime="image/jpeg"), data_url(300, 300)))
    assert response.status_code == 200, response.content
    sent = vision.last_request.json["messages"][0]["content"]
    assert sent[0] == {"type": "text", "text": "What is in these pictures?"}
    first = sent[1]["image_url"]["url"]
    assert first.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(first.split(",", 1)[1])))
    assert image.format == "JPEG" and image.size == (1568, 522)  # 1000·1568/3000 = 522.7, floored so limits hold
    assert sent[2]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    # The vendor's own prompt_tokens count the images: they are not added twice.
    assert response.json()["usage"]["prompt_tokens"] == 7


async def test_an_image_with_transparency_is_sent_as_png(vision, auth_headers):
    await post(api_client(auth_headers), "/serving-endpoints/vision-chat/invocations",
               ask(data_url(400, 400, mode="RGBA")))
    assert vision.last_request.json["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")


async def test_more_than_100_images_is_a_400(vision, auth_headers):
    tiny = data_url(8, 8)
    response = await post(api_client(auth_headers), "/serving-endpoints/vision-chat/invocations", ask(*[tiny] * 101))
    assert response.status_code == 400
    assert "101" in response.json()["message"] and "100" in response.json()["message"]
    assert not vision.requests  # nothing reached the vendor


async def test_an_image_over_8000_px_is_a_400_naming_its_index_and_size(vision, auth_headers):
    response = await post(api_client(auth_headers), "/serving-endpoints/vision-chat/invocations",
                          ask(data_url(10, 10), data_url(8001, 2, fmt="PNG")))
    assert response.status_code == 400
    message = response.json()["message"]
    assert "Image 1" in message and "8001" in message and "8000" in message


async def test_an_undecodable_image_is_a_400_naming_it(vision, auth_headers):
    response = await post(api_client(auth_headers), "/serving-endpoints/vision-chat/invocations",
                          ask("data:image/png;base64," + base64.b64encode(b"not a picture").decode()))
    assert response.status_code == 400 and "Image 0" in response.json()["message"]


async def test_an_http_image_url_asks_for_a_data_url(vision, auth_headers):
    response = await post(api_client(auth_headers), "/serving-endpoints/vision-chat/invocations",
                          ask("https://example.com/cat.jpg"))
    assert response.status_code == 400 and "data:" in response.json()["message"]
    assert not vision.requests


async def test_an_endpoint_that_cannot_see_images_says_so(default_endpoints, auth_headers):
    response = await post(api_client(auth_headers), "/serving-endpoints/local-smollm2-chat/invocations",
                          ask(data_url(300, 300)))
    assert response.status_code == 400
    assert response.json()["message"] == (
        "messages[0] contains an image, but endpoint 'local-smollm2-chat' (provider 'local', "
        "model 'smollm2-135m-instruct') cannot see images. If its model can, set 'vision: true' on served "
        "entity 'smollm2-135m-instruct' of endpoint 'local-smollm2-chat' (endpoints file, management API or admin)."
    )


@pytest.fixture
def text_only(openai_upstream, db):  # noqa: F811
    apply(parse_text(VISION.format(base=openai_upstream.base_url).replace("        vision: true\n", "")))
    return openai_upstream


async def test_an_openai_compatible_endpoint_sees_images_only_when_its_entity_says_so(text_only, auth_headers):
    # A vLLM or llama.cpp server may serve a text-only model: unless the served entity says
    # `vision: true`, images are refused here with a 400 naming the setting, not sent to fail upstream.
    openai_upstream = text_only
    response = await post(api_client(auth_headers), "/serving-endpoints/vision-chat/invocations", ask(data_url(300, 300)))
    assert response.status_code == 400, response.content
    message = response.json()["message"]
    assert "endpoint 'vision-chat'" in message and "cannot see images" in message
    assert "set 'vision: true' on served entity 'vision-entity'" in message
    assert not openai_upstream.requests
    # Text still goes through, and the entity's setting is what the product page shows.
    response = await post(api_client(auth_headers), "/serving-endpoints/vision-chat/invocations",
                          {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert response.status_code == 200, response.content


@pytest.fixture
def claude_text_only(db):
    apply(parse_text("""
endpoints:
  - name: claude-text
    task: llm/v1/chat
    served_entities:
      - name: claude-entity
        vision: false
        external_model:
          name: claude-sonnet-4-5
          provider: anthropic
          anthropic_config: {anthropic_api_key: sk-test, anthropic_api_base: "http://127.0.0.1:9"}
"""))


async def test_vision_false_turns_images_off_for_a_provider_whose_models_see(claude_text_only, auth_headers):
    response = await post(api_client(auth_headers), "/serving-endpoints/claude-text/invocations", ask(data_url(300, 300)))
    assert response.status_code == 400
    assert "'vision: true' on served entity 'claude-entity' of endpoint 'claude-text'" in response.json()["message"]


async def test_the_query_keeps_what_the_pipeline_sent_for_each_image(vision):
    from endpoints import service

    query = await service.prepare("vision-chat", ask(data_url(2000, 2000), data_url(100, 100)))
    reports = [image.report() for image in query.images]
    assert [r["index"] for r in reports] == [0, 1]
    assert reports[0]["original_size"] == [2000, 2000] and reports[0]["resized"]
    assert reports[0]["tokens"] <= 1600
    assert reports[1]["warnings"] and "200" in reports[1]["warnings"][0]


async def test_the_management_api_sets_shows_and_validates_vision(openai_upstream, auth_headers):  # noqa: F811
    from tests.endpoints.test_management_api import URL, create_body, external, make_user, send

    root = await sync_to_async(make_user)("root", staff=True)
    entity = {**external("seer", base=openai_upstream.base_url), "vision": True}
    response = await send(root, "post", URL, create_body("seer-chat", entity))
    assert response.status_code == 200, response.content
    assert response.json()["config"]["served_entities"][0]["vision"] is True
    response = await post(api_client(auth_headers), "/serving-endpoints/seer-chat/invocations", ask(data_url(300, 300)))
    assert response.status_code == 200, response.content
    assert openai_upstream.last_request.json["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/jpeg")
    # Only true or false: "yes" is a 400 naming the field.
    response = await send(root, "post", URL, create_body("bad-chat", {**external("x"), "vision": "yes"}))
    assert response.status_code == 400 and "vision" in response.json()["message"], response.content
