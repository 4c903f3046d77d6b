"""The Cohere provider, against a fake Cohere v2 API over real HTTP on 127.0.0.1."""
from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from asgiref.sync import sync_to_async

from endpoints.errors import ServingError
from endpoints.events import Embeddings, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from endpoints.providers.base import EntitySpec
from endpoints.providers.cohere import CohereProvider, StreamState, chat_body, chat_events, stream_events
from endpoints.schemas import CHAT, EMBEDDINGS, EmbeddingsRequest
from tests.endpoints.providers.helpers import assert_closing_the_stream_disconnects, chat, drain, failure
from tests.fakes.cohere_upstream import FakeCohere, cohere_upstream  # noqa: F401 (fixture)

MODEL = "command-a-03-2025"


pytestmark = pytest.mark.usefixtures("no_retries")  # vendor errors reach the tests at once


def make_provider(task: str = CHAT, **config: Any) -> CohereProvider:
    config = {"cohere_api_key": FakeCohere.API_KEY, **config}
    return CohereProvider(EntitySpec(name="ep", provider="cohere", model=MODEL, task=task, config=config))


@pytest.fixture
def provider(cohere_upstream: FakeCohere, pool) -> CohereProvider:  # noqa: F811
    return make_provider(cohere_api_base=cohere_upstream.url)


# --- pure translators ----------------------------------------------------------------------


def test_it_translates_a_chat_request_with_every_supported_param():
    request = chat(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            ]},
        ],
        max_tokens=64, temperature=0.3, top_p=0.9, stop=["END"], seed=7, presence_penalty=0.1, frequency_penalty=0.2,
        extra_params={"k": 40, "safety_mode": "STRICT", "stream": False},
    )
    assert chat_body(request, MODEL) == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            ]},
        ],
        "max_tokens": 64, "temperature": 0.3, "p": 0.9, "stop_sequences": ["END"], "seed": 7,
        "presence_penalty": 0.1, "frequency_penalty": 0.2,
        "k": 40, "safety_mode": "STRICT",  # extra_params pass through, but never replace "stream"
        "stream": True,
    }


def test_it_sends_tool_turns_back_with_the_text_as_tool_plan_and_reasoning_as_thinking():
    call = {"id": "get_weather_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    request = chat(messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Use the tool."}]},
            {"type": "text", "text": "I will check the weather."},
        ], "tool_calls": [call]},
        {"role": "tool", "content": "18°C", "tool_call_id": "get_weather_0"},
        {"role": "assistant", "content": "It is 18°C."},
    ])
    assert chat_body(request, MODEL)["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        # The steps of the tool loop since the last user message keep their reasoning.
        {"role": "assistant", "tool_calls": [call], "tool_plan": "I will check the weather.",
         "content": [{"type": "thinking", "thinking": "Use the tool."}]},
        {"role": "tool", "content": "18°C", "tool_call_id": "get_weather_0"},
        {"role": "assistant", "content": "It is 18°C."},
    ]
    latest = chat(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Hmm."}]}, {"type": "text", "text": "Hi"},
    ]}])
    assert chat_body(latest, MODEL)["messages"][1] == {
        "role": "assistant", "content": [{"type": "thinking", "thinking": "Hmm."}, {"type": "text", "text": "Hi"}],
    }


def test_it_sends_tools_with_coheres_tool_choice():
    tools = [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "now", "strict": True}},
    ]
    both = [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}},
    ]
    auto = chat_body(chat(tools=tools), MODEL)
    assert (auto["tools"], auto["strict_tools"], "tool_choice" in auto) == (both, True, False)
    assert chat_body(chat(tools=tools, tool_choice="required"), MODEL)["tool_choice"] == "REQUIRED"
    assert chat_body(chat(tools=tools, tool_choice="none"), MODEL)["tool_choice"] == "NONE"
    # Cohere cannot be told which function: offered only that one, and made to call a tool.
    named = chat_body(chat(tools=tools, tool_choice={"type": "function", "function": {"name": "get_weather"}}), MODEL)
    assert (named["tools"], named["tool_choice"], "strict_tools" in named) == (both[:1], "REQUIRED", False)
    with pytest.raises(ServingError) as info:
        chat_body(chat(tools=tools, parallel_tool_calls=False), MODEL)
    assert "parallel_tool_calls" in info.value.message


