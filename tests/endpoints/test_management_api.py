"""The Databricks serving-endpoints management API, /api/2.0/serving-endpoints, in-process (ASGI)."""
import asyncio
import io
import json
import time

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command

from tests.conftest import api_client
from tests.fakes.openai_upstream import openai_upstream  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

URL = "/api/2.0/serving-endpoints"
KEY = "sk-live-0123456789abcdef"  # a plaintext credential: never in an answer
NOWHERE = "http://127.0.0.1:9/v1"  # nothing listens there; creating an endpoint calls nobody
HELLO = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}


def external(name: str = "gpt", base: str = NOWHERE, task: str | None = "llm/v1/chat", **config) -> dict:
    model = {"name": f"upstream-{name}", "provider": "openai-compatible",
             "openai_config": {"openai_api_base": base, **config}}
    if task:
        model["task"] = task
    return {"name": name, "external_model": model}


def create_body(name: str = "ext-chat", *entities: dict, **extra) -> dict:
    return {"name": name, "config": {"served_entities": list(entities) or [external()]}, **extra}


def make_user(username: str, staff: bool):
    from django.contrib.auth import get_user_model

    from endpoints.models import AccessToken

    user = get_user_model().objects.create_user(username, password="pw-4-tests-only", is_staff=staff)
    return api_client({"Authorization": f"Bearer {AccessToken.issue(user, 'tests')[1]}"})


@pytest.fixture
def root(db):
    """A staff user's client."""
    return make_user("root", staff=True)


@pytest.fixture
def alice(auth_headers):
    """A user without staff status (conftest's alice)."""
    return api_client(auth_headers)


async def send(client, method: str, url: str, body=None):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return await getattr(client, method)(url, data=data, content_type="application/json")


async def create(client, body: dict) -> dict:
    response = await send(client, "post", URL, body)
    assert response.status_code == 200, response.content
    return response.json()


