"""The Gemini API provider (``google-gemini``), against a fake Google vendor over real HTTP on 127.0.0.1."""
from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from endpoints.errors import ServingError
from endpoints.events import Embeddings, Finish, ReasoningDelta, TextDelta, Usage
from endpoints.providers.base import EntitySpec
from endpoints.providers.gemini import GeminiProvider, StreamState, chat_body, chunk_events, closing_events
from endpoints.schemas import CHAT, EmbeddingsRequest
from tests.endpoints.providers.helpers import chat, drain, failure
from tests.fakes.gemini_upstream import FakeGeminiUpstream, gemini_upstream  # noqa: F401 (fixture)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


pytestmark = pytest.mark.usefixtures("no_retries")  # vendor errors reach the tests at once


def make_provider(fake: FakeGeminiUpstream, **config: Any) -> GeminiProvider:
    config = {"gemini_api_key": fake.api_key, "gemini_api_base": fake.base_url, **config}
    return GeminiProvider(EntitySpec("ep", "google-gemini", "gemini-test", CHAT, config))


@pytest.fixture
def provider(gemini_upstream: FakeGeminiUpstream, pool) -> GeminiProvider:  # noqa: F811
    return make_provider(gemini_upstream)


# --- ours → vendor -------------------------------------------------------------------------


def test_it_translates_a_chat_request_with_every_supported_param():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    request = chat(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in JSON."}]},
            {"role": "user", "content": "Hi", "name": "ann"},
        ],
        max_tokens=2048, temperature=0.5, top_p=0.9, stop="END", n=2, seed=7, presence_penalty=0.1,
        frequency_penalty=0.2, reasoning_effort="medium", user="alice",
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    assert chat_body(request, "google-gemini") == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in JSON."}]},
        "generationConfig": {
            "maxOutputTokens": 2048, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"], "candidateCount": 2,
            "seed": 7, "presencePenalty": 0.1, "frequencyPenalty": 0.2,
            "responseMimeType": "application/json", "responseJsonSchema": schema,
            # medium effort is 4096 tokens, capped to half of max_tokens
            "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True},
        },
    }


def test_it_leaves_out_what_the_client_did_not_set():
    assert chat_body(chat(), "google-gemini") == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


def test_it_asks_for_json_and_turns_thinking_off_with_a_zero_budget():
    request = chat(response_format={"type": "json_object"}, thinking={"type": "disabled"})
    assert chat_body(request, "google-gemini")["generationConfig"] == {
        "responseMimeType": "application/json", "thinkingConfig": {"thinkingBudget": 0},
    }
    assert "generationConfig" not in chat_body(chat(response_format={"type": "text"}), "google-gemini")


def test_it_translates_images_tool_turns_and_the_signature_sent_back():
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
    ]
    request = chat(messages=[
        {"role": "user", "content": [
            {"type": "text", "text": "Weather and time here?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        ]},
        {"role": "assistant", "content": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Two tools.", "signature": "c2lnLTE="}]},
        ], "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"temp_c": 21}'},
        {"role": "tool", "tool_call_id": "call_b", "content": "14:05"},
        {"role": "user", "content": "Thanks!"},
    ])
    assert chat_body(request, "google-gemini")["contents"] == [
        {"role": "user", "parts": [
            {"text": "Weather and time here?"}, {"inlineData": {"mimeType": "image/png", "data": PNG}},
        ]},
        {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnLTE="},
            {"functionCall": {"name": "get_time", "args": {}}},
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}},
            {"functionResponse": {"name": "get_time", "response": {"output": "14:05"}}},
        ]},
        {"role": "user", "parts": [{"text": "Thanks!"}]},
    ]


def test_it_puts_the_signature_of_a_text_answer_on_its_last_text_part():
    request = chat(messages=[
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Greet.", "signature": "c2ln"}]},
            {"type": "text", "text": "Hello!"},
        ]},
        {"role": "user", "content": "Again"},
    ])
    assert chat_body(request, "google-gemini")["contents"][1] == {
        "role": "model", "parts": [{"text": "Hello!", "thoughtSignature": "c2ln"}],
    }


@pytest.mark.parametrize(("tool_choice", "config"), [
    (None, None),
    ("auto", None),
    ("none", {"mode": "NONE"}),
    ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
])
def test_it_declares_the_tools_and_how_they_may_be_called(tool_choice, config):
    body = {"tools": [WEATHER, {"type": "function", "function": {"name": "get_time"}}]}
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    sent = chat_body(chat(**body), "google-gemini")
    assert sent["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather in a city.",
         "parametersJsonSchema": WEATHER["function"]["parameters"]},
        {"name": "get_time", "parametersJsonSchema": {"type": "object", "properties": {}}},
    ]}]
    assert sent.get("toolConfig") == (None if config is None else {"functionCallingConfig": config})


