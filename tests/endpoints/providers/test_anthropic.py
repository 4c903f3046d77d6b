"""The Anthropic provider, against a fake Messages API over real HTTP on 127.0.0.1."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

from endpoints.errors import ServingError
from endpoints.events import Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from endpoints.providers.anthropic import (
    AnthropicProvider,
    StreamTranslator,
    chat_body,
    message_events,
)
from endpoints.providers.base import EntitySpec
from endpoints.schemas import CHAT, COMPLETIONS
from tests.endpoints.providers.helpers import assert_closing_the_stream_disconnects, chat, drain, failure
from tests.fakes.anthropic_upstream import API_KEY, FakeAnthropicUpstream, anthropic_upstream  # noqa: F401 (fixture)

MODEL = "claude-sonnet-4-5"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}


pytestmark = pytest.mark.usefixtures("no_retries")  # vendor errors reach the tests at once


def make_provider(base_url: str | None, **config: Any) -> AnthropicProvider:
    config = {"anthropic_api_key": API_KEY, **config}
    if base_url is not None:
        config["anthropic_api_base"] = base_url
    return AnthropicProvider(EntitySpec(name="ep", provider="anthropic", model=MODEL, task=CHAT, config=config))


def bad_request(**body: Any) -> ServingError:
    with pytest.raises(ServingError) as info:
        chat_body(chat(**body), MODEL)
    assert info.value.status == 400
    return info.value


@pytest.fixture
def provider(anthropic_upstream: FakeAnthropicUpstream, pool) -> AnthropicProvider:  # noqa: F811
    return make_provider(anthropic_upstream.base_url)


# --- ours → Anthropic ----------------------------------------------------------------------


def test_it_translates_a_chat_request_with_every_supported_param():
    request = chat(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi", "name": "ann"}],
        max_tokens=32, temperature=0.5, top_p=0.9, stop="END", user="alice",
    )
    assert chat_body(request, MODEL) == {
        "model": MODEL, "max_tokens": 32, "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.5, "top_p": 0.9, "stop_sequences": ["END"], "stream": True,
    }


def test_it_sends_4096_max_tokens_when_the_client_gives_none_plus_the_thinking_budget():
    assert chat_body(chat(), MODEL) == {
        "model": MODEL, "max_tokens": 4096, "messages": [{"role": "user", "content": "Hi"}], "stream": True,
    }
    thinking = chat_body(chat(thinking={"type": "enabled", "budget_tokens": 2048}), MODEL)
    assert (thinking["max_tokens"], thinking["thinking"]) == (6144, {"type": "enabled", "budget_tokens": 2048})
    effort = chat_body(chat(reasoning_effort="medium"), MODEL)
    assert (effort["max_tokens"], effort["thinking"]) == (8192, {"type": "enabled", "budget_tokens": 4096})
    assert "thinking" not in chat_body(chat(thinking={"type": "disabled"}), MODEL)


def test_it_hoists_system_and_developer_messages_and_merges_consecutive_turns():
    request = chat(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "One."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": [{"type": "text", "text": "Two."}, {"type": "text", "text": ""}]},
        {"role": "assistant", "content": "Un, deux."},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Three?"},
    ])
    body = chat_body(request, MODEL)
    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]},
        {"role": "assistant", "content": "Un, deux."},
        {"role": "user", "content": "Three?"},
    ]


def test_it_sends_data_url_images_as_base64_blocks_and_http_urls_as_url_sources():
    request = chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Compare."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
    ]}])
    assert chat_body(request, MODEL)["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Compare."},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]}]


def test_it_rejects_an_image_it_cannot_send_naming_it():
    error = bad_request(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}])
    assert error.message == "messages[0].content[0] must be a base64 data: URL or an http(s) URL."
    error = bad_request(messages=[{"role": "system", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}, {"role": "user", "content": "x"}])
    assert "messages[0]" in error.message and "only text" in error.message


def test_it_turns_tool_calls_and_results_into_tool_use_and_tool_result_blocks():
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    empty = {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": ""}}
    request = chat(tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris, and the time?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [call, empty], "refusal": None},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18°C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "noon"}]},
        {"role": "user", "content": "Thanks. Summarise."},
    ])
    assert chat_body(request, MODEL)["messages"] == [
        {"role": "user", "content": "Weather in Paris, and the time?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "noon"}]},
            {"type": "text", "text": "Thanks. Summarise."},
        ]},
    ]


@pytest.mark.parametrize("arguments, problem", [
    ("{not json", "messages[1].tool_calls[0].function.arguments is not valid JSON."),
    ("[1, 2]", "messages[1].tool_calls[0].function.arguments must be a JSON object."),
])
def test_it_rejects_tool_call_arguments_that_are_not_a_json_object(arguments, problem):
    call = {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    error = bad_request(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]}])
    assert error.message == problem


def test_a_tool_message_needs_the_id_of_the_call_it_answers():
    error = bad_request(messages=[{"role": "user", "content": "x"}, {"role": "tool", "content": "42"}])
    assert "messages[1]" in error.message and "tool_call_id" in error.message


def test_it_sends_signed_reasoning_back_as_thinking_blocks_and_restores_redacted_ones():
    signed = {"type": "reasoning", "summary": [
        {"type": "summary_text", "text": "Rayleigh "},  # a streamed block kept in pieces: signature on the last
        {"type": "summary_text", "text": "scattering.", "signature": "sig-1"},
    ]}
    redacted = {"type": "reasoning", "summary": [
        {"type": "summary_text", "text": "", "signature": "redacted_thinking:EmwKAhgB"}]}
    unsigned = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "from another model"}]}
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    request = chat(thinking={"type": "enabled", "budget_tokens": 1024}, tools=[WEATHER], messages=[
        {"role": "user", "content": "Why is the sky blue?"},
        {"role": "assistant", "content": [signed, redacted, unsigned, {"type": "text", "text": "Let me check."}],
         "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
    ])
    assert chat_body(request, MODEL)["messages"][1] == {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "Rayleigh scattering.", "signature": "sig-1"},
        {"type": "redacted_thinking", "data": "EmwKAhgB"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
    ]}


@pytest.mark.parametrize("choice, parallel, expected", [
    (None, None, {"type": "auto"}),
    ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("none", False, {"type": "none"}),
    ("required", None, {"type": "any"}),
    ({"type": "function", "function": {"name": "get_weather"}}, False,
     {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}),
])
def test_it_translates_tools_and_tool_choice(choice, parallel, expected):
    strict = {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}, "strict": True}}
    body = chat_body(chat(tools=[WEATHER, strict], tool_choice=choice, parallel_tool_calls=parallel), MODEL)
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather now", "input_schema": WEATHER["function"]["parameters"]},
        {"name": "now", "input_schema": {"type": "object"}, "strict": True},
    ]
    assert body["tool_choice"] == expected


def test_it_asks_for_structured_output_natively_with_a_json_schema():
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
              "additionalProperties": False}
    response_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    body = chat_body(chat(response_format=response_format), MODEL)
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "output_config" not in chat_body(chat(response_format={"type": "text"}), MODEL)


def test_json_object_without_a_schema_is_a_400_asking_for_one():
    error = bad_request(response_format={"type": "json_object"})
    assert "'json_object' is not supported by Anthropic" in error.message and "json_schema" in error.message


def test_a_temperature_above_one_is_a_400_giving_anthropics_range():
    error = bad_request(temperature=1.5)
    assert error.message == "'temperature' must be between 0 and 1 for Anthropic models; got 1.5."


def test_a_thinking_budget_below_1024_is_a_400_naming_what_the_client_gave():
    error = bad_request(thinking={"type": "enabled", "budget_tokens": 500}, max_tokens=2000)
    assert error.message == "thinking.budget_tokens must be at least 1024 for Anthropic models; got 500."
    error = bad_request(reasoning_effort="low", max_tokens=1500)
    assert error.message.startswith("reasoning_effort 'low' with max_tokens 1500 gives a thinking budget of 750 tokens")
    assert "at least 2048" in error.message


def test_it_merges_extra_params_into_the_body_except_what_decides_the_parsing():
    schema = {"type": "object", "additionalProperties": False}
    extra = {"top_k": 40, "metadata": {"user_id": "u-1"}, "output_config": {"effort": "low", "format": "hijack"},
             "model": "hijacked", "messages": [], "stream": False}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    body = chat_body(chat(max_tokens=8, extra_params=extra, response_format=response_format), MODEL)
    assert body == {
        "model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}],
        "output_config": {"effort": "low", "format": {"type": "json_schema", "schema": schema}},
        "top_k": 40, "metadata": {"user_id": "u-1"}, "stream": True,
    }


@pytest.mark.parametrize("params, name", [
    ({"n": 2}, "n"), ({"seed": 7}, "seed"), ({"presence_penalty": 0.5}, "presence_penalty"),
])
def test_what_anthropic_cannot_do_is_a_400_naming_the_parameter_and_the_provider(params, name):
    from endpoints.service import check_supported

    class Endpoint:
        name = "claude"

    with pytest.raises(ServingError) as info:
        check_supported(Endpoint(), make_provider(None), chat(**params))
    assert info.value.status == 400
    assert info.value.message == (
        f"Parameter '{name}' is not supported by endpoint 'claude' (provider 'anthropic', model '{MODEL}')."
    )


# --- Anthropic → ours ----------------------------------------------------------------------


def test_it_translates_a_whole_answer_with_thinking_text_and_tool_use():
    message = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
        "content": [
            {"type": "thinking", "thinking": "Paris first.", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "EmwK"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
        ],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 25, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000,
                  "output_tokens": 48},
    }
    assert message_events(message) == [
        ReasoningDelta("Paris first.", signature="sig-1"),
        ReasoningDelta("", signature="redacted_thinking:EmwK"),
        TextDelta("Let me check."),
        ToolCallDelta(call=0, id="toolu_1", name="get_weather", arguments='{"city":"Paris"}'),
        ToolCallDelta(call=1, id="toolu_2", name="now", arguments="{}"),
        Finish("tool_calls"),
        Usage(1125, 48),
    ]


@pytest.mark.parametrize("stop_reason, ours", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), ("pause_turn", "stop"), ("model_context_window_exceeded", "length"),
    ("something_new", "stop"),
])
def test_it_maps_stop_reasons(stop_reason, ours):
    translator = StreamTranslator()
    translator.feed({"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": 3}})
    assert translator.feed({"type": "message_stop"})[0] == Finish(ours)


def test_it_counts_cache_tokens_as_prompt_tokens_and_takes_the_last_cumulative_output_count():
    translator = StreamTranslator()
    start = {"type": "message_start", "message": {"usage": {
        "input_tokens": 5, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 200, "output_tokens": 1}}}
    assert translator.feed(start) == []
    translator.feed({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}})
    translator.feed({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 21}})
    assert translator.feed({"type": "message_stop"}) == [Finish("stop"), Usage(215, 21)]
    assert translator.done


# --- over HTTP -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_sends_the_exact_body_and_headers(provider, anthropic_upstream):
    await drain(provider.chat(chat(max_tokens=16, temperature=0.0, stop=["\n\n"])))
    sent = anthropic_upstream.last_request
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.json == {
        "model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.0, "stop_sequences": ["\n\n"], "stream": True,
    }
    assert sent.headers["x-api-key"] == API_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["accept"] == "text/event-stream"
    assert "authorization" not in sent.headers


@pytest.mark.asyncio
async def test_it_streams_text_then_finish_then_usage(provider, anthropic_upstream):
    events = await drain(provider.chat(chat()))
    assert events == [
        TextDelta("Hello"), TextDelta(","), TextDelta(" world"), TextDelta("!"), Finish("stop"), Usage(7, 4),
    ]


@pytest.mark.asyncio
async def test_it_asks_for_one_json_answer_when_the_client_does_not_stream(provider, anthropic_upstream):
    events = await drain(provider.chat(chat(stream=False, max_tokens=8)))
    sent = anthropic_upstream.last_request
    assert sent.json == {
        "model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}], "stream": False,
    }
    assert sent.headers["accept"] == "application/json"
    assert events == [TextDelta("Hello, world!"), Finish("stop"), Usage(7, 4)]


@pytest.mark.asyncio
async def test_it_streams_thinking_as_reasoning_with_the_signature_on_the_last_piece(provider, anthropic_upstream):
    anthropic_upstream.thinking = ["Rayleigh", " scattering."]
    anthropic_upstream.pieces = ["Blue light scatters."]
    events = await drain(provider.chat(chat(thinking={"type": "enabled", "budget_tokens": 1024})))
    assert anthropic_upstream.last_request.json["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert anthropic_upstream.last_request.json["max_tokens"] == 5120
    assert events == [
        ReasoningDelta("Rayleigh"), ReasoningDelta(" scattering."),
        ReasoningDelta("", signature=anthropic_upstream.signature),
        TextDelta("Blue light scatters."), Finish("stop"), Usage(7, 4),
    ]


@pytest.mark.asyncio
async def test_it_reads_thinking_from_a_whole_answer(provider, anthropic_upstream):
    anthropic_upstream.thinking = ["Rayleigh", " scattering."]
    events = await drain(provider.chat(chat(stream=False, reasoning_effort="low")))
    assert events[:2] == [
        ReasoningDelta("Rayleigh scattering.", signature=anthropic_upstream.signature), TextDelta("Hello, world!"),
    ]


@pytest.mark.asyncio
async def test_it_streams_a_redacted_thinking_block_as_a_signature_to_send_back(provider, anthropic_upstream):
    anthropic_upstream.redacted = "EmwKAhgBEgy3va3pzix"
    events = await drain(provider.chat(chat(thinking={"type": "enabled", "budget_tokens": 1024})))
    assert events[0] == ReasoningDelta("", signature="redacted_thinking:EmwKAhgBEgy3va3pzix")
    assert events[1] == TextDelta("Hello")


@pytest.mark.asyncio
async def test_it_streams_tool_use_as_tool_call_deltas(provider, anthropic_upstream):
    anthropic_upstream.pieces = ["Checking."]
    anthropic_upstream.tool_uses = [{"name": "get_weather", "input": {"city": "Paris"}}, {"name": "now", "input": {}}]
    events = await drain(provider.chat(chat(tools=[WEATHER], tool_choice="required")))
    sent = anthropic_upstream.last_request.json
    assert sent["tool_choice"] == {"type": "any"} and sent["tools"][0]["name"] == "get_weather"
    assert events == [
        TextDelta("Checking."),
        ToolCallDelta(call=0, id="toolu_0", name="get_weather", arguments=""),
        ToolCallDelta(call=0, arguments='{"city":'),
        ToolCallDelta(call=0, arguments=' "Paris"}'),
        ToolCallDelta(call=1, id="toolu_1", name="now", arguments=""),
        ToolCallDelta(call=1, arguments="{}"),  # no argument fragments: an empty object, not ""
        Finish("tool_calls"),
        Usage(7, 4),
    ]


@pytest.mark.asyncio
async def test_it_reads_tool_use_from_a_whole_answer(provider, anthropic_upstream):
    anthropic_upstream.pieces = []
    anthropic_upstream.tool_uses = [{"name": "get_weather", "input": {"city": "Oslo"}}]
    events = await drain(provider.chat(chat(stream=False, tools=[WEATHER])))
    assert events == [
        ToolCallDelta(call=0, id="toolu_0", name="get_weather", arguments='{"city":"Oslo"}'),
        Finish("tool_calls"),
        Usage(7, 4),
    ]


@pytest.mark.asyncio
async def test_it_reports_max_tokens_as_length(provider, anthropic_upstream):
    anthropic_upstream.stop_reason = "max_tokens"
    events = await drain(provider.chat(chat(max_tokens=4)))
    assert events[-2:] == [Finish("length"), Usage(7, 4)]


@pytest.mark.asyncio
async def test_it_reuses_the_pooled_connection_across_requests(provider, anthropic_upstream, monkeypatch):
    monkeypatch.setenv("FONDASI_HTTP_POOLS", "1")  # one pool: every request may take the same connection
    await drain(provider.chat(chat()))
    await drain(provider.chat(chat(stream=False)))
    await drain(provider.chat(chat()))
    assert len({request.peer for request in anthropic_upstream.requests}) == 1


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("config", [{}, {"anthropic_api_key": ""}])
def test_it_needs_an_api_key(config):
    with pytest.raises(ServingError) as info:
        AnthropicProvider(EntitySpec("ep", "anthropic", MODEL, CHAT, config))
    assert info.value.status == 400 and "'anthropic_api_key'" in info.value.message


@pytest.mark.parametrize("base", ["api.anthropic.com", "ftp://api.anthropic.com", 42])
def test_it_rejects_an_api_base_that_is_not_an_http_url(base):
    with pytest.raises(ServingError) as info:
        make_provider(base)
    assert "'anthropic_api_base'" in info.value.message


@pytest.mark.parametrize("base, url", [
    (None, "https://api.anthropic.com/v1/messages"),
    ("https://gateway.example.com/anthropic/", "https://gateway.example.com/anthropic/v1/messages"),
    ("https://gateway.example.com/anthropic/v1", "https://gateway.example.com/anthropic/v1/messages"),
])
def test_it_appends_the_messages_path_to_the_api_root(base, url):
    assert make_provider(base).url == url


def test_it_rejects_a_timeout_that_is_not_a_positive_number():
    with pytest.raises(ServingError) as info:
        make_provider(None, timeout="soon")
    assert "'timeout'" in info.value.message


def test_it_serves_chat_only_and_never_shows_the_key():
    from endpoints.config import check_entity
    from endpoints.secrets import OPERATOR

    provider = make_provider("https://user:hunter2@gateway.example.com/?token=t0k")
    shown = repr(provider) + repr(provider.describe()) + repr(provider.spec)
    assert API_KEY not in shown and "hunter2" not in shown and "t0k" not in shown
    assert provider.describe() == {"anthropic_api_base": "https://gateway.example.com", "upstream_model": MODEL}
    assert provider.tasks == {CHAT}
    row = {"name": "claude", "provider": "anthropic", "model": MODEL, "config": {"anthropic_api_key": API_KEY}}
    assert check_entity(COMPLETIONS, row, user=OPERATOR) == f"model '{MODEL}' of provider 'anthropic' cannot serve {COMPLETIONS}"


# --- errors --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_maps_an_anthropic_400_to_400_with_the_vendor_message(provider, anthropic_upstream):
    anthropic_upstream.fail(400, "messages.0.content: Input should be a valid list")
    error = await failure(provider.chat(chat()))
    assert (error.status, error.code) == (400, "INVALID_PARAMETER_VALUE")
    assert error.message == "Anthropic rejected the request (HTTP 400): messages.0.content: Input should be a valid list"


@pytest.mark.asyncio
async def test_it_says_anthropic_rejected_the_key_without_echoing_it(anthropic_upstream, pool):  # noqa: F811
    provider = make_provider(anthropic_upstream.base_url, anthropic_api_key="sk-ant-wrong-key-42")
    error = await failure(provider.chat(chat()))
    assert anthropic_upstream.last_request.headers["x-api-key"] == "sk-ant-wrong-key-42"
    assert (error.status, error.code) == (400, "INVALID_PARAMETER_VALUE")
    assert "rejected the configured API key" in error.message and "sk-ant-wrong-key-42" not in error.message


@pytest.mark.asyncio
async def test_it_maps_a_429_keeping_retry_after(provider, anthropic_upstream):
    anthropic_upstream.fail(429, "Number of request tokens has exceeded your per-minute rate limit",
                            type="rate_limit_error", headers={"retry-after": "12"})
    error = await failure(provider.chat(chat()))
    assert (error.status, error.code, error.retry_after) == (429, "REQUEST_LIMIT_EXCEEDED", 12)
    assert "per-minute rate limit" in error.message


@pytest.mark.asyncio
async def test_it_maps_529_overloaded_to_a_retryable_503(provider, anthropic_upstream):
    anthropic_upstream.fail(529, "Overloaded", type="overloaded_error")
    error = await failure(provider.chat(chat(stream=False)))
    assert (error.status, error.code, error.retryable) == (503, "TEMPORARILY_UNAVAILABLE", True)
    assert error.message == "Anthropic is unavailable (HTTP 529): Overloaded"


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [400, 404, 429, 500, 529])
async def test_no_api_key_appears_in_any_error_message(provider, anthropic_upstream, status):
    anthropic_upstream.fail(status, f"bad request from key {API_KEY}")
    error = await failure(provider.chat(chat()))
    assert API_KEY not in error.message and API_KEY not in repr(error)
    assert "[redacted]" in error.message


@pytest.mark.asyncio
async def test_it_raises_an_overloaded_error_event_sent_mid_stream_as_a_503(provider, anthropic_upstream):
    anthropic_upstream.mid_stream_error = {"type": "overloaded_error", "message": "Overloaded"}
    stream = provider.chat(chat())
    assert await stream.__anext__() == TextDelta("Hello")
    with pytest.raises(ServingError) as info:
        await stream.__anext__()
    assert (info.value.status, info.value.retryable) == (503, True)
    assert "Overloaded" in info.value.message


@pytest.mark.asyncio
async def test_it_maps_a_mid_stream_invalid_request_error_to_400(provider, anthropic_upstream):
    anthropic_upstream.mid_stream_error = {"type": "invalid_request_error", "message": "prompt is too long"}
    with pytest.raises(ServingError) as info:
        await drain(provider.chat(chat()))
    assert info.value.status == 400 and "prompt is too long" in info.value.message


@pytest.mark.asyncio
async def test_a_stream_cut_short_before_message_stop_is_an_error_not_an_answer(provider, anthropic_upstream):
    anthropic_upstream.cut_short = True
    received: list = []
    with pytest.raises(ServingError) as info:
        async for event in provider.chat(chat()):
            received.append(event)
    assert received == [TextDelta("Hello"), TextDelta(","), TextDelta(" world"), TextDelta("!")]
    assert info.value.status == 503 and "before the answer was complete" in info.value.message


@pytest.mark.asyncio
async def test_it_maps_an_anthropic_that_does_not_answer_in_time_to_504(anthropic_upstream, pool):  # noqa: F811
    anthropic_upstream.delay = 2
    provider = make_provider(anthropic_upstream.base_url, timeout=0.2)
    started = time.monotonic()
    error = await failure(provider.chat(chat()))
    assert (error.status, error.code) == (504, "DEADLINE_EXCEEDED")
    assert time.monotonic() - started < 1.5


@pytest.mark.asyncio
async def test_it_closes_the_upstream_stream_when_the_consumer_stops(provider, anthropic_upstream):
    await assert_closing_the_stream_disconnects(provider, anthropic_upstream)


# --- through Fondasi's HTTP API, with the real openai client -------------------------------

ENDPOINTS = """
endpoints:
  - name: claude
    task: llm/v1/chat
    served_entities:
      - name: claude-entity
        external_model:
          name: claude-sonnet-4-5
          provider: anthropic
          anthropic_config: {{anthropic_api_key_plaintext: "{key}", anthropic_api_base: "{base}"}}
