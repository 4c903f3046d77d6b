"""The OpenAI-compatible routes and the small public routes, in-process."""
import json

import pytest
from django.test import AsyncClient

from tests.conftest import api_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def client(default_endpoints, auth_headers) -> AsyncClient:
    return api_client(auth_headers)


async def post(client, url, body):
    return await client.post(url, data=json.dumps(body), content_type="application/json")


async def test_chat_completions_routes_by_model(client):
    response = await post(client, "/serving-endpoints/chat/completions",
                          {"model": "local-smollm2-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert response.status_code == 200 and response.json()["object"] == "chat.completion"


async def test_a_missing_model_is_400(client):
    response = await post(client, "/serving-endpoints/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400 and "'model'" in response.json()["message"]


async def test_a_route_of_the_wrong_task_points_to_the_right_one(client):
    response = await post(client, "/serving-endpoints/chat/completions",
                          {"model": "local-minilm-embeddings", "messages": [{"role": "user", "content": "hi"}]})
    body = response.json()
    assert response.status_code == 400
    assert "llm/v1/embeddings" in body["message"] and "/serving-endpoints/embeddings" in body["message"]


async def test_models_lists_every_endpoint(client):
    body = (await client.get("/serving-endpoints/models")).json()
    assert body["object"] == "list"
    assert {m["id"] for m in body["data"]} == {"local-smollm2-chat", "local-smollm2-completions", "local-minilm-embeddings"}
    assert all(m["object"] == "model" and m["owned_by"] == "fondasi" for m in body["data"])


async def test_a_model_can_be_retrieved_and_an_unknown_one_is_404(client):
    assert (await client.get("/serving-endpoints/models/local-smollm2-chat")).json()["id"] == "local-smollm2-chat"
    missing = await client.get("/serving-endpoints/models/nope")
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


async def test_the_databricks_probe_answers_without_auth(default_endpoints):
    response = await AsyncClient().get("/.well-known/databricks-config")
    assert response.status_code == 200
    assert response.json()["workspace_id"].isdigit() and response.json()["cloud"] == "aws"


async def test_healthz_answers_without_auth(default_endpoints):
    response = await AsyncClient().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok", "endpoints": 3}


async def test_api_views_are_csrf_exempt(default_endpoints, auth_headers):
    client = api_client(auth_headers, enforce_csrf_checks=True)
    response = await post(client, "/serving-endpoints/local-minilm-embeddings/invocations", {"input": "x"})
    assert response.status_code == 200
