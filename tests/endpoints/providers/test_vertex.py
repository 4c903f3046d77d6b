"""The Vertex AI provider (``google-cloud-vertex-ai``): service-account OAuth against a fake token
endpoint that checks the JWT's signature, and Gemini's format against a fake Vertex, over real HTTP."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from endpoints.errors import ServingError
from endpoints.events import Embeddings, Finish, TextDelta, Usage
from endpoints.providers.base import EntitySpec
from endpoints.providers.gemini import VertexProvider
from endpoints.schemas import CHAT, EmbeddingsRequest
from tests.endpoints.providers.helpers import chat, drain, failure
from tests.fakes.gemini_upstream import (  # noqa: F401 (fixture)
    AUDIENCE,
    CLIENT_EMAIL,
    SCOPE,
    FakeGeminiUpstream,
    gemini_upstream,
    private_key_pem,
    service_account_json,
)

PATH = "/v1/projects/fondasi-test/locations/europe-west4/publishers/google/models"


pytestmark = pytest.mark.usefixtures("no_retries")  # vendor errors reach the tests at once


def make_provider(fake: FakeGeminiUpstream, model: str = "gemini-test", **config: Any) -> VertexProvider:
    config = {
        "project_id": "fondasi-test", "region": "europe-west4", "private_key": service_account_json(fake),
        "vertex_api_base": fake.base_url, **config,
    }
    return VertexProvider(EntitySpec("ep", "google-cloud-vertex-ai", model, CHAT, config))


@pytest.fixture
def provider(gemini_upstream: FakeGeminiUpstream, pool) -> VertexProvider:  # noqa: F811
    return make_provider(gemini_upstream)


# --- OAuth -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_gets_a_token_with_a_signed_jwt_and_sends_it_as_a_bearer(provider, gemini_upstream):
    events = await drain(provider.chat(chat(max_tokens=8)))
    assert events == [
        TextDelta("Hello", 0), TextDelta(",", 0), TextDelta(" world", 0), TextDelta("!", 0),
        Finish("stop", 0), Usage(7, 4),
    ]
    (claims,) = gemini_upstream.token_requests  # the fake checked the RS256 signature with the public key
    assert (claims["iss"], claims["aud"], claims["scope"]) == (CLIENT_EMAIL, AUDIENCE, SCOPE)
    sent = gemini_upstream.last_request
    assert sent.path == f"{PATH}/gemini-test:streamGenerateContent?alt=sse"
    assert sent.headers["authorization"] == "Bearer ya29.fake-1"
    assert "x-goog-api-key" not in sent.headers
    assert sent.json == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}], "generationConfig": {"maxOutputTokens": 8},
    }


@pytest.mark.asyncio
async def test_it_keeps_the_token_until_it_nears_expiry(provider, gemini_upstream):
    await drain(provider.chat(chat()))
    await drain(provider.chat(chat(stream=False)))
    assert len(gemini_upstream.token_requests) == 1
    assert [r.headers["authorization"] for r in gemini_upstream.requests] == ["Bearer ya29.fake-1"] * 2


@pytest.mark.asyncio
async def test_it_refreshes_a_token_that_expires_within_minutes(provider, gemini_upstream):
    gemini_upstream.token_expires_in = 120  # google-auth refreshes 3 min 45 s before expiry
    await drain(provider.chat(chat()))
    await drain(provider.chat(chat()))
    assert len(gemini_upstream.token_requests) == 2
    assert gemini_upstream.last_request.headers["authorization"] == "Bearer ya29.fake-2"


@pytest.mark.asyncio
async def test_concurrent_requests_share_one_refresh(provider, gemini_upstream):
    gemini_upstream.token_delay = 0.1  # the others find the token stale while the first refresh runs
    results = await asyncio.gather(*(drain(provider.chat(chat())) for _ in range(5)))
    assert all(events[-1] == Usage(7, 4) for events in results)
    assert len(gemini_upstream.token_requests) == 1


@pytest.mark.asyncio
async def test_the_event_loop_keeps_running_while_a_token_is_fetched(provider, gemini_upstream):
    gemini_upstream.token_delay = 0.3
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        await drain(provider.chat(chat()))
    finally:
        ticker.cancel()
    assert ticks >= 10  # a refresh on the loop would have blocked it for the whole 0.3 s


@pytest.mark.asyncio
async def test_a_key_the_token_endpoint_does_not_know_is_a_400_naming_private_key(provider, gemini_upstream):
    gemini_upstream.public_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    error = await failure(provider.chat(chat()))
    assert (error.status, error.code, error.retryable) == (400, "INVALID_PARAMETER_VALUE", False)
    assert error.message == (
        "Google did not accept the service account in 'private_key' (invalid_grant: Invalid JWT Signature.). "
        "Check that the key is current and the account may use Vertex AI."
    )
    assert gemini_upstream.requests == []  # nothing reached the model


@pytest.mark.asyncio
async def test_a_token_endpoint_failing_with_5xx_is_a_retryable_503(provider, gemini_upstream, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda seconds: None)  # google-auth backs off 1 s, 2 s between its retries
    gemini_upstream.token_error = (503, {"error": "temporarily_unavailable", "error_description": "Try again."})
    error = await failure(provider.chat(chat()))
    assert (error.status, error.code, error.retryable) == (503, "TEMPORARILY_UNAVAILABLE", True)
    assert "token endpoint is unavailable" in error.message


@pytest.mark.asyncio
async def test_an_unreachable_token_endpoint_is_a_503(gemini_upstream, pool):  # noqa: F811
    info = json.loads(service_account_json(gemini_upstream))
    info["token_uri"] = "http://127.0.0.1:9/token"  # the discard port: nothing listens
    provider = make_provider(gemini_upstream, private_key=json.dumps(info))
    error = await failure(provider.chat(chat()))
    assert (error.status, error.code) == (503, "TEMPORARILY_UNAVAILABLE")
    assert error.message == "Could not reach the service account's token endpoint (http://127.0.0.1:9/token)."


@pytest.mark.asyncio
async def test_a_token_vertex_refuses_is_a_400_that_never_echoes_it(provider, gemini_upstream):
    await drain(provider.chat(chat()))
    gemini_upstream.issued_tokens.clear()  # revoked
    error = await failure(provider.chat(chat()))
    assert error.status == 400
    assert "Google Vertex AI rejected" in error.message and "ya29" not in error.message


# --- chat and embeddings -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_calls_generate_content_without_streaming(provider, gemini_upstream):
    events = await drain(provider.chat(chat(stream=False)))
    assert gemini_upstream.last_request.path == f"{PATH}/gemini-test:generateContent"
    assert events == [TextDelta("Hello, world!", 0), Finish("stop", 0), Usage(7, 4)]


@pytest.mark.asyncio
async def test_it_maps_a_vertex_429_keeping_retry_after(provider, gemini_upstream):
    gemini_upstream.fail(429, "Resource exhausted. Please try again later.", status_text="RESOURCE_EXHAUSTED",
                         headers={"Retry-After": "12"})
    error = await failure(provider.chat(chat()))
    assert (error.status, error.retry_after) == (429, 12)
    assert "Resource exhausted. Please try again later." in error.message


@pytest.mark.asyncio
async def test_it_embeds_with_predict_putting_task_type_in_each_instance(gemini_upstream, pool):  # noqa: F811
    provider = make_provider(gemini_upstream, model="text-embedding-005")
    request = EmbeddingsRequest.model_validate({
        "input": ["first text", "second"],
        "extra_params": {"task_type": "RETRIEVAL_DOCUMENT", "outputDimensionality": 3},
    })
    result = await provider.embed(request)
    sent = gemini_upstream.last_request
    assert sent.path == f"{PATH}/text-embedding-005:predict"
    assert sent.json == {
        "instances": [{"content": "first text", "task_type": "RETRIEVAL_DOCUMENT"},
                      {"content": "second", "task_type": "RETRIEVAL_DOCUMENT"}],
        "parameters": {"outputDimensionality": 3},
    }
    assert sent.headers["authorization"] == "Bearer ya29.fake-1"
    assert result == Embeddings([[0.0, 10.0, 0.5], [1.0, 6.0, 0.5]], prompt_tokens=3)


# --- configuration -------------------------------------------------------------------------


def key_file(**fields: Any) -> str:
    """A service account key file, as text, for tests that make no call."""
    return json.dumps({
        "client_email": CLIENT_EMAIL, "token_uri": "https://oauth2.googleapis.com/token",
        "private_key": private_key_pem(), **fields,
    })


def test_the_global_region_has_no_regional_host():
    config = {"project_id": "p-1", "region": "global", "private_key": key_file()}
    provider = VertexProvider(EntitySpec("ep", "google-cloud-vertex-ai", "gemini-3-pro-preview", CHAT, config))
    assert provider._model_url("generateContent") == (
        "https://aiplatform.googleapis.com/v1/projects/p-1/locations/global/publishers/google/models/"
        "gemini-3-pro-preview:generateContent"
    )
    config["region"] = "us-central1"
    regional = VertexProvider(EntitySpec("ep", "google-cloud-vertex-ai", "m", CHAT, config))
    assert regional._model_url("predict").startswith("https://us-central1-aiplatform.googleapis.com/v1/projects/p-1/")
    shown = repr(provider) + repr(provider.describe())
    assert "PRIVATE KEY" not in shown
    assert provider.describe() == {
        "vertex_api_base": "https://aiplatform.googleapis.com", "project_id": "p-1", "region": "global",
        "upstream_model": "gemini-3-pro-preview",
    }


@pytest.mark.parametrize(("change", "named"), [
    ({"project_id": None}, "'project_id' is required"),
    ({"region": ""}, "'region' is required"),
    ({"region": "us-central1/../x"}, "'region' must be letters"),
    ({"private_key": None}, "needs 'private_key'"),
    ({"private_key": "-----BEGIN PRIVATE KEY-----\nMIIE..."},
     "'private_key' must be the service account's whole JSON key file"),
    ({"private_key": key_file(client_email=None, token_uri="")}, "without 'client_email', 'token_uri'"),
    ({"private_key": key_file(private_key="not a pem")}, "private_key is not a PEM-encoded RSA key"),
    ({"vertex_api_base": "aiplatform.googleapis.com"}, "'vertex_api_base' must be an http"),
])
def test_it_rejects_a_bad_configuration_naming_the_field(change, named):
    config = {"project_id": "p", "region": "europe-west4", "private_key": key_file(), **change}
    config = {field: value for field, value in config.items() if value is not None}
    with pytest.raises(ServingError) as info:
        VertexProvider(EntitySpec("ep", "google-cloud-vertex-ai", "gemini-test", CHAT, config))
    assert info.value.status == 400 and named in info.value.message
    assert "BEGIN PRIVATE KEY" not in info.value.message and "MIIE" not in info.value.message


# --- through our HTTP API, with the real openai client ---------------------------------------

ENDPOINTS = """
endpoints:
  - name: vertex-embeddings
    task: llm/v1/embeddings
    served_entities:
      - name: vertex-embedding-entity
        external_model:
          name: text-embedding-005
          provider: google-cloud-vertex-ai
          google_cloud_vertex_ai_config:
            project_id: fondasi-test
            region: europe-west4
            vertex_api_base: "{base}"
            private_key_plaintext: '{key}'
