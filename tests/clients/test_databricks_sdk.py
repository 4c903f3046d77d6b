"""The real `databricks-sdk` (WorkspaceClient) against a live Fondasi: only the host and the token change."""
import math
from datetime import timedelta

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import BadRequest, NotFound, ResourceAlreadyExists
from databricks.sdk.service.serving import (
    AiGatewayUsageTrackingConfig, ChatMessage, ChatMessageRole, EndpointCoreConfigInput, EndpointStateConfigUpdate,
    EndpointStateReady, EndpointTag, ExternalModel, ExternalModelProvider, OpenAiConfig, QueryEndpointResponseObject,
    ServedEntityInput,
)

from tests.clients.conftest import LOCAL_CHAT, LOCAL_COMPLETIONS, LOCAL_EMBEDDINGS, VENDOR_KEY

HELLO = [ChatMessage(role=ChatMessageRole.USER, content="Say hello.")]


@pytest.fixture
def w(fondasi_server) -> WorkspaceClient:
    return WorkspaceClient(host=fondasi_server.url, token=fondasi_server.token)


def openai_served_entity(base_url: str, model: str = "gpt-4o-mini") -> ServedEntityInput:
    """An external OpenAI model whose API base is a fake vendor, as a user writes it with the SDK."""
    return ServedEntityInput(name="gpt", external_model=ExternalModel(
        name=model, provider=ExternalModelProvider.OPENAI, task="llm/v1/chat",
        openai_config=OpenAiConfig(openai_api_base=base_url, openai_api_key_plaintext=VENDOR_KEY),
    ))


# --- query --------------------------------------------------------------------------------------


def test_query_with_messages(w):
    response = w.serving_endpoints.query(name=LOCAL_CHAT, messages=HELLO, max_tokens=8, temperature=0)
    choice = response.choices[0]
    assert choice.message.role == ChatMessageRole.ASSISTANT and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert response.object == QueryEndpointResponseObject.CHAT_COMPLETION
    assert response.served_model_name == "smollm2-135m-instruct"  # from the served-model-name header
    assert 0 < response.usage.completion_tokens <= 8 and response.usage.prompt_tokens > 0


def test_query_with_a_prompt(w):
    response = w.serving_endpoints.query(name=LOCAL_COMPLETIONS, prompt="The three primary colours are",
                                         max_tokens=8, temperature=0)
    assert response.object == QueryEndpointResponseObject.TEXT_COMPLETION
    assert response.choices[0].text.strip() and response.usage.completion_tokens <= 8


def test_query_with_input(w):
    response = w.serving_endpoints.query(name=LOCAL_EMBEDDINGS, input=["a cat sat on the mat", "stock markets fell"])
    assert response.object == QueryEndpointResponseObject.LIST
    assert [item.index for item in response.data] == [0, 1]
    for item in response.data:
        assert len(item.embedding) == 384 and abs(math.sqrt(sum(x * x for x in item.embedding)) - 1) < 1e-3
    assert response.data[0].embedding != response.data[1].embedding


def test_query_errors_are_the_sdks_own_exceptions_with_a_readable_message(w):
    with pytest.raises(NotFound) as missing:
        w.serving_endpoints.query(name="no-such-endpoint", messages=HELLO)
    assert "no-such-endpoint" in str(missing.value) and "{" not in str(missing.value)
    with pytest.raises(BadRequest) as bad:
        w.serving_endpoints.query(name=LOCAL_CHAT, messages=HELLO, temperature=9)
    assert "temperature" in str(bad.value)


# --- the management API -------------------------------------------------------------------------


def test_list_names_every_endpoint_ready(w):
    endpoints = {e.name: e for e in w.serving_endpoints.list()}
    assert {LOCAL_CHAT, LOCAL_COMPLETIONS, LOCAL_EMBEDDINGS, "fake-vision"} <= set(endpoints)
    assert endpoints[LOCAL_EMBEDDINGS].task == "llm/v1/embeddings"
    assert endpoints[LOCAL_CHAT].state.ready == EndpointStateReady.READY


def test_get_describes_the_endpoint(w):
    endpoint = w.serving_endpoints.get(LOCAL_CHAT)
    assert endpoint.name == LOCAL_CHAT and endpoint.task == "llm/v1/chat" and endpoint.id
    assert endpoint.state.config_update == EndpointStateConfigUpdate.NOT_UPDATING
    assert [e.name for e in endpoint.config.served_entities] == ["smollm2-135m-instruct"]
    assert {(t.key, t.value) for t in endpoint.tags} >= {("owner", "fondasi"), ("kind", "local")}
    with pytest.raises(NotFound):
        w.serving_endpoints.get("no-such-endpoint")