def test_it_sends_request_fields_of_extra_params_in_the_body_and_the_rest_in_generation_config():
    safety = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    request = chat(max_tokens=64, extra_params={
        "topK": 40, "safetySettings": safety, "cachedContent": "cachedContents/abc",
        "thinkingConfig": {"thinkingLevel": "low"},
    })
    assert chat_body(request, "google-gemini") == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "safetySettings": safety, "cachedContent": "cachedContents/abc",
        "generationConfig": {"maxOutputTokens": 64, "topK": 40, "thinkingConfig": {"thinkingLevel": "low"}},
    }


@pytest.mark.parametrize(("body", "named"), [
    ({"stop": ["a", "b", "c", "d", "e", "f"]},
     "Parameter 'stop' takes at most 5 sequences with provider 'google-gemini'; got 6."),
    ({"tools": [WEATHER], "parallel_tool_calls": False},
     "Parameter 'parallel_tool_calls' is not supported by provider 'google-gemini'"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "tool", "tool_call_id": "call_x", "content": "1"}]},
     "messages[1] is a tool result whose tool_call_id 'call_x' matches no tool call"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]}]},
     "messages[0].content[0]: provider 'google-gemini' takes images as base64 data URLs"),
    ({"messages": [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]},
        {"role": "user", "content": "?"},
    ]},
     "messages[0].tool_calls[0].function.arguments must be a JSON object"),
])
def test_it_refuses_what_gemini_cannot_do_naming_the_parameter(body, named):
    with pytest.raises(ServingError) as info:
        chat_body(chat(**body), "google-gemini")
    assert info.value.status == 400
    assert named in info.value.message


# --- vendor → ours -------------------------------------------------------------------------


def test_it_reads_thoughts_text_and_usage_with_reasoning_tokens():
    state = StreamState(choices=1)
    thought = {"candidates": [{"content": {"parts": [{"text": "Hmm.", "thought": True}]}}],
               "usageMetadata": {"promptTokenCount": 9}}
    text = {"candidates": [{"content": {"parts": [{"text": "Hi!"}]}}]}
    end = {"candidates": [{"content": {"parts": [{"text": "", "thoughtSignature": "c2ln"}]}, "finishReason": "STOP"}],
           "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 3, "thoughtsTokenCount": 20,
                             "totalTokenCount": 32}}
    assert chunk_events(thought, state) == [ReasoningDelta("Hmm.", 0)]
    assert chunk_events(text, state) == [TextDelta("Hi!", 0)]
    assert chunk_events(end, state) == [ReasoningDelta("", 0, "c2ln"), Finish("stop", 0)]
    assert closing_events(state) == [Usage(9, 23, reasoning_tokens=20)]


def test_it_drops_a_text_signature_when_the_choice_showed_no_reasoning():
    state = StreamState(choices=1)
    chunk = {"candidates": [{"content": {"parts": [{"text": "Hi", "thoughtSignature": "c2ln"}]},
                             "finishReason": "STOP"}]}
    assert chunk_events(chunk, state) == [TextDelta("Hi", 0), Finish("stop", 0)]


def test_it_reads_function_calls_with_stable_ids_and_their_signature():
    chunk = {"candidates": [{"index": 1, "content": {"parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
        {"functionCall": {"name": "get_time"}},
        {"functionCall": {"id": "vendor-id", "name": "get_date", "args": {}}},
    ]}, "finishReason": "STOP"}]}
    first, again = chunk_events(chunk, StreamState(2)), chunk_events(chunk, StreamState(2))
    assert first == again
    signature, weather, time, date, finish = first
    assert signature == ReasoningDelta("", 1, "c2ln")
    assert (weather.call, weather.index, weather.name, weather.arguments) == (0, 1, "get_weather", '{"city":"Paris"}')
    assert (time.call, time.name, time.arguments) == (1, "get_time", "{}")
    assert weather.id.startswith("call_") and time.id.startswith("call_") and weather.id != time.id
    assert date.id == "vendor-id"
    assert finish == Finish("tool_calls", 1)


