"""The playground's pages: sign-in, conversations (owner only), image uploads, Get code."""
from __future__ import annotations

import io
from html import unescape

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


def test_get_code_shows_the_panes_request(signed_in, alice):
    image = PlaygroundImage.objects.create(user=alice, data_url="data:image/png;base64," + "A" * 100, report={})
    response = signed_in.post("/playground/code", {  # all that the page sends (paneSettings in playground.js)
        "pane": 0, "endpoint": "local-smollm2-chat", "system": "Be brief.", "prompt": "Hi <there>",
        "conversation": None, "images": [str(image.id)],
        "params": {"temperature": 0.2, "max_tokens": 64, "top_p": None, "stop": ["END"], "thinking": True,
                   "budget_tokens": 16},
    }, content_type="application/json")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'model="local-smollm2-chat"' in html and "Be brief." in html and "Hi &lt;there&gt;" in html
    assert "temperature=0.2" in html and "budget_tokens" in html and "/serving-endpoints/local-smollm2-chat/invocations" in html
    assert "max_tokens=64" in html and "&#x27;END&#x27;" in html and "data:image/png;base64,AAAA" in html


@pytest.mark.parametrize(("body", "problem"), [
    ("[]", "the body must be a JSON object"),
    ("1", "the body must be a JSON object"),
    ("null", "the body must be a JSON object"),
    ("{oops", "the body is not valid JSON"),
    ('{"endpoint": "local-smollm2-chat", "pane": 1e400}', "'pane': Input should be a valid integer"),
    ('{"endpoint": "local-smollm2-chat", "pane": -1}', "'pane': Input should be greater than or equal to 0"),
    ('{"endpoint": "local-smollm2-chat", "images": "abc"}', "'images': Input should be a valid array"),
    ('{"endpoint": "local-smollm2-chat", "images": ["abc"]}', "'images.0': Input should be a valid UUID"),
    ('{"endpoint": "local-smollm2-chat", "conversation": 1e400}', "'conversation': Input should be a valid integer"),
    ('{"endpoint": "local-smollm2-chat", "conversation": 99999999999999999999}', "'conversation': Input should be less than"),
    ('{"pane": 0}', "'endpoint': Field required"),
    ('{"endpoint": 7}', "'endpoint': Input should be a valid string"),
    ('{"endpoint": "local-smollm2-chat", "system": ["x"]}', "'system': Input should be a valid string"),
    ('{"endpoint": "local-smollm2-chat", "prompt": {}}', "'prompt': Input should be a valid string"),
    ('{"endpoint": "local-smollm2-chat", "params": []}', "'params': Input should be an object"),
    ('{"endpoint": "local-smollm2-chat", "params": {"temperature": 1e400}}', "'params.temperature"),
    ('{"endpoint": "local-smollm2-chat", "params": {"max_tokens": "64"}}', "'params.max_tokens"),
    ('{"endpoint": "local-smollm2-chat", "params": {"stop": [1]}}', "'params.stop"),
    ('{"endpoint": "local-smollm2-chat", "params": {"thinking": "yes"}}', "'params.thinking': Input should be a valid boolean"),
    ('{"endpoint": "local-smollm2-chat", "params": {"nope": 1}}', "'params.nope': Extra inputs are not permitted"),
    ('{"endpoint": "local-smollm2-chat", "surprise": 1}', "'surprise': Extra inputs are not permitted"),
])
def test_get_code_answers_a_body_of_the_wrong_shape_with_a_400_naming_the_field(signed_in, body, problem):
    response = signed_in.post("/playground/code", body, content_type="application/json")
    assert response.status_code == 400
    assert f"Malformed request for Get code: {problem}" in unescape(response.content.decode())


def test_uploads_past_the_quota_remove_the_oldest_and_say_so(signed_in, alice, settings):
    settings.PLAYGROUND_IMAGE_QUOTA = 2
    first, second = [signed_in.post("/playground/images", {"images": png(40, 40)}) for _ in range(2)]
    assert first.status_code == second.status_code == 200 and "removed" not in second.content.decode()
    oldest = PlaygroundImage.objects.filter(user=alice).order_by("created_at").first()
    third = signed_in.post("/playground/images", {"images": png(40, 40)})
    html = third.content.decode()
    assert third.status_code == 200 and "data-image-id" in html
    assert ("Your 1 oldest uploaded image was removed: a person keeps at most 2 images and 50.0 MiB uploaded "
            "(FONDASI_PLAYGROUND_IMAGE_QUOTA, FONDASI_PLAYGROUND_IMAGE_QUOTA_BYTES).") in html
    assert PlaygroundImage.objects.filter(user=alice).count() == 2
    assert signed_in.get(f"/playground/images/{oldest.id}").status_code == 404