"""


@pytest_asyncio.fixture
async def client(anthropic_upstream, token, pool):  # noqa: F811
    """The real AsyncOpenAI client, speaking HTTP to Fondasi's ASGI app in this process."""
    from endpoints.config import apply, parse_text
    from playground.asgi import application

    await asyncio.to_thread(apply, parse_text(ENDPOINTS.format(key=API_KEY, base=anthropic_upstream.base_url)))
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http_client:
        yield openai.AsyncOpenAI(api_key=token, base_url="http://testserver/serving-endpoints",
                                 http_client=http_client, max_retries=0)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_openai_client_gets_claudes_reasoning_answer_and_can_send_it_back(client, anthropic_upstream):
    anthropic_upstream.thinking = ["Rayleigh", " scattering."]
    anthropic_upstream.usage = {"input_tokens": 20, "cache_read_input_tokens": 100, "output_tokens": 30}
    answer = await client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "Why is the sky blue?"}],
        extra_body={"thinking": {"type": "enabled", "budget_tokens": 1024}},
    )
    assert anthropic_upstream.last_request.json["max_tokens"] == 5120
    message = answer.choices[0].message
    assert message.content == [
        {"type": "reasoning", "summary": [
            {"type": "summary_text", "text": "Rayleigh scattering.", "signature": anthropic_upstream.signature}]},
        {"type": "text", "text": "Hello, world!"},
    ]
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (120, 30)
    # The whole assistant message sent back: its reasoning reaches Anthropic as a signed thinking block.
    await client.chat.completions.create(
        model="claude", extra_body={"thinking": {"type": "enabled", "budget_tokens": 1024}},
        messages=[{"role": "user", "content": "Why is the sky blue?"}, {"role": "assistant", "content": message.content},
                  {"role": "user", "content": "Shorter?"}],
    )
    assert anthropic_upstream.last_request.json["messages"][1] == {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "Rayleigh scattering.", "signature": anthropic_upstream.signature},
        {"type": "text", "text": "Hello, world!"},
    ]}


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_openai_client_streams_claudes_tool_calls(client, anthropic_upstream):
    anthropic_upstream.pieces = []
    anthropic_upstream.tool_uses = [{"name": "get_weather", "input": {"city": "Oslo"}}]
    stream = await client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER],
        parallel_tool_calls=False, stream=True, stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert anthropic_upstream.last_request.json["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    calls = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert (calls[0].id, calls[0].function.name) == ("toolu_0", "get_weather")
    assert json.loads("".join(c.function.arguments or "" for c in calls)) == {"city": "Oslo"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage.total_tokens == 11


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_openai_client_sees_anthropics_limits_as_its_own_exceptions(client, anthropic_upstream):
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "x"}], n=2)
    assert "Parameter 'n' is not supported" in str(bad.value) and "provider 'anthropic'" in str(bad.value)
    assert anthropic_upstream.requests == []  # refused before any call
    anthropic_upstream.fail(529, "Overloaded", type="overloaded_error")
    with pytest.raises(openai.InternalServerError) as busy:
        await client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "x"}])
    assert busy.value.status_code == 503 and "Overloaded" in str(busy.value)