@pytest.mark.parametrize(("reason", "ours"), [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
    ("MALFORMED_FUNCTION_CALL", "stop"), ("OTHER", "stop"),
])
def test_it_maps_finish_reasons(reason, ours):
    chunk = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}
    assert chunk_events(chunk, StreamState(1))[-1] == Finish(ours, 0)


def test_a_blocked_prompt_finishes_every_choice_as_content_filter():
    state = StreamState(choices=2)
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5}}
    events = chunk_events(blocked, state)
    assert events == [Finish("content_filter", 0), Finish("content_filter", 1)]
    assert closing_events(state) == [Usage(5, 0)]


# --- over HTTP -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_streams_from_stream_generate_content_with_the_key_in_a_header(provider, gemini_upstream):
    events = await drain(provider.chat(chat(max_tokens=16, temperature=0.0)))
    sent = gemini_upstream.last_request
    assert (sent.method, sent.path) == ("POST", "/v1beta/models/gemini-test:streamGenerateContent?alt=sse")
    assert sent.json == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "generationConfig": {"maxOutputTokens": 16, "temperature": 0.0},
    }
    assert sent.headers["x-goog-api-key"] == gemini_upstream.api_key
    assert "authorization" not in sent.headers
    assert (sent.headers["content-type"], sent.headers["accept"]) == ("application/json", "text/event-stream")
    assert events == [
        TextDelta("Hello", 0), TextDelta(",", 0), TextDelta(" world", 0), TextDelta("!", 0),
        Finish("stop", 0), Usage(7, 4),
    ]


@pytest.mark.asyncio
async def test_it_calls_generate_content_when_the_client_does_not_stream(provider, gemini_upstream):
    events = await drain(provider.chat(chat(stream=False, n=2)))
    sent = gemini_upstream.last_request
    assert sent.path == "/v1beta/models/gemini-test:generateContent"
    assert sent.headers["accept"] == "application/json"
    assert sent.json["generationConfig"] == {"candidateCount": 2}
    assert events == [TextDelta("Hello, world!", 0), Finish("stop", 0), TextDelta("Hello, world!", 1),
                      Finish("stop", 1), Usage(7, 4)]


@pytest.mark.asyncio
async def test_it_streams_n_candidates_each_with_its_own_finish(provider, gemini_upstream):
    gemini_upstream.pieces = ["a", "b"]
    gemini_upstream.finish_reason = "MAX_TOKENS"
    events = await drain(provider.chat(chat(n=2)))
    for index in (0, 1):
        assert [e for e in events if not isinstance(e, Usage) and e.index == index] == [
            TextDelta("a", index), TextDelta("b", index), Finish("length", index),
        ]
    assert events[-1] == Usage(7, 4)


@pytest.mark.asyncio
async def test_it_streams_thoughts_before_the_answer_with_their_signature(provider, gemini_upstream):
    gemini_upstream.thoughts = ["Greeting, ", "so greet."]
    gemini_upstream.signature = "c2lnbmF0dXJl"
    gemini_upstream.pieces = ["Hi!"]
    gemini_upstream.usage = {"promptTokenCount": 7, "candidatesTokenCount": 2, "thoughtsTokenCount": 12}
    events = await drain(provider.chat(chat(max_tokens=600, thinking={"type": "enabled", "budget_tokens": 512})))
    assert gemini_upstream.last_request.json["generationConfig"] == {
        "maxOutputTokens": 600, "thinkingConfig": {"thinkingBudget": 512, "includeThoughts": True},
    }
    assert events == [
        ReasoningDelta("Greeting, ", 0), ReasoningDelta("so greet.", 0), TextDelta("Hi!", 0),
        ReasoningDelta("", 0, "c2lnbmF0dXJl"), Finish("stop", 0), Usage(7, 14, reasoning_tokens=12),
    ]


@pytest.mark.asyncio
async def test_it_streams_function_calls_as_tool_calls(provider, gemini_upstream):
    gemini_upstream.function_calls = [{"name": "get_weather", "args": {"city": "Paris"}}]
    gemini_upstream.signature = "c2ln"
    events = await drain(provider.chat(chat(tools=[WEATHER], tool_choice="required")))
    sent = gemini_upstream.last_request.json
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    signature, call, finish, usage = events
    assert signature == ReasoningDelta("", 0, "c2ln")
    assert (call.call, call.name, call.arguments) == (0, "get_weather", '{"city":"Paris"}')
    assert call.id.startswith("call_")
    assert (finish, usage) == (Finish("tool_calls", 0), Usage(7, 4))


