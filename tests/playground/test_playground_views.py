"""The playground's pages: sign-in, conversations (owner only), image uploads, Get code."""
from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from PIL import Image

from playground.models import Conversation, PlaygroundImage

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob(db):
    return get_user_model().objects.create_user("bob", password="builder-42")


@pytest.fixture
def signed_in(client, alice, default_endpoints):
    client.force_login(alice)
    return client


def png(width: int, height: int) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buffer, "PNG")
    buffer.seek(0)
    buffer.name = "big.png"
    return buffer


def test_it_requires_sign_in(client, default_endpoints):
    response = client.get("/playground/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert client.post("/playground/images").status_code == 302


def test_it_shows_the_page_with_a_chat_pane_and_sample_prompts(signed_in):
    response = signed_in.get("/playground/")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="pane-0"' in html and 'data-endpoint="local-smollm2-chat"' in html and "text only" in html
    assert 'class="sample"' in html and 'class="wide"' in html
    assert "local-minilm-embeddings" not in html  # chat endpoints only


def test_it_renders_a_new_pane(signed_in):
    response = signed_in.get("/playground/pane", {"endpoint": "local-smollm2-chat", "pane": 3})
    assert response.status_code == 200 and 'id="pane-3"' in response.content.decode()
    assert signed_in.get("/playground/pane", {"endpoint": "local-minilm-embeddings"}).status_code == 400


def test_a_saved_conversation_reopens_with_its_turns_escaped(signed_in, alice):
    turn = {"prompt": "<script>x</script>", "answer": "**bold** <img src=x onerror=alert(1)>", "reasoning": "",
            "figures": {"latency_s": 1.0}, "images": [], "error": None, "streaming": False}
    c = Conversation.objects.create(user=alice, title="T", panes=[
        {"endpoint": "local-smollm2-chat", "system": "", "params": {}, "messages": [], "turns": [turn]}])
    html = signed_in.get(f"/playground/?c={c.pk}").content.decode()
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script>x" not in html
    assert "<strong>bold</strong>" in html and "<img src=x" not in html


def test_conversations_are_listed_renamed_and_deleted_by_their_owner_only(signed_in, alice, bob):
    mine = Conversation.objects.create(user=alice, title="Mine")
    theirs = Conversation.objects.create(user=bob, title="Theirs")
    listing = signed_in.get("/playground/conversations").content.decode()
    assert "Mine" in listing and "Theirs" not in listing

    response = signed_in.post(f"/playground/conversations/{mine.pk}/rename", {"title": "Renamed <b>"})
    assert response.status_code == 200 and "Renamed &lt;b&gt;" in response.content.decode()
    assert signed_in.post(f"/playground/conversations/{theirs.pk}/rename", {"title": "x"}).status_code == 404
    assert signed_in.post(f"/playground/conversations/{theirs.pk}/delete").status_code == 404
    assert signed_in.get(f"/playground/?c={theirs.pk}").status_code == 404
    assert Conversation.objects.get(pk=theirs.pk).title == "Theirs"

    assert signed_in.post(f"/playground/conversations/{mine.pk}/delete").status_code == 200
    assert not Conversation.objects.filter(pk=mine.pk).exists()


def test_an_upload_runs_the_api_pipeline_and_reports_what_is_sent(signed_in, alice):
    response = signed_in.post("/playground/images", {"images": png(3000, 2000)})
    html = response.content.decode()
    assert response.status_code == 200
    image = PlaygroundImage.objects.get(user=alice)
    # Scaled to fit 1568 px and ~1,600 tokens (the token rule binds here): the thumbnail says so.
    assert image.report["original_size"] == [3000, 2000] and image.report["sent_size"] == [1341, 894]
    assert max(image.report["sent_size"]) <= 1568 and image.report["tokens"] <= 1600
    assert "3000×2000 → 1341×894" in html and f'data-image-id="{image.id}"' in html
    assert image.data_url.startswith("data:image/jpeg;base64,")
    served = signed_in.get(f"/playground/images/{image.id}")
    assert served.status_code == 200 and served["Content-Type"] == "image/jpeg"


def test_an_upload_that_is_not_an_image_is_refused_readably(signed_in):
    text = io.BytesIO(b"hello, not an image")
    text.name = "notes.txt"
    response = signed_in.post("/playground/images", {"images": text})
    assert response.status_code == 400
    html = response.content.decode()
    assert "notes.txt" in html and "JPEG, PNG, GIF or WebP" in html
    assert not PlaygroundImage.objects.exists()


def test_someone_elses_image_is_a_404(signed_in, bob):
    image = PlaygroundImage.objects.create(user=bob, data_url="data:image/png;base64,AAAA", report={})
    assert signed_in.get(f"/playground/images/{image.id}").status_code == 404


def test_get_code_shows_the_panes_request(signed_in):
    response = signed_in.post("/playground/code", {
        "pane": 0, "endpoint": "local-smollm2-chat", "system": "Be brief.", "prompt": "Hi <there>",
        "params": {"temperature": 0.2, "max_tokens": 64, "thinking": True, "budget_tokens": 16},
    }, content_type="application/json")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'model="local-smollm2-chat"' in html and "Be brief." in html and "Hi &lt;there&gt;" in html
    assert "temperature=0.2" in html and "budget_tokens" in html and "/serving-endpoints/local-smollm2-chat/invocations" in html


def test_markdown_from_a_model_cannot_carry_script_urls_or_handlers():
    from html.parser import HTMLParser

    from playground.render import markdown_html

    class Attributes(HTMLParser):
        found: list = []

        def handle_starttag(self, tag, attrs):
            self.found += [(tag, name, value or "") for name, value in attrs]

    parser = Attributes()
    parser.feed(str(markdown_html(
        '[click](javascript:alert(1)) <a href="javascript:x" onclick="y">z</a> ![i](data:text/html,x) [ok](https://example.com)'
    )))
    assert not [a for a in parser.found if a[1].startswith("on") or a[2].startswith(("javascript:", "data:"))]
    assert ("a", "href", "https://example.com") in parser.found  # ordinary links still work


def test_endpoint_example_inputs_are_one_click_prompts(signed_in):
    from endpoints.models import ExampleInput, ServingEndpoint

    chat = ServingEndpoint.objects.create(name="chat-x", task="llm/v1/chat")
    embed = ServingEndpoint.objects.create(name="embed-x", task="llm/v1/embeddings")
    ExampleInput.objects.create(endpoint=chat, name="Ask <b>politely</b>", body={"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi & bye"}]})
    ExampleInput.objects.create(endpoint=embed, name="Vectors", body={"input": ["a"]})
    html = signed_in.get("/playground/").content.decode()
    assert 'data-prompt="Say hi &amp; bye"' in html and "Ask &lt;b&gt;politely&lt;/b&gt;" in html
    assert "Vectors" not in html  # not a chat example
