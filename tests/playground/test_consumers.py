"""The playground's WebSocket, through the real ASGI application (origin check, session auth)."""
from __future__ import annotations

import asyncio
import io
import json

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from PIL import Image

from endpoints.config import apply, load_file, parse_text
from endpoints.providers import http
from endpoints.providers.local import LOCAL_MODELS, runtime_for
from playground.render import markdown_html
from tests.conftest import ROOT
from tests.fakes.openai_upstream import openai_upstream  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

LOCAL = "local-smollm2-chat"
FAKE = """
endpoints:
  - name: fake-chat
    task: llm/v1/chat
    served_entities:
      - name: fake-entity
        vision: true
        external_model:
          name: a-vision-model
          provider: openai-compatible
          openai_config: {{openai_api_base: "{base}"}}
"""


@pytest_asyncio.fixture(autouse=True)
async def pool():
    yield
    await http.aclose_client()


@pytest.fixture
def fake(openai_upstream, db):  # noqa: F811
    """The shipped endpoints plus ``fake-chat``, an OpenAI-compatible vendor that can see images."""
    apply(load_file(ROOT / "endpoints.yaml") + parse_text(FAKE.format(base=openai_upstream.base_url)))
    return openai_upstream


@pytest.fixture
def session_cookie(alice) -> str:
    from django.test import Client

    client = Client()
    client.force_login(alice)
    return client.cookies["sessionid"].value


async def connect(cookie: str | None = None, origin: str = "http://testserver") -> tuple[WebsocketCommunicator, bool]:
    from playground.asgi import application

    headers = [(b"host", b"testserver"), (b"origin", origin.encode())]
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/playground/", headers=headers)
    connected, _ = await communicator.connect(timeout=10)
    return communicator, connected


def pane(index: int, endpoint: str = LOCAL, **params) -> dict:
    return {"pane": index, "endpoint": endpoint, "system": "", "params": {"temperature": 0, "max_tokens": 24, **params}}


def send(prompt: str, *panes: dict, conversation=None, images=()) -> dict:
    return {"type": "send", "conversation": conversation, "prompt": prompt, "images": list(images), "panes": list(panes)}


def streamed_html(deltas: list[dict]) -> str:
    """The answer's HTML as the page holds it after ``deltas``: appended blocks, then the last tail."""
    answered = [f for f in deltas if "tail" in f]
    return "".join(f["append"] for f in answered) + (answered[-1]["tail"] if answered else "")


async def until_idle(communicator: WebsocketCommunicator, timeout: float = 120) -> list[dict]:
    """Every frame up to and including ``idle``."""
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] == "idle":
            return frames


async def conversation_panes(conversation_id: int) -> list[dict]:
    from playground.models import Conversation

    return (await Conversation.objects.aget(pk=conversation_id)).panes


async def test_it_refuses_anonymous_sockets(default_endpoints):
    communicator, connected = await connect()
    assert connected  # accepted, told why, then closed with 4401
    told = await communicator.receive_json_from()
    assert told["type"] == "error" and "Sign in" in told["message"]
    assert (await communicator.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4401}
    await communicator.disconnect()


async def test_it_rejects_a_foreign_origin(session_cookie):
    communicator, connected = await connect(session_cookie, origin="https://evil.example")
    assert not connected
    await communicator.disconnect()


async def handshake(origin: str | None, host: str = "testserver", scheme: str = "ws", cookie: str | None = None) -> bool:
    from playground.asgi import application

    headers = [(b"host", host.encode())] + ([(b"origin", origin.encode())] if origin is not None else [])
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/playground/", headers=headers)
    communicator.scope["scheme"] = scheme
    connected, _ = await communicator.connect(timeout=10)
    await communicator.disconnect()
    return connected


