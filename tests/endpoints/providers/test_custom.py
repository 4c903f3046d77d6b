"""The ``custom`` provider: any OpenAI-compatible API with an API-key header or a bearer token,
against the fake vendor over real HTTP on 127.0.0.1."""
from __future__ import annotations

import json
from typing import Any

import pytest

from endpoints.errors import ServingError
from endpoints.events import Finish, ToolCallDelta, Usage
from endpoints.providers.base import EntitySpec
from endpoints.providers.openai import CustomProvider
from endpoints.schemas import CHAT, EmbeddingsRequest
from tests.conftest import api_client
from tests.endpoints.providers.helpers import chat, drain

SECRET = "gw-secret-0123456789"


def make_provider(url: str | None, **config: Any) -> CustomProvider:
    return CustomProvider(EntitySpec("ep", "custom", "my-model", CHAT, {"custom_provider_url": url, **config}))


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [None, "", "llm.example.com/v1", "ftp://llm.example.com"])
def test_it_needs_an_http_custom_provider_url(url):
    with pytest.raises(ServingError) as info:
        make_provider(url)
    assert info.value.status == 400 and "'custom_provider_url'" in info.value.message


def test_it_takes_one_auth_method_not_both():
    with pytest.raises(ServingError) as info:
        make_provider("https://llm.example.com/v1", api_key_auth={"key": "X-Key", "value": SECRET},
                      bearer_token_auth={"token": SECRET})
    assert info.value.message == "A custom provider takes one of 'api_key_auth' or 'bearer_token_auth', not both."


@pytest.mark.parametrize("auth", [{"value": SECRET}, {"key": "X Key", "value": SECRET}, {"key": "", "value": SECRET}, "X-Key"])
def test_api_key_auth_needs_a_header_name(auth):
    with pytest.raises(ServingError) as info:
        make_provider("https://llm.example.com/v1", api_key_auth=auth)
    assert "'api_key_auth.key'" in info.value.message and SECRET not in info.value.message


@pytest.mark.parametrize("config, field", [
    ({"api_key_auth": {"key": "X-Key"}}, "'api_key_auth' needs 'value'"),
    ({"api_key_auth": {"key": "X-Key", "value": 12345}}, "'api_key_auth' needs 'value'"),
    ({"bearer_token_auth": {}}, "'bearer_token_auth' needs 'token'"),
    ({"bearer_token_auth": SECRET}, "'bearer_token_auth' needs 'token'"),
])
def test_a_missing_secret_is_a_400_naming_it_without_echoing_it(config, field):
    with pytest.raises(ServingError) as info:
        make_provider("https://llm.example.com/v1", **config)
    assert info.value.status == 400 and field in info.value.message and SECRET not in info.value.message


def test_describe_and_repr_show_no_secret():
    provider = make_provider("https://user:pw@llm.example.com/v1?sig=abc", bearer_token_auth={"token": SECRET})
    shown = repr(provider) + repr(provider.describe())
    assert SECRET not in shown and "pw" not in shown and "abc" not in shown
    assert provider.describe() == {"custom_provider_url": "https://llm.example.com/v1", "upstream_model": "my-model"}


# --- over HTTP -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_api_key_auth_is_sent_as_its_own_header(upstream):
    provider = make_provider(upstream.base_url, api_key_auth={"key": "X-Gateway-Key", "value": SECRET})
    events = await drain(provider.chat(chat(max_tokens=8, seed=1)))
    sent = upstream.last_request
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["x-gateway-key"] == SECRET and "authorization" not in sent.headers
    assert sent.json == {"model": "my-model", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "seed": 1,
                         "stream": True, "stream_options": {"include_usage": True}}
    assert events[-2:] == [Finish("stop", 0), Usage(7, 4)]


@pytest.mark.asyncio
async def test_bearer_token_auth_is_sent_as_authorization(upstream):
    provider = make_provider(upstream.base_url + "/", bearer_token_auth={"token_plaintext": SECRET})
    await drain(provider.chat(chat()))
    assert upstream.last_request.headers["authorization"] == f"Bearer {SECRET}"
    assert upstream.last_request.path == "/v1/chat/completions"


@pytest.mark.asyncio
async def test_api_key_auth_takes_a_plaintext_value_too(upstream):
    provider = make_provider(upstream.base_url, api_key_auth={"key": "api-key", "value_plaintext": SECRET})
    await provider.embed(EmbeddingsRequest.model_validate({"input": "x"}))
    assert upstream.last_request.headers["api-key"] == SECRET
    assert upstream.last_request.path == "/v1/embeddings"


@pytest.mark.asyncio
async def test_without_auth_no_credentials_are_sent(upstream):
    await drain(make_provider(upstream.base_url).chat(chat()))
    assert "authorization" not in upstream.last_request.headers


@pytest.mark.asyncio
async def test_it_relays_tool_calls_like_any_openai_compatible_server(upstream):
    upstream.tool_calls = [{"name": "lookup", "arguments": '{"q": "x"}'}]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    events = await drain(make_provider(upstream.base_url).chat(chat(tools=tools)))
    assert upstream.last_request.json["tools"] == tools
    assert events[0] == ToolCallDelta(call=0, index=0, id="call_0", name="lookup", arguments="")
    assert events[-2:] == [Finish("tool_calls", 0), Usage(7, 4)]


@pytest.mark.asyncio
async def test_its_errors_name_the_custom_provider_and_never_the_secret(upstream):
    provider = make_provider(upstream.base_url, api_key_auth={"key": "X-Key", "value": SECRET})
    upstream.fail(422, f"model not loaded (got key {SECRET})")
    with pytest.raises(ServingError) as info:
        await drain(provider.chat(chat()))
    assert info.value.message == "Custom provider rejected the request (HTTP 422): model not loaded (got key [redacted])"
    upstream.fail(403, f"bad key {SECRET}")
    with pytest.raises(ServingError) as info:
        await drain(provider.chat(chat()))
    assert info.value.message == "Custom provider rejected the configured API key (HTTP 403). Check the endpoint's API key."


# --- through Fondasi's HTTP API --------------------------------------------------------------


@pytest.fixture
def gateway(upstream, db):
    from endpoints.config import apply, parse_text

    apply(parse_text(f"""
endpoints:
  - name: my-gateway
    task: llm/v1/chat
    served_entities:
      - name: gateway-model
        external_model:
          name: my-model
          provider: custom
          custom_provider_config:
            custom_provider_url: "{upstream.base_url}"
            api_key_auth: {{key: X-Gateway-Key, value_plaintext: "{SECRET}"}}
"""))
    return upstream


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_custom_endpoint_answers_through_the_openai_route(gateway, auth_headers):
    response = await api_client(auth_headers).post(
        "/serving-endpoints/chat/completions",
        data=json.dumps({"model": "my-gateway", "messages": [{"role": "user", "content": "Hi"}], "n": 2}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert [c["message"]["content"] for c in response.json()["choices"]] == ["Hello, world!", "Hello, world!"]
    assert gateway.last_request.headers["x-gateway-key"] == SECRET
    assert gateway.last_request.json["n"] == 2