def test_it_translates_response_format_and_thinking():
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    structured = chat(response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}})
    assert chat_body(structured, MODEL)["response_format"] == {"type": "json_object", "json_schema": schema}
    assert chat_body(chat(response_format={"type": "json_object"}), MODEL)["response_format"] == {"type": "json_object"}
    thinking = chat(max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 1024})
    assert chat_body(thinking, MODEL)["thinking"] == {"type": "enabled", "token_budget": 1024}
    assert chat_body(chat(reasoning_effort="low"), MODEL)["thinking"] == {"type": "enabled", "token_budget": 1024}
    assert chat_body(chat(thinking={"type": "disabled"}), MODEL)["thinking"] == {"type": "disabled"}
    assert "thinking" not in chat_body(chat(), MODEL)


def test_it_reads_stream_events():
    state = StreamState()

    def read(kind: str, **fields: Any) -> list:
        return stream_events({"type": kind, **fields}, state)

    assert read("message-start", id="m", delta={"message": {"role": "assistant"}}) == []
    assert read("content-delta", index=0, delta={"message": {"content": {"thinking": "Hmm"}}}) == [ReasoningDelta("Hmm")]
    assert read("content-delta", index=1, delta={"message": {"content": {"text": "Hi"}}}) == [TextDelta("Hi")]
    assert read("tool-plan-delta", delta={"message": {"tool_plan": "I will"}}) == [TextDelta("I will")]
    start = {"message": {"tool_calls": {"id": "f_1", "type": "function", "function": {"name": "f", "arguments": ""}}}}
    assert read("tool-call-start", index=3, delta=start) == [ToolCallDelta(call=0, id="f_1", name="f")]
    assert read("tool-call-delta", index=3, delta={"message": {"tool_calls": {"function": {"arguments": "{}"}}}}) == [
        ToolCallDelta(call=0, arguments="{}"),
    ]
    end = {"finish_reason": "MAX_TOKENS", "usage": {"billed_units": {"input_tokens": 2, "output_tokens": 3},
                                                    "tokens": {"input_tokens": 60, "output_tokens": 3}}}
    assert read("message-end", delta=end) == [Finish("length"), Usage(60, 3)]


@pytest.mark.parametrize(("reason", "ours"), [
    ("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length"), ("TOOL_CALL", "tool_calls"),
])
def test_it_maps_finish_reasons(reason, ours):
    assert chat_events({"finish_reason": reason, "message": {"content": []}})[0] == Finish(ours)


@pytest.mark.parametrize(("reason", "status"), [("ERROR", 503), ("TIMEOUT", 504)])
def test_an_error_or_timeout_finish_is_an_error(reason, status):
    with pytest.raises(ServingError) as info:
        stream_events({"type": "message-end", "delta": {"finish_reason": reason, "error": "model overloaded"}}, StreamState())
    assert info.value.status == status


@pytest.mark.parametrize("config", [{"cohere_api_key": ""}, {"cohere_api_key": None}])
def test_it_needs_an_api_key(config):
    with pytest.raises(ServingError) as info:
        CohereProvider(EntitySpec(name="ep", provider="cohere", model=MODEL, task=CHAT, config=config))
    assert "'cohere_api_key'" in info.value.message


def test_it_rejects_an_api_base_that_is_not_http():
    with pytest.raises(ServingError) as info:
        make_provider(cohere_api_base="api.cohere.com")
    assert "'cohere_api_base'" in info.value.message


def test_it_never_shows_the_key_in_repr_or_describe():
    provider = make_provider()
    shown = repr(provider) + repr(provider.describe())
    assert FakeCohere.API_KEY not in shown
    assert provider.describe() == {"cohere_api_base": "https://api.cohere.com", "upstream_model": MODEL}


# --- over HTTP -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_streams_chat_with_the_bearer_key(provider, cohere_upstream):
    events = await drain(provider.chat(chat(max_tokens=16)))
    assert events == [TextDelta("Hello"), TextDelta(","), TextDelta(" world"), TextDelta("!"), Finish("stop"), Usage(71, 4)]
    sent = cohere_upstream.last_request
    assert sent.path == "/v2/chat"
    assert sent.json == {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16, "stream": True}
    assert sent.headers["authorization"] == f"Bearer {FakeCohere.API_KEY}"
    assert sent.headers["accept"] == "text/event-stream"


