"""The ``openai`` provider (OpenAI and Azure OpenAI), against the fake vendor over real HTTP on
127.0.0.1, and through Fondasi's HTTP API with the real ``openai`` client."""
from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

from endpoints.errors import ServingError
from endpoints.events import Embeddings, Finish, ReasoningDelta, TextDelta, Usage
from endpoints.providers.base import EntitySpec
from endpoints.providers.openai import OpenAIProvider, chat_body, effort_for_budget, is_reasoning_model
from endpoints.schemas import CHAT, CompletionRequest, EmbeddingsRequest
from tests.endpoints.providers.helpers import chat, drain

KEY = "sk-openai-0123456789abcdef"
AZURE = {"openai_api_type": "azure", "openai_api_version": "2024-10-21", "openai_deployment_name": "gpt4o prod"}
HIDDEN_REASONING = {"prompt_tokens": 12, "completion_tokens": 40, "completion_tokens_details": {"reasoning_tokens": 32}}


def make_provider(model: str = "gpt-4o", **config: Any) -> OpenAIProvider:
    return OpenAIProvider(EntitySpec("ep", "openai", model, CHAT, {"openai_api_key": KEY, **config}))


# --- reasoning models ----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["o1", "o3-mini", "o4-mini-2025-04-16", "gpt-5", "gpt-5-mini", "gpt-5.1-codex",
                                   "ft:o4-mini-2025-04-16:acme::abc123"])
def test_it_recognises_reasoning_models(model):
    assert is_reasoning_model(model)


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4.1-mini", "gpt-5-chat-latest", "omni-moderation-latest",
                                   "text-embedding-3-small", "gpt-3.5-turbo-instruct"])
def test_it_tells_other_models_apart(model):
    assert not is_reasoning_model(model)


@pytest.mark.parametrize("budget, effort", [(1, "low"), (1024, "low"), (1025, "medium"), (4096, "medium"),
                                            (4097, "high"), (16384, "high"), (60000, "high")])
def test_it_maps_a_thinking_budget_to_the_smallest_effort_that_covers_it(budget, effort):
    assert effort_for_budget(budget) == effort


def test_a_reasoning_model_gets_max_completion_tokens_and_a_reasoning_effort():
    request = chat(max_tokens=8000, thinking={"type": "enabled", "budget_tokens": 2048}, stop=["END"], seed=3, n=2)
    assert chat_body(request, "o4-mini") == {
        "model": "o4-mini", "messages": [{"role": "user", "content": "Hi"}],
        "max_completion_tokens": 8000, "reasoning_effort": "medium", "stop": ["END"], "seed": 3, "n": 2,
        "stream": True, "stream_options": {"include_usage": True},
    }


def test_reasoning_effort_passes_through_to_a_reasoning_model():
    body = chat_body(chat(reasoning_effort="high", max_tokens=100), "o3")
    assert body["reasoning_effort"] == "high" and body["max_completion_tokens"] == 100 and "max_tokens" not in body


def test_sampling_parameters_at_their_default_are_left_out_for_a_reasoning_model():
    body = chat_body(chat(temperature=1, top_p=1, presence_penalty=0, frequency_penalty=0), "gpt-5")
    assert body == {"model": "gpt-5", "messages": [{"role": "user", "content": "Hi"}],
                    "stream": True, "stream_options": {"include_usage": True}}


@pytest.mark.parametrize("name, value", [("temperature", 0.2), ("top_p", 0.5), ("presence_penalty", 0.5),
                                         ("frequency_penalty", -1.5)])
def test_a_sampling_parameter_a_reasoning_model_rejects_is_a_400_naming_it(name, value):
    with pytest.raises(ServingError) as info:
        chat_body(chat(**{name: value}), "o3-mini")
    assert info.value.status == 400
    assert info.value.message.startswith(f"Parameter '{name}' ({value}) is not supported by OpenAI reasoning model 'o3-mini'")
    assert "provider 'openai'" in info.value.message


def test_a_temperature_in_extra_params_is_caught_too():
    with pytest.raises(ServingError) as info:
        chat_body(chat(extra_params={"temperature": 0}), "o1")
    assert "'temperature'" in info.value.message


def test_thinking_cannot_be_disabled_on_a_reasoning_model():
    with pytest.raises(ServingError) as info:
        chat_body(chat(thinking={"type": "disabled"}), "o3")
    assert info.value.status == 400 and "'thinking'" in info.value.message and "always reasons" in info.value.message