def test_uploads_past_the_byte_quota_remove_the_oldest_and_one_larger_than_it_is_refused(signed_in, alice, settings):
    signed_in.post("/playground/images", {"images": png(40, 40)})
    size = len(PlaygroundImage.objects.get(user=alice).data_url)
    settings.PLAYGROUND_IMAGE_QUOTA_BYTES = size + size // 2  # one image fits, two do not
    response = signed_in.post("/playground/images", {"images": png(40, 40)})
    assert response.status_code == 200 and "Your 1 oldest uploaded image was removed" in response.content.decode()
    assert PlaygroundImage.objects.filter(user=alice).count() == 1
    response = signed_in.post("/playground/images", {"images": png(1000, 1000)})
    assert response.status_code == 400
    assert "big.png: even scaled down it is " in response.content.decode()
    assert (f"KiB, more than the {settings.PLAYGROUND_IMAGE_QUOTA_BYTES / 1024:.1f} KiB a person may keep uploaded "
            "(FONDASI_PLAYGROUND_IMAGE_QUOTA_BYTES).") in response.content.decode()
    assert PlaygroundImage.objects.filter(user=alice).count() == 1


def test_a_huge_example_is_not_carried_by_every_playground_page(signed_in, settings):
    from endpoints.models import ExampleInput, ServingEndpoint

    chat = ServingEndpoint.objects.create(name="chat-big", task="llm/v1/chat")
    ExampleInput.objects.create(endpoint=chat, name="Huge", body={"messages": [{"role": "user", "content": "x" * 300_000}]})
    ExampleInput.objects.create(endpoint=chat, name="Long", body={"messages": [{"role": "user", "content": "y" * 5000}]})
    ExampleInput.objects.create(endpoint=chat, name="Short", body={"messages": [{"role": "user", "content": "Hi"}]})
    html = signed_in.get("/playground/").content.decode()
    assert 'data-prompt="Hi"' in html and "Huge" not in html and "Long" not in html
    assert len(html) < 100_000


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


def test_a_reopened_pane_shows_its_saved_settings_as_they_are_sent_and_removed_panes_stay_removed(signed_in, alice):
    """Issue 11: the Stop field showed the saved list's Python repr (``[]``), which was then sent back as a stop."""
    params = {"temperature": 0, "max_tokens": 7, "top_p": None, "stop": ["###", "a\nb", "back\\slash"],
              "thinking": True, "budget_tokens": 32}
    c = Conversation.objects.create(user=alice, title="T", panes=[
        {"endpoint": "local-smollm2-chat", "system": "", "params": {}, "messages": [], "turns": [], "removed": True},
        {"endpoint": "local-smollm2-chat", "system": "Be brief.", "params": params, "messages": [], "turns": []},
        {"endpoint": "local-smollm2-chat", "system": "", "params": {"stop": []}, "messages": [], "turns": []},
    ])
    html = unescape(signed_in.get(f"/playground/?c={c.pk}").content.decode())
    assert 'id="pane-0"' not in html and 'id="pane-1"' in html and 'id="pane-2"' in html
    assert 'data-next-pane="3"' in html
    assert '<textarea name="stop" rows="2" aria-describedby="stop-help-1">\n###\na\\nb\nback\\\\slash</textarea>' in html
    assert '<textarea name="stop" rows="2" aria-describedby="stop-help-2">\n</textarea>' in html
    assert "[]" not in html and "None" not in html
    assert 'name="temperature" type="number" step="0.1" value="0"' in html
    assert 'name="top_p" type="number" step="0.05" value=""' in html


def test_a_new_conversation_can_keep_the_panes_of_another(signed_in, alice):
    turn = {"prompt": "an old prompt", "answer": "an old answer", "reasoning": "", "figures": {}, "images": [],
            "error": None, "streaming": False}
    c = Conversation.objects.create(user=alice, title="T", panes=[
        {"endpoint": "local-smollm2-chat", "system": "", "params": {}, "messages": [], "turns": [turn], "removed": True},
        {"endpoint": "local-smollm2-chat", "system": "S", "params": {"temperature": 1.5}, "messages": [], "turns": [turn]},
    ])
    html = signed_in.get(f"/playground/?layout={c.pk}").content.decode()
    assert 'id="pane-1"' in html and 'id="pane-0"' not in html and 'value="1.5"' in html
    assert "an old prompt" not in html and 'data-conversation=""' in html
    assert signed_in.get("/playground/?layout=x").status_code == 404
