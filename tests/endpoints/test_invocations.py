"""POST /serving-endpoints/{name}/invocations and the API edge's errors, in-process (ASGI)."""
import base64
import json

import pytest
from django.test import AsyncClient

from tests.conftest import api_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

CHAT_URL = "/serving-endpoints/local-smollm2-chat/invocations"
HELLO = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0}


@pytest.fixture
def client(default_endpoints, auth_headers) -> AsyncClient:
    return api_client(auth_headers)


async def post(client, url, body, **kw):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return await client.post(url, data=data, content_type="application/json", **kw)


def sse_events(raw: bytes) -> list:
    text = raw.decode()
    assert text.endswith("data: [DONE]\n\n")
    events = []
    for block in text.split("\n\n"):
        block = block.strip("\n")
        if not block:
            continue
        assert block.startswith("data: "), block  # no event:, id: or comment lines
        payload = block[len("data: "):]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


async def streamed(response) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])


async def test_it_answers_a_chat_request(client):
    response = await post(client, CHAT_URL, HELLO)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length") and choice["finishReason"] == choice["finish_reason"]
    usage = body["usage"]
    assert usage["prompt_tokens"] > 5 and 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert response.headers["served-model-name"] == "smollm2-135m-instruct"


async def test_it_honours_max_tokens_with_finish_reason_length(client):
    body = (await post(client, CHAT_URL, {**HELLO, "messages": [{"role": "user", "content": "Write a long story about a dragon."}], "max_tokens": 4})).json()
    assert body["usage"]["completion_tokens"] == 4
    assert body["choices"][0]["finish_reason"] == "length"


async def test_it_returns_n_choices(client):
    body = (await post(client, CHAT_URL, {**HELLO, "n": 2, "temperature": 0.9, "seed": 3})).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]


async def test_it_streams_server_sent_events_as_wire_md_says(client):
    response = await post(client, CHAT_URL, {**HELLO, "stream": True, "stream_options": {"include_usage": True}})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache" and response["X-Accel-Buffering"] == "no"
    assert response["served-model-name"] == "smollm2-135m-instruct"
    events = sse_events(await streamed(response))
    chunks, done = events[:-1], events[-1]
    assert done == "[DONE]"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text_chunks = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(text_chunks) >= 2  # token by token, not one blob
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["delta"] == {}
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0
    assert all("usage" not in c for c in chunks[:-1])  # usage travels alone


async def test_it_sends_no_usage_chunk_unless_asked(client):
    events = sse_events(await streamed(await post(client, CHAT_URL, {**HELLO, "stream": True})))
    assert all("usage" not in e for e in events[:-1])


async def test_streamed_text_equals_non_streamed_text_at_temperature_zero(client):
    request = {**HELLO, "max_tokens": 16, "messages": [{"role": "user", "content": "Name three colours."}]}
    whole = (await post(client, CHAT_URL, request)).json()["choices"][0]["message"]["content"]
    events = sse_events(await streamed(await post(client, CHAT_URL, {**request, "stream": True})))
    joined = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
    assert joined == whole


async def test_it_completes_a_prompt(client):
    response = await post(client, "/serving-endpoints/local-smollm2-completions/invocations",
                          {"prompt": "The capital of France is", "max_tokens": 5, "temperature": 0})
    body = response.json()
    assert response.status_code == 200 and body["object"] == "text_completion"
    assert body["choices"][0]["text"] and body["choices"][0]["logprobs"] is None
    assert body["usage"]["completion_tokens"] <= 5


async def test_it_streams_a_completion(client):
    response = await post(client, "/serving-endpoints/local-smollm2-completions/invocations",
                          {"prompt": "One, two, three,", "max_tokens": 6, "temperature": 0, "stream": True})
    events = sse_events(await streamed(response))
    assert all(e["object"] == "text_completion" for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length")


async def test_it_embeds_texts_in_order(client):
    response = await post(client, "/serving-endpoints/local-minilm-embeddings/invocations",
                          {"input": ["a cat sat on the mat", "stock markets fell"]})
    body = response.json()
    assert response.status_code == 200 and body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 384 and d["object"] == "embedding" for d in body["data"])
    assert body["usage"]["prompt_tokens"] > 4 and body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"]


