"""The ``databricks-model-serving`` provider: against the fake vendor's ``/invocations`` route
over real HTTP on 127.0.0.1, and against a live Fondasi, which speaks the same wire."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from endpoints.errors import ServingError
from endpoints.events import Embeddings, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from endpoints.providers import http
from endpoints.providers.base import EntitySpec
from endpoints.providers.databricks import DatabricksModelServingProvider, chat_body, chat_events, completion_body
from endpoints.schemas import CHAT, CompletionRequest, EmbeddingsRequest
from tests.conftest import api_client
from tests.endpoints.providers.helpers import chat, drain

TOKEN = "dapi0123456789abcdef"
REASONING = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Rayleigh.", "signature": "sig-1"}]}


def make_provider(url: str | None, model: str = "remote-chat", **config: Any) -> DatabricksModelServingProvider:
    config = {"databricks_workspace_url": url, "databricks_api_token": TOKEN, **config}
    return DatabricksModelServingProvider(EntitySpec("ep", "databricks-model-serving", model, CHAT, config))


# --- pure translators ----------------------------------------------------------------------


def test_it_sends_the_databricks_query_body_with_extra_params_kept_apart():
    request = chat(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"},
                  {"role": "assistant", "content": [REASONING, {"type": "text", "text": "Because."}]},
                  {"role": "user", "content": "Shorter?"}],
        max_tokens=64, temperature=0.2, stop="END", n=2, thinking={"type": "enabled", "budget_tokens": 32},
        extra_params={"top_k": 40}, user="alice",
    )
    assert chat_body(request) == {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"},
                     {"role": "assistant", "content": [REASONING, {"type": "text", "text": "Because."}]},
                     {"role": "user", "content": "Shorter?"}],
        "max_tokens": 64, "temperature": 0.2, "stop": ["END"], "n": 2,
        "thinking": {"type": "enabled", "budget_tokens": 32}, "extra_params": {"top_k": 40},
        "stream": True, "stream_options": {"include_usage": True},
    }


def test_a_non_streaming_query_has_no_stream_options_and_no_empty_extra_params():
    request = CompletionRequest.model_validate({"prompt": ["a", "b"], "max_tokens": 3})
    assert completion_body(request) == {"prompt": ["a", "b"], "max_tokens": 3, "stream": False}


def test_it_reads_reasoning_and_text_blocks():
    reasoning = {"choices": [{"index": 1, "delta": {"role": "assistant", "content": [REASONING]}, "finish_reason": None}]}
    text = {"choices": [{"index": 1, "delta": {"content": [{"type": "text", "text": "Blue."}]}, "finish_reason": "stop"}]}
    assert chat_events(reasoning) == [ReasoningDelta("Rayleigh.", 1, "sig-1")]
    assert chat_events(text) == [TextDelta("Blue.", 1), Finish("stop", 1)]


def test_it_reads_a_whole_answer_with_blocks_tool_calls_and_usage():
    answer = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": [REASONING], "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9, "completion_tokens_details": {"reasoning_tokens": 3}},
    }
    assert chat_events(answer) == [
        ReasoningDelta("Rayleigh.", 0, "sig-1"), ToolCallDelta(call=0, index=0, id="call_1", name="f", arguments="{}"),
        Finish("tool_calls", 0), Usage(5, 9, reasoning_tokens=3),
    ]


def test_plain_string_content_reads_as_openais():
    chunk = {"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}
    assert chat_events(chunk) == [TextDelta("Hel", 0)]


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize("config, field", [
    ({"databricks_workspace_url": None}, "databricks_workspace_url"),
    ({"databricks_workspace_url": "adb-123.azuredatabricks.net"}, "databricks_workspace_url"),
    ({"databricks_api_token": None}, "databricks_api_token"),
    ({"databricks_api_token": ""}, "databricks_api_token"),
])
def test_it_needs_a_workspace_url_and_a_token(config, field):
    with pytest.raises(ServingError) as info:
        DatabricksModelServingProvider(EntitySpec("ep", "databricks-model-serving", "m", CHAT, {
            "databricks_workspace_url": "https://adb-1.azuredatabricks.net", "databricks_api_token": TOKEN, **config,
        }))
    assert info.value.status == 400 and f"'{field}'" in info.value.message


def test_describe_names_the_workspace_and_endpoint_without_the_token():
    provider = make_provider("https://adb-1.azuredatabricks.net/")
    assert provider.describe() == {"databricks_workspace_url": "https://adb-1.azuredatabricks.net",
                                   "serving_endpoint": "remote-chat"}
    assert TOKEN not in repr(provider)


# --- over HTTP -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_posts_to_the_serving_endpoints_invocations_with_a_bearer_token(upstream):
    provider = make_provider(upstream.url + "/", model="team/chat v2")
    events = await drain(provider.chat(chat(max_tokens=8)))
    sent = upstream.last_request
    assert sent.path == "/serving-endpoints/team%2Fchat%20v2/invocations"
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.json == {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
                         "stream": True, "stream_options": {"include_usage": True}}
    assert events == [TextDelta("Hello", 0), TextDelta(",", 0), TextDelta(" world", 0), TextDelta("!", 0),
                      Finish("stop", 0), Usage(7, 4)]


@pytest.mark.asyncio
async def test_it_streams_reasoning_blocks_with_their_signature(upstream):
    upstream.content_blocks = True
    upstream.reasoning_pieces = ["Light ", "scatters."]
    upstream.reasoning_signature = "sig-42"
    events = await drain(make_provider(upstream.url).chat(chat(max_tokens=64, thinking={"type": "enabled", "budget_tokens": 32})))
    assert upstream.last_request.json["thinking"] == {"type": "enabled", "budget_tokens": 32}
    assert events[:3] == [ReasoningDelta("Light ", 0), ReasoningDelta("scatters.", 0, "sig-42"), TextDelta("Hello", 0)]
    assert events[-1] == Usage(7, 4, reasoning_tokens=2)


@pytest.mark.asyncio
async def test_it_reads_a_whole_thinking_answer(upstream):
    upstream.content_blocks = True
    upstream.reasoning_pieces = ["Because."]
    upstream.reasoning_signature = "sig-7"
    events = await drain(make_provider(upstream.url).chat(chat(stream=False)))
    assert upstream.last_request.json == {"messages": [{"role": "user", "content": "Hi"}], "stream": False}
    assert events == [ReasoningDelta("Because.", 0, "sig-7"), TextDelta("Hello, world!", 0), Finish("stop", 0),
                      Usage(7, 4, reasoning_tokens=1)]


@pytest.mark.asyncio
async def test_it_completes_and_embeds_at_the_same_url(upstream):
    provider = make_provider(upstream.url, model="remote-embed")
    upstream.pieces = ["x"]
    events = await drain(provider.complete(CompletionRequest.model_validate({"prompt": "Once", "stream": True})))
    assert upstream.last_request.path == "/serving-endpoints/remote-embed/invocations"
    assert upstream.last_request.json == {"prompt": "Once", "stream": True, "stream_options": {"include_usage": True}}
    assert events == [TextDelta("x", 0), Finish("stop", 0), Usage(7, 4)]
    result = await provider.embed(EmbeddingsRequest.model_validate({"input": ["a b", "c"], "extra_params": {"dim": 3}}))
    assert upstream.last_request.path == "/serving-endpoints/remote-embed/invocations"
    assert upstream.last_request.json == {"input": ["a b", "c"], "extra_params": {"dim": 3}}
    assert result == Embeddings([[0.0, 3.0, 0.5], [1.0, 1.0, 0.5]], 3)


@pytest.mark.asyncio
async def test_a_databricks_error_body_becomes_our_error_with_its_code_and_message(upstream):
    provider = make_provider(upstream.url)
    upstream.fail(404, body=json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST",
                                        "message": "Endpoint 'remote-chat' does not exist."}).encode())
    with pytest.raises(ServingError) as info:
        await drain(provider.chat(chat()))
    assert (info.value.status, info.value.code) == (400, "INVALID_PARAMETER_VALUE")
    assert info.value.message == (
        "Databricks Model Serving rejected the request (HTTP 404): Endpoint 'remote-chat' does not exist."
    )
    upstream.fail(401, body=json.dumps({"error_code": "UNAUTHENTICATED", "message": f"Bad token {TOKEN}"}).encode())
    with pytest.raises(ServingError) as info:
        await provider.embed(EmbeddingsRequest.model_validate({"input": "x"}))
    assert TOKEN not in info.value.message and "rejected the configured API key" in info.value.message


@pytest.mark.asyncio
async def test_a_databricks_error_sent_mid_stream_is_raised_with_its_code(upstream):
    upstream.mid_stream_error = {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "The model went away."}
    stream = make_provider(upstream.url).chat(chat())
    assert await stream.__anext__() == TextDelta("Hello", 0)
    with pytest.raises(ServingError) as info:
        await stream.__anext__()
    assert (info.value.status, info.value.message) == (503, "Databricks Model Serving failed: The model went away.")


# --- through Fondasi's HTTP API --------------------------------------------------------------


@pytest.fixture
def relay(upstream, db):
    from endpoints.config import apply, parse_text

    apply(parse_text(f"""