@pytest.mark.asyncio
async def test_it_asks_for_one_json_answer_when_the_client_does_not_stream(provider, cohere_upstream):
    cohere_upstream.thinking_pieces = ["Let me", " see."]
    events = await drain(provider.chat(chat(stream=False)))
    assert cohere_upstream.last_request.json["stream"] is False
    assert events == [ReasoningDelta("Let me see."), TextDelta("Hello, world!"), Finish("stop"), Usage(71, 4)]


@pytest.mark.asyncio
async def test_it_streams_thinking_before_the_answer(provider, cohere_upstream):
    cohere_upstream.thinking_pieces = ["Let me", " see."]
    events = await drain(provider.chat(chat(max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 2048})))
    assert cohere_upstream.last_request.json["thinking"] == {"type": "enabled", "token_budget": 2048}
    assert events[:3] == [ReasoningDelta("Let me"), ReasoningDelta(" see."), TextDelta("Hello")]


@pytest.mark.asyncio
async def test_it_streams_the_tool_plan_and_tool_calls(provider, cohere_upstream):
    cohere_upstream.tool_plan = "I will check."
    cohere_upstream.tool_calls = [{"name": "get_weather", "arguments": '{"city": "Paris"}'}, {"name": "now", "arguments": "{}"}]
    tools = [{"type": "function", "function": {"name": "get_weather"}}, {"type": "function", "function": {"name": "now"}}]
    events = await drain(provider.chat(chat(tools=tools)))
    assert events == [
        TextDelta("I "), TextDelta("will "), TextDelta("check. "),
        ToolCallDelta(call=0, id="get_weather_0", name="get_weather"),
        ToolCallDelta(call=0, arguments='{"city":'),
        ToolCallDelta(call=0, arguments=' "Paris"}'),
        ToolCallDelta(call=1, id="now_1", name="now"),
        ToolCallDelta(call=1, arguments="{"),
        ToolCallDelta(call=1, arguments="}"),
        Finish("tool_calls"),
        Usage(71, 4),
    ]


@pytest.mark.asyncio
async def test_it_reads_tool_calls_from_a_whole_answer(provider, cohere_upstream):
    cohere_upstream.tool_plan = "I will check."
    cohere_upstream.tool_calls = [{"name": "get_weather", "arguments": '{"city":"Paris"}'}]
    events = await drain(provider.chat(chat(stream=False, tools=[{"type": "function", "function": {"name": "get_weather"}}])))
    assert events == [
        TextDelta("I will check."),
        ToolCallDelta(call=0, id="get_weather_0", name="get_weather", arguments='{"city":"Paris"}'),
        Finish("tool_calls"),
        Usage(71, 4),
    ]


@pytest.mark.asyncio
async def test_a_stream_ending_in_error_raises_after_the_content_so_far(provider, cohere_upstream):
    cohere_upstream.finish_reason = "ERROR"
    cohere_upstream.end_error = "internal model error"
    stream = provider.chat(chat())
    assert [await stream.__anext__() for _ in range(4)] == [TextDelta("Hello"), TextDelta(","), TextDelta(" world"), TextDelta("!")]
    with pytest.raises(ServingError) as info:
        await stream.__anext__()
    assert info.value.status == 503 and "internal model error" in info.value.message


@pytest.mark.asyncio
async def test_a_wrong_key_is_reported_without_echoing_it(cohere_upstream, pool):  # noqa: F811
    provider = make_provider(cohere_api_key="co-wrong-key-9876543210", cohere_api_base=cohere_upstream.url)
    error = await failure(provider.chat(chat()))
    assert error.status == 400 and "rejected the configured API key" in error.message
    assert "co-wrong-key-9876543210" not in error.message


@pytest.mark.parametrize(("status", "code"), [
    (400, "INVALID_PARAMETER_VALUE"), (422, "INVALID_PARAMETER_VALUE"), (429, "REQUEST_LIMIT_EXCEEDED"),
    (500, "TEMPORARILY_UNAVAILABLE"), (503, "TEMPORARILY_UNAVAILABLE"),
])
@pytest.mark.asyncio
async def test_it_maps_cohere_errors_with_the_vendor_message(provider, cohere_upstream, status, code):
    cohere_upstream.fail(status, f"invalid request: model says {status}")
    error = await failure(provider.chat(chat()))
    assert error.code == code and f"model says {status}" in error.message and "Cohere" in error.message