async def test_it_encodes_embeddings_as_base64_floats_when_asked(client):
    import numpy as np

    floats = (await post(client, "/serving-endpoints/local-minilm-embeddings/invocations", {"input": "hello"})).json()
    packed = (await post(client, "/serving-endpoints/local-minilm-embeddings/invocations",
                         {"input": "hello", "encoding_format": "base64"})).json()
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats["data"][0]["embedding"], atol=1e-6)


# --- errors ----------------------------------------------------------------------------------


def assert_error(response, status: int, code: str, *words: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error_code", "message"} and body["error_code"] == code
    for word in words:
        assert word in body["message"]
    return body


async def test_it_requires_a_token(default_endpoints):
    assert_error(await post(AsyncClient(), CHAT_URL, HELLO), 401, "UNAUTHENTICATED", "Bearer")


async def test_it_rejects_an_unknown_token(default_endpoints):
    client = api_client({"Authorization": "Bearer dapi0000"})
    assert_error(await post(client, CHAT_URL, HELLO), 401, "UNAUTHENTICATED", "Invalid access token")


async def test_it_accepts_basic_auth_with_the_token_as_password(default_endpoints, token):
    basic = base64.b64encode(f"token:{token}".encode()).decode()
    response = await post(api_client({"Authorization": f"Basic {basic}"}), CHAT_URL, HELLO)
    assert response.status_code == 200


async def test_a_revoked_token_stops_working(default_endpoints, token):
    from asgiref.sync import sync_to_async

    from endpoints.models import AccessToken

    client = api_client({"Authorization": f"Bearer {token}"})
    assert (await post(client, CHAT_URL, HELLO)).status_code == 200
    await sync_to_async(lambda: AccessToken.objects.get().revoke())()
    assert_error(await post(client, CHAT_URL, HELLO), 401, "UNAUTHENTICATED")


async def test_an_unknown_endpoint_is_404(client):
    assert_error(await post(client, "/serving-endpoints/nope/invocations", HELLO), 404, "RESOURCE_DOES_NOT_EXIST", "'nope'")


async def test_malformed_json_is_400(client):
    assert_error(await post(client, CHAT_URL, '{"messages": ['), 400, "INVALID_PARAMETER_VALUE", "not valid JSON")


async def test_an_empty_body_is_400(client):
    assert_error(await post(client, CHAT_URL, ""), 400, "INVALID_PARAMETER_VALUE", "empty")


async def test_a_body_over_the_limit_is_413_and_states_the_limit(client, settings):
    settings.MAX_REQUEST_BYTES = 1000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    big = {**HELLO, "messages": [{"role": "user", "content": "x" * 5000}]}
    assert_error(await post(client, CHAT_URL, big), 413, "BAD_REQUEST", "1000 bytes")


async def test_wrong_types_and_ranges_are_400_naming_the_field(client):
    assert_error(await post(client, CHAT_URL, {**HELLO, "temperature": "hot"}), 400, "INVALID_PARAMETER_VALUE", "'temperature'")
    assert_error(await post(client, CHAT_URL, {**HELLO, "max_tokens": 0}), 400, "INVALID_PARAMETER_VALUE", "'max_tokens'")


async def test_empty_messages_and_unknown_roles_are_400(client):
    assert_error(await post(client, CHAT_URL, {"messages": []}), 400, "INVALID_PARAMETER_VALUE", "'messages' must not be empty")
    assert_error(await post(client, CHAT_URL, {"messages": [{"role": "robot", "content": "x"}]}), 400,
                 "INVALID_PARAMETER_VALUE", "robot")


async def test_a_chat_body_to_an_embeddings_endpoint_is_400(client):
    assert_error(await post(client, "/serving-endpoints/local-minilm-embeddings/invocations", HELLO), 400,
                 "INVALID_PARAMETER_VALUE", "llm/v1/embeddings", "'input'")


async def test_a_parameter_the_endpoint_cannot_honour_is_400_naming_it(client):
    from asgiref.sync import sync_to_async

    from endpoints.config import apply, parse_text

    # An OpenAI-compatible server has no `thinking` parameter; the check comes before any call
    # (nothing listens on port 9).
    await sync_to_async(apply)(parse_text("""
endpoints:
  - name: vllm-chat
    task: llm/v1/chat
    served_entities:
      - external_model: {name: m, provider: openai-compatible, openai_config: {openai_api_base: "http://127.0.0.1:9/v1"}}
  - name: openai-chat
    task: llm/v1/chat
    served_entities:
      - external_model: {name: gpt-4o-mini, provider: openai, openai_config: {openai_api_base: "http://127.0.0.1:9/v1", openai_api_key_plaintext: sk-x}}
"""), source="api")
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 4}}
    assert_error(await post(client, "/serving-endpoints/vllm-chat/invocations", {**HELLO, **thinking}), 400,
                 "INVALID_PARAMETER_VALUE", "'thinking'", "vllm-chat")
    # vLLM's min_tokens goes through to an OpenAI-compatible server; OpenAI's own API has none.
    assert_error(await post(client, "/serving-endpoints/openai-chat/invocations", {**HELLO, "min_tokens": 2}), 400,
                 "INVALID_PARAMETER_VALUE", "'min_tokens'", "openai-chat")
    assert_error(await post(client, CHAT_URL, {**HELLO, "extra_params": {"mirostat": 2}}), 400,
                 "INVALID_PARAMETER_VALUE", "'mirostat'")


