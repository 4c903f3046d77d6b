"""Credentials are masked alike by the management API, the pages and the admin; stored JSON is
bounded in depth and size, and one row that cannot be rendered does not fail the list."""
from __future__ import annotations

import json

import pytest
from django.test import Client

from tests.conftest import api_client

URL = "/api/2.0/serving-endpoints"
BASE = "http://127.0.0.1:9/v1"  # nothing listens there; creating an endpoint calls nobody
KEY = "sk-live-0123456789abcdef"
# Credentials that ride inside values whose names say nothing.
URL_WITH_CREDENTIALS = "http://svc-user:hunter2-pass@127.0.0.1:9/v1?api-key=abcdef0123&api-version=2024-02-01"
HEADER_LINE = "Authorization: Bearer sk-header-0123456789abcdef"
ORGANIZATION = "org-0123456789-wxyz"
REFERENCE = "{{secrets/team/openai}}"
CLEAR = ("hunter2", "abcdef0123", "sk-header-0123456789", KEY, "org-0123456789")


def provider_config(**extra) -> dict:
    return {"openai_api_base": URL_WITH_CREDENTIALS, "openai_api_key_plaintext": KEY,
            "openai_organization_plaintext": ORGANIZATION, "default_headers": [HEADER_LINE], **extra}


def entity(name: str = "gpt", **config) -> dict:
    return {"name": name, "external_model": {"name": f"upstream-{name}", "provider": "openai-compatible",
                                             "task": "llm/v1/chat", "openai_config": {**config}}}


def create_body(name: str, *entities: dict, **extra) -> dict:
    return {"name": name, "config": {"served_entities": list(entities)}, **extra}


def nested(depth: int) -> dict:
    value: dict = {}
    inner = value
    for _ in range(depth - 1):
        inner["a"] = {}
        inner = inner["a"]
    return value


def stored(name: str, source: str):
    """An endpoint saved as the endpoints file or the admin saves one, with ``provider_config()``."""
    from endpoints.config import EndpointDecl, save_endpoint

    decl = EndpointDecl.model_validate(
        {"name": name, "task": "llm/v1/chat", "served_entities": [entity(**provider_config())]})
    return save_endpoint(decl, source)


@pytest.fixture
def boss(db):
    """A superuser: the upstream address policy lets it point at a loopback port."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-4-tests-only")


@pytest.fixture
def api(boss):
    from endpoints.models import AccessToken

    return api_client({"Authorization": f"Bearer {AccessToken.issue(boss, 'tests')[1]}"})


async def send(client, method: str, url: str, body) -> object:
    return await getattr(client, method)(url, data=json.dumps(body), content_type="application/json")


def assert_error(response, *words: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    for word in words:
        assert word in body["message"], (word, body["message"])


# --- one masking, three surfaces ----------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_api_masks_credentials_inside_urls_headers_and_plaintext_fields(api):
    config = provider_config(openai_api_key=REFERENCE)
    del config["openai_api_key_plaintext"]
    created = await send(api, "post", URL, create_body("masked", entity(**config)))
    answers = [created, await api.get(f"{URL}/masked"), await api.get(URL)]
    for response in answers:
        assert response.status_code == 200, response.content
        text = response.content.decode()
        for clear in CLEAR:
            assert clear not in text, clear
        shown = json.loads(text)
        shown = shown["endpoints"][0] if "endpoints" in shown else shown
        config = shown["config"]["served_entities"][0]["external_model"]["openai_config"]
        assert config["openai_api_base"] == "http://svc-user:••••@127.0.0.1:9/v1?api-key=••••&api-version=2024-02-01"
        assert config["default_headers"] == ["Authorization: Bearer ••••cdef"]
        assert config["openai_organization_plaintext"] == "••••wxyz"
        assert config["openai_api_key"] == REFERENCE  # a reference names a secret; it is not one
    # The masked URL sent back would store a broken address: refused, naming the field.
    shown = answers[1].json()["config"]["served_entities"][0]
    shown.pop("state")
    assert_error(await send(api, "put", f"{URL}/masked/config", {"served_entities": [shown]}),
                 "served_entities.0.external_model.openai_config.openai_api_base", "masked")


@pytest.mark.django_db
def test_the_endpoint_page_masks_plaintext_fields_and_header_values(boss):
    from endpoints.models import ServingEndpoint

    stored("paged", ServingEndpoint.Source.API)
    client = Client()
    client.force_login(boss)
    response = client.get("/endpoints/paged/")
    assert response.status_code == 200
    text = response.content.decode()
    for clear in CLEAR:
        assert clear not in text, clear
    assert "http://svc-user:••••@127.0.0.1:9/v1?api-key=••••&amp;api-version=2024-02-01" in text
    assert "Authorization: Bearer ••••cdef" in text and "••••wxyz" in text


def _change_form_data(response) -> dict:
    """What the admin's change form posts back when nothing is edited."""
    data: dict = {}
    every = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        every.append(inline.formset.management_form)
        every.extend(inline.formset.forms)
    for form in every:
        for field in form:
            value = field.value()  # as the widget renders it (JSON fields as JSON text)
            if value is None or value is False:
                continue
            data[field.html_name] = "on" if value is True else value
    return data


def _form_errors(response) -> list:
    if not response.context:
        return [response.status_code]
    errors = [response.context["adminform"].form.errors]
    for inline in response.context["inline_admin_formsets"]:
        errors += [inline.formset.errors, inline.formset.non_form_errors()]
    return errors


