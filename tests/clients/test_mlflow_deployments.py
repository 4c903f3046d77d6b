"""The real `mlflow-skinny` deployments client, ``get_deploy_client("databricks")``, against a live Fondasi.

It is configured the way the product page says: ``DATABRICKS_HOST`` and ``DATABRICKS_TOKEN``.
"""
import math

import mlflow.deployments
import pytest
from requests import HTTPError

from tests.clients.conftest import LOCAL_CHAT, LOCAL_COMPLETIONS, LOCAL_EMBEDDINGS, VENDOR_KEY, openai_entity

HELLO = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0}


@pytest.fixture
def client(databricks_env):
    return mlflow.deployments.get_deploy_client("databricks")


def test_predict_chat(client):
    answer = client.predict(endpoint=LOCAL_CHAT, inputs=HELLO)
    assert answer["object"] == "chat.completion"
    message = answer["choices"][0]["message"]
    assert message["role"] == "assistant" and message["content"].strip()
    assert 0 < answer["usage"]["completion_tokens"] <= 8


def test_predict_completions_and_embeddings(client):
    completion = client.predict(endpoint=LOCAL_COMPLETIONS, inputs={"prompt": "Once upon a time", "max_tokens": 6})
    assert completion["object"] == "text_completion" and completion["choices"][0]["text"].strip()
    vectors = client.predict(endpoint=LOCAL_EMBEDDINGS, inputs={"input": ["first text", "second text", "third"]})
    assert [item["index"] for item in vectors["data"]] == [0, 1, 2]
    assert all(abs(math.sqrt(sum(x * x for x in item["embedding"])) - 1) < 1e-3 for item in vectors["data"])


def test_predict_stream_chat_gives_the_same_text_as_predict(client):
    whole = client.predict(endpoint=LOCAL_CHAT, inputs=HELLO)["choices"][0]["message"]["content"]
    chunks = list(client.predict_stream(endpoint=LOCAL_CHAT, inputs=HELLO))
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"])
    assert text == whole and len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) > 1
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_predict_stream_completions(client):
    chunks = list(client.predict_stream(endpoint=LOCAL_COMPLETIONS, inputs={"prompt": "Once upon a time",
                                                                              "max_tokens": 6, "temperature": 0}))
    assert chunks and all(chunk["object"] == "text_completion" for chunk in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]).strip()


def test_list_endpoints(client):
    endpoints = {e["name"]: e for e in client.list_endpoints()}
    assert {LOCAL_CHAT, LOCAL_COMPLETIONS, LOCAL_EMBEDDINGS} <= set(endpoints)
    assert endpoints[LOCAL_COMPLETIONS]["task"] == "llm/v1/completions"
    assert client.get_endpoint(LOCAL_EMBEDDINGS)["state"]["ready"] == "READY"


def test_create_predict_and_delete_an_endpoint(client, openai_upstream, gone):
    gone.append("mlflow-chat")
    created = client.create_endpoint(config={
        "name": "mlflow-chat",
        "config": {"served_entities": [openai_entity(openai_upstream, "llm/v1/chat")]},
        "tags": [{"key": "made-by", "value": "mlflow"}],
    })
    assert created["name"] == "mlflow-chat" and created["task"] == "llm/v1/chat"
    assert created["tags"] == [{"key": "made-by", "value": "mlflow"}] and VENDOR_KEY not in str(created)

    answer = client.predict(endpoint="mlflow-chat", inputs=HELLO)
    assert answer["choices"][0]["message"]["content"] == "Hello, world!"
    assert openai_upstream.last_request.json["model"] == "vendor-model"
    streamed = list(client.predict_stream(endpoint="mlflow-chat", inputs=HELLO))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in streamed if c["choices"]) == "Hello, world!"

    assert client.delete_endpoint("mlflow-chat") == {}
    assert "mlflow-chat" not in {e["name"] for e in client.list_endpoints()}
    with pytest.raises(HTTPError) as missing:
        client.get_endpoint("mlflow-chat")
    assert error_code(missing.value, 404) == "RESOURCE_DOES_NOT_EXIST"


def error_code(error: HTTPError, status: int) -> str:
    """The Databricks error code of an HTTPError the client raised, after checking its status.

    Over the SDK's connection mlflow rebuilds the status from the error code with its own table
    (mlflow.exceptions.ERROR_CODE_TO_HTTP_STATUS), which says 400 for RESOURCE_ALREADY_EXISTS.
    """
    assert error.response.status_code == status
    return error.response.json()["error_code"]


def test_errors_say_what_is_wrong_with_their_status_and_code(client, openai_upstream, gone):
    # The deployments client raises requests' HTTPError, its message ending with the response text.
    with pytest.raises(HTTPError) as missing:
        client.predict(endpoint="no-such-endpoint", inputs=HELLO)
    assert error_code(missing.value, 404) == "RESOURCE_DOES_NOT_EXIST" and "no-such-endpoint" in str(missing.value)
    with pytest.raises(HTTPError) as bad:
        client.predict(endpoint=LOCAL_CHAT, inputs={**HELLO, "temperature": 9})
    assert error_code(bad.value, 400) == "INVALID_PARAMETER_VALUE" and "temperature" in str(bad.value)
    body = {"name": "mlflow-twice", "config": {"served_entities": [openai_entity(openai_upstream, "llm/v1/chat")]}}
    gone.append("mlflow-twice")
    client.create_endpoint(config=body)
    with pytest.raises(HTTPError) as again:
        client.create_endpoint(config=body)
    assert error_code(again.value, 400) == "RESOURCE_ALREADY_EXISTS" and "mlflow-twice" in str(again.value)


def test_a_mid_stream_error_reaches_the_caller_as_a_chunk(client, openai_upstream, gone):
    gone.append("mlflow-broken-stream")
    client.create_endpoint(config={"name": "mlflow-broken-stream",
                                   "config": {"served_entities": [openai_entity(openai_upstream, "llm/v1/chat")]}})
    openai_upstream.mid_stream_error = {"error": {"message": "upstream fell over", "type": "server_error"}}
    chunks = list(client.predict_stream(endpoint="mlflow-broken-stream", inputs=HELLO))
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    assert "error" in chunks[-1] and chunks[-1]["error_code"] and chunks[-1]["message"]


def test_oauth_m2m_from_the_environment(fondasi_server, service_principal, monkeypatch):
    client_id, secret = service_principal
    monkeypatch.setenv("DATABRICKS_HOST", fondasi_server.url)
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", client_id)
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", secret)
    client = mlflow.deployments.get_deploy_client("databricks")
    vectors = client.predict(endpoint=LOCAL_EMBEDDINGS, inputs={"input": "hello"})
    assert len(vectors["data"][0]["embedding"]) == 384