async def test_only_the_sites_own_scheme_host_and_port_may_open_a_socket(session_cookie):
    assert await handshake("http://testserver", cookie=session_cookie)
    assert await handshake("http://testserver:80", cookie=session_cookie)  # the default port, spelled out
    assert await handshake("http://localhost:8000", host="localhost:8000", cookie=session_cookie)
    assert await handshake("https://testserver", scheme="wss", cookie=session_cookie)
    refused = [
        ("http://testserver:9999", "testserver"),       # another app on another port of the same host
        ("http://localhost:9999", "localhost:8000"),    # an allowed host, another port
        ("https://testserver", "testserver"),           # another scheme
        ("http://testserver", "testserver:8000"),       # the page is not on the socket's port
        ("http://evil.example", "evil.example"),        # a host not allowed, even when it matches (DNS rebinding)
        ("null", "testserver"),
        (None, "testserver"),
        ("http://user:pw@testserver", "testserver"),
    ]
    for origin, host in refused:
        assert not await handshake(origin, host=host, cookie=session_cookie), (origin, host)


async def test_a_trusted_origin_may_open_a_socket(session_cookie, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com", "https://*.corp.example"]
    assert await handshake("https://chat.example.com", cookie=session_cookie)
    assert await handshake("https://chat.example.com:443", cookie=session_cookie)
    assert await handshake("https://team.corp.example", cookie=session_cookie)
    assert not await handshake("http://chat.example.com", cookie=session_cookie)
    assert not await handshake("https://chat.example.com:8443", cookie=session_cookie)
    assert not await handshake("https://corp.example.evil", cookie=session_cookie)


async def test_testserver_is_not_an_allowed_host_by_default():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("ALLOWED_HOSTS", "FONDASI_CSRF_TRUSTED_ORIGINS",
                                                             "CSRF_TRUSTED_ORIGINS")}
    out = subprocess.run([sys.executable, "-c", "import playground.settings as s; print(s.ALLOWED_HOSTS)"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    assert "testserver" not in out and "127.0.0.1" in out


async def signed_in_socket(cookie: str) -> WebsocketCommunicator:
    communicator, connected = await connect(cookie)
    assert connected
    await communicator.send_json_to({"type": "stop"})  # the socket is set up (and in its groups)
    assert await communicator.receive_nothing(timeout=0.2)
    return communicator


async def assert_closed_as_signed_out(communicator: WebsocketCommunicator) -> None:
    assert "Signed out" in (await communicator.receive_json_from(timeout=5))["message"]
    assert (await communicator.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4401}


async def test_signing_out_closes_that_sessions_sockets(alice):
    from django.test import AsyncClient, Client

    cookies = []
    for _ in range(2):  # two browsers, each signed in
        client = Client()
        await sync_to_async(client.force_login)(alice)
        cookies.append(client.cookies["sessionid"].value)
    here, elsewhere = await signed_in_socket(cookies[0]), await signed_in_socket(cookies[1])
    browser = AsyncClient()
    browser.cookies["sessionid"] = cookies[0]
    assert (await browser.post("/logout/")).status_code == 302
    await assert_closed_as_signed_out(here)
    # The other browser is still signed in: its socket stays open and usable.
    assert await elsewhere.receive_nothing(timeout=0.3)
    await elsewhere.send_to(text_data="{not json")
    assert "not valid JSON" in (await elsewhere.receive_json_from())["message"]
    await elsewhere.disconnect()


async def test_a_deleted_session_or_a_deactivated_user_closes_the_sockets(alice, session_cookie):
    from django.contrib.sessions.models import Session

    communicator = await signed_in_socket(session_cookie)
    await sync_to_async(Session.objects.filter(session_key=session_cookie).delete)()
    await assert_closed_as_signed_out(communicator)

    from django.test import Client

    client = Client()
    await sync_to_async(client.force_login)(alice)
    communicator = await signed_in_socket(client.cookies["sessionid"].value)
    alice.is_active = False
    await sync_to_async(alice.save)()
    await assert_closed_as_signed_out(communicator)


async def test_malformed_and_oversize_messages_get_an_error_and_the_socket_stays_open(session_cookie):
    communicator, connected = await connect(session_cookie)
    assert connected
    await communicator.send_to(text_data="{not json")
    assert "not valid JSON" in (await communicator.receive_json_from())["message"]
    await communicator.send_to(text_data=json.dumps({"type": "send", "prompt": "x" * 400_000, "panes": []}))
    assert "too large" in (await communicator.receive_json_from())["message"]
    await communicator.send_json_to({"type": "dance"})
    assert "Unknown message type" in (await communicator.receive_json_from())["message"]
    await communicator.send_json_to({"type": "send", "prompt": "hi", "panes": "all"})
    assert "'panes'" in (await communicator.receive_json_from())["message"]
    await communicator.send_json_to({"type": "stop"})  # still open: a stop with nothing running is fine
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_two_panes_stream_at_once_each_with_its_own_deltas(fake, session_cookie):
    """A local pane and a slow vendor pane: both get deltas before either finishes."""
    communicator, _ = await connect(session_cookie)
    await communicator.send_json_to(send("Hi", pane(0, max_tokens=2)))  # load the model first
    await until_idle(communicator)
    fake.pieces = [f"w{i} " for i in range(60)]
    fake.chunk_delay = 0.05
    await communicator.send_json_to(send("Write a long story about a dragon.", pane(0, max_tokens=48), pane(1, "fake-chat")))
    frames = await until_idle(communicator)
    order = [(f["type"], f.get("pane")) for f in frames if f["type"] in ("delta", "done")]
    assert all("pane-error" not in f["html"] for f in frames if f["type"] == "done"), [f["html"] for f in frames if f["type"] == "done"]
    first_done = next(i for i, (kind, _) in enumerate(order) if kind == "done")
    assert {p for kind, p in order[:first_done] if kind == "delta"} == {0, 1}, order
    # Coalesced: far fewer frames than the 60 pieces of the vendor pane, yet several of them,
    # adding up to the answer's Markdown as the finished turn shows it.
    vendor_deltas = [f for f in frames if f["type"] == "delta" and f["pane"] == 1]
    assert 2 <= len(vendor_deltas) < 60
    assert streamed_html(vendor_deltas) == markdown_html("".join(fake.pieces))
    done = {f["pane"]: f["html"] for f in frames if f["type"] == "done"}
    assert "w59" in done[1] and "TTFT" in done[1] and "tok/s" in done[1]
    await communicator.disconnect()


async def test_two_panes_on_the_local_model_stream_together(default_endpoints, session_cookie):
    """The local model serves two requests at once: neither pane waits for the other's answer."""
    communicator, _ = await connect(session_cookie)
    # Two panes at once load both of the model's instances.
    await communicator.send_json_to(send("Hi", pane(0, max_tokens=1), pane(1, max_tokens=1)))
    await until_idle(communicator)
    await communicator.send_json_to(send("Write a long story about a dragon.", pane(0, max_tokens=48), pane(1, max_tokens=48)))
    frames = await until_idle(communicator)
    order = [(f["type"], f.get("pane")) for f in frames if f["type"] in ("delta", "done")]
    first_done = next(i for i, (kind, _) in enumerate(order) if kind == "done")
    assert {p for kind, p in order[:first_done] if kind == "delta"} == {0, 1}, order
    await communicator.disconnect()


MARKDOWN_ANSWER = (
    "## Plan\n\nFirst, a paragraph with **bold** and <script>alert(1)</script> in it.\n\n"
    "```python\nprint('<b>hi</b>')\n```\n\n- one\n- two\n\nThe end, with a [link](javascript:alert(2)).\n"
)


async def test_the_answer_streams_as_sanitised_markdown_rendered_block_by_block(fake, session_cookie):
    words = MARKDOWN_ANSWER.split(" ")
    fake.pieces = [w + " " for w in words[:-1]] + [words[-1]]
    fake.chunk_delay = 0.04
    communicator, _ = await connect(session_cookie)
    await communicator.send_json_to(send("Plan it.", pane(0, "fake-chat")))
    frames = await until_idle(communicator)
    deltas = [f for f in frames if f["type"] == "delta"]
    # Rendered while streaming: the heading is HTML long before the answer ends.
    first_heading = next(i for i, f in enumerate(deltas) if "<h2>Plan</h2>" in f["append"] + f["tail"])
    assert first_heading < len(deltas) - 3, [f["tail"] for f in deltas]
    # Finished blocks are sent once; later ticks only re-send the block being written.
    assert sum("<h2>" in f["append"] + f["tail"] for f in deltas) < len(deltas) / 2
    assert "<h2>" not in deltas[-1]["tail"]
    for f in deltas:
        html = f["append"] + f["tail"]
        assert "<script" not in html and "href=\"javascript" not in html and "<b>" not in html
    assert streamed_html(deltas) == markdown_html("".join(fake.pieces))
    await communicator.disconnect()


async def test_each_pane_keeps_only_its_own_answers(fake, session_cookie):
    fake.pieces = ["VENDOR-ANSWER"]
    communicator, _ = await connect(session_cookie)
    await communicator.send_json_to(send("Say hello.", pane(0), pane(1, "fake-chat")))
    frames = await until_idle(communicator)
    conversation_id = next(f["id"] for f in frames if f["type"] == "conversation")
    await communicator.send_json_to(send("And again.", pane(0), pane(1, "fake-chat"), conversation=conversation_id))
    await until_idle(communicator)

    panes = await conversation_panes(conversation_id)
    local, vendor = panes[0]["messages"], panes[1]["messages"]
    assert [m["role"] for m in local] == [m["role"] for m in vendor] == ["user", "assistant"] * 2
    assert all("VENDOR-ANSWER" not in json.dumps(m) for m in local)
    assert all(m["content"] == "VENDOR-ANSWER" for m in vendor if m["role"] == "assistant")
    # The vendor saw its own earlier answer, not the local model's.
    sent = fake.last_request.json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == "VENDOR-ANSWER"
    assert len(panes[0]["turns"]) == len(panes[1]["turns"]) == 2
    await communicator.disconnect()


async def test_stop_cancels_every_pane_and_generation_stops(fake, session_cookie):
    runtime = runtime_for(LOCAL_MODELS["smollm2-135m-instruct"])
    fake.pieces = [f"w{i} " for i in range(200)]
    fake.chunk_delay = 0.05
    communicator, _ = await connect(session_cookie)
    # Load the model first so the measurement is about generation only.
    await communicator.send_json_to(send("Hi", pane(0, max_tokens=2)))
    await until_idle(communicator)
    before = runtime.stats()["tokens_sampled"]

    await communicator.send_json_to(send("Write a very long story about a dragon and a knight.",
                                         pane(0, max_tokens=400), pane(1, "fake-chat")))  # greedy: reproducible
    seen: set[int] = set()
    frames = []
    while seen != {0, 1}:
        frame = await communicator.receive_json_from(timeout=60)
        frames.append(frame)
        if frame["type"] == "delta":
            seen.add(frame["pane"])
    await communicator.send_json_to({"type": "stop"})
    frames += await until_idle(communicator, timeout=10)
    await asyncio.sleep(0.5)
    sampled = runtime.stats()["tokens_sampled"] - before
    local_html = streamed_html([f for f in frames if f["type"] == "delta" and f["pane"] == 0])

    done = [f for f in frames if f["type"] == "done"]
    assert {f["pane"] for f in done} == {0, 1} and all("Stopped." in f["html"] for f in done)
    assert sampled < 200, f"{sampled} tokens were generated: generation went on after Stop"
    assert local_html.strip()  # the local answer streamed before Stop
    assert fake.wait_for_disconnect(5)  # the vendor's stream was closed too
    await communicator.disconnect()


async def test_thinking_sends_reasoning_before_text(default_endpoints, session_cookie):
    communicator, _ = await connect(session_cookie)
    await communicator.send_json_to(send("Why is the sky blue?", pane(0, max_tokens=40, thinking=True, budget_tokens=12)))
    frames = await until_idle(communicator)
    deltas = [f for f in frames if f["type"] == "delta"]
    first_text = next(i for i, f in enumerate(deltas) if f.get("tail"))
    assert deltas[0]["reasoning"] and not any(f["reasoning"] for f in deltas[first_text + 1:])
    done = next(f for f in frames if f["type"] == "done")
    assert 'class="reasoning"' in done["html"] and "Thought for" in done["html"]
    conversation_id = next(f["id"] for f in frames if f["type"] == "conversation")
    answer = (await conversation_panes(conversation_id))[0]["messages"][1]["content"]
    assert answer[0]["type"] == "reasoning" and answer[0]["summary"][0]["signature"]
    # The signed reasoning goes back with the next turn and verifies.
    await communicator.send_json_to(send("And at sunset?", pane(0, max_tokens=40, thinking=True, budget_tokens=12),
                                         conversation=conversation_id))
    frames = await until_idle(communicator)
    assert "pane-error" not in next(f for f in frames if f["type"] == "done")["html"]
    await communicator.disconnect()


async def test_an_error_shows_in_the_pane_that_hit_it_only(fake, session_cookie):
    communicator, _ = await connect(session_cookie)
    await communicator.send_json_to(send("Hello", pane(0, temperature=9), pane(1, "fake-chat")))
    frames = await until_idle(communicator)
    done = {f["pane"]: f["html"] for f in frames if f["type"] == "done"}
    assert "pane-error" in done[0] and "temperature" in done[0] and "INVALID_PARAMETER_VALUE" in done[0]
    assert "pane-error" not in done[1] and "world" in done[1]
    await communicator.disconnect()


async def test_a_vendor_rate_limit_is_readable_in_its_pane(fake, session_cookie):
    fake.fail(429, "slow down", headers={"Retry-After": "7"})
    communicator, _ = await connect(session_cookie)
    await communicator.send_json_to(send("Hello", pane(0, "fake-chat")))
    frames = await until_idle(communicator)
    html = next(f for f in frames if f["type"] == "done")["html"]
    assert "REQUEST_LIMIT_EXCEEDED" in html and "429" in html
    await communicator.disconnect()


async def test_images_go_to_panes_that_can_see_and_others_say_so(fake, alice, session_cookie):
    from endpoints.images import prepare_image
    from playground.models import PlaygroundImage

    buffer = io.BytesIO()
    Image.new("RGB", (3000, 2000), (10, 200, 30)).save(buffer, "PNG")
    prepared = prepare_image(buffer.getvalue())
    image = await PlaygroundImage.objects.acreate(user=alice, name="big.png", data_url=prepared.data_url, report=prepared.report())
    communicator, _ = await connect(session_cookie)
    await communicator.send_json_to(send("What is this?", pane(0), pane(1, "fake-chat"), images=[str(image.id)]))
    frames = await until_idle(communicator)
    done = {f["pane"]: f["html"] for f in frames if f["type"] == "done"}
    assert "cannot see images" in done[0] and "pane-error" not in done[0]
    # The 1,600-token rule binds before the 1568 px one for 3000×2000: 1341×894 is sent.
    assert "3000×2000 → 1341×894" in done[1]
    parts = fake.last_request.json["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url"]
    await communicator.disconnect()


async def test_every_turn_records_what_it_was_sent_with_and_the_panes_shown_are_kept(fake, session_cookie):
    communicator, _ = await connect(session_cookie)
    await communicator.send_json_to(send("Hi", pane(0, "fake-chat", stop=["###"], top_p=0.5),
                                         pane(1, "fake-chat", stop="A\nB", thinking=False)))
    frames = await until_idle(communicator)
    conversation_id = next(f["id"] for f in frames if f["type"] == "conversation")
    panes = await conversation_panes(conversation_id)
    assert panes[1]["params"]["stop"] == ["A", "B"]  # kept as the list that was sent
    settings = {p: panes[p]["turns"][0]["settings"] for p in (0, 1)}
    assert settings[0] | {"stop_json": None} == {
        "endpoint": "fake-chat", "temperature": 0, "max_tokens": 24, "top_p": 0.5, "stop": ["###"],
        "stop_json": None, "thinking": False, "budget_tokens": None}
    assert {r.json["top_p"] for r in fake.requests if "top_p" in r.json} == {0.5}
    done = [f for f in frames if f["type"] == "done"]
    assert all("temperature 0 · max tokens 24" in f["html"] for f in done)

    # The page removes pane 0: kept (its number names its thread) but not shown again.
    await communicator.send_json_to({"type": "layout", "conversation": conversation_id,
                                     "panes": [pane(1, "fake-chat", temperature=1.5), pane(3, "fake-chat")]})
    assert (await communicator.receive_json_from(timeout=10)) == {"type": "layout", "conversation": conversation_id}
    panes = await conversation_panes(conversation_id)
    assert [p.get("removed") for p in panes] == [True, False, True, False]
    assert panes[1]["params"]["temperature"] == 1.5 and len(panes[1]["turns"]) == 1

    await communicator.send_json_to({"type": "layout", "conversation": conversation_id,
                                     "panes": [pane(1, "fake-chat", stop=[1])]})
    assert "params.stop must be a list of strings" in (await communicator.receive_json_from(timeout=10))["message"]
    await communicator.disconnect()