@pytest.mark.asyncio
async def test_a_blocked_prompt_is_an_answer_filtered_as_content_filter(provider, gemini_upstream):
    gemini_upstream.block_reason = "PROHIBITED_CONTENT"
    assert await drain(provider.chat(chat())) == [Finish("content_filter", 0), Usage(7, 0)]


@pytest.mark.asyncio
async def test_it_embeds_one_input_with_embed_content(provider, gemini_upstream):
    request = EmbeddingsRequest.model_validate({"input": "hello", "extra_params": {"taskType": "RETRIEVAL_QUERY"}})
    result = await provider.embed(request)
    sent = gemini_upstream.last_request
    assert sent.path == "/v1beta/models/gemini-test:embedContent"
    assert sent.json == {"content": {"parts": [{"text": "hello"}]}, "taskType": "RETRIEVAL_QUERY"}
    assert sent.headers["x-goog-api-key"] == gemini_upstream.api_key
    assert result == Embeddings([[0.0, 5.0, 0.5]], 0)


@pytest.mark.asyncio
async def test_it_embeds_many_inputs_in_batches_of_one_hundred(provider, gemini_upstream):
    texts = [f"text {i}" for i in range(150)]
    request = EmbeddingsRequest.model_validate({"input": texts, "extra_params": {"outputDimensionality": 3}})
    result = await provider.embed(request)
    first, second = gemini_upstream.requests
    assert first.path == second.path == "/v1beta/models/gemini-test:batchEmbedContents"
    assert first.json["requests"][0] == {
        "model": "models/gemini-test", "content": {"parts": [{"text": "text 0"}]}, "outputDimensionality": 3,
    }
    assert [len(first.json["requests"]), len(second.json["requests"])] == [100, 50]
    assert second.json["requests"][0]["content"]["parts"][0]["text"] == "text 100"
    assert len(result.vectors) == 150
    assert result.vectors[0] == [0.0, 6.0, 0.5] and result.vectors[100] == [0.0, 8.0, 0.5]  # each batch counts from 0


# --- errors --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_maps_a_vendor_400_to_400_with_the_vendor_message(provider, gemini_upstream):
    gemini_upstream.fail(400, "* GenerateContentRequest.generation_config.candidate_count: must be at most 8.")
    error = await failure(provider.chat(chat()))
    assert (error.status, error.code, error.retryable) == (400, "INVALID_PARAMETER_VALUE", False)
    assert error.message == (
        "Google Gemini API rejected the request (HTTP 400): "
        "* GenerateContentRequest.generation_config.candidate_count: must be at most 8."
    )


@pytest.mark.asyncio
async def test_a_wrong_key_is_a_400_that_never_echoes_it(gemini_upstream, pool):  # noqa: F811
    provider = make_provider(gemini_upstream, gemini_api_key="AIzaSy-wrong-key-99")
    error = await failure(provider.chat(chat()))
    assert error.status == 400
    assert error.message == (
        "Google Gemini API rejected the request (HTTP 400): API key not valid. Please pass a valid API key."
    )


@pytest.mark.asyncio
async def test_a_vendor_message_quoting_the_key_is_scrubbed(provider, gemini_upstream):
    gemini_upstream.fail(400, f"Key {gemini_upstream.api_key} has no access to this model.")
    error = await failure(provider.chat(chat()))
    assert gemini_upstream.api_key not in error.message
    assert "Key [redacted] has no access" in error.message


@pytest.mark.asyncio
async def test_it_maps_a_vendor_429_keeping_retry_after(provider, gemini_upstream):
    gemini_upstream.fail(429, "Resource has been exhausted (e.g. check quota).", status_text="RESOURCE_EXHAUSTED",
                         headers={"Retry-After": "7"})
    error = await failure(provider.chat(chat()))
    assert (error.status, error.code, error.retry_after, error.retryable) == (429, "REQUEST_LIMIT_EXCEEDED", 7, True)
    assert "Resource has been exhausted" in error.message


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [500, 503])
async def test_it_maps_a_vendor_5xx_to_a_retryable_503(provider, gemini_upstream, status):
    gemini_upstream.fail(status, "The model is overloaded. Please try again later.", status_text="UNAVAILABLE")
    error = await failure(provider.chat(chat(stream=False)))
    assert (error.status, error.code, error.retryable) == (503, "TEMPORARILY_UNAVAILABLE", True)
    assert f"(HTTP {status}): The model is overloaded" in error.message


