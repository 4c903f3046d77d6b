"""OpenAI's Responses API (``POST /serving-endpoints/responses``) with the real ``openai`` client, in
process over ASGI: the embedded model for text, streaming, instructions, reasoning and structured
output; a fake OpenAI-compatible vendor (real HTTP on 127.0.0.1) for function tools, the exact
translation and failures."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import time

import httpx
import openai
import pytest
import pytest_asyncio
from PIL import Image
from pydantic import BaseModel, Field

from endpoints.config import apply, parse_text
from endpoints.providers import http
from endpoints.signing import sign_reasoning
from tests.conftest import ROOT
from tests.fakes.openai_upstream import FakeOpenAIUpstream, openai_upstream  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

LOCAL = "local-smollm2-chat"
VENDOR = "vendor-chat"
ENDPOINTS = """
  - name: vendor-chat
    task: llm/v1/chat
    served_entities:
      - name: vendor-model
        vision: true
        external_model:
          name: a-vendor-model
          provider: openai-compatible
          openai_config: {{openai_api_base: "{base}"}}
"""
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = {"name": "get_weather", "arguments": '{"city": "Paris"}'}


@pytest.fixture
def vendor(openai_upstream: FakeOpenAIUpstream, db) -> FakeOpenAIUpstream:  # noqa: F811
    """The shipped endpoints, and ``vendor-chat`` served by the fake vendor."""
    apply(parse_text((ROOT / "endpoints.yaml").read_text() + ENDPOINTS.format(base=openai_upstream.base_url)))
    return openai_upstream


@pytest_asyncio.fixture
async def http_client(vendor):
    from playground.asgi import application

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://testserver") as client:
        yield client
    await http.aclose_client()


@pytest.fixture
def client(http_client, token) -> openai.AsyncOpenAI:
    """The real openai client, as a user configures it for Fondasi."""
    return openai.AsyncOpenAI(api_key=token, base_url="http://testserver/serving-endpoints",
                              http_client=http_client, max_retries=0)


async def events_of(stream) -> list:
    return [event async for event in stream]


# --- text -------------------------------------------------------------------------------------


async def test_it_answers_with_a_response_object_cut_at_max_output_tokens(client):
    response = await client.responses.create(
        model=LOCAL, input="Write a long story about a dragon.", max_output_tokens=4, temperature=0,
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.status == "incomplete" and [part.type for part in message.content] == ["output_text"]
    assert response.output_text == message.content[0].text and response.output_text.strip()
    usage = response.usage
    assert usage.output_tokens == 4 and usage.input_tokens > 5 and usage.total_tokens == usage.input_tokens + 4
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert (response.model, response.max_output_tokens, response.temperature) == ("smollm2-135m-instruct", 4, 0)


async def test_streamed_deltas_join_to_the_whole_answer_in_openais_event_order(client):
    request = dict(model=LOCAL, input="Count to five.", max_output_tokens=16, temperature=0)
    whole = await client.responses.create(**request)
    events = await events_of(await client.responses.create(**request, stream=True))
    assert [event.sequence_number for event in events] == list(range(len(events)))
    kinds = [event.type for event in events]
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert kinds == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * len(deltas),
        "response.output_text.done", "response.content_part.done", "response.output_item.done", f"response.{whole.status}",
    ]
    assert len(deltas) > 1 and "".join(deltas) == whole.output_text
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    final = events[-1].response
    assert final.id == events[0].response.id and final.output_text == whole.output_text
    assert final.usage.output_tokens == whole.usage.output_tokens
    item_id = events[2].item.id
    assert all(event.item_id == item_id for event in events if hasattr(event, "item_id"))
    assert events[-2].item.content[0].text == events[-4].text == whole.output_text


async def test_the_sdks_stream_helper_accepts_the_events(client, vendor):
    async with client.responses.stream(model=VENDOR, input="Hi") as stream:
        deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert deltas == ["Hello", ",", " world", "!"]
    assert final.status == "completed" and final.output_text == "Hello, world!"
    assert final.usage.input_tokens == 7 and final.usage.output_tokens == 4


async def test_the_wire_has_event_lines_named_as_the_data_and_no_done_marker(http_client, token):
    response = await http_client.post("/serving-endpoints/responses", headers={"Authorization": f"Bearer {token}"},
                                      json={"model": VENDOR, "input": "Hi", "stream": True})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache" and response.headers["served-model-name"] == "vendor-model"
    blocks = response.text.split("\n\n")
    assert blocks[-1] == "" and "[DONE]" not in response.text
    for block in blocks[:-1]:
        event_line, data_line = block.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {data['type']}"
    assert json.loads(blocks[-2].split("\n")[1][6:])["type"] == "response.completed"


async def test_instructions_are_a_system_message(client):
    instructions, question = "You are a pirate. Answer like one.", "Who are you?"
    response = await client.responses.create(
        model=LOCAL, instructions=instructions, input=question, max_output_tokens=12, temperature=0,
    )
    chat = await client.chat.completions.create(
        model=LOCAL, messages=[{"role": "system", "content": instructions}, {"role": "user", "content": question}],
        max_tokens=12, temperature=0,
    )
    assert response.output_text == chat.choices[0].message.content
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    assert response.instructions == instructions


# --- function tools ---------------------------------------------------------------------------


async def test_function_tools_round_trip_through_a_vendor(client, vendor):
    vendor.tool_calls = [CALL]
    first = await client.responses.create(
        model=VENDOR, input="Weather in Paris?", tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"}, parallel_tool_calls=False,
    )
    sent = vendor.last_request.json
    function = {key: WEATHER[key] for key in ("name", "description", "parameters")}
    assert sent["tools"] == [{"type": "function", "function": function}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False
    [call] = first.output
    assert call.type == "function_call" and call.id.startswith("fc_") and call.status == "completed"
    assert (call.call_id, call.name, call.arguments) == ("call_0", "get_weather", CALL["arguments"])
    assert first.status == "completed" and first.output_text == ""
    assert first.tools[0].name == "get_weather" and first.parallel_tool_calls is False

    vendor.tool_calls = []
    second = await client.responses.create(model=VENDOR, tools=[WEATHER], input=[
        {"role": "user", "content": "Weather in Paris?"},
        *first.output,
        {"type": "function_call_output", "call_id": "call_0", "output": "18°C, sunny"},
    ])
    assert vendor.last_request.json["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": CALL["arguments"]}},
        ]},
        {"role": "tool", "content": "18°C, sunny", "tool_call_id": "call_0"},
    ]
    assert second.output_text == "Hello, world!"


async def test_a_streamed_function_call_sends_its_arguments_in_pieces(client, vendor):
    vendor.tool_calls = [CALL]
    async with client.responses.stream(model=VENDOR, input="Weather in Paris?", tools=[WEATHER]) as stream:
        events = await events_of(stream)
        final = await stream.get_final_response()
    assert [event.type for event in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed",
    ]
    added = events[2].item
    assert (added.type, added.call_id, added.name, added.arguments) == ("function_call", "call_0", "get_weather", "")
    assert "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta") == CALL["arguments"]
    assert events[5].arguments == CALL["arguments"]
    [call] = final.output
    assert (call.id, call.call_id, call.arguments) == (added.id, "call_0", CALL["arguments"])


async def test_the_local_model_calls_a_required_tool_with_valid_arguments(client):
    response = await client.responses.create(
        model=LOCAL, input="What is the weather in Paris right now?", tools=[WEATHER], tool_choice="required",
        max_output_tokens=60, temperature=0,
    )
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls and all(call.name == "get_weather" and call.call_id for call in calls)
    assert all(isinstance(json.loads(call.arguments)["city"], str) for call in calls)


# --- the translation, exactly -------------------------------------------------------------------


def data_url() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (200, 30, 30)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_the_vendor_gets_the_request_in_chat_completions_shape(client, vendor):
    response = await client.responses.create(
        model=VENDOR, instructions="Be brief.", max_output_tokens=50, temperature=0.5, top_p=0.9,
        text={"format": {"type": "json_object"}}, user="user-1", metadata={"ticket": "42"},
        store=False, include=["reasoning.encrypted_content"],
        input=[
            {"role": "developer", "content": "Use metric units."},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": data_url(), "detail": "low"},
            ]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A red square."}]},
            {"role": "user", "content": "Sure?"},
        ],
    )
    sent = vendor.last_request.json
    image = sent["messages"][2]["content"][1]
    assert image["image_url"]["url"].startswith("data:image/") and image["image_url"]["detail"] == "low"
    assert sent == {
        "model": "a-vendor-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use metric units."},
            {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]},
            {"role": "assistant", "content": "A red square."},
            {"role": "user", "content": "Sure?"},
        ],
        "max_tokens": 50, "temperature": 0.5, "top_p": 0.9, "response_format": {"type": "json_object"},
        "stream": False,
    }
    assert response.metadata == {"ticket": "42"} and response.user == "user-1" and response.top_p == 0.9
    assert response.text.format.type == "json_object" and response.store is False


# --- reasoning and structured output on the embedded model ---------------------------------------


async def test_reasoning_comes_first_as_a_summary_signed_for_the_next_turn(client):
    question = "Why is the sky blue?"
    request = dict(model=LOCAL, input=question, max_output_tokens=24, temperature=0, reasoning={"effort": "low"})
    response = await client.responses.create(**request)
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_") and message.type == "message"
    [summary] = reasoning.summary
    assert summary.type == "summary_text" and summary.text.strip()
    assert reasoning.encrypted_content == sign_reasoning(summary.text)
    assert 0 < response.usage.output_tokens_details.reasoning_tokens <= 12  # half of max_output_tokens
    assert response.reasoning.effort == "low"

    events = await events_of(await client.responses.create(**request, stream=True))
    kinds = [event.type for event in events]
    assert kinds[2:4] == ["response.output_item.added", "response.reasoning_summary_part.added"]
    assert kinds.index("response.reasoning_summary_part.done") < kinds.index("response.output_text.delta")
    streamed = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert streamed == summary.text
    assert events[-1].response.output_text == response.output_text

    # The output sent back as it came builds on the reasoning; reasoning altered is refused.
    follow_up = [{"role": "user", "content": question}, *response.output, {"role": "user", "content": "Shorter?"}]
    again = await client.responses.create(model=LOCAL, input=follow_up, max_output_tokens=4)
    assert again.output_text
    altered = reasoning.model_dump()
    altered["summary"][0]["text"] += " And the moon."
    with pytest.raises(openai.BadRequestError) as bad:
        await client.responses.create(model=LOCAL, input=[follow_up[0], altered, *follow_up[2:]], max_output_tokens=4)
    assert "signature" in bad.value.body["message"]


class Capital(BaseModel):
    city: str = Field(max_length=16)


async def test_a_json_schema_text_format_gives_parsed_output(client):
    response = await client.responses.parse(
        model=LOCAL, input="What is the capital of France?", text_format=Capital, max_output_tokens=40, temperature=0,
    )
    assert isinstance(response.output_parsed, Capital)
    assert response.text.format.type == "json_schema" and response.text.format.name == "Capital"


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, message", [
    ({"previous_response_id": "resp_123"},
     "Parameter 'previous_response_id' is not supported on /serving-endpoints/responses: Fondasi keeps no responses"),
    ({"store": True}, "Parameter 'store' is not supported"),
    ({"background": True}, "Parameter 'background' is not supported"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type 'web_search' is not supported: Fondasi runs no built-in tools"),
    ({"tool_choice": {"type": "file_search"}, "tools": [WEATHER]}, "tool_choice.type 'file_search' is not supported"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
     "input[0].content[0].type 'input_file' is not supported"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
     "input[0].content[0].file_id is not supported"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type 'web_search_call' is not supported"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role must be 'user', 'assistant', 'system' or 'developer'"),
    ({"input": []}, "'input' must be a string or a non-empty list"),
    ({"reasoning": {"effort": "minimal"}}, "reasoning.effort must be 'none', 'low', 'medium' or 'high'; got 'minimal'"),
    ({"max_output_tokens": 0}, "'max_output_tokens' must be a whole number of tokens, at least 1"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "objectt"}}}},
     "response_format.json_schema.schema is not a valid JSON Schema"),
    ({"text": {"verbosity": "low"}}, "Parameter 'text.verbosity' is not supported"),
    ({"include": ["message.output_text.logprobs"]}, "include 'message.output_text.logprobs' is not supported"),
    ({"temperature": 3}, "Invalid 'temperature'"),
    ({"extra_body": {"seed": 3}}, "Parameter 'seed' is not supported on /serving-endpoints/responses: remove it."),
    ({"model": "local-minilm-embeddings"}, "Endpoint 'local-minilm-embeddings' serves llm/v1/embeddings, not llm/v1/chat"),
])
async def test_what_fondasi_cannot_honour_is_a_400_naming_it(client, vendor, params, message):
    with pytest.raises(openai.BadRequestError) as bad:
        await client.responses.create(**{"model": VENDOR, "input": "Hi", **params})
    assert bad.value.body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert message in bad.value.body["message"]
    assert not vendor.requests  # nothing reached the vendor


async def test_errors_before_the_stream_have_wire_mds_shape_and_status(http_client, token, vendor):
    headers = {"Authorization": f"Bearer {token}"}
    missing = await http_client.post("/serving-endpoints/responses", headers=headers,
                                     json={"model": "no-such-endpoint", "input": "Hi"})
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    vendor.fail(429, "Slow down.", headers={"Retry-After": "7"})
    limited = await http_client.post("/serving-endpoints/responses", headers=headers,
                                     json={"model": VENDOR, "input": "Hi", "stream": True})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    assert set(limited.json()) == {"error_code", "message"} and limited.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    unauthenticated = await http_client.post("/serving-endpoints/responses", json={"model": VENDOR, "input": "Hi"})
    assert unauthenticated.status_code == 401


async def test_a_failure_mid_stream_is_an_error_event_then_response_failed(client, vendor):
    vendor.mid_stream_error = {"error": {"message": "The model crashed.", "type": "server_error"}}
    events = await events_of(await client.responses.create(model=VENDOR, input="Hi", stream=True))
    error, failed = events[-2:]
    assert error.type == "error" and "The model crashed." in error.message and error.code
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error.message == error.message and failed.response.error.code == "server_error"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert failed.response.output[0].content[0].text == "Hello"  # what was said before the failure


async def test_the_vendors_stream_is_closed_when_the_client_leaves(vendor, token):
    """Through the ASGI application: the client goes away after a few events, and the vendor sees
    its own client go at once (generation stops upstream)."""
    from playground.asgi import application

    vendor.pieces, vendor.chunk_delay = ["tok"] * 100, 0.1  # a 10-second answer
    raw = json.dumps({"model": VENDOR, "input": "Hi", "stream": True}).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/serving-endpoints/responses", "raw_path": b"/serving-endpoints/responses", "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode()),
                    (b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }
    gone, sent, events = asyncio.Event(), False, []

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body" and b"response.output_text.delta" in message.get("body", b""):
            events.append(message["body"])
            if len(events) >= 3:
                gone.set()

    started = time.monotonic()
    await asyncio.wait_for(application(scope, receive, send), timeout=30)
    assert len(events) >= 3 and time.monotonic() - started < 5
    assert await asyncio.to_thread(vendor.wait_for_disconnect, 2)
