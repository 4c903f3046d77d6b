"""Golden test: the exact wire shapes of spec/WIRE.md, through the whole HTTP edge.

An ``openai-compatible`` endpoint points at the fake vendor (tests/fakes), whose answers are
fixed, so every byte Fondasi sends is deterministic except ids and timestamps, which are checked
for their form and then replaced by placeholders. A change to any shape below breaks real clients
(the OpenAI client, the Databricks SDK, mlflow, ChatDatabricks): change it on purpose or not at all.
"""
from __future__ import annotations

import base64
import json
import re
import struct

import pytest
import pytest_asyncio

from endpoints.config import apply, parse_text
from endpoints.providers import http
from tests.conftest import api_client
from tests.fakes.openai_upstream import openai_upstream  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

ENDPOINTS = """
endpoints:
  - name: golden-chat
    task: llm/v1/chat
    served_entities:
      - name: golden-entity
        external_model:
          name: upstream-model
          provider: openai-compatible
          openai_config: {{openai_api_base: "{base}"}}
  - name: golden-completions
    task: llm/v1/completions
    served_entities:
      - name: golden-entity
        external_model:
          name: upstream-model
          provider: openai-compatible
          openai_config: {{openai_api_base: "{base}"}}
  - name: golden-embeddings
    task: llm/v1/embeddings
    served_entities:
      - name: golden-entity
        external_model:
          name: upstream-model
          provider: openai-compatible
          openai_config: {{openai_api_base: "{base}"}}
"""

CHAT = {"messages": [{"role": "user", "content": "Hi"}]}
USAGE = {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}


@pytest.fixture
def golden_endpoints(openai_upstream, db):  # noqa: F811
    apply(parse_text(ENDPOINTS.format(base=openai_upstream.base_url)))


@pytest_asyncio.fixture(autouse=True)
async def pool():
    """Closes the pooled upstream client of the test's event loop afterwards."""
    yield
    await http.aclose_client()


@pytest.fixture
def client(golden_endpoints, auth_headers):
    return api_client(auth_headers)


async def post(client, url: str, body) -> "object":
    return await client.post(url, data=json.dumps(body), content_type="application/json")


def normalised(payload, prefix: str):
    """``payload`` with its id and created replaced, after checking their form."""
    if isinstance(payload, dict):
        out = dict(payload)
        if "id" in out:
            assert re.fullmatch(prefix + r"[0-9a-f]{32}", out["id"]), out["id"]
            out["id"] = "<id>"
        if "created" in out:
            assert isinstance(out["created"], int) and out["created"] > 1_700_000_000
            out["created"] = "<created>"
        return out
    return payload


async def sse(response, prefix: str) -> list:
    """The SSE body as a list of decoded events; asserts the framing WIRE.md requires."""
    raw = b"".join([chunk async for chunk in response.streaming_content]).decode()
    blocks = raw.split("\n\n")
    assert blocks[-1] == "", "the body ends with a blank line"
    events = []
    for block in blocks[:-1]:
        assert block.startswith("data: ") and "\n" not in block, f"not a bare data line: {block!r}"
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else normalised(json.loads(data), prefix))
    return events


def chat_chunk(choices, **extra):
    return {"id": "<id>", "object": "chat.completion.chunk", "created": "<created>", "model": "upstream-model",
            "choices": choices, **extra}


def text_chunk(choices, **extra):
    return {"id": "<id>", "object": "text_completion", "created": "<created>", "model": "upstream-model",
            "choices": choices, **extra}


async def test_chat_completion(client):
    response = await post(client, "/serving-endpoints/golden-chat/invocations", CHAT)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["served-model-name"] == "golden-entity"
    assert normalised(response.json(), "chatcmpl-") == {
        "id": "<id>",
        "object": "chat.completion",
        "created": "<created>",
        "model": "upstream-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello, world!"},
                "finish_reason": "stop",
                "finishReason": "stop",
                "logprobs": None,
            }
        ],
        "usage": USAGE,
    }


async def test_chat_stream_with_usage(client):
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response = await post(client, "/serving-endpoints/golden-chat/invocations", body)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    assert response["served-model-name"] == "golden-entity"
    assert await sse(response, "chatcmpl-") == [
        chat_chunk([{"index": 0, "delta": {"role": "assistant", "content": "Hello"}, "finish_reason": None}]),
        chat_chunk([{"index": 0, "delta": {"content": ","}, "finish_reason": None}]),
        chat_chunk([{"index": 0, "delta": {"content": " world"}, "finish_reason": None}]),
        chat_chunk([{"index": 0, "delta": {"content": "!"}, "finish_reason": None}]),
        chat_chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        chat_chunk([], usage=USAGE),
        "[DONE]",
    ]


async def test_chat_stream_without_usage_on_the_openai_route(client):
    body = {**CHAT, "model": "golden-chat", "stream": True}
    response = await post(client, "/serving-endpoints/chat/completions", body)
    events = await sse(response, "chatcmpl-")
    assert events[-2] == chat_chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])


