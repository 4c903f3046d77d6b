"""Service principals and OAuth machine-to-machine: the command, the admin, discovery, the token
endpoint, and access tokens used on the serving APIs (spec/WIRE.md, "Start-up probe" and "Auth")."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import AsyncClient
from django.utils import timezone

from endpoints.auth import forget_tokens
from endpoints.models import AccessToken, ServicePrincipal, hash_token
from endpoints.oauth import ACCESS_TOKEN_NAME, create_service_principal
from tests.conftest import ROOT, api_client

TOKEN_URL = "/oidc/v1/token"
FORM = "application/x-www-form-urlencoded"
GRANT = "grant_type=client_credentials&scope=all-apis"
CHAT = {"model": "local-smollm2-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@pytest.fixture
def ci_bot(db) -> tuple[ServicePrincipal, str]:
    return create_service_principal("ci-bot")


async def ask_token(body: str = GRANT, authorization: str | None = None, client: AsyncClient | None = None):
    headers = {"Authorization": authorization} if authorization else None
    return await (client or AsyncClient()).post(TOKEN_URL, data=body, content_type=FORM, headers=headers)


async def access_token(principal: ServicePrincipal, secret: str) -> str:
    response = await ask_token(authorization=basic(principal.client_id, secret))
    assert response.status_code == 200, response.content
    return response.json()["access_token"]


def assert_oauth_error(response, status: int, error: str) -> dict:
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"error", "error_description"} and body["error"] == error
    assert body["error_description"]
    return body


# --- the command ------------------------------------------------------------------------------


def run(*args, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


@pytest.mark.django_db
def test_the_command_prints_the_client_id_and_secret_on_its_last_two_lines_and_stores_only_a_hash():
    client_id, secret = run("create_service_principal", name="ci-bot").strip().splitlines()[-2:]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", client_id)
    assert re.fullmatch(r"dose[0-9a-f]{64}", secret)
    principal = ServicePrincipal.objects.get(client_id=client_id)
    assert principal.secret_hash == hash_token(secret)
    user = principal.user
    assert user.username == "ci-bot" and not user.is_staff and not user.is_superuser
    assert not user.has_usable_password()


@pytest.mark.django_db
def test_each_service_principal_gets_its_own_client_id_and_secret():
    first = run("create_service_principal", name="one").strip().splitlines()[-2:]
    second = run("create_service_principal", name="two").strip().splitlines()[-2:]
    assert first[0] != second[0] and first[1] != second[1]


def test_the_command_refuses_a_name_that_is_taken(alice):
    with pytest.raises(CommandError, match="'alice' already exists"):
        run("create_service_principal", name="alice")
    assert not ServicePrincipal.objects.exists()


@pytest.mark.django_db
def test_the_command_refuses_a_name_that_is_not_a_user_name():
    with pytest.raises(CommandError, match="not a valid user name"):
        run("create_service_principal", name="ci bot")
    assert not get_user_model().objects.exists()


# --- the admin --------------------------------------------------------------------------------


ADMIN = "/admin/endpoints/serviceprincipal/"


def shown_secrets(response) -> list[str]:
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    return re.findall(r"dose[0-9a-f]{64}", response.content.decode())


def test_the_admin_creates_one_and_shows_its_secret_once(admin_client):
    response = admin_client.post(ADMIN + "add/", {"name": "etl"})
    [secret] = shown_secrets(response)
    principal = ServicePrincipal.objects.get(user__username="etl")
    assert principal.client_id in response.content.decode()
    assert principal.secret_hash == hash_token(secret)
    assert not principal.user.is_staff and not principal.user.has_usable_password()
    listing = admin_client.get(ADMIN).content.decode()
    assert principal.client_id in listing and secret not in listing
    assert secret not in admin_client.get(f"{ADMIN}{principal.pk}/change/").content.decode()


def test_the_admin_refuses_a_name_that_is_taken(admin_client):
    response = admin_client.post(ADMIN + "add/", {"name": "admin"})
    assert response.status_code == 200 and "already exists" in response.content.decode()
    assert not ServicePrincipal.objects.exists()


def sync_token_request(client, principal: ServicePrincipal, secret: str):
    return client.post(TOKEN_URL, GRANT, content_type=FORM, headers={"Authorization": basic(principal.client_id, secret)})


def test_rotating_a_secret_shows_the_new_one_refuses_the_old_one_and_revokes_its_tokens(admin_client, ci_bot):
    principal, old = ci_bot
    assert sync_token_request(admin_client, principal, old).status_code == 200
    response = admin_client.post(ADMIN, {"action": "rotate", "_selected_action": [principal.pk]})
    [new] = shown_secrets(response)
    assert new != old
    assert ServicePrincipal.objects.get(pk=principal.pk).secret_hash == hash_token(new)
    assert not AccessToken.objects.filter(user=principal.user, revoked_at__isnull=True).exists()
    assert_oauth_error(sync_token_request(admin_client, principal, old), 401, "invalid_client")
    assert sync_token_request(admin_client, principal, new).status_code == 200


def test_deleting_one_deletes_its_user_and_its_tokens(admin_client, ci_bot):
    principal, secret = ci_bot
    assert sync_token_request(admin_client, principal, secret).status_code == 200
    selected = {"action": "delete_selected", "_selected_action": [principal.pk], "post": "yes"}
    response = admin_client.post(ADMIN, selected)
    assert response.status_code == 302
    assert not ServicePrincipal.objects.exists()
    assert not get_user_model().objects.filter(username="ci-bot").exists()
    assert not AccessToken.objects.exists()


# --- the start-up probe and discovery ---------------------------------------------------------


def asgi(host: str) -> httpx.AsyncClient:
    """The real ASGI application (API handler, no middleware), asked for ``host``, in-process."""
    from playground.asgi import application

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url=f"http://{host}")


# No django_db mark on these: any database access would fail them.


@pytest.mark.asyncio
async def test_the_probe_names_the_oidc_endpoint_of_the_requested_host_without_touching_the_database():
    async with asgi("localhost:8000") as client:
        response = await client.get("/.well-known/databricks-config")
    body = response.json()
    assert response.status_code == 200
    assert body["oidc_endpoint"] == "http://localhost:8000/oidc"
    assert body["workspace_id"].isdigit() and body["cloud"] == "aws"


@pytest.mark.asyncio
async def test_the_probe_leaves_out_the_oidc_endpoint_for_a_host_not_allowed():
    async with asgi("evil.example") as client:
        response = await client.get("/.well-known/databricks-config")
    assert response.status_code == 200
    assert "oidc_endpoint" not in response.json() and response.json()["cloud"] == "aws"


@pytest.mark.asyncio
async def test_discovery_names_absolute_endpoints_and_what_is_supported_without_auth_or_database():
    async with asgi("127.0.0.1:9000") as client:
        response = await client.get("/oidc/.well-known/oauth-authorization-server")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "issuer": "http://127.0.0.1:9000/oidc",
        "authorization_endpoint": "http://127.0.0.1:9000/oidc/v1/authorize",
        "token_endpoint": "http://127.0.0.1:9000/oidc/v1/token",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["all-apis"],
        "response_types_supported": [],
    }


@pytest.mark.asyncio
async def test_discovery_refuses_a_host_not_allowed_rather_than_pointing_clients_there():
    async with asgi("evil.example") as client:
        response = await client.get("/oidc/.well-known/oauth-authorization-server")
    assert response.status_code == 400
    assert response.json()["error_code"] == "BAD_REQUEST" and "ALLOWED_HOSTS" in response.json()["message"]


@pytest.mark.asyncio
async def test_the_authorization_endpoint_says_only_machine_to_machine_is_offered():
    response = await AsyncClient().get("/oidc/v1/authorize?response_type=code&client_id=x")
    body = assert_oauth_error(response, 400, "unsupported_response_type")
    assert "client credentials" in body["error_description"]


# --- the token endpoint -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["basic", "form"], ids=["client_secret_basic", "client_secret_post"])
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_service_principal_gets_an_hour_long_access_token_stored_only_as_a_hash(ci_bot, how):
    principal, secret = ci_bot
    if how == "basic":
        response = await ask_token(authorization=basic(principal.client_id, secret))
    else:
        response = await ask_token(f"{GRANT}&client_id={principal.client_id}&client_secret={secret}")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["scope"] == "all-apis"
    stored = await AccessToken.objects.aget(token_hash=hash_token(body["access_token"]))
    assert stored.user_id == principal.user_id and body["access_token"] not in (stored.hint, stored.name)
    lifetime = stored.expires_at - timezone.now()
    assert timedelta(minutes=59) < lifetime <= timedelta(hours=1)


@pytest.mark.parametrize("body", [GRANT, "grant_type=client_credentials"], ids=["all-apis", "no scope"])
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_scope_defaults_to_all_apis(ci_bot, body):
    principal, secret = ci_bot
    response = await ask_token(body, basic(principal.client_id, secret))
    assert response.status_code == 200 and response.json()["scope"] == "all-apis"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_each_request_gets_a_new_access_token(ci_bot):
    assert await access_token(*ci_bot) != await access_token(*ci_bot)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_token_endpoint_needs_no_csrf_token(ci_bot):
    principal, secret = ci_bot
    strict = AsyncClient(enforce_csrf_checks=True)
    response = await ask_token(authorization=basic(principal.client_id, secret), client=strict)
    assert response.status_code == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_wrong_secret_is_invalid_client_with_a_challenge_and_no_secret_in_the_answer(ci_bot):
    principal, secret = ci_bot
    wrong = secret[:-1] + ("0" if secret[-1] != "0" else "1")
    response = await ask_token(authorization=basic(principal.client_id, wrong))
    body = assert_oauth_error(response, 401, "invalid_client")
    assert response["WWW-Authenticate"].startswith("Basic")
    assert wrong not in response.content.decode() and secret not in response.content.decode()
    assert "client_secret" in body["error_description"]
    assert not await AccessToken.objects.aexists()


CC = "grant_type=client_credentials"
# body, Authorization ("own": the principal's Basic credentials, "stranger": an unknown client id), status, error
CLIENT_ERRORS = {
    "unknown client id": (CC, "stranger", 401, "invalid_client"),
    "no credentials": (CC, None, 401, "invalid_client"),
    "a bearer token": (CC, "Bearer dapi0123", 401, "invalid_client"),
    "bad base64": (CC, "Basic %%%", 401, "invalid_client"),
    "basic without secret": (CC, "Basic " + base64.b64encode(b"someone").decode(), 401, "invalid_client"),
    "the secret twice": (CC + "&client_secret=x", "own", 400, "invalid_request"),
    "form without secret": (CC + "&client_id=x", None, 401, "invalid_client"),
    "no grant type": ("scope=all-apis", "own", 400, "invalid_request"),
    "another grant type": ("grant_type=password&username=a&password=b", "own", 400, "unsupported_grant_type"),
    "a refresh": ("grant_type=refresh_token&refresh_token=x", "own", 400, "unsupported_grant_type"),
    "an unknown scope": (CC + "&scope=all-apis%20sql", "own", 400, "invalid_scope"),
    "a repeated parameter": (CC + "&" + CC, "own", 400, "invalid_request"),
}


@pytest.mark.parametrize("body, auth, status, error", CLIENT_ERRORS.values(), ids=CLIENT_ERRORS.keys())
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_bad_token_requests_get_oauth_errors(ci_bot, body, auth, status, error):
    principal, secret = ci_bot
    named = {"own": basic(principal.client_id, secret), "stranger": basic("no-such-client", secret)}
    authorization = named.get(auth, auth)
    response = await ask_token(body, authorization)
    assert_oauth_error(response, status, error)
    if status == 401:
        assert response["WWW-Authenticate"].startswith("Basic")
    assert secret not in response.content.decode()
    assert not await AccessToken.objects.aexists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_json_body_is_refused_naming_the_form_encoding(ci_bot):
    principal, secret = ci_bot
    response = await AsyncClient().post(TOKEN_URL, data=json.dumps({"grant_type": "client_credentials"}),
                                        content_type="application/json",
                                        headers={"Authorization": basic(principal.client_id, secret)})
    body = assert_oauth_error(response, 400, "invalid_request")
    assert FORM in body["error_description"]


@pytest.mark.asyncio
async def test_other_methods_are_405():
    response = await AsyncClient().get(TOKEN_URL)
    assert_oauth_error(response, 405, "invalid_request")
    assert response["Allow"] == "POST"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_deactivated_service_principal_gets_no_token(ci_bot):
    principal, secret = ci_bot
    await get_user_model().objects.filter(pk=principal.user_id).aupdate(is_active=False)
    body = assert_oauth_error(await ask_token(authorization=basic(principal.client_id, secret)), 400, "invalid_grant")
    assert "deactivated" in body["error_description"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_issuing_deletes_access_tokens_long_expired_and_keeps_the_rest(ci_bot, alice):
    principal, secret = ci_bot
    now = timezone.now()
    long_ago = now - timedelta(days=2)

    async def row(user, name: str, mark: str, expires_at) -> AccessToken:
        return await AccessToken.objects.acreate(user=user, name=name, token_hash=mark * 64, hint="dapi", expires_at=expires_at)

    stale = await row(principal.user, ACCESS_TOKEN_NAME, "a", long_ago)
    recent = await row(principal.user, ACCESS_TOKEN_NAME, "b", now - timedelta(minutes=5))
    pat = await row(alice, "laptop", "c", long_ago)
    await access_token(principal, secret)
    remaining = {pk async for pk in AccessToken.objects.values_list("pk", flat=True)}
    assert stale.pk not in remaining and {recent.pk, pat.pk} <= remaining and len(remaining) == 3


# --- access tokens on the serving APIs --------------------------------------------------------


async def expire(value: str, when) -> None:
    await AccessToken.objects.filter(token_hash=hash_token(value)).aupdate(expires_at=when)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_an_access_token_works_on_invocations_and_the_openai_routes(default_endpoints, ci_bot):
    client = api_client({"Authorization": f"Bearer {await access_token(*ci_bot)}"})
    embedded = await client.post("/serving-endpoints/local-minilm-embeddings/invocations",
                                 data=json.dumps({"input": "hello"}), content_type="application/json")
    assert embedded.status_code == 200 and len(embedded.json()["data"][0]["embedding"]) == 384
    chat = await client.post("/serving-endpoints/chat/completions",
                             data=json.dumps(CHAT), content_type="application/json")
    assert chat.status_code == 200 and chat.json()["object"] == "chat.completion"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_an_expired_access_token_is_401_saying_it_expired(default_endpoints, ci_bot):
    value = await access_token(*ci_bot)
    await expire(value, timezone.now() - timedelta(seconds=1))
    response = await api_client({"Authorization": f"Bearer {value}"}).get("/serving-endpoints/models")
    assert response.status_code == 401
    assert response.json()["error_code"] == "UNAUTHENTICATED" and "expired" in response.json()["message"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_verified_token_is_not_trusted_past_its_expiry(default_endpoints, ci_bot, settings):
    settings.TOKEN_CACHE_SECONDS = 3600
    value = await access_token(*ci_bot)
    expires_at = timezone.now() + timedelta(seconds=2)
    await expire(value, expires_at)
    client = api_client({"Authorization": f"Bearer {value}"})
    assert (await client.get("/serving-endpoints/models")).status_code == 200
    await asyncio.sleep((expires_at - timezone.now()).total_seconds() + 0.2)
    response = await client.get("/serving-endpoints/models")
    assert response.status_code == 401 and "expired" in response.json()["message"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_personal_access_tokens_still_work_and_say_when_they_expired(default_endpoints, auth_headers, token):
    client = api_client(auth_headers)
    assert (await client.get("/serving-endpoints/models")).status_code == 200
    await expire(token, timezone.now() - timedelta(days=3))
    forget_tokens()  # as after the cache time
    response = await client.get("/serving-endpoints/models")
    assert response.status_code == 401 and "expired" in response.json()["message"]


async def status_with(value: str) -> int:
    return (await api_client({"Authorization": f"Bearer {value}"}).get("/serving-endpoints/models")).status_code


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_service_principal_holds_at_most_oauth_max_tokens_a_new_one_replacing_the_oldest(
        default_endpoints, ci_bot, settings):
    settings.OAUTH_MAX_TOKENS = 2
    first, second, third = [await access_token(*ci_bot) for _ in range(3)]
    assert await AccessToken.objects.filter(user=ci_bot[0].user_id).acount() == 2
    assert [await status_with(v) for v in (first, second, third)] == [401, 200, 200]


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_token_cache_is_bounded_and_never_holds_an_invalid_token(default_endpoints, alice, settings):
    from asgiref.sync import sync_to_async

    from endpoints import auth

    settings.TOKEN_CACHE_SECONDS = 3600
    settings.TOKEN_CACHE_SIZE = 1
    older = (await sync_to_async(AccessToken.issue)(alice, "older"))[1]
    newer = (await sync_to_async(AccessToken.issue)(alice, "newer"))[1]
    assert await status_with(older) == 200 and await status_with(newer) == 200  # the newer pushes the older out
    # Revoked behind this process's back (as by another process): the token no longer cached is
    # checked again at once; the cached one is trusted for the cache time, as documented.
    await AccessToken.objects.filter(user=alice).aupdate(revoked_at=timezone.now())
    assert await status_with(older) == 401 and await status_with(newer) == 200
    for i in range(50):
        assert await status_with(f"dapi{i:032x}") == 401
    assert len(auth._cache) == 1  # random tokens are looked up, never remembered


# --- a live server (the API handler, with no middleware) --------------------------------------


def test_the_whole_flow_on_a_live_server(fondasi_server):
    # The server's database lives in the folder of its log (see tests/conftest.py).
    env = {**os.environ, "FONDASI_VAR_DIR": str(fondasi_server.log.parent),
           "DJANGO_SETTINGS_MODULE": "playground.settings"}
    env.pop("DATABASE_URL", None)
    out = subprocess.run([sys.executable, str(ROOT / "manage.py"), "create_service_principal", "--name", "live-bot"],
                         env=env, check=True, capture_output=True, text=True)
    client_id, secret = out.stdout.strip().splitlines()[-2:]
    url = fondasi_server.url
    oidc = httpx.get(url + "/.well-known/databricks-config").json()["oidc_endpoint"]
    assert oidc == url + "/oidc"
    token_endpoint = httpx.get(oidc + "/.well-known/oauth-authorization-server").json()["token_endpoint"]
    assert token_endpoint == url + TOKEN_URL
    refused = httpx.post(token_endpoint, data={"grant_type": "client_credentials"}, auth=(client_id, "dose-wrong"))
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    granted = httpx.post(token_endpoint, data={"grant_type": "client_credentials", "scope": "all-apis"},
                         auth=(client_id, secret))
    assert granted.status_code == 200, granted.text
    answer = httpx.post(url + "/serving-endpoints/local-minilm-embeddings/invocations", json={"input": "hello"},
                        headers={"Authorization": f"Bearer {granted.json()['access_token']}"}, timeout=60)
    assert answer.status_code == 200 and len(answer.json()["data"][0]["embedding"]) == 384
