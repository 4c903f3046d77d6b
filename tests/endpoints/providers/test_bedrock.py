"""The Amazon Bedrock provider, against a fake Bedrock runtime over real HTTP on 127.0.0.1.

The fake checks each request's SigV4 signature with botocore and streams real AWS event-stream
frames, so these tests run the provider's signer, HTTP client and event-stream parser for real.
"""
from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from asgiref.sync import sync_to_async

from endpoints.errors import ServingError
from endpoints.events import Embeddings, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from endpoints.providers.base import EntitySpec
from endpoints.providers.bedrock import BedrockProvider, StreamState, converse_body, converse_events, stream_events
from endpoints.schemas import CHAT, EMBEDDINGS, EmbeddingsRequest
from tests.endpoints.providers.helpers import assert_closing_the_stream_disconnects, chat, drain, failure
from tests.fakes.bedrock_upstream import FakeBedrock, bedrock_upstream, model_of  # noqa: F401 (fixture)

MODEL = "anthropic.claude-3-7-sonnet-20250219-v1:0"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="


pytestmark = pytest.mark.usefixtures("no_retries")  # vendor errors reach the tests at once


def config(**overrides: Any) -> dict[str, Any]:
    return {
        "aws_region": FakeBedrock.REGION,
        "aws_access_key_id": FakeBedrock.ACCESS_KEY,
        "aws_secret_access_key": FakeBedrock.SECRET_KEY,
        "bedrock_provider": "anthropic",
        **overrides,
    }


def make_provider(task: str = CHAT, model: str = MODEL, **overrides: Any) -> BedrockProvider:
    spec = EntitySpec(name="ep", provider="amazon-bedrock", model=model, task=task, config=config(**overrides))
    return BedrockProvider(spec)


@pytest.fixture
def provider(bedrock_upstream: FakeBedrock, pool) -> BedrockProvider:  # noqa: F811
    return make_provider(bedrock_endpoint_url=bedrock_upstream.url)


# --- pure translators ----------------------------------------------------------------------


def test_it_translates_a_whole_conversation_into_converse_blocks():
    call = {"id": "tooluse_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    request = chat(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather where this is?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Paris.", "signature": "sig-1"}]},
                {"type": "text", "text": "Let me check."},
            ], "tool_calls": [call]},
            {"role": "tool", "content": "18°C", "tool_call_id": "tooluse_1"},
            {"role": "user", "content": "And tomorrow?"},
        ],
        max_tokens=512, temperature=0.2, top_p=0.9, stop=["END"],
    )
    assert converse_body(request, "anthropic") == {
        "system": [{"text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [
                {"text": "Weather where this is?"},
                {"image": {"format": "png", "source": {"bytes": PNG}}},
            ]},
            {"role": "assistant", "content": [
                {"reasoningContent": {"reasoningText": {"text": "Paris.", "signature": "sig-1"}}},
                {"text": "Let me check."},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}},
            ]},
            # The tool result and the next user words are one user turn: Bedrock wants turns alternating.
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "18°C"}]}},
                {"text": "And tomorrow?"},
            ]},
        ],
        "inferenceConfig": {"maxTokens": 512, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
    }