@pytest.mark.asyncio
async def test_an_error_event_mid_stream_is_raised_after_the_first_events(provider, gemini_upstream):
    gemini_upstream.mid_stream_error = {
        "error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"},
    }
    stream = provider.chat(chat())
    assert await stream.__anext__() == TextDelta("Hello", 0)
    with pytest.raises(ServingError) as info:
        await stream.__anext__()
    assert info.value.status == 503 and "Internal error encountered." in info.value.message


@pytest.mark.asyncio
async def test_an_embeddings_error_keeps_the_vendor_message(provider, gemini_upstream):
    gemini_upstream.fail(404, "models/gemini-test is not found for API version v1beta.", status_text="NOT_FOUND")
    with pytest.raises(ServingError) as info:
        await provider.embed(EmbeddingsRequest.model_validate({"input": ["a", "b"]}))
    assert info.value.status == 400 and "is not found for API version v1beta" in info.value.message


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "named"), [
    ({}, "needs 'gemini_api_key'"),
    ({"gemini_api_key": 12345}, "'gemini_api_key' must be the resolved key"),
    ({"gemini_api_key": "k", "gemini_api_base": "generativelanguage.googleapis.com"},
     "'gemini_api_base' must be an http"),
])
def test_it_rejects_a_bad_configuration_naming_the_field(config, named):
    with pytest.raises(ServingError) as info:
        GeminiProvider(EntitySpec("ep", "google-gemini", "gemini-test", CHAT, config))
    assert info.value.status == 400 and named in info.value.message


def test_it_rejects_a_model_name_that_would_change_the_url():
    with pytest.raises(ServingError) as info:
        GeminiProvider(EntitySpec("ep", "google-gemini", "../files/x", CHAT, {"gemini_api_key": "k"}))
    assert "The model name must be letters" in info.value.message


def test_it_defaults_to_googles_api_and_never_shows_the_key():
    config = {"gemini_api_key": "AIza-secret"}
    provider = GeminiProvider(EntitySpec("ep", "google-gemini", "gemini-2.5-flash", CHAT, config))
    assert provider._model_url("generateContent") == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert provider.describe() == {
        "gemini_api_base": "https://generativelanguage.googleapis.com", "upstream_model": "gemini-2.5-flash",
    }
    assert "AIza-secret" not in repr(provider) + repr(provider.describe()) + repr(provider.spec)


# --- through our HTTP API, with the real openai client ---------------------------------------

ENDPOINTS = """
endpoints:
  - name: gemini-chat
    task: llm/v1/chat
    served_entities:
      - name: gemini-entity
        external_model:
          name: gemini-test
          provider: google-gemini
          gemini_config: {{gemini_api_key: "{key}", gemini_api_base: "{base}"}}
"""


@pytest.fixture
def gemini_endpoint(gemini_upstream, transactional_db):  # noqa: F811
    from endpoints.config import apply, parse_text

    apply(parse_text(ENDPOINTS.format(key=gemini_upstream.api_key, base=gemini_upstream.base_url)))
    return gemini_upstream


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_openai_client_chats_with_a_gemini_endpoint(gemini_endpoint, token, pool):
    from playground.asgi import application

    gemini_upstream = gemini_endpoint
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport) as http_client:
        client = openai.AsyncOpenAI(
            api_key=token, base_url="http://testserver/serving-endpoints", http_client=http_client, max_retries=0,
        )
        answer = await client.chat.completions.create(
            model="gemini-chat", max_tokens=32,
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        )
        assert answer.choices[0].message.content == "Hello, world!"
        assert answer.choices[0].finish_reason == "stop"
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (7, 4)
        sent = gemini_upstream.last_request
        assert sent.path == "/v1beta/models/gemini-test:generateContent"
        assert sent.json == {
            "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"maxOutputTokens": 32},
        }

        stream = await client.chat.completions.create(
            model="gemini-chat", messages=[{"role": "user", "content": "Hi"}], stream=True,
        )
        pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
        assert "".join(piece for piece in pieces if piece) == "Hello, world!"
        assert gemini_upstream.last_request.path == "/v1beta/models/gemini-test:streamGenerateContent?alt=sse"

        gemini_upstream.fail(
            429, "Resource has been exhausted.", status_text="RESOURCE_EXHAUSTED", headers={"Retry-After": "3"}
        )
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="gemini-chat", messages=[{"role": "user", "content": "Hi"}])
        assert limited.value.response.headers["retry-after"] == "3"
        assert "Resource has been exhausted." in json.dumps(limited.value.body)