async def test_completion(client):
    response = await post(client, "/serving-endpoints/golden-completions/invocations", {"prompt": "Hi"})
    assert normalised(response.json(), "cmpl-") == {
        "id": "<id>",
        "object": "text_completion",
        "created": "<created>",
        "model": "upstream-model",
        "choices": [
            {"text": "Hello, world!", "index": 0, "logprobs": None, "finish_reason": "stop", "finishReason": "stop"}
        ],
        "usage": USAGE,
    }


async def test_completion_stream(client):
    body = {"prompt": "Hi", "stream": True, "stream_options": {"include_usage": True}}
    response = await post(client, "/serving-endpoints/golden-completions/invocations", body)
    assert await sse(response, "cmpl-") == [
        text_chunk([{"text": piece, "index": 0, "logprobs": None, "finish_reason": None}])
        for piece in ("Hello", ",", " world", "!")
    ] + [
        text_chunk([{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}]),
        text_chunk([], usage=USAGE),
        "[DONE]",
    ]


async def test_embeddings_as_floats_and_as_base64(client):
    response = await post(client, "/serving-endpoints/golden-embeddings/invocations", {"input": ["a b", "c"]})
    assert response["served-model-name"] == "golden-entity"
    assert response.json() == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.0, 3.0, 0.5]},
            {"object": "embedding", "index": 1, "embedding": [1.0, 1.0, 0.5]},
        ],
        "model": "upstream-model",
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    body = {"model": "golden-embeddings", "input": "a b", "encoding_format": "base64"}
    data = (await post(client, "/serving-endpoints/embeddings", body)).json()["data"]
    assert data == [{"object": "embedding", "index": 0, "embedding": base64.b64encode(struct.pack("<3f", 0, 3, 0.5)).decode()}]


async def test_error_bodies_have_no_top_level_error_key(client, openai_upstream):  # noqa: F811
    response = await post(client, "/serving-endpoints/nope/invocations", CHAT)
    assert response.status_code == 404
    assert response.json() == {
        "error_code": "RESOURCE_DOES_NOT_EXIST",
        "message": "Endpoint 'nope' does not exist. List endpoints with GET /api/2.0/serving-endpoints.",
    }
    response = await post(client, "/serving-endpoints/golden-chat/invocations", {**CHAT, "temperature": 3})
    assert response.status_code == 400
    assert response.json() == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "Invalid 'temperature': input should be less than or equal to 2 (got 3).",
    }
    openai_upstream.fail(429, "Slow down.", headers={"Retry-After": "7"})
    response = await post(client, "/serving-endpoints/golden-chat/invocations", CHAT)
    assert response.status_code == 429
    assert response["Retry-After"] == "7"
    assert response.json() == {
        "error_code": "REQUEST_LIMIT_EXCEEDED",
        "message": "OpenAI-compatible upstream is rate limiting requests (HTTP 429): Slow down.",
    }


async def test_a_mid_stream_error_is_the_last_event_before_done(client, openai_upstream):  # noqa: F811
    openai_upstream.mid_stream_error = {"error": {"message": "The model crashed.", "type": "server_error", "code": 500}}
    response = await post(client, "/serving-endpoints/golden-chat/invocations", {**CHAT, "stream": True})
    assert response.status_code == 200
    events = await sse(response, "chatcmpl-")
    assert events[0] == chat_chunk([{"index": 0, "delta": {"role": "assistant", "content": "Hello"}, "finish_reason": None}])
    message = "OpenAI-compatible upstream is unavailable (HTTP 500): The model crashed."
    assert events[1:] == [
        {"error": {"message": message, "type": "server_error", "code": "TEMPORARILY_UNAVAILABLE"},
         "error_code": "TEMPORARILY_UNAVAILABLE", "message": message},
        "[DONE]",
    ]


async def test_unauthenticated_is_401_in_the_same_shape(golden_endpoints):
    response = await api_client({}).post("/serving-endpoints/golden-chat/invocations", data=json.dumps(CHAT),
                                         content_type="application/json")
    assert response.status_code == 401
    assert response.json() == {
        "error_code": "UNAUTHENTICATED",
        "message": "Authentication required: send 'Authorization: Bearer <token>' or HTTP Basic 'token:<token>'.",
    }


async def test_reasoning_from_a_reasoning_model_streams_as_blocks(client, openai_upstream):  # noqa: F811
    openai_upstream.reasoning_pieces = ["Because"]
    openai_upstream.pieces = ["Blue."]
    body = {**CHAT, "max_tokens": 64, "stream": True}  # a reasoning-only model: nothing asked
    events = await sse(await post(client, "/serving-endpoints/golden-chat/invocations", body), "chatcmpl-")
    reasoning = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Because"}]}
    assert events[:3] == [
        chat_chunk([{"index": 0, "delta": {"role": "assistant", "content": [reasoning]}, "finish_reason": None}]),
        chat_chunk([{"index": 0, "delta": {"content": [{"type": "text", "text": "Blue."}]}, "finish_reason": None}]),
        chat_chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
    ]
    whole = (await post(client, "/serving-endpoints/golden-chat/invocations", {**body, "stream": False})).json()
    assert whole["choices"][0]["message"]["content"] == [reasoning, {"type": "text", "text": "Blue."}]
    assert whole["usage"]["completion_tokens_details"] == {"reasoning_tokens": 1}
