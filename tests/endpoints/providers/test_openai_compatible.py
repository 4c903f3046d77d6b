"""The OpenAI-compatible provider, against a fake vendor over real HTTP on 127.0.0.1."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from endpoints.errors import ServingError
from endpoints.events import Embeddings, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from endpoints.providers import http
from endpoints.providers.base import EntitySpec
from endpoints.providers.openai_compatible import (
    OpenAICompatibleProvider,
    chat_body,
    chat_events,
    completion_body,
    completion_events,
    embeddings_result,
)
from endpoints.schemas import CHAT, CompletionRequest, EmbeddingsRequest
from tests.endpoints.providers.helpers import assert_closing_the_stream_disconnects, chat, drain, failure, free_port
from tests.fakes.openai_upstream import FakeOpenAIUpstream, openai_upstream  # noqa: F401 (fixture)

KEY = "sk-test-0123456789abcdef"


def make_provider(base_url: str, **config: Any) -> OpenAICompatibleProvider:
    config = {"openai_api_base": base_url, "openai_api_key": KEY, **config}
    return OpenAICompatibleProvider(
        EntitySpec(name="ep", provider="openai-compatible", model="llama-test", task=CHAT, config=config)
    )


@pytest.fixture
def provider(openai_upstream: FakeOpenAIUpstream, pool) -> OpenAICompatibleProvider:  # noqa: F811
    return make_provider(openai_upstream.base_url, openai_organization="org-42")


# --- pure translators ----------------------------------------------------------------------


def test_it_translates_a_chat_request_with_every_supported_param():
    request = chat(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi", "name": "ann"}],
        max_tokens=32, temperature=0.5, top_p=0.9, stop="END", n=2, seed=7,
        presence_penalty=0.1, frequency_penalty=0.2, user="alice", stream=True,
    )
    assert chat_body(request, "llama-test") == {
        "model": "llama-test",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi", "name": "ann"}],
        "max_tokens": 32, "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "n": 2, "seed": 7,
        "presence_penalty": 0.1, "frequency_penalty": 0.2,
        "stream": True, "stream_options": {"include_usage": True},
    }


def test_it_leaves_unset_params_out_of_the_body():
    assert chat_body(chat(), "m") == {
        "model": "m", "messages": [{"role": "user", "content": "Hi"}],
        "stream": True, "stream_options": {"include_usage": True},
    }


def test_it_passes_image_parts_and_tool_turns_through():
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    request = chat(messages=[
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ])
    assert chat_body(request, "m")["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ]


def test_it_translates_chat_chunks_into_events():
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    text = {"choices": [{"index": 1, "delta": {"content": "Hel"}, "finish_reason": None}]}
    end = {"choices": [{"index": 1, "delta": {}, "finish_reason": "length"}]}
    usage = {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}}
    assert chat_events(role) == []
    assert chat_events(text) == [TextDelta("Hel", 1)]
    assert chat_events(end) == [Finish("length", 1)]
    assert chat_events(usage) == [Usage(9, 12)]


def test_it_maps_legacy_and_unknown_finish_reasons():
    def reason(value: str) -> str:
        return chat_events({"choices": [{"index": 0, "delta": {}, "finish_reason": value}]})[0].reason

    assert reason("function_call") == "tool_calls"
    assert reason("content_filter") == "content_filter"
    assert reason("eos") == "stop"


def test_it_translates_completion_chunks():
    chunk = {"choices": [{"index": 3, "text": " there", "logprobs": None, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 2, "completion_tokens": 1}}
    assert completion_events(chunk) == [TextDelta(" there", 3), Finish("stop", 3), Usage(2, 1)]


def test_it_translates_a_completion_request():
    request = CompletionRequest.model_validate({"prompt": ["a", "b"], "max_tokens": 5, "extra_params": {"top_k": 3}, "stream": True})
    assert completion_body(request, "m") == {
        "model": "m", "prompt": ["a", "b"], "max_tokens": 5, "top_k": 3,
        "stream": True, "stream_options": {"include_usage": True},
    }


def test_it_sorts_embeddings_by_index():
    payload = {"data": [{"index": 1, "embedding": [1.0]}, {"index": 0, "embedding": [0.0]}], "usage": {"prompt_tokens": 4}}
    assert embeddings_result(payload, 2) == Embeddings([[0.0], [1.0]], 4)


def test_it_rejects_a_vendor_answer_with_the_wrong_number_of_embeddings():
    with pytest.raises(ServingError) as info:
        embeddings_result({"data": [{"index": 0, "embedding": [0.0]}]}, 2)
    assert info.value.status == 503
    assert "1 embeddings for 2 inputs" in info.value.message


@pytest.mark.parametrize("base", [None, "", "127.0.0.1:8000/v1", "ftp://host/v1"])
def test_it_rejects_a_missing_or_non_http_api_base(base):
    with pytest.raises(ServingError) as info:
        make_provider(base)
    assert info.value.status == 400
    assert "openai_api_base" in info.value.message


def test_it_rejects_a_timeout_that_is_not_a_positive_number():
    with pytest.raises(ServingError) as info:
        make_provider("http://127.0.0.1:1/v1", timeout="soon")
    assert "'timeout'" in info.value.message


def test_it_never_shows_the_key_or_url_credentials_in_repr_or_describe():
    provider = make_provider("http://admin:hunter2@127.0.0.1:8000/v1/?token=t0k")
    shown = repr(provider) + repr(provider.describe())
    assert KEY not in shown and "hunter2" not in shown and "t0k" not in shown
    assert provider.describe() == {"openai_api_base": "http://127.0.0.1:8000/v1", "upstream_model": "llama-test"}


@pytest.mark.asyncio
async def test_it_keeps_a_query_string_of_the_api_base_after_the_path(openai_upstream, pool):  # noqa: F811
    provider = make_provider(openai_upstream.base_url + "/?api-version=2024-06-01")
    await drain(provider.chat(chat()))
    assert openai_upstream.last_request.path == "/v1/chat/completions?api-version=2024-06-01"


def test_it_reads_timeouts_and_pool_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("FONDASI_HTTP_CONNECT_TIMEOUT", "2.5")
    monkeypatch.setenv("FONDASI_HTTP_MAX_CONNECTIONS", "7")
    timeout = http.timeout(read=12)
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (2.5, 12, 30, 30)
    assert http.timeout().read == 300
    assert http.limits().max_connections == 7
    assert http.limits(pools=4).max_connections == 2  # a pool's share, rounded up


def test_it_keeps_one_client_per_event_loop_and_drops_those_of_closed_loops():
    async def client():
        return http.get_client(), asyncio.get_running_loop()

    first, first_loop = asyncio.run(client())
    second, _ = asyncio.run(client())
    assert first is not second
    assert first_loop not in http._clients  # its loop closed: dropped when the next client was made

    async def in_turn():
        return [http.get_client() for _ in range(2 * int(http.setting("FONDASI_HTTP_POOLS")))]

    clients = asyncio.run(in_turn())
    pools = len(set(map(id, clients)))
    assert pools == 4 and clients[:pools] == clients[pools:]  # the loop's pools, used in turn


# --- over HTTP -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_sends_the_exact_chat_body_and_headers(provider, openai_upstream):
    await drain(provider.chat(chat(max_tokens=16, temperature=0.0, stop=["\n\n"], user="alice")))
    sent = openai_upstream.last_request
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.json == {
        "model": "llama-test",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 16, "temperature": 0.0, "stop": ["\n\n"],
        "stream": True, "stream_options": {"include_usage": True},
    }
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["openai-organization"] == "org-42"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["accept"] == "text/event-stream"


@pytest.mark.asyncio
async def test_it_asks_for_one_json_answer_when_the_client_does_not_stream(provider, openai_upstream):
    events = await drain(provider.chat(chat(stream=False, max_tokens=8)))
    sent = openai_upstream.last_request.json
    assert sent == {"model": "llama-test", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "stream": False}
    assert events == [TextDelta("Hello, world!", 0), Finish("stop", 0), Usage(7, 4)]


@pytest.mark.asyncio
async def test_it_streams_chat_events_in_order_with_usage_last(provider, openai_upstream):
    events = await drain(provider.chat(chat()))
    assert events == [
        TextDelta("Hello", 0), TextDelta(",", 0), TextDelta(" world", 0), TextDelta("!", 0),
        Finish("stop", 0), Usage(7, 4),
    ]


@pytest.mark.asyncio
async def test_it_streams_n_choices_each_with_its_own_finish(provider, openai_upstream):
    openai_upstream.pieces = ["a", "b"]
    openai_upstream.finish_reason = "length"
    events = await drain(provider.chat(chat(n=2)))
    assert openai_upstream.last_request.json["n"] == 2
    for index in (0, 1):
        mine = [e for e in events if not isinstance(e, Usage) and e.index == index]
        assert mine == [TextDelta("a", index), TextDelta("b", index), Finish("length", index)]
    assert events[-1] == Usage(7, 4)


@pytest.mark.asyncio
async def test_it_yields_zero_usage_when_the_vendor_reports_none(provider, openai_upstream):
    openai_upstream.usage = None
    events = await drain(provider.chat(chat()))
    assert events[-2:] == [Finish("stop", 0), Usage(0, 0)]


@pytest.mark.asyncio
async def test_it_finishes_every_choice_when_the_stream_ends_without_finish_or_done(provider, openai_upstream):
    openai_upstream.finish_reason = None
    openai_upstream.send_done = False
    events = await drain(provider.chat(chat(n=2)))
    assert events[-3:] == [Finish("stop", 0), Finish("stop", 1), Usage(7, 4)]


@pytest.mark.asyncio
async def test_it_streams_completions_for_each_prompt(provider, openai_upstream):
    openai_upstream.pieces = ["x"]
    request = CompletionRequest.model_validate({"prompt": ["one", "two"], "max_tokens": 3, "seed": 1, "stream": True})
    events = await drain(provider.complete(request))
    sent = openai_upstream.last_request
    assert sent.path == "/v1/completions"
    assert sent.json == {
        "model": "llama-test", "prompt": ["one", "two"], "max_tokens": 3, "seed": 1,
        "stream": True, "stream_options": {"include_usage": True},
    }
    assert events == [TextDelta("x", 0), TextDelta("x", 1), Finish("stop", 0), Finish("stop", 1), Usage(7, 4)]


@pytest.mark.asyncio
async def test_it_merges_extra_params_into_the_body_untouched(provider, openai_upstream):
    extra = {
        "top_k": 40, "repetition_penalty": 1.1, "chat_template_kwargs": {"enable_thinking": False},
        "stream_options": {"continuous_usage_stats": True},
        "model": "hijacked", "stream": False,  # these decide what we parse back: ours win
    }
    await drain(provider.chat(chat(max_tokens=8, extra_params=extra)))
    sent = openai_upstream.last_request.json
    assert sent == {
        "model": "llama-test", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
        "top_k": 40, "repetition_penalty": 1.1, "chat_template_kwargs": {"enable_thinking": False},
        "stream": True, "stream_options": {"continuous_usage_stats": True, "include_usage": True},
    }


@pytest.mark.asyncio
async def test_it_passes_vllms_min_tokens_through(provider, openai_upstream):
    await drain(provider.chat(chat(max_tokens=8, min_tokens=3)))
    assert openai_upstream.last_request.json["min_tokens"] == 3
    assert "min_tokens" in provider.supported_params


@pytest.mark.asyncio
async def test_it_sends_no_authorization_without_a_key(openai_upstream, pool):
    provider = OpenAICompatibleProvider(
        EntitySpec("ep", "openai-compatible", "m", CHAT, {"openai_api_base": openai_upstream.base_url + "/"})
    )
    await drain(provider.chat(chat()))
    assert "authorization" not in openai_upstream.last_request.headers
    assert "openai-organization" not in openai_upstream.last_request.headers
    assert openai_upstream.last_request.path == "/v1/chat/completions"


@pytest.mark.asyncio
async def test_it_accepts_the_plaintext_key_alias(openai_upstream, pool):
    provider = OpenAICompatibleProvider(
        EntitySpec("ep", "openai-compatible", "m", CHAT,
                   {"openai_api_base": openai_upstream.base_url, "openai_api_key_plaintext": "sk-plain"})
    )
    await drain(provider.chat(chat()))
    assert openai_upstream.last_request.headers["authorization"] == "Bearer sk-plain"


@pytest.mark.asyncio
async def test_it_returns_embeddings_in_input_order(provider, openai_upstream):
    openai_upstream.reverse_embeddings = True
    request = EmbeddingsRequest.model_validate({"input": ["a b", "ccc", "dd"], "extra_params": {"dimensions": 3}})
    result = await provider.embed(request)
    sent = openai_upstream.last_request
    assert sent.path == "/v1/embeddings"
    assert sent.json == {"model": "llama-test", "input": ["a b", "ccc", "dd"], "encoding_format": "float", "dimensions": 3}
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert result.vectors == [[0.0, 3.0, 0.5], [1.0, 3.0, 0.5], [2.0, 2.0, 0.5]]
    assert result.prompt_tokens == 4


@pytest.mark.asyncio
async def test_it_embeds_a_single_string(provider, openai_upstream):
    result = await provider.embed(EmbeddingsRequest.model_validate({"input": "hello"}))
    assert openai_upstream.last_request.json["input"] == "hello"
    assert result.vectors == [[0.0, 5.0, 0.5]]


@pytest.mark.asyncio
async def test_it_reads_a_json_answer_from_a_server_that_ignores_stream(provider, openai_upstream):
    openai_upstream.ignore_stream = True
    events = await drain(provider.chat(chat(n=2)))
    assert events == [TextDelta("Hello, world!", 0), Finish("stop", 0), TextDelta("Hello, world!", 1),
                      Finish("stop", 1), Usage(7, 4)]


@pytest.mark.asyncio
async def test_it_reuses_the_pooled_connection_across_requests(provider, openai_upstream):
    pools = int(http.setting("FONDASI_HTTP_POOLS"))
    for _ in range(pools):  # the pools are used in turn: each request of the second round reuses one
        await drain(provider.chat(chat()))
        await provider.embed(EmbeddingsRequest.model_validate({"input": "x"}))
        await drain(provider.chat(chat()))
    peers = {request.peer for request in openai_upstream.requests}
    assert len(openai_upstream.requests) == 3 * pools
    assert len(peers) == pools  # streams are drained after [DONE], so each connection goes back to its pool


# --- errors --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_maps_an_upstream_400_to_400_with_the_vendor_message(provider, openai_upstream):
    openai_upstream.fail(400, "max_tokens is too large: 99999. This model supports at most 4096 tokens.")
    error = await failure(provider.chat(chat()))
    assert (error.status, error.code, error.retryable) == (400, "INVALID_PARAMETER_VALUE", False)
    assert error.message == (
        "OpenAI-compatible upstream rejected the request (HTTP 400): "
        "max_tokens is too large: 99999. This model supports at most 4096 tokens."
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [401, 403])
async def test_it_says_the_upstream_rejected_the_key_without_echoing_it(provider, openai_upstream, status):
    openai_upstream.fail(status, f"Incorrect API key provided: {KEY}. You can find your key at ...")
    error = await failure(provider.chat(chat()))
    assert (error.status, error.code) == (400, "INVALID_PARAMETER_VALUE")
    assert "rejected the configured API key" in error.message
    assert KEY not in error.message and "Incorrect API key" not in error.message


@pytest.mark.asyncio
async def test_it_maps_an_upstream_429_keeping_retry_after(provider, openai_upstream):
    openai_upstream.fail(429, "Rate limit reached", type="rate_limit_error", headers={"Retry-After": "7"})
    error = await failure(provider.chat(chat()))
    assert (error.status, error.code, error.retry_after, error.retryable) == (429, "REQUEST_LIMIT_EXCEEDED", 7, True)
    assert "Rate limit reached" in error.message


@pytest.mark.asyncio
async def test_it_defaults_retry_after_to_one_second_for_429(provider, openai_upstream):
    openai_upstream.fail(429, "slow down")
    error = await failure(provider.chat(chat()))
    assert error.retry_after == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [500, 502, 503])
async def test_it_maps_an_upstream_5xx_to_a_retryable_503(provider, openai_upstream, status):
    openai_upstream.fail(status, "CUDA out of memory", type="server_error")
    error = await failure(provider.chat(chat()))
    assert (error.status, error.code, error.retryable) == (503, "TEMPORARILY_UNAVAILABLE", True)
    assert error.retry_after == 1
    assert f"(HTTP {status}): CUDA out of memory" in error.message


@pytest.mark.asyncio
async def test_it_shortens_a_non_json_error_page(provider, openai_upstream):
    openai_upstream.fail(502, body=b"<html><body>" + b"Bad gateway " * 500 + b"</body></html>")
    error = await failure(provider.chat(chat()))
    assert error.status == 503
    assert len(error.message) < 1200


@pytest.mark.asyncio
async def test_it_maps_embeddings_errors_the_same_way(provider, openai_upstream):
    openai_upstream.fail(404, "model 'llama-test' not found", type="not_found_error")
    with pytest.raises(ServingError) as info:
        await provider.embed(EmbeddingsRequest.model_validate({"input": "x"}))
    assert info.value.status == 400
    assert "model 'llama-test' not found" in info.value.message


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [400, 404, 422, 429, 500, 503])
async def test_no_api_key_appears_in_any_error_message(provider, openai_upstream, status):
    openai_upstream.fail(status, f"bad request from key {KEY}", headers={"X-Echo": KEY})
    error = await failure(provider.chat(chat()))
    assert KEY not in error.message and KEY not in str(error) and KEY not in repr(error)
    assert "[redacted]" in error.message


@pytest.mark.asyncio
async def test_it_maps_connection_refused_to_503_naming_the_url(pool):
    port = free_port()  # bound then released: nothing listens there
    provider = make_provider(f"http://admin:hunter2@127.0.0.1:{port}/v1")
    error = await failure(provider.chat(chat()))
    assert (error.status, error.code, error.retryable) == (503, "TEMPORARILY_UNAVAILABLE", True)
    assert error.message == (
        f"Could not reach http://127.0.0.1:{port}/v1/chat/completions (OpenAI-compatible upstream): connection failed."
    )
    assert "hunter2" not in error.message and KEY not in error.message


@pytest.mark.asyncio
async def test_it_maps_an_upstream_that_does_not_answer_in_time_to_504(openai_upstream, pool):
    openai_upstream.delay = 2
    provider = make_provider(openai_upstream.base_url, timeout=0.2)
    started = time.monotonic()
    error = await failure(provider.chat(chat()))
    assert (error.status, error.code) == (504, "DEADLINE_EXCEEDED")
    assert time.monotonic() - started < 1.5
    assert await asyncio.to_thread(openai_upstream.wait_for_disconnect, 2)


@pytest.mark.asyncio
async def test_it_raises_a_vendor_error_sent_mid_stream(provider, openai_upstream):
    openai_upstream.mid_stream_error = {"error": {"message": "generation failed", "type": "server_error", "code": 500}}
    stream = provider.chat(chat())
    assert await stream.__anext__() == TextDelta("Hello", 0)
    with pytest.raises(ServingError) as info:
        await stream.__anext__()
    assert info.value.status == 503
    assert "generation failed" in info.value.message


@pytest.mark.asyncio
async def test_it_maps_a_mid_stream_bad_request_to_400(provider, openai_upstream):
    openai_upstream.mid_stream_error = {"error": {"message": "bad logits processor", "type": "BadRequestError", "code": 400}}
    with pytest.raises(ServingError) as info:
        await drain(provider.chat(chat()))
    assert info.value.status == 400


# --- cancellation --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_closes_the_upstream_stream_when_the_consumer_stops(provider, openai_upstream):
    await assert_closing_the_stream_disconnects(provider, openai_upstream)
    assert openai_upstream.disconnects == 1


@pytest.mark.asyncio
async def test_it_closes_the_upstream_stream_when_the_task_is_cancelled(provider, openai_upstream):
    openai_upstream.pieces = ["tok"] * 100
    openai_upstream.chunk_delay = 0.1
    received: list = []

    async def consume() -> None:
        async for event in provider.chat(chat()):
            received.append(event)

    task = asyncio.create_task(consume())
    while not received:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(openai_upstream.wait_for_disconnect, 2)
    assert time.monotonic() - started < 1
    assert len(received) < 20


# --- reasoning and tool calls --------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_streams_reasoning_content_as_reasoning_deltas_before_the_text(provider, openai_upstream):
    openai_upstream.reasoning_pieces = ["Hmm", ", let me see."]
    events = await drain(provider.chat(chat()))
    assert events[:3] == [ReasoningDelta("Hmm", 0), ReasoningDelta(", let me see.", 0), TextDelta("Hello", 0)]
    assert events[-1] == Usage(7, 4, reasoning_tokens=2)


@pytest.mark.asyncio
async def test_it_reads_reasoning_from_a_whole_answer(provider, openai_upstream):
    openai_upstream.reasoning_pieces = ["Thinking."]
    events = await drain(provider.chat(chat(stream=False)))
    assert events == [ReasoningDelta("Thinking.", 0), TextDelta("Hello, world!", 0), Finish("stop", 0), Usage(7, 4, reasoning_tokens=1)]


@pytest.mark.asyncio
async def test_it_streams_tool_call_deltas_and_passes_tools_through(provider, openai_upstream):
    openai_upstream.tool_calls = [{"name": "get_weather", "arguments": '{"city": "Paris"}'}]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    events = await drain(provider.chat(chat(tools=tools, tool_choice="required", parallel_tool_calls=False)))
    sent = openai_upstream.last_request.json
    assert sent["tools"] == tools and sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False
    assert events == [
        ToolCallDelta(call=0, index=0, id="call_0", name="get_weather", arguments=""),
        ToolCallDelta(call=0, index=0, arguments='{"city":'),
        ToolCallDelta(call=0, index=0, arguments=' "Paris"}'),
        Finish("tool_calls", 0),
        Usage(7, 4),
    ]


@pytest.mark.asyncio
async def test_it_reads_tool_calls_from_a_whole_answer(provider, openai_upstream):
    openai_upstream.tool_calls = [{"name": "a", "arguments": "{}"}, {"name": "b", "arguments": '{"x": 1}'}]
    events = await drain(provider.chat(chat(stream=False)))
    assert events[:2] == [
        ToolCallDelta(call=0, index=0, id="call_0", name="a", arguments="{}"),
        ToolCallDelta(call=1, index=0, id="call_1", name="b", arguments='{"x": 1}'),
    ]
    assert events[2] == Finish("tool_calls", 0)


def test_it_keeps_reasoning_blocks_sent_back_and_sends_the_assistant_text_as_a_string():
    block = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "because", "signature": "sig"}]}
    request = chat(messages=[
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": [block, {"type": "text", "text": "Rayleigh."}]},
        {"role": "user", "content": "Shorter?"},
    ])
    assert chat_body(request, "m")["messages"][1] == {"role": "assistant", "content": "Rayleigh."}


def test_thinking_is_a_400_naming_it_for_an_openai_compatible_server(openai_upstream):  # noqa: F811
    from endpoints.service import check_supported

    class Endpoint:
        name = "vllm"

    provider = make_provider(openai_upstream.base_url)
    request = chat(thinking={"type": "enabled", "budget_tokens": 8}, max_tokens=32)
    with pytest.raises(ServingError) as info:
        check_supported(Endpoint(), provider, request)
    assert info.value.status == 400 and "'thinking'" in info.value.message


def test_it_reads_tool_call_arguments_sent_as_an_object_or_left_out():
    chunk = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}},
        {"id": "call_b", "type": "function", "function": {"name": "g"}},
    ]}, "finish_reason": "tool_calls"}]}
    assert chat_events(chunk) == [
        ToolCallDelta(call=0, index=0, id="call_a", name="f", arguments='{"x":1}'),
        ToolCallDelta(call=1, index=0, id="call_b", name="g", arguments=""),
        Finish("tool_calls", 0),
    ]