@pytest.mark.parametrize("ask", [{"thinking": {"type": "enabled", "budget_tokens": 64}, "max_tokens": 128},
                                 {"reasoning_effort": "low"}])
def test_asking_a_model_that_cannot_reason_to_reason_is_a_400_naming_the_parameter(ask):
    with pytest.raises(ServingError) as info:
        chat_body(chat(**ask), "gpt-4o")
    name = next(iter(ask))
    assert info.value.status == 400
    assert info.value.message.startswith(f"Parameter '{name}' is not supported by OpenAI model 'gpt-4o' (provider 'openai')")


def test_other_models_keep_max_tokens_and_sampling_parameters():
    request = chat(max_tokens=16, temperature=0.3, top_p=0.9, thinking={"type": "disabled"})
    assert chat_body(request, "gpt-4o") == {
        "model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16, "temperature": 0.3,
        "top_p": 0.9, "stream": True, "stream_options": {"include_usage": True},
    }


def test_tools_response_format_and_images_pass_through_in_openais_shape():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
    request = chat(messages=[{"role": "user", "content": [{"type": "text", "text": "What is it?"}, image]}],
                   tools=tools, tool_choice="auto", parallel_tool_calls=False, response_format=schema,
                   extra_params={"logprobs": True, "service_tier": "flex"})
    body = chat_body(request, "gpt-4o")
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, image]}]
    assert (body["tools"], body["tool_choice"], body["parallel_tool_calls"]) == (tools, "auto", False)
    assert body["response_format"] == schema
    assert (body["logprobs"], body["service_tier"]) == (True, "flex")


# --- config --------------------------------------------------------------------------------


def test_it_defaults_to_openais_api():
    provider = make_provider()
    assert provider.describe() == {"openai_api_type": "openai", "openai_api_base": "https://api.openai.com/v1",
                                   "upstream_model": "gpt-4o"}
    assert KEY not in repr(provider)


@pytest.mark.parametrize("config", [{}, {"openai_api_key": ""}, {"openai_api_type": "azuread", **AZURE}])
def test_a_missing_key_is_a_400_naming_the_field(config):
    with pytest.raises(ServingError) as info:
        OpenAIProvider(EntitySpec("ep", "openai", "gpt-4o", CHAT, {"openai_api_base": "https://x.example", **config}))
    assert info.value.status == 400 and "'openai_api_key'" in info.value.message


@pytest.mark.parametrize("missing", ["openai_api_base", "openai_api_version", "openai_deployment_name"])
def test_azure_needs_its_resource_url_version_and_deployment(missing):
    config = {"openai_api_base": "https://res.openai.azure.com", **AZURE}
    del config[missing]
    with pytest.raises(ServingError) as info:
        make_provider(**config)
    assert info.value.status == 400
    assert f"needs '{missing}'" in info.value.message and "Azure OpenAI" in info.value.message


def test_an_unknown_api_type_is_a_400_listing_the_known_ones():
    with pytest.raises(ServingError) as info:
        make_provider(openai_api_type="azure_ad")
    assert info.value.message == "'openai_api_type' must be one of 'openai', 'azure' or 'azuread'; got 'azure_ad'."


def test_a_key_that_is_not_a_string_is_not_echoed():
    with pytest.raises(ServingError) as info:
        OpenAIProvider(EntitySpec("ep", "openai", "gpt-4o", CHAT, {"openai_api_key": ["sk-secret-list"]}))
    assert "sk-secret-list" not in info.value.message


# --- OpenAI over HTTP ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_sends_the_exact_chat_request_to_openai(upstream):
    provider = make_provider(openai_api_base=upstream.base_url, openai_organization="org-7")
    events = await drain(provider.chat(chat(max_tokens=16, temperature=0.2, stop="\n")))
    sent = upstream.last_request
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.json == {
        "model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16, "temperature": 0.2,
        "stop": ["\n"], "stream": True, "stream_options": {"include_usage": True},
    }
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["openai-organization"] == "org-7"
    assert "api-key" not in sent.headers
    assert events == [TextDelta("Hello", 0), TextDelta(",", 0), TextDelta(" world", 0), TextDelta("!", 0),
                      Finish("stop", 0), Usage(7, 4)]


