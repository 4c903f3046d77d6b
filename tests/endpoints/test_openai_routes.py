"""The OpenAI-compatible routes and the small public routes, in-process."""
import json

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from endpoints.config import apply, load_file, parse_text
from endpoints.providers import http
from tests.conftest import ROOT, api_client
from tests.fakes.openai_upstream import openai_upstream  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

FAKE = """
endpoints:
  - name: fake-chat
    task: llm/v1/chat
    served_entities:
      - external_model:
          name: vendor-model
          provider: openai-compatible
          openai_config: {{openai_api_base: "{base}"}}
"""


@pytest.fixture
def client(default_endpoints, auth_headers) -> AsyncClient:
    return api_client(auth_headers)


async def post(client, url, body):
    return await client.post(url, data=json.dumps(body), content_type="application/json")


@pytest_asyncio.fixture
async def two_chats(default_endpoints, openai_upstream):  # noqa: F811
    """The shipped endpoints plus ``fake-chat``, whose vendor (a fake over HTTP) always answers VENDOR-ANSWER."""
    await sync_to_async(apply)(load_file(ROOT / "endpoints.yaml") + parse_text(FAKE.format(base=openai_upstream.base_url)))
    openai_upstream.pieces = ["VENDOR-", "ANSWER"]
    yield openai_upstream
    await http.aclose_client()


async def test_chat_completions_routes_by_model(client, two_chats):
    ask = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}
    local = await post(client, "/serving-endpoints/chat/completions", {"model": "local-smollm2-chat", **ask})
    assert local.status_code == 200 and local.json()["object"] == "chat.completion"
    assert local.json()["model"] == local.headers["served-model-name"] == "smollm2-135m-instruct"
    assert local.json()["choices"][0]["message"]["content"] != "VENDOR-ANSWER" and not two_chats.requests
    vendor = await post(client, "/serving-endpoints/chat/completions", {"model": "fake-chat", **ask})
    assert vendor.status_code == 200 and vendor.json()["model"] == vendor.headers["served-model-name"] == "vendor-model"
    assert vendor.json()["choices"][0]["message"]["content"] == "VENDOR-ANSWER"
    assert [r.json["model"] for r in two_chats.requests] == ["vendor-model"]


CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "seed": 1}
SURFACES = [  # every route a temperature reaches the model by, with a body that has none yet
    ("/serving-endpoints/local-smollm2-chat/invocations", CHAT),
    ("/serving-endpoints/local-smollm2-completions/invocations", {"prompt": "Hi", "max_tokens": 2, "seed": 1}),
    ("/serving-endpoints/chat/completions", {"model": "local-smollm2-chat", **CHAT}),
    ("/serving-endpoints/completions", {"model": "local-smollm2-completions", "prompt": "Hi", "max_tokens": 2, "seed": 1}),
    ("/serving-endpoints/responses", {"model": "local-smollm2-chat", "input": "hi", "max_output_tokens": 2}),
]


@pytest.mark.parametrize(("url", "body"), SURFACES, ids=lambda v: v if isinstance(v, str) else "")
async def test_temperature_0_to_2_is_accepted_and_outside_refused_on_every_surface(client, url, body):
    for temperature in (0, 2):
        response = await post(client, url, {**body, "temperature": temperature})
        assert response.status_code == 200, (temperature, response.content)
    for temperature in (-0.1, 2.1):
        response = await post(client, url, {**body, "temperature": temperature})
        assert response.status_code == 400, (temperature, response.content)
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "'temperature'" in response.json()["message"] and str(temperature) in response.json()["message"]


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