def test_create_and_wait_query_update_and_delete(w, openai_upstream, gone):
    gone.append("sdk-openai-chat")
    entity = openai_served_entity(openai_upstream.base_url)
    config = EndpointCoreConfigInput(name="sdk-openai-chat", served_entities=[entity])
    created = w.serving_endpoints.create_and_wait(
        name="sdk-openai-chat", config=config, tags=[EndpointTag(key="team", value="clients")],
        timeout=timedelta(seconds=30),
    )
    assert created.name == "sdk-openai-chat" and created.state.ready == EndpointStateReady.READY
    assert created.config.served_entities[0].external_model.provider == ExternalModelProvider.OPENAI
    assert VENDOR_KEY not in str(created.as_dict())  # masked in every answer

    answer = w.serving_endpoints.query(name="sdk-openai-chat", messages=HELLO, max_tokens=5)
    assert answer.choices[0].message.content == "Hello, world!" and answer.served_model_name == "gpt"
    sent = openai_upstream.last_request
    assert sent.path == "/v1/chat/completions" and sent.headers["authorization"] == f"Bearer {VENDOR_KEY}"
    assert sent.json["model"] == "gpt-4o-mini" and sent.json["max_tokens"] == 5

    updated = w.serving_endpoints.update_config_and_wait(
        name="sdk-openai-chat", served_entities=[openai_served_entity(openai_upstream.base_url, model="gpt-4.1-mini")],
        timeout=timedelta(seconds=30),
    )
    assert updated.config.served_entities[0].external_model.name == "gpt-4.1-mini"
    w.serving_endpoints.query(name="sdk-openai-chat", messages=HELLO)
    assert openai_upstream.last_request.json["model"] == "gpt-4.1-mini"

    w.serving_endpoints.delete("sdk-openai-chat")
    assert "sdk-openai-chat" not in {e.name for e in w.serving_endpoints.list()}
    with pytest.raises(NotFound):
        w.serving_endpoints.query(name="sdk-openai-chat", messages=HELLO)


def test_creating_an_endpoint_that_exists_is_resource_already_exists(w, openai_upstream, gone):
    entity = openai_served_entity(openai_upstream.base_url)
    config = EndpointCoreConfigInput(name="sdk-twice", served_entities=[entity])
    gone.append("sdk-twice")
    w.serving_endpoints.create_and_wait(name="sdk-twice", config=config, timeout=timedelta(seconds=30))
    with pytest.raises(ResourceAlreadyExists) as again:
        w.serving_endpoints.create(name="sdk-twice", config=config)
    assert "sdk-twice" in str(again.value)


def test_tags_and_ai_gateway_of_an_endpoint_made_through_the_api(w, openai_upstream, gone):
    entity = openai_served_entity(openai_upstream.base_url)
    config = EndpointCoreConfigInput(name="sdk-governed", served_entities=[entity])
    gone.append("sdk-governed")
    w.serving_endpoints.create_and_wait(name="sdk-governed", config=config, timeout=timedelta(seconds=30))
    tags = w.serving_endpoints.patch("sdk-governed", add_tags=[EndpointTag(key="cost-centre", value="42")])
    assert [(t.key, t.value) for t in tags.tags] == [("cost-centre", "42")]
    gateway = w.serving_endpoints.put_ai_gateway(
        "sdk-governed", usage_tracking_config=AiGatewayUsageTrackingConfig(enabled=True))
    assert gateway.usage_tracking_config.enabled is True
    assert w.serving_endpoints.get("sdk-governed").ai_gateway.usage_tracking_config.enabled is True


# --- the OpenAI client it builds ----------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:get_open_ai_client:DeprecationWarning")
def test_get_open_ai_client_chats_streams_and_embeds(w):
    client = w.serving_endpoints.get_open_ai_client(max_retries=0)
    request = dict(model=LOCAL_CHAT, messages=[{"role": "user", "content": "Count to five."}], max_tokens=8,
                   temperature=0)
    whole = client.chat.completions.create(**request).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**request, stream=True)
                       if c.choices)
    assert whole.strip() and streamed == whole
    vectors = client.embeddings.create(model=LOCAL_EMBEDDINGS, input="what is databricks").data
    assert len(vectors) == 1 and len(vectors[0].embedding) == 384


# --- OAuth machine-to-machine -------------------------------------------------------------------


def test_oauth_m2m_with_a_service_principal(fondasi_server, service_principal):
    client_id, secret = service_principal
    w = WorkspaceClient(host=fondasi_server.url, client_id=client_id, client_secret=secret)
    assert w.config.auth_type == "oauth-m2m"
    response = w.serving_endpoints.query(name=LOCAL_EMBEDDINGS, input="hello")
    assert len(response.data[0].embedding) == 384
    assert LOCAL_CHAT in {e.name for e in w.serving_endpoints.list()}


def test_oauth_m2m_from_the_environment(fondasi_server, service_principal, monkeypatch):
    client_id, secret = service_principal
    monkeypatch.setenv("DATABRICKS_HOST", fondasi_server.url)
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", client_id)
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", secret)
    w = WorkspaceClient()
    assert w.config.auth_type == "oauth-m2m"
    assert w.serving_endpoints.get(LOCAL_CHAT).permission_level.value == "CAN_QUERY"  # not staff


def test_a_wrong_client_secret_is_refused_naming_the_reason(fondasi_server, service_principal):
    client_id, _ = service_principal
    w = WorkspaceClient(host=fondasi_server.url, client_id=client_id, client_secret="dose-wrong")
    # The SDK asks for a token with the first call, and says the token endpoint's OAuth error.
    with pytest.raises(ValueError, match="invalid_client: Client authentication failed") as refused:
        w.serving_endpoints.list()
    assert "dose-wrong" not in str(refused.value)