@pytest.mark.asyncio
async def test_a_reasoning_model_streams_its_answer_and_counts_its_hidden_reasoning(upstream):
    upstream.usage = HIDDEN_REASONING
    provider = make_provider("o4-mini", openai_api_base=upstream.base_url)
    events = await drain(provider.chat(chat(max_tokens=500, thinking={"type": "enabled", "budget_tokens": 300})))
    assert upstream.last_request.json == {
        "model": "o4-mini", "messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 500,
        "reasoning_effort": "low", "stream": True, "stream_options": {"include_usage": True},
    }
    assert not any(isinstance(event, ReasoningDelta) for event in events)
    assert events[-2:] == [Finish("stop", 0), Usage(12, 40, reasoning_tokens=32)]


@pytest.mark.asyncio
async def test_a_reasoning_model_answers_whole_with_its_reasoning_tokens(upstream):
    upstream.usage = HIDDEN_REASONING
    provider = make_provider("o3", openai_api_base=upstream.base_url)
    events = await drain(provider.chat(chat(stream=False, reasoning_effort="high")))
    assert upstream.last_request.json == {"model": "o3", "messages": [{"role": "user", "content": "Hi"}],
                                          "reasoning_effort": "high", "stream": False}
    assert events == [TextDelta("Hello, world!", 0), Finish("stop", 0), Usage(12, 40, reasoning_tokens=32)]


@pytest.mark.asyncio
async def test_a_rejected_parameter_never_reaches_openai(upstream):
    provider = make_provider("o3-mini", openai_api_base=upstream.base_url)
    with pytest.raises(ServingError):
        await drain(provider.chat(chat(temperature=0.7)))
    assert not upstream.requests


@pytest.mark.asyncio
async def test_it_completes_and_embeds_at_openais_paths(upstream):
    provider = make_provider("gpt-3.5-turbo-instruct", openai_api_base=upstream.base_url)
    await drain(provider.complete(CompletionRequest.model_validate({"prompt": "Once", "max_tokens": 4})))
    assert upstream.last_request.path == "/v1/completions"
    assert upstream.last_request.json == {"model": "gpt-3.5-turbo-instruct", "prompt": "Once", "max_tokens": 4, "stream": False}
    result = await provider.embed(EmbeddingsRequest.model_validate({"input": ["a", "bb"], "extra_params": {"dimensions": 3}}))
    assert upstream.last_request.path == "/v1/embeddings"
    assert upstream.last_request.json == {"model": "gpt-3.5-turbo-instruct", "input": ["a", "bb"],
                                          "encoding_format": "float", "dimensions": 3}
    assert result == Embeddings([[0.0, 1.0, 0.5], [1.0, 2.0, 0.5]], 2)


@pytest.mark.asyncio
async def test_openais_errors_name_openai_and_never_the_key(upstream):
    provider = make_provider("o3", openai_api_base=upstream.base_url)
    upstream.fail(400, f"Unsupported parameter: 'stop' is not supported with this model. (key {KEY})",
                  code="unsupported_parameter")
    with pytest.raises(ServingError) as info:
        await drain(provider.chat(chat(stop=["x"])))
    assert (info.value.status, info.value.code) == (400, "INVALID_PARAMETER_VALUE")
    assert info.value.message == (
        "OpenAI rejected the request (HTTP 400): Unsupported parameter: 'stop' is not supported with this model. "
        "(key [redacted])"
    )
    upstream.fail(401, f"Incorrect API key provided: {KEY}")
    with pytest.raises(ServingError) as info:
        await drain(provider.chat(chat()))
    assert info.value.message == "OpenAI rejected the configured API key (HTTP 401). Check the endpoint's API key."


# --- Azure OpenAI over HTTP ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_azure_gets_the_deployment_url_with_api_version_and_an_api_key_header(upstream):
    provider = make_provider(openai_api_base=upstream.url + "/", **AZURE)
    events = await drain(provider.chat(chat(max_tokens=8)))
    sent = upstream.last_request
    assert sent.path == "/openai/deployments/gpt4o%20prod/chat/completions?api-version=2024-10-21"
    assert sent.headers["api-key"] == KEY
    assert "authorization" not in sent.headers
    assert sent.json == {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
                         "stream": True, "stream_options": {"include_usage": True}}
    assert events[-1] == Usage(7, 4)
    await drain(provider.complete(CompletionRequest.model_validate({"prompt": "x"})))
    assert upstream.last_request.path == "/openai/deployments/gpt4o%20prod/completions?api-version=2024-10-21"
    await provider.embed(EmbeddingsRequest.model_validate({"input": "x"}))
    assert upstream.last_request.path == "/openai/deployments/gpt4o%20prod/embeddings?api-version=2024-10-21"
    assert provider.describe() == {
        "openai_api_type": "azure", "openai_api_base": upstream.url, "upstream_model": "gpt-4o",
        "openai_deployment_name": "gpt4o prod", "openai_api_version": "2024-10-21",
    }