@pytest.mark.asyncio
async def test_it_closes_the_upstream_stream_when_the_consumer_stops(provider, cohere_upstream):
    await assert_closing_the_stream_disconnects(provider, cohere_upstream)


@pytest.mark.asyncio
async def test_it_embeds_in_batches_of_96_in_input_order(cohere_upstream, pool):  # noqa: F811
    provider = make_provider(EMBEDDINGS, cohere_api_base=cohere_upstream.url)
    texts = [f"text number {i}" for i in range(100)]
    out = await provider.embed(EmbeddingsRequest.model_validate({"input": texts, "extra_params": {"input_type": "search_query"}}))
    assert len(out.vectors) == 100 and out.prompt_tokens == 300
    # The fake's vector i of a call is [i, len(text), 0.5]: batch two starts again at 0.
    assert out.vectors[95] == [95.0, 14.0, 0.5] and out.vectors[96] == [0.0, 14.0, 0.5]
    batches = sorted((r.json for r in cohere_upstream.requests), key=lambda body: len(body["texts"]), reverse=True)
    assert [len(body["texts"]) for body in batches] == [96, 4]
    assert batches[1] == {"model": MODEL, "texts": texts[96:], "input_type": "search_query", "embedding_types": ["float"]}
    assert cohere_upstream.last_request.path == "/v2/embed"


@pytest.mark.asyncio
async def test_it_embeds_a_single_string(cohere_upstream, pool):  # noqa: F811
    provider = make_provider(EMBEDDINGS, cohere_api_base=cohere_upstream.url)
    assert await provider.embed(EmbeddingsRequest.model_validate({"input": "hello there"})) == Embeddings([[0.0, 11.0, 0.5]], 2)
    assert cohere_upstream.last_request.json["input_type"] == "search_document"


# --- through Fondasi's HTTP API, with the real openai client --------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_openai_client_chats_and_embeds_with_cohere_endpoints(cohere_upstream, auth_headers, pool):  # noqa: F811
    from endpoints.config import apply, parse_text
    from playground.asgi import application

    await sync_to_async(apply)(parse_text(f"""
endpoints:
  - name: cohere-chat
    task: llm/v1/chat
    served_entities:
      - external_model:
          name: {MODEL}
          provider: cohere
          cohere_config: {{cohere_api_key: "{FakeCohere.API_KEY}", cohere_api_base: "{cohere_upstream.url}"}}
  - name: cohere-embed
    task: llm/v1/embeddings
    served_entities:
      - external_model:
          name: embed-v4.0
          provider: cohere
          cohere_config: {{cohere_api_key: "{FakeCohere.API_KEY}", cohere_api_base: "{cohere_upstream.url}"}}
"""), source="api")
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http_client:
        client = openai.AsyncOpenAI(api_key=auth_headers["Authorization"].split()[1], max_retries=0,
                                    base_url="http://testserver/serving-endpoints", http_client=http_client)
        answer = await client.chat.completions.create(
            model="cohere-chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=32, top_p=0.5)
        assert answer.choices[0].message.content == "Hello, world!"
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (71, 4)
        assert cohere_upstream.last_request.json["p"] == 0.5

        cohere_upstream.tool_calls = [{"name": "get_weather", "arguments": '{"city": "Paris"}'}]
        stream = await client.chat.completions.create(
            model="cohere-chat", messages=[{"role": "user", "content": "Weather in Paris?"}], stream=True,
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])
        chunks = [chunk async for chunk in stream]
        arguments = "".join(
            call.function.arguments or "" for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or ()
        )
        assert arguments == '{"city": "Paris"}'
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]

        vectors = await client.embeddings.create(model="cohere-embed", input=["a", "bb"])
        assert [item.embedding for item in vectors.data] == [[0.0, 1.0, 0.5], [1.0, 2.0, 0.5]]

        cohere_upstream.fail(400, "invalid request: message must not be empty")
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="cohere-chat", messages=[{"role": "user", "content": "Hi"}])
        assert "message must not be empty" in refused.value.message