endpoints:
  - name: relay-chat
    task: llm/v1/chat
    served_entities:
      - name: remote
        external_model:
          name: remote-chat
          provider: databricks-model-serving
          databricks_model_serving_config:
            databricks_workspace_url: "{upstream.url}"
            databricks_api_token_plaintext: "{TOKEN}"
"""))
    return upstream


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_relayed_thinking_answer_keeps_its_blocks_and_signature(relay, auth_headers):
    relay.content_blocks = True
    relay.reasoning_pieces = ["Because."]
    relay.reasoning_signature = "sig-9"
    body = {"messages": [{"role": "user", "content": "Why?"}], "max_tokens": 64,
            "thinking": {"type": "enabled", "budget_tokens": 32}}
    response = await api_client(auth_headers).post("/serving-endpoints/relay-chat/invocations",
                                                   data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Because.", "signature": "sig-9"}]},
        {"type": "text", "text": "Hello, world!"},
    ]
    assert relay.last_request.path == "/serving-endpoints/remote-chat/invocations"


# --- against a live Fondasi ----------------------------------------------------------------


@pytest.fixture
def remote(fondasi_server, live_vendor):
    """The live Fondasi's ``fake-vision`` endpoint, its vendor set to its defaults."""
    live_vendor.reset()
    yield fondasi_server
    live_vendor.reset()