"""


@pytest.fixture
def vertex_endpoint(gemini_upstream, transactional_db):  # noqa: F811
    from endpoints.config import apply, parse_text

    apply(parse_text(ENDPOINTS.format(base=gemini_upstream.base_url, key=service_account_json(gemini_upstream))))
    return gemini_upstream


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_openai_client_gets_embeddings_from_a_vertex_endpoint(vertex_endpoint, token, pool):
    from playground.asgi import application

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application)) as http_client:
        client = openai.AsyncOpenAI(
            api_key=token, base_url="http://testserver/serving-endpoints", http_client=http_client, max_retries=0,
        )
        answer = await client.embeddings.create(model="vertex-embeddings", input=["hello world", "bye"])
    assert [item.embedding for item in answer.data] == [[0.0, 11.0, 0.5], [1.0, 3.0, 0.5]]
    assert answer.usage.prompt_tokens == 3
    sent = vertex_endpoint.last_request
    assert sent.path == f"{PATH}/text-embedding-005:predict"
    assert sent.json == {"instances": [{"content": "hello world"}, {"content": "bye"}]}
    assert sent.headers["authorization"] == "Bearer ya29.fake-1"


@pytest.mark.django_db
def test_a_config_may_name_a_private_key_secret_before_it_is_put():
    from endpoints.config import check_entity
    from endpoints.secrets import OPERATOR  # as the endpoints file is applied by default

    row = {"name": "gemini", "provider": "google-cloud-vertex-ai", "model": "gemini-2.5-flash", "config": {
        "project_id": "my-project", "region": "us-central1", "private_key": "{{secrets/gcp/service-account}}",
    }}
    assert check_entity("llm/v1/chat", row, user=OPERATOR) is None
    row["config"]["private_key_plaintext"] = row["config"].pop("private_key").replace("{{", "not json {{")
    assert "private_key" in check_entity("llm/v1/chat", row, user=OPERATOR)