def assert_error(response, status: int, code: str, *words: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error_code", "message"} and body["error_code"] == code
    for word in words:
        assert word in body["message"], body["message"]
    return body


@sync_to_async
def grant(scope: str, permission: str, username: str) -> None:
    from django.contrib.auth import get_user_model

    from endpoints import secrets

    secrets.acl_put(scope, permission, user=get_user_model().objects.get(username=username))


async def load_file(tmp_path, text: str) -> None:
    path = tmp_path / "endpoints.yaml"
    path.write_text(text)
    await sync_to_async(call_command)("load_endpoints", str(path), stdout=io.StringIO())


# --- list, create, get, delete --------------------------------------------------------------------


@pytest.mark.parametrize("url", [URL, URL + "/"])
async def test_it_lists_no_endpoints_as_an_empty_list_on_both_slash_forms(root, url):
    response = await root.get(url)
    assert response.status_code == 200 and response.json() == {"endpoints": []}


async def test_it_creates_an_external_model_endpoint_and_answers_the_endpoint_object(root):
    before = int(time.time() * 1000)
    sent = create_body("ext-chat", tags=[{"key": "team", "value": "search"}], description="d", route_optimized=False)
    sent["config"]["name"] = "ext-chat"  # the SDK repeats the name in the config
    body = await create(root, sent)
    assert body["name"] == "ext-chat" and body["task"] == "llm/v1/chat"
    assert isinstance(body["id"], str) and len(body["id"]) == 32
    assert body["state"] == {"ready": "READY", "config_update": "NOT_UPDATING"}
    assert body["creator"] == "root" and body["permission_level"] == "CAN_MANAGE"
    assert before - 1000 <= body["creation_timestamp"] <= int(time.time() * 1000) + 1000
    assert body["last_updated_timestamp"] >= body["creation_timestamp"]
    assert body["tags"] == [{"key": "team", "value": "search"}] and body["description"] == "d"
    entity = body["config"]["served_entities"][0]
    assert entity["name"] == "gpt"
    assert entity["external_model"] == {"name": "upstream-gpt", "provider": "openai-compatible", "task": "llm/v1/chat",
                                        "openai_config": {"openai_api_base": NOWHERE}}
    assert body["config"]["traffic_config"] == {
        "routes": [{"served_entity_name": "gpt", "served_model_name": "gpt", "traffic_percentage": 100}]}
    got = (await root.get(f"{URL}/ext-chat")).json()
    assert got == body


async def test_the_slash_form_creates_and_lists_without_a_redirect(root):
    response = await send(root, "post", URL + "/", create_body("mlflow-made"))
    assert response.status_code == 200 and response.json()["name"] == "mlflow-made"
    listed = (await root.get(URL)).json()["endpoints"]
    assert [e["name"] for e in listed] == ["mlflow-made"]
    assert listed[0]["state"]["ready"] == "READY" and listed[0]["permission_level"] == "CAN_MANAGE"


async def test_an_endpoint_created_through_the_api_is_queryable_at_once(root, openai_upstream):
    await create(root, create_body("live", external("m", openai_upstream.base_url, openai_api_key_plaintext=KEY)))
    response = await send(root, "post", "/serving-endpoints/live/invocations", HELLO)
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == "Hello, world!"
    assert openai_upstream.last_request.json["model"] == "upstream-m"
    assert openai_upstream.last_request.headers["authorization"] == f"Bearer {KEY}"


async def test_creating_an_endpoint_that_exists_is_409(root):
    await create(root, create_body("twice"))
    assert_error(await send(root, "post", URL, create_body("twice")), 409, "RESOURCE_ALREADY_EXISTS", "'twice'")


async def test_an_unknown_endpoint_is_404(root):
    for response in (await root.get(f"{URL}/nope"), await root.delete(f"{URL}/nope"),
                     await send(root, "put", f"{URL}/nope/config", {"served_entities": [external()]}),
                     await send(root, "patch", f"{URL}/nope/tags", {"add_tags": [{"key": "a"}]})):
        assert_error(response, 404, "RESOURCE_DOES_NOT_EXIST", "'nope'")


async def test_delete_answers_an_empty_object_and_queries_stop_at_once(root, openai_upstream):
    await create(root, create_body("gone", external("m", openai_upstream.base_url)))
    assert (await send(root, "post", "/serving-endpoints/gone/invocations", HELLO)).status_code == 200
    response = await root.delete(f"{URL}/gone")
    assert response.status_code == 200 and response.json() == {}
    assert_error(await root.get(f"{URL}/gone"), 404, "RESOURCE_DOES_NOT_EXIST")
    assert_error(await send(root, "post", "/serving-endpoints/gone/invocations", HELLO), 404, "RESOURCE_DOES_NOT_EXIST")


# --- the task and the served entities ----------------------------------------------------------


async def test_a_local_entity_gives_its_models_task(root):
    chat = await create(root, create_body("local-chat", {"entity_name": "smollm2-135m-instruct"}))
    assert chat["task"] == "llm/v1/chat"  # the model also completes: chat first
    assert chat["config"]["served_entities"][0] == {
        "name": "smollm2-135m-instruct", "entity_name": "smollm2-135m-instruct",
        "foundation_model": {"name": "smollm2-135m-instruct"}, "state": {"deployment": "DEPLOYMENT_READY"}}
    legacy = await create(root, {"name": "legacy", "config": {"served_models": [
        {"name": "minilm", "model_name": "all-minilm-l6-v2", "model_version": "1", "workload_size": "Small",
         "scale_to_zero_enabled": True}]}})
    assert legacy["task"] == "llm/v1/embeddings"
    asked = await create(root, create_body("local-complete", {"entity_name": "smollm2-135m-instruct"},
                                           task="llm/v1/completions"))
    assert asked["task"] == "llm/v1/completions"


async def test_a_local_endpoint_created_through_the_api_answers(root):
    await create(root, create_body("tiny", {"entity_name": "smollm2-135m-instruct"}))
    response = await send(root, "post", "/serving-endpoints/tiny/invocations", {**HELLO, "max_tokens": 2, "temperature": 0})
    assert response.status_code == 200, response.content
    assert response["served-model-name"] == "smollm2-135m-instruct"
    assert response.json()["usage"]["completion_tokens"] <= 2


@pytest.mark.parametrize("body, field", [
    ("{not json", "not valid JSON"),
    ([1, 2], "JSON object"),
    ({"config": {"served_entities": [external()]}}, "missing required field name"),
    (create_body(colour="red"), "unknown field 'colour'"),
    (create_body("bad name!"), "name: endpoint name 'bad name!' is not valid"),
    (create_body(tags="team"), "tags"),
    (create_body(tags=[{"key": "a", "value": 1}]), "tags.0.value"),
    ({"name": "x"}, "missing required field config"),
    ({"name": "x", "config": {}}, "config: give 'served_entities'"),
    ({"name": "x", "config": {"served_entities": [external()], "auto_capture_config": {}}},
     "unknown field 'auto_capture_config' at config.auto_capture_config"),
    (create_body("x", {**external(), "workload": 1}), "unknown field 'workload' at config.served_entities.0.workload"),
    (create_body("x", {"name": "e"}), "config.served_entities.0"),
    (create_body("x", external(task=None)), "config.served_entities.0.external_model.task is missing"),
    (create_body("x", external(task="llm/v1/chatt")), "config.served_entities.0.external_model.task must be one of"),
    (create_body("x", {"external_model": {"name": "m", "provider": "nope", "task": "llm/v1/chat"}}),
     "config.served_entities.0: Unknown provider 'nope'"),
    (create_body("x", {"external_model": {"name": "m", "provider": "openai-compatible", "task": "llm/v1/chat",
                                          "openai_config": {}}}), "config.served_entities.0: An openai-compatible"),
    (create_body("x", external("a"), {"entity_name": "all-minilm-l6-v2"}), "config.served_entities.1 serves llm/v1/embeddings"),
    (create_body("x", {"entity_name": "smollm2-135m-instruct"}, task="llm/v1/embeddings"), "config.served_entities.0 serves"),
    (create_body("x", {"entity_name": "no-such-model"}), "config.served_entities.0: Unknown local model 'no-such-model'"),
    (create_body("x", external("a"), external("a")), "config.served_entities: served entity names must be unique"),
    ({"name": "x", "config": {"name": "y", "served_entities": [external()]}}, "config.name is 'y'"),
    (create_body("x", rate_limits=[{"calls": "5", "renewal_period": "minute"}]), "rate_limits.0.calls"),
    (create_body("x", ai_gateway={"usage_tracking_config": {"enabled": "yes"}}), "ai_gateway.usage_tracking_config.enabled"),
])
async def test_an_invalid_create_body_is_400_naming_the_field(root, body, field):
    assert_error(await send(root, "post", URL, body), 400, "INVALID_PARAMETER_VALUE", field)
    assert (await root.get(URL)).json() == {"endpoints": []}


async def test_the_traffic_config_picks_the_entity_queries_go_to(root, openai_upstream):
    routes = [{"served_model_name": "one", "traffic_percentage": 0}, {"served_entity_name": "two", "traffic_percentage": 100}]
    body = create_body("routed", external("one", openai_upstream.base_url), external("two", openai_upstream.base_url))
    body["config"]["traffic_config"] = {"routes": routes}
    created = await create(root, body)
    assert [r["served_entity_name"] for r in created["config"]["traffic_config"]["routes"]] == ["two", "one"]
    assert created["config"]["traffic_config"]["routes"][0]["traffic_percentage"] == 100
    await send(root, "post", "/serving-endpoints/routed/invocations", HELLO)
    assert openai_upstream.last_request.json["model"] == "upstream-two"
    body["name"] = "split"
    body["config"]["traffic_config"]["routes"] = [{"served_entity_name": n, "traffic_percentage": 50} for n in ("one", "two")]
    assert_error(await send(root, "post", URL, body), 400, "INVALID_PARAMETER_VALUE", "config.traffic_config.routes", "splitting")
    body["config"]["traffic_config"]["routes"] = [{"served_entity_name": "three", "traffic_percentage": 100}]
    assert_error(await send(root, "post", URL, body), 400, "INVALID_PARAMETER_VALUE", "config.traffic_config.routes.0", "'three'")


# --- config update ---------------------------------------------------------------------------


async def test_a_config_update_replaces_the_entities_and_answers_the_endpoint(root, openai_upstream):
    created = await create(root, create_body("upd", external("old", openai_upstream.base_url)))
    await send(root, "post", "/serving-endpoints/upd/invocations", HELLO)
    assert openai_upstream.last_request.json["model"] == "upstream-old"
    await asyncio.sleep(0.01)
    response = await send(root, "put", f"{URL}/upd/config", {"served_entities": [external("new", openai_upstream.base_url)]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["name"] == "upd" and body["state"]["config_update"] == "NOT_UPDATING"
    assert [e["name"] for e in body["config"]["served_entities"]] == ["new"]
    assert body["last_updated_timestamp"] > created["last_updated_timestamp"]
    assert body["creation_timestamp"] == created["creation_timestamp"] and body["id"] == created["id"]
    await send(root, "post", "/serving-endpoints/upd/invocations", HELLO)
    assert openai_upstream.last_request.json["model"] == "upstream-new"  # seen at once


async def test_a_config_update_keeps_the_task_and_names_bad_fields(root):
    await create(root, create_body("keep"))
    url = f"{URL}/keep/config"
    assert_error(await send(root, "put", url, {"served_entities": [external(task="llm/v1/embeddings")]}), 400,
                 "INVALID_PARAMETER_VALUE", "served_entities.0", "llm/v1/chat")
    assert_error(await send(root, "put", url, {"served_entities": [{"entity_name": 3}]}), 400,
                 "INVALID_PARAMETER_VALUE", "served_entities.0.entity_name")
    assert_error(await send(root, "put", url, {"served_entities": [external()], "name": "other"}), 400,
                 "INVALID_PARAMETER_VALUE", "name is 'other', but the endpoint is 'keep'")
    assert_error(await send(root, "put", url, {"served_entities": [external()], "colour": "red"}), 400,
                 "INVALID_PARAMETER_VALUE", "unknown field 'colour'")
    # Without its own task, an external model takes the endpoint's.
    response = await send(root, "put", url, {"served_entities": [external("notask", task=None)]})
    assert response.status_code == 200 and response.json()["config"]["served_entities"][0]["name"] == "notask"


# --- tags, rate limits, AI gateway ---------------------------------------------------------------


async def test_patching_tags_adds_replaces_and_deletes(root):
    await create(root, create_body("tagged", tags=[{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]))
    response = await send(root, "patch", f"{URL}/tagged/tags",
                          {"add_tags": [{"key": "b", "value": "3"}, {"key": "c"}], "delete_tags": ["a"]})
    assert response.status_code == 200
    assert response.json() == {"tags": [{"key": "b", "value": "3"}, {"key": "c"}]}
    assert (await root.get(f"{URL}/tagged")).json()["tags"] == [{"key": "b", "value": "3"}, {"key": "c"}]
    assert_error(await send(root, "patch", f"{URL}/tagged/tags", {"add_tags": [{"value": "x"}]}), 400,
                 "INVALID_PARAMETER_VALUE", "add_tags.0.key")


async def test_rate_limits_are_validated_stored_and_returned(root):
    await create(root, create_body("limited"))
    limits = {"rate_limits": [{"calls": 10, "key": "user", "renewal_period": "minute"}]}
    response = await send(root, "put", f"{URL}/limited/rate-limits", limits)
    assert response.status_code == 200 and response.json() == limits
    assert (await root.get(f"{URL}/limited")).json()["rate_limits"] == limits["rate_limits"]
    for bad, field in (({"rate_limits": [{"calls": 1, "key": "team", "renewal_period": "minute"}]}, "rate_limits.0.key"),
                       ({"rate_limits": [{"calls": 1, "renewal_period": "hour"}]}, "rate_limits.0.renewal_period"),
                       ({"rate_limits": [{"renewal_period": "minute"}]}, "rate_limits.0.calls"),
                       ({"limits": []}, "unknown field 'limits'")):
        assert_error(await send(root, "put", f"{URL}/limited/rate-limits", bad), 400, "INVALID_PARAMETER_VALUE", field)
    assert (await root.get(f"{URL}/limited")).json()["rate_limits"] == limits["rate_limits"]


async def test_the_ai_gateway_is_stored_and_returned(root):
    gateway = {
        "usage_tracking_config": {"enabled": True},
        "inference_table_config": {"catalog_name": "c", "schema_name": "s", "enabled": False},
        "guardrails": {"input": {"safety": True, "pii": {"behavior": "BLOCK"}, "invalid_keywords": ["x"]}},
        "rate_limits": [{"calls": 5, "tokens": 1000, "key": "user_group", "principal": "eng", "renewal_period": "minute"}],
        "fallback_config": {"enabled": True},
    }
    await create(root, create_body("gated", ai_gateway={"usage_tracking_config": {"enabled": False}}))
    assert (await root.get(f"{URL}/gated")).json()["ai_gateway"] == {"usage_tracking_config": {"enabled": False}}
    response = await send(root, "put", f"{URL}/gated/ai-gateway", gateway)
    assert response.status_code == 200 and response.json() == gateway
    assert (await root.get(f"{URL}/gated")).json()["ai_gateway"] == gateway
    assert_error(await send(root, "put", f"{URL}/gated/ai-gateway", {"guardrails": {"input": {"safety": "on"}}}), 400,
                 "INVALID_PARAMETER_VALUE", "guardrails.input.safety")
    assert_error(await send(root, "put", f"{URL}/gated/ai-gateway", {"rate_limits": [{"calls": 1}]}), 400,
                 "INVALID_PARAMETER_VALUE", "rate_limits.0.renewal_period")


# --- credentials ----------------------------------------------------------------------------


async def test_plaintext_credentials_are_masked_in_every_answer(root):
    # Every *_plaintext value is masked, a credential by name or not.
    entity = external("e", openai_api_key_plaintext=KEY, openai_organization_plaintext="org-0123456789-wxyz")
    referenced = external("r", openai_api_key="{{secrets/team/openai}}")
    await grant("team", "READ", "root")  # referring to a secret takes READ on its scope
    answers = [await send(root, "post", URL, create_body("secret", entity, referenced))]
    answers.append(await root.get(f"{URL}/secret"))
    answers.append(await root.get(URL + "/"))
    answers.append(await send(root, "put", f"{URL}/secret/config", {"served_entities": [entity, referenced]}))
    for response in answers:
        assert response.status_code == 200, response.content
        assert KEY.encode() not in response.content and b"0123456789" not in response.content
        text = response.content.decode()
        assert "••••cdef" in text and "••••wxyz" in text and "{{secrets/team/openai}}" in text
    # A masked value sent back would replace the key: it is refused, naming the field.
    shown = {k: v for k, v in answers[1].json()["config"]["served_entities"][0].items() if k != "state"}
    assert_error(await send(root, "put", f"{URL}/secret/config", {"served_entities": [shown]}), 400,
                 "INVALID_PARAMETER_VALUE", "served_entities.0.external_model.openai_config.openai_api_key_plaintext")


async def test_an_error_about_a_config_never_shows_its_credential(root):
    body = create_body("x", external(base="ftp://nowhere", openai_api_key_plaintext=KEY))
    response = await send(root, "post", URL, body)
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "config.served_entities.0", "openai_api_base")
    assert KEY.encode() not in response.content


# --- who may do what ----------------------------------------------------------------------------


async def test_a_user_without_staff_status_may_list_and_get_but_not_change(root, alice):
    await create(root, create_body("theirs"))
    assert (await alice.get(URL)).json()["endpoints"][0]["permission_level"] == "CAN_QUERY"
    assert (await alice.get(f"{URL}/theirs")).json()["permission_level"] == "CAN_QUERY"
    assert_error(await send(alice, "post", URL, create_body("mine")), 403, "PERMISSION_DENIED")
    url = f"{URL}/theirs"
    for response in (await alice.delete(url),
                     await send(alice, "put", f"{url}/config", {"served_entities": [external()]}),
                     await send(alice, "patch", f"{url}/tags", {"add_tags": [{"key": "k"}]}),
                     await send(alice, "put", f"{url}/rate-limits", {"rate_limits": []}),
                     await send(alice, "put", f"{url}/ai-gateway", {})):
        assert_error(response, 403, "PERMISSION_DENIED", "'theirs'")
    assert (await root.get(url)).json()["tags"] == []


async def test_the_creator_keeps_can_manage_without_staff_status(root, alice):
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    await sync_to_async(users.filter(username="alice").update)(is_staff=True)
    await create(alice, create_body("alices"))
    await sync_to_async(users.filter(username="alice").update)(is_staff=False)
    got = (await alice.get(f"{URL}/alices")).json()
    assert got["creator"] == "alice" and got["permission_level"] == "CAN_MANAGE"
    response = await send(alice, "put", f"{URL}/alices/config", {"served_entities": [external("v2")]})
    assert response.status_code == 200, response.content
    assert_error(await send(alice, "post", URL, create_body("another")), 403, "PERMISSION_DENIED")


async def test_it_needs_a_token(db):
    assert_error(await api_client({}).get(URL), 401, "UNAUTHENTICATED")


async def test_the_wrong_method_is_405_in_the_error_shape(root):
    await create(root, create_body("m"))
    assert_error(await send(root, "put", URL, {}), 405, "BAD_REQUEST", "GET or POST")
    assert_error(await root.get(f"{URL}/m/config"), 405, "BAD_REQUEST", "PUT")
    assert_error(await send(root, "put", f"{URL}/m/tags", {}), 405, "BAD_REQUEST", "PATCH")


# --- the endpoints file --------------------------------------------------------------------------

OTHER_FILE = """
endpoints:
  - name: from-file
    task: llm/v1/chat
    served_entities:
      - foundation_model: {name: smollm2-135m-instruct}
"""


async def test_an_api_endpoint_survives_load_endpoints_and_stays_queryable(root, openai_upstream, tmp_path):
    await create(root, create_body("kept", external("m", openai_upstream.base_url, openai_api_key_plaintext=KEY)))
    await load_file(tmp_path, OTHER_FILE)
    names = [e["name"] for e in (await root.get(URL)).json()["endpoints"]]
    assert names == ["from-file", "kept"]
    await load_file(tmp_path, "endpoints: []\n")  # the file's endpoints go; the API's stay
    assert [e["name"] for e in (await root.get(URL)).json()["endpoints"]] == ["kept"]
    response = await send(root, "post", "/serving-endpoints/kept/invocations", HELLO)
    assert response.status_code == 200, response.content
    assert openai_upstream.last_request.headers["authorization"] == f"Bearer {KEY}"


async def test_the_file_wins_for_the_endpoints_it_names(root, tmp_path):
    created = await create(root, create_body("shared", rate_limits=[{"calls": 3, "renewal_period": "minute"}]))
    await load_file(tmp_path, OTHER_FILE.replace("from-file", "shared"))
    got = (await root.get(f"{URL}/shared")).json()
    assert got["config"]["served_entities"][0]["entity_name"] == "smollm2-135m-instruct"
    assert got["id"] == created["id"] and got["rate_limits"] == [{"calls": 3, "renewal_period": "minute"}]
    # What the file declares changes only there; governance settings, which it does not declare, here.
    for response in (await send(root, "put", f"{URL}/shared/config", {"served_entities": [external()]}),
                     await send(root, "patch", f"{URL}/shared/tags", {"add_tags": [{"key": "k"}]}),
                     await root.delete(f"{URL}/shared")):
        assert_error(response, 400, "BAD_REQUEST", "endpoints file")
    limits = {"rate_limits": [{"calls": 7, "key": "endpoint", "renewal_period": "minute"}]}
    assert (await send(root, "put", f"{URL}/shared/rate-limits", limits)).json() == limits
    await load_file(tmp_path, OTHER_FILE.replace("from-file", "shared") + "    description: changed\n")
    got = (await root.get(f"{URL}/shared")).json()
    assert got["description"] == "changed" and got["rate_limits"] == limits["rate_limits"]
    assert_error(await send(root, "post", URL, create_body("shared")), 409, "RESOURCE_ALREADY_EXISTS")