async def test_extra_params_top_p_is_honoured(client):
    async def text(**params) -> str:
        response = await post(client, CHAT_URL, {**HELLO, "messages": [{"role": "user", "content": "Name a fruit."}], **params})
        assert response.status_code == 200, response.content
        return response.json()["choices"][0]["message"]["content"]

    greedy = await text(temperature=0)
    # A 1% nucleus leaves the most likely token only: the greedy answer, at temperature 1, whatever the seed.
    for seed in (1, 2, 3):
        assert await text(temperature=1, extra_params={"top_p": 0.01, "seed": seed}) == greedy
    # With the same seeds, another nucleus samples other answers.
    wide = [await text(temperature=1, extra_params={"top_p": 1.0, "seed": seed}) for seed in (1, 2, 3, 4)]
    narrow = [await text(temperature=1, extra_params={"top_p": 0.3, "seed": seed}) for seed in (1, 2, 3, 4)]
    assert wide != narrow


# The product page's completions example (and the Databricks SDK's), which SmolLM2 would end at
# its first token: every sampling of it has text.
REASONS = {"prompt": "Write 3 reasons why you should train an AI model on domain specific data sets.", "max_tokens": 16}


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"seed": 1}, {"seed": 2}, {"seed": 3}])
async def test_the_product_pages_completions_example_answers(client, sampling):
    response = await post(client, "/serving-endpoints/local-smollm2-completions/invocations", {**REASONS, **sampling})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["choices"][0]["text"].strip() and body["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize(("min_tokens", "message"), [
    (-1, "Invalid 'min_tokens': input should be greater than or equal to 0 (got -1)."),
    (9, "Invalid 'min_tokens': must be at most max_tokens (8) (got 9)."),
    ("many", "Invalid 'min_tokens'"),
])
async def test_min_tokens_out_of_range_is_a_400_naming_it(client, min_tokens, message):
    assert_error(await post(client, CHAT_URL, {**HELLO, "min_tokens": min_tokens}), 400, "INVALID_PARAMETER_VALUE", message)


async def test_min_tokens_within_range_is_honoured(client):
    body = (await post(client, CHAT_URL, {**HELLO, "max_tokens": 64, "min_tokens": 40})).json()
    assert body["usage"]["completion_tokens"] >= 40


async def test_the_wrong_method_is_405_in_the_error_shape(client):
    assert_error(await client.get(CHAT_URL), 405, "BAD_REQUEST", "POST")


async def test_an_unknown_api_route_is_a_json_404(client):
    assert_error(await client.get("/serving-endpoints/x/y/z"), 404, "RESOURCE_DOES_NOT_EXIST")