def test_it_relays_to_another_fondasi(remote, live_vendor):
    provider = make_provider(remote.url, model="fake-vision", databricks_api_token=remote.token)

    async def run() -> tuple[list, list]:
        try:
            streamed = await drain(provider.chat(chat(max_tokens=8, extra_params={"top_k": 5})))
            whole = await drain(provider.chat(chat(max_tokens=8, stream=False)))
            return streamed, whole
        finally:
            await http.aclose_client()

    streamed, whole = asyncio.run(run())
    assert "".join(e.text for e in streamed if isinstance(e, TextDelta)) == "Hello, world!"
    assert streamed[-2:] == [Finish("stop", 0), Usage(7, 4)]  # usage came: stream_options was honoured
    assert whole == [TextDelta("Hello, world!", 0), Finish("stop", 0), Usage(7, 4)]
    assert live_vendor.last_request.json["max_tokens"] == 8
    assert live_vendor.requests[-2].json["top_k"] == 5  # extra_params reached the remote's vendor


def test_another_fondasis_errors_come_back_with_their_message(remote):
    async def failure(provider: DatabricksModelServingProvider) -> ServingError:
        try:
            with pytest.raises(ServingError) as info:
                await drain(provider.chat(chat()))
            return info.value
        finally:
            await http.aclose_client()

    missing = asyncio.run(failure(make_provider(remote.url, model="no-such-endpoint", databricks_api_token=remote.token)))
    assert missing.message.startswith("Databricks Model Serving rejected the request (HTTP 404): ")
    assert "no-such-endpoint" in missing.message
    stranger = asyncio.run(failure(make_provider(remote.url, model="fake-vision", databricks_api_token="dapi-wrong")))
    assert stranger.message == (
        "Databricks Model Serving rejected the configured API key (HTTP 401). Check the endpoint's API key."
    )