def test_it_sends_tools_as_tool_specs_with_the_matching_tool_choice():
    tools = [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.",
                                          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "now"}},
    ]
    specs = [
        {"toolSpec": {"name": "get_weather", "description": "Weather for a city.",
                      "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}},
        {"toolSpec": {"name": "now", "inputSchema": {"json": {"type": "object", "properties": {}}}}},
    ]
    assert converse_body(chat(tools=tools), "anthropic")["toolConfig"] == {"tools": specs}
    assert converse_body(chat(tools=tools, tool_choice="required"), "anthropic")["toolConfig"] == {
        "tools": specs, "toolChoice": {"any": {}},
    }
    named = {"type": "function", "function": {"name": "now"}}
    assert converse_body(chat(tools=tools, tool_choice=named), "anthropic")["toolConfig"]["toolChoice"] == {"tool": {"name": "now"}}
    assert "toolConfig" not in converse_body(chat(tools=tools, tool_choice="none"), "anthropic")


def test_thinking_and_extra_params_become_additional_model_request_fields():
    request = chat(max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 1024}, extra_params={"top_k": 40})
    body = converse_body(request, "anthropic")
    assert body["additionalModelRequestFields"] == {"top_k": 40, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    effort = converse_body(chat(max_tokens=4000, reasoning_effort="medium"), "anthropic")
    assert effort["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 2000}}


def test_thinking_for_a_model_that_is_not_anthropics_is_a_400_naming_the_bedrock_provider():
    with pytest.raises(ServingError) as info:
        converse_body(chat(thinking={"type": "enabled", "budget_tokens": 1024}), "meta")
    assert info.value.status == 400
    assert "'thinking'" in info.value.message and "'meta'" in info.value.message


def test_parallel_tool_calls_false_is_a_400():
    tools = [{"type": "function", "function": {"name": "f"}}]
    with pytest.raises(ServingError) as info:
        converse_body(chat(tools=tools, parallel_tool_calls=False), "anthropic")
    assert "parallel_tool_calls" in info.value.message


def test_tool_call_arguments_that_are_not_json_are_a_400_naming_them():
    call = {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
    with pytest.raises(ServingError) as info:
        converse_body(chat(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]}]), "anthropic")
    assert "messages[1].tool_calls[0].function.arguments" in info.value.message


def test_it_reads_stream_events_keeping_tool_calls_apart_by_content_block():
    state = StreamState()
    assert stream_events("messageStart", {"role": "assistant"}, state) == []
    assert stream_events("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}, state) == [TextDelta("Hi")]
    start = {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu_a", "name": "a"}}}
    assert stream_events("contentBlockStart", start, state) == [ToolCallDelta(call=0, id="tu_a", name="a")]
    start = {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tu_b", "name": "b"}}}
    assert stream_events("contentBlockStart", start, state) == [ToolCallDelta(call=1, id="tu_b", name="b")]
    piece = {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{}"}}}
    assert stream_events("contentBlockDelta", piece, state) == [ToolCallDelta(call=0, arguments="{}")]
    assert stream_events("metadata", {"usage": {"inputTokens": 3, "outputTokens": 5}}, state) == [Usage(3, 5)]


@pytest.mark.parametrize(("reason", "ours"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("guardrail_intervened", "content_filter"), ("content_filtered", "content_filter"),
])
def test_it_maps_stop_reasons(reason, ours):
    assert stream_events("messageStop", {"stopReason": reason}, StreamState()) == [Finish(ours)]
    assert converse_events({"output": {"message": {"content": []}}, "stopReason": reason})[0] == Finish(ours)


@pytest.mark.parametrize(("field", "value", "named"), [
    ("aws_region", None, "aws_region"),
    ("aws_region", "us-east-1.evil.example/", "aws_region"),
    ("aws_access_key_id", "", "aws_access_key_id"),
    ("aws_secret_access_key", None, "aws_secret_access_key"),
    ("bedrock_provider", "openai-compatible", "bedrock_provider"),
    ("bedrock_endpoint_url", "bedrock.local:8443", "bedrock_endpoint_url"),
])
def test_it_rejects_a_config_naming_the_field(field, value, named):
    with pytest.raises(ServingError) as info:
        make_provider(**{field: value})
    assert info.value.status == 400 and f"'{named}'" in info.value.message
    assert FakeBedrock.SECRET_KEY not in info.value.message


def test_embeddings_need_a_titan_or_cohere_model():
    with pytest.raises(ServingError) as info:
        make_provider(EMBEDDINGS, "meta.llama3-8b-instruct-v1:0", bedrock_provider="meta")
    assert "'amazon' or 'cohere'" in info.value.message


def test_it_never_shows_the_credentials_in_repr_or_describe():
    provider = make_provider(aws_session_token="FwoGZXIvYXdzEXAMPLETOKEN")
    shown = repr(provider) + repr(provider.describe()) + repr(provider.spec)
    assert FakeBedrock.SECRET_KEY not in shown and "FwoGZXIvYXdzEXAMPLETOKEN" not in shown
    assert provider.describe() == {
        "aws_region": "us-east-1", "bedrock_provider": "anthropic",
        "bedrock_endpoint_url": "https://bedrock-runtime.us-east-1.amazonaws.com", "upstream_model": MODEL,
    }


# --- over HTTP -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_streams_converse_stream_signed_with_sigv4(provider, bedrock_upstream):
    events = await drain(provider.chat(chat(max_tokens=64)))
    assert events == [
        TextDelta("Hello"), TextDelta(","), TextDelta(" world"), TextDelta("!"), Finish("stop"), Usage(11, 4),
    ]
    sent = bedrock_upstream.last_request
    # The model id is URL-encoded into the path (its ':' would otherwise break SigV4's canonical path).
    assert sent.path == "/model/anthropic.claude-3-7-sonnet-20250219-v1%3A0/converse-stream"
    assert model_of(sent.path) == MODEL
    assert sent.json == {"messages": [{"role": "user", "content": [{"text": "Hi"}]}], "inferenceConfig": {"maxTokens": 64}}
    assert sent.headers["accept"] == "application/vnd.amazon.eventstream"
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={FakeBedrock.ACCESS_KEY}/")
    assert "/us-east-1/bedrock/aws4_request" in sent.headers["authorization"]
    assert "x-amz-security-token" not in sent.headers


@pytest.mark.asyncio
async def test_a_request_signed_with_the_wrong_secret_is_refused_and_the_secret_is_not_echoed(bedrock_upstream, pool):  # noqa: F811
    provider = make_provider(bedrock_endpoint_url=bedrock_upstream.url, aws_secret_access_key="not-the-secret-0123456789")
    error = await failure(provider.chat(chat()))
    assert error.status == 400 and "rejected the configured" in error.message
    assert "not-the-secret-0123456789" not in error.message


@pytest.mark.asyncio
async def test_a_retried_request_still_carries_a_valid_signature(provider, bedrock_upstream, monkeypatch):
    monkeypatch.setenv("FONDASI_HTTP_RETRIES", "1")
    bedrock_upstream.fail(503, "ServiceUnavailableException", "Try again.", times=1)
    assert (await drain(provider.chat(chat())))[-1] == Usage(11, 4)
    assert len(bedrock_upstream.requests) == 2


@pytest.mark.asyncio
async def test_it_signs_the_session_token_of_temporary_credentials(bedrock_upstream, pool):  # noqa: F811
    bedrock_upstream.session_token = "FwoGZXIvYXdzEXAMPLETOKEN"
    provider = make_provider(bedrock_endpoint_url=bedrock_upstream.url, aws_session_token="FwoGZXIvYXdzEXAMPLETOKEN")
    assert (await drain(provider.chat(chat())))[-1] == Usage(11, 4)
    assert bedrock_upstream.last_request.headers["x-amz-security-token"] == "FwoGZXIvYXdzEXAMPLETOKEN"
    missing = make_provider(bedrock_endpoint_url=bedrock_upstream.url)
    assert (await failure(missing.chat(chat()))).status == 400


@pytest.mark.asyncio
async def test_it_asks_converse_for_one_answer_when_the_client_does_not_stream(provider, bedrock_upstream):
    bedrock_upstream.stop_reason = "max_tokens"
    events = await drain(provider.chat(chat(stream=False)))
    assert bedrock_upstream.last_request.path.endswith("/converse")
    assert events == [TextDelta("Hello, world!"), Finish("length"), Usage(11, 4)]


@pytest.mark.asyncio
async def test_it_streams_reasoning_with_its_signature_then_the_answer(provider, bedrock_upstream):
    bedrock_upstream.reasoning_pieces = ["Let me", " think."]
    events = await drain(provider.chat(chat(max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024})))
    sent = bedrock_upstream.last_request.json
    assert sent["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert events[:4] == [
        ReasoningDelta("Let me"), ReasoningDelta(" think."), ReasoningDelta("", signature="EqoBCkgIARAB-fake-signature"),
        TextDelta("Hello"),
    ]


@pytest.mark.asyncio
async def test_it_streams_tool_calls(provider, bedrock_upstream):
    bedrock_upstream.pieces = []
    bedrock_upstream.tool_calls = [{"name": "get_weather", "input": {"city": "Paris"}}, {"name": "now", "input": {}}]
    tools = [{"type": "function", "function": {"name": "get_weather"}}, {"type": "function", "function": {"name": "now"}}]
    events = await drain(provider.chat(chat(tools=tools)))
    assert events == [
        ToolCallDelta(call=0, id="tooluse_0", name="get_weather"),
        ToolCallDelta(call=0, arguments='{"city":'),
        ToolCallDelta(call=0, arguments=' "Paris"}'),
        ToolCallDelta(call=1, id="tooluse_1", name="now"),
        ToolCallDelta(call=1, arguments="{"),
        ToolCallDelta(call=1, arguments="}"),
        Finish("tool_calls"),
        Usage(11, 4),
    ]


@pytest.mark.asyncio
async def test_it_reads_tool_calls_from_a_whole_answer(provider, bedrock_upstream):
    bedrock_upstream.pieces = []
    bedrock_upstream.tool_calls = [{"name": "get_weather", "input": {"city": "Paris"}}]
    events = await drain(provider.chat(chat(stream=False, tools=[{"type": "function", "function": {"name": "get_weather"}}])))
    assert events == [
        ToolCallDelta(call=0, id="tooluse_0", name="get_weather", arguments='{"city":"Paris"}'), Finish("tool_calls"), Usage(11, 4),
    ]


@pytest.mark.parametrize(("status", "error_type", "code", "retryable"), [
    (400, "ValidationException", "INVALID_PARAMETER_VALUE", False),
    (429, "ThrottlingException", "REQUEST_LIMIT_EXCEEDED", True),
    (503, "ServiceUnavailableException", "TEMPORARILY_UNAVAILABLE", True),
])
@pytest.mark.asyncio
async def test_it_maps_bedrock_errors_with_the_vendor_message(provider, bedrock_upstream, status, error_type, code, retryable):
    bedrock_upstream.fail(status, error_type, f"{error_type} happened: the model said no.")
    error = await failure(provider.chat(chat()))
    assert (error.code, error.retryable) == (code, retryable)
    assert f"{error_type} happened" in error.message and "Amazon Bedrock" in error.message


@pytest.mark.parametrize("error_type", ["AccessDeniedException", "UnrecognizedClientException"])
@pytest.mark.asyncio
async def test_it_reports_refused_credentials_without_echoing_them(provider, bedrock_upstream, error_type):
    bedrock_upstream.fail(403, error_type, f"denied for {FakeBedrock.SECRET_KEY}")
    error = await failure(provider.chat(chat()))
    assert error.status == 400 and "rejected the configured" in error.message
    assert FakeBedrock.SECRET_KEY not in error.message and FakeBedrock.ACCESS_KEY not in error.message


@pytest.mark.asyncio
async def test_an_exception_event_before_any_content_is_an_error_before_the_first_event(provider, bedrock_upstream):
    bedrock_upstream.stream_exception = ("throttlingException", "Too many tokens, please wait before trying again.")
    bedrock_upstream.exception_first = True
    error = await failure(provider.chat(chat()))
    assert error.status == 429 and error.retry_after == 1
    assert "Too many tokens" in error.message


@pytest.mark.asyncio
async def test_an_exception_event_mid_stream_is_raised_after_the_content_so_far(provider, bedrock_upstream):
    bedrock_upstream.stream_exception = ("modelStreamErrorException", "The model stopped unexpectedly.")
    stream = provider.chat(chat())
    assert await stream.__anext__() == TextDelta("Hello")
    with pytest.raises(ServingError) as info:
        await stream.__anext__()
    assert info.value.status == 503 and "The model stopped unexpectedly." in info.value.message


@pytest.mark.asyncio
async def test_a_message_with_a_bad_crc_is_a_503_not_garbage(provider, bedrock_upstream):
    bedrock_upstream.corrupt_crc = True
    error = await failure(provider.chat(chat()))
    assert error.status == 503 and "malformed event-stream message" in error.message


@pytest.mark.asyncio
async def test_it_closes_the_upstream_stream_when_the_consumer_stops(provider, bedrock_upstream):
    await assert_closing_the_stream_disconnects(provider, bedrock_upstream)


@pytest.mark.asyncio
async def test_it_embeds_each_text_with_titan_in_input_order(bedrock_upstream, pool):  # noqa: F811
    provider = make_provider(EMBEDDINGS, "amazon.titan-embed-text-v2:0", bedrock_provider="amazon",
                             bedrock_endpoint_url=bedrock_upstream.url)
    texts = ["one", "two words", "three whole words"]
    request = EmbeddingsRequest.model_validate({"input": texts, "extra_params": {"dimensions": 256}})
    out = await provider.embed(request)
    # One call per text, concurrently: the fake's vector carries its text's length.
    assert out == Embeddings([[0.0, 3.0, 0.5], [0.0, 9.0, 0.5], [0.0, 17.0, 0.5]], prompt_tokens=6)
    assert sorted(r.json["inputText"] for r in bedrock_upstream.requests) == ["one", "three whole words", "two words"]
    assert all(r.json["dimensions"] == 256 and r.path == "/model/amazon.titan-embed-text-v2%3A0/invoke"
               for r in bedrock_upstream.requests)


@pytest.mark.asyncio
async def test_it_embeds_with_cohere_embed_on_bedrock(bedrock_upstream, pool):  # noqa: F811
    provider = make_provider(EMBEDDINGS, "cohere.embed-english-v3", bedrock_provider="cohere",
                             bedrock_endpoint_url=bedrock_upstream.url)
    out = await provider.embed(EmbeddingsRequest.model_validate({"input": ["a b", "c"]}))
    assert out == Embeddings([[0.0, 3.0, 0.5], [1.0, 1.0, 0.5]], prompt_tokens=3)
    sent = bedrock_upstream.last_request.json
    assert sent == {"texts": ["a b", "c"], "input_type": "search_document", "embedding_types": ["float"]}


# --- through Fondasi's HTTP API, with the real openai client --------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_openai_client_chats_with_a_bedrock_endpoint(bedrock_upstream, auth_headers, pool):  # noqa: F811
    from endpoints.config import apply, parse_text
    from playground.asgi import application

    await sync_to_async(apply)(parse_text(f"""
endpoints:
  - name: claude-on-bedrock
    task: llm/v1/chat
    served_entities:
      - external_model:
          name: "{MODEL}"
          provider: amazon-bedrock
          amazon_bedrock_config:
            aws_region: us-east-1
            aws_access_key_id: {FakeBedrock.ACCESS_KEY}
            aws_secret_access_key: "{FakeBedrock.SECRET_KEY}"
            bedrock_provider: anthropic
            bedrock_endpoint_url: "{bedrock_upstream.url}"
"""), source="api")
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http_client:
        client = openai.AsyncOpenAI(api_key=auth_headers["Authorization"].split()[1], max_retries=0,
                                    base_url="http://testserver/serving-endpoints", http_client=http_client)
        answer = await client.chat.completions.create(
            model="claude-on-bedrock", messages=[{"role": "user", "content": "Hi"}], max_tokens=32)
        assert answer.choices[0].message.content == "Hello, world!"
        assert answer.choices[0].finish_reason == "stop"
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (11, 4)

        stream = await client.chat.completions.create(
            model="claude-on-bedrock", messages=[{"role": "user", "content": "Hi"}], stream=True)
        pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
        assert pieces == ["Hello", ",", " world", "!"]

        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="claude-on-bedrock", messages=[{"role": "user", "content": "Hi"}], n=2)
        assert "'n'" in refused.value.message and "amazon-bedrock" in refused.value.message

        bedrock_upstream.fail(429, "ThrottlingException", "Too many requests, please wait before trying again.")
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="claude-on-bedrock", messages=[{"role": "user", "content": "Hi"}])
        assert "Too many requests" in limited.value.message
    assert [model_of(r.path) for r in bedrock_upstream.requests] == [MODEL] * 3