@pytest.mark.django_db
def test_the_admin_shows_the_config_masked_and_a_save_keeps_the_credentials(boss):
    from endpoints.models import ServedEntity, ServingEndpoint

    endpoint = stored("admined", ServingEndpoint.Source.ADMIN)
    client = Client()
    client.force_login(boss)
    url = f"/admin/endpoints/servingendpoint/{endpoint.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200
    text = page.content.decode()
    for clear in CLEAR:
        assert clear not in text, clear
    assert "••••cdef" in text and "••••wxyz" in text
    # Saved unchanged, the stored credentials stay as they were.
    data = _change_form_data(page)
    data["description"] = "edited in the admin"
    saved = client.post(url, data)
    assert saved.status_code == 302, _form_errors(saved)
    kept = ServedEntity.objects.get(endpoint__name="admined").config
    assert kept["openai_api_key_plaintext"] == KEY and kept["openai_api_base"] == URL_WITH_CREDENTIALS
    assert kept["default_headers"] == [HEADER_LINE]
    assert ServingEndpoint.objects.get(name="admined").description == "edited in the admin"
    # A masked value typed somewhere it was not shown is refused, not stored.
    moved = {**data}
    key = next(k for k in data if k.endswith("-config"))
    moved[key] = json.dumps({**json.loads(data[key]), "openai_api_base": "https://••••@elsewhere.example/v1"})
    refused = client.post(url, moved)
    assert refused.status_code == 200 and "holds a masked value" in refused.content.decode()
    assert ServedEntity.objects.get(endpoint__name="admined").config["openai_api_base"] == URL_WITH_CREDENTIALS


# --- bounded JSON ---------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_config_nested_too_deep_is_a_400_naming_the_field_and_nothing_is_saved(api):
    body = create_body("deep", entity(openai_api_base=BASE, extra=nested(300)))
    assert_error(await send(api, "post", URL, body),
                 "config.served_entities.0.external_model.openai_config", "16 levels")
    listed = await api.get(URL)
    assert listed.status_code == 200 and listed.json() == {"endpoints": []}
    # Within the limit it is saved; a config update deeper than it is refused the same way.
    assert (await send(api, "post", URL, create_body("deep", entity(openai_api_base=BASE, extra=nested(10))))).status_code == 200
    assert_error(await send(api, "put", f"{URL}/deep/config", {"served_entities": [entity(extra=nested(17))]}),
                 "served_entities.0.external_model.openai_config", "16 levels")
    # Anything else nested deep, wherever it is, is refused before it is parsed.
    assert_error(await send(api, "post", URL, {"name": "x", "config": nested(100)}), "request body", "32 levels")


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_tags_rate_limits_and_the_ai_gateway_are_bounded_in_size(api):
    assert (await send(api, "post", URL, create_body("sized", entity(openai_api_base=BASE)))).status_code == 200
    many_tags = [{"key": f"k{i}", "value": "v" * 100} for i in range(1000)]
    assert_error(await send(api, "post", URL, create_body("other", entity(openai_api_base=BASE), tags=many_tags)),
                 "'tags'", "65536 bytes")
    assert_error(await send(api, "post", URL, create_body("other", entity(openai_api_base=BASE),
                                                          description="d" * 20000)), "'description'", "16384")
    assert_error(await send(api, "patch", f"{URL}/sized/tags", {"add_tags": many_tags}), "'add_tags'", "65536 bytes")
    # Small patches that add up are bounded by what the endpoint would hold.
    for start in range(0, 1000, 200):
        response = await send(api, "patch", f"{URL}/sized/tags", {"add_tags": many_tags[start:start + 200]})
        if response.status_code != 200:
            assert_error(response, "'tags'", "65536 bytes")
            break
    else:
        pytest.fail("1000 tags of 100 characters were all stored")
    limits = {"rate_limits": [{"calls": 1, "renewal_period": "minute"}] * 5000}
    assert_error(await send(api, "put", f"{URL}/sized/rate-limits", limits), "'rate_limits'", "65536 bytes")
    gateway = {"guardrails": {"input": {"invalid_keywords": ["word"] * 20000}}}
    assert_error(await send(api, "put", f"{URL}/sized/ai-gateway", gateway), "'ai_gateway'", "65536 bytes")
    assert (await api.get(f"{URL}/sized")).json()["tags"] != []


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_stored_row_that_cannot_be_rendered_does_not_fail_the_list(api):
    from asgiref.sync import sync_to_async

    from endpoints.models import ServedEntity

    for name in ("fine", "broken"):
        assert (await send(api, "post", URL, create_body(name, entity(openai_api_base=BASE)))).status_code == 200
    # Stored before the limits existed (or edited in the database): 300 levels, past what JSON answers hold.
    entity_row = await ServedEntity.objects.aget(endpoint__name="broken")
    entity_row.config = {**entity_row.config, "extra": nested(300)}
    await sync_to_async(entity_row.save)()

    listed = await api.get(URL)
    assert listed.status_code == 200, listed.content
    by_name = {e["name"]: e for e in listed.json()["endpoints"]}
    assert by_name["fine"]["config"]["served_entities"][0]["name"] == "gpt"
    assert by_name["broken"]["state"]["config_update"] == "UPDATE_FAILED" and "config" not in by_name["broken"]
    got = await api.get(f"{URL}/broken")
    assert got.status_code == 200 and got.json()["state"]["config_update"] == "UPDATE_FAILED"
    # Its owner can still repair or delete it.
    assert (await send(api, "put", f"{URL}/broken/config", {"served_entities": [entity(openai_api_base=BASE)]})).status_code == 200
    assert "config" in (await api.get(f"{URL}/broken")).json()