@pytest.mark.asyncio
async def test_azuread_sends_the_entra_token_as_a_bearer_token(upstream):
    provider = make_provider("o4-mini", openai_api_base=upstream.url, **{**AZURE, "openai_api_type": "azuread"})
    await drain(provider.chat(chat(max_tokens=64)))
    sent = upstream.last_request
    assert sent.headers["authorization"] == f"Bearer {KEY}" and "api-key" not in sent.headers
    assert sent.path.startswith("/openai/deployments/gpt4o%20prod/chat/completions?api-version=")
    assert sent.json["max_completion_tokens"] == 64


@pytest.mark.asyncio
async def test_azure_errors_name_azure_openai(upstream):
    provider = make_provider(openai_api_base=upstream.url, **AZURE)
    upstream.fail(429, "Requests to the ChatCompletions_Create Operation have exceeded rate limit.",
                  headers={"Retry-After": "12"})
    with pytest.raises(ServingError) as info:
        await drain(provider.chat(chat()))
    assert (info.value.status, info.value.retry_after) == (429, 12)
    assert info.value.message.startswith("Azure OpenAI is rate limiting requests (HTTP 429): Requests to the")


# --- through Fondasi's HTTP API --------------------------------------------------------------

ENDPOINTS = """
endpoints:
  - name: openai-reasoner
    task: llm/v1/chat
    served_entities:
      - name: o4
        external_model:
          name: o4-mini
          provider: openai
          openai_config: {{openai_api_base: "{base}", openai_api_key_plaintext: "{key}"}}
  - name: azure-chat
    task: llm/v1/chat
    served_entities:
      - name: azure-4o
        external_model:
          name: gpt-4o
          provider: openai
          openai_config:
            openai_api_type: azure
            openai_api_base: "{root}"
            openai_api_key_plaintext: "{key}"
            openai_api_version: "2024-10-21"
            openai_deployment_name: prod-4o
"""


@pytest.fixture
def served(upstream, db):
    from endpoints.config import apply, parse_text

    apply(parse_text(ENDPOINTS.format(base=upstream.base_url, root=upstream.url, key=KEY)))
    return upstream


@pytest_asyncio.fixture
async def client(served, token):
    """The real openai client, talking to Fondasi's ASGI app in process."""
    from playground.asgi import application

    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http_client:
        yield openai.AsyncOpenAI(api_key=token, base_url="http://testserver/serving-endpoints",
                                 http_client=http_client, max_retries=0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_openai_client_queries_an_openai_reasoning_model_through_fondasi(client, served):
    served.usage = HIDDEN_REASONING
    answer = await client.chat.completions.create(
        model="openai-reasoner", messages=[{"role": "user", "content": "Hi"}], max_tokens=64,
    )
    assert answer.choices[0].message.content == "Hello, world!"
    assert answer.usage.completion_tokens_details.reasoning_tokens == 32
    assert served.last_request.json == {"model": "o4-mini", "messages": [{"role": "user", "content": "Hi"}],
                                        "max_completion_tokens": 64, "stream": False}
    assert served.last_request.headers["authorization"] == f"Bearer {KEY}"

    chunks = [c async for c in await client.chat.completions.create(
        model="openai-reasoner", messages=[{"role": "user", "content": "Hi"}], stream=True,
        stream_options={"include_usage": True},
    )]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello, world!"
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 32

    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(
            model="openai-reasoner", messages=[{"role": "user", "content": "Hi"}], temperature=0.3,
        )
    assert "Parameter 'temperature' (0.3) is not supported by OpenAI reasoning model 'o4-mini'" in str(bad.value)
    assert len(served.requests) == 2  # the rejected request never reached OpenAI


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_an_azure_endpoint_answers_on_invocations(served, auth_headers):
    from tests.conftest import api_client

    response = await api_client(auth_headers).post(
        "/serving-endpoints/azure-chat/invocations",
        data=json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == "Hello, world!"
    assert served.last_request.path == "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
    assert served.last_request.headers["api-key"] == KEY
