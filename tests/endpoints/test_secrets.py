"""Secrets: the encrypted store, references in provider configs, masking, the `secrets` command
and the admin — and what a vendor receives when an endpoint's key is a secret."""
from __future__ import annotations

import html
import io
import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from endpoints import secrets
from endpoints.config import ConfigError, parse_text
from endpoints.masking import masked
from endpoints.models import Secret
from endpoints.providers import http
from tests.conftest import ROOT, api_client
from tests.fakes.openai_upstream import openai_upstream  # noqa: F401 (fixture)

VALUE = "sk-live-secret-value-0123456789"
OTHER = "sk-rotated-value-9876543210abcd"


@pytest.fixture(autouse=True)
def key_file(settings, tmp_path) -> Path:
    """Each test has its own key file, made on first use, and no key in the environment."""
    settings.SECRETS_KEY = ""
    settings.SECRETS_KEY_FILE = tmp_path / "var" / "secrets_key"
    return settings.SECRETS_KEY_FILE


def stored(scope: str, key: str) -> bytes:
    return bytes(Secret.objects.get(scope=scope, key=key).ciphertext)


# --- the store --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_stores_only_an_encrypted_token_and_reads_the_value_back():
    assert secrets.put("openai", "api_key", VALUE) is True
    assert VALUE.encode() not in stored("openai", "api_key")
    assert secrets.get("openai", "api_key") == VALUE
    assert secrets.put("openai", "api_key", OTHER) is False
    assert secrets.get("openai", "api_key") == OTHER
    assert Secret.objects.count() == 1


@pytest.mark.django_db
def test_it_makes_the_key_file_on_the_first_put_readable_only_by_its_owner(key_file):
    assert secrets.list_secrets() == []
    with pytest.raises(secrets.MissingSecret):
        secrets.get("openai", "api_key")
    assert not key_file.exists()  # reading makes no key
    secrets.put("openai", "api_key", VALUE)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert Fernet(key_file.read_bytes()).decrypt(stored("openai", "api_key")) == VALUE.encode()
    assert [p.name for p in key_file.parent.iterdir()] == ["secrets_key"]  # no temporary file left


@pytest.mark.django_db
def test_it_uses_the_key_from_the_environment_and_makes_no_file(settings, key_file):
    settings.SECRETS_KEY = Fernet.generate_key().decode()
    secrets.put("openai", "api_key", VALUE)
    assert not key_file.exists()
    assert Fernet(settings.SECRETS_KEY).decrypt(stored("openai", "api_key")) == VALUE.encode()


@pytest.mark.django_db
def test_it_says_how_to_recover_when_the_key_changed(settings):
    secrets.put("openai", "api_key", VALUE)
    settings.SECRETS_KEY = Fernet.generate_key().decode()
    with pytest.raises(secrets.SecretsError) as info:
        secrets.get("openai", "api_key")
    message = info.value.message
    assert "{{secrets/openai/api_key}} cannot be decrypted" in message and "FONDASI_SECRETS_KEY" in message
    assert "stored with another key" in message and "`python manage.py secrets put openai api_key`" in message
    assert VALUE not in message and settings.SECRETS_KEY not in message


@pytest.mark.django_db
def test_it_refuses_a_key_that_is_not_a_fernet_key_without_showing_it(settings):
    settings.SECRETS_KEY = "not-a-fernet-key-at-all"
    with pytest.raises(secrets.SecretsError) as info:
        secrets.put("openai", "api_key", VALUE)
    assert "FONDASI_SECRETS_KEY does not hold a Fernet key" in info.value.message
    assert "not-a-fernet-key-at-all" not in info.value.message
    assert not Secret.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("scope, key", [("my scope", "k"), ("s", "a/b"), ("s", ""), ("x" * 101, "k"), ("s", "{{k}}")])
def test_it_refuses_scopes_and_keys_the_model_would_refuse(scope, key):
    with pytest.raises(secrets.SecretsError, match="letters, digits, '.', '_' or '-'"):
        secrets.put(scope, key, VALUE)
    assert not Secret.objects.exists()


@pytest.mark.django_db
def test_it_refuses_an_empty_value():
    with pytest.raises(secrets.SecretsError, match="must not be empty"):
        secrets.put("openai", "api_key", "")


@pytest.mark.django_db
def test_it_lists_scopes_keys_and_dates_never_values():
    secrets.put("openai", "api_key", VALUE)
    secrets.put("anthropic", "api_key", OTHER)
    entries = secrets.list_secrets()
    assert [(e.scope, e.key, e.reference) for e in entries] == [
        ("anthropic", "api_key", "{{secrets/anthropic/api_key}}"),
        ("openai", "api_key", "{{secrets/openai/api_key}}"),
    ]
    assert all(e.updated_at is not None for e in entries)
    assert VALUE not in repr(entries) and OTHER not in repr(entries)
    assert [e.scope for e in secrets.list_secrets("openai")] == ["openai"]


@pytest.mark.django_db
def test_it_deletes_a_secret_and_says_when_there_is_none():
    secrets.put("openai", "api_key", VALUE)
    secrets.delete("openai", "api_key")
    assert not Secret.objects.exists()
    with pytest.raises(secrets.MissingSecret, match=r"\{\{secrets/openai/api_key\}\} does not exist"):
        secrets.delete("openai", "api_key")


# --- references -------------------------------------------------------------------------------

STORE = {("openai", "key"): VALUE, ("hdr", "token"): OTHER}


def lookup(scope: str, key: str) -> str:
    if (scope, key) not in STORE:
        raise secrets.MissingSecret(f"secret {secrets.reference(scope, key)} does not exist.")
    return STORE[(scope, key)]


def test_resolve_replaces_references_and_renames_plaintext_fields_at_any_depth():
    config = {
        "openai_api_key": "{{secrets/openai/key}}",
        "openai_api_base": "https://vendor.example/v1",
        "custom_provider_config": {
            "api_key_auth": {"key": "X-Api-Key", "value": "{{secrets/hdr/token}}"},
            "bearer_token_auth": {"token_plaintext": "plain-token"},
        },
        "headers": [{"value": "{{secrets/openai/key}}"}],
        "timeout": 30,
    }
    assert secrets.resolve(config, lookup) == {
        "openai_api_key": VALUE,
        "openai_api_base": "https://vendor.example/v1",
        "custom_provider_config": {
            "api_key_auth": {"key": "X-Api-Key", "value": OTHER},
            "bearer_token_auth": {"token": "plain-token"},
        },
        "headers": [{"value": VALUE}],
        "timeout": 30,
    }
    assert config["openai_api_key"] == "{{secrets/openai/key}}"  # a new dict: the config is untouched


def test_resolve_keeps_a_plaintext_value_as_written_and_only_whole_references():
    config = {"anthropic_api_key_plaintext": "{{secrets/openai/key}}", "note": "see {{secrets/openai/key}}"}
    assert secrets.resolve(config, lookup) == {
        "anthropic_api_key": "{{secrets/openai/key}}", "note": "see {{secrets/openai/key}}",
    }


def test_resolve_names_the_field_of_a_missing_secret():
    with pytest.raises(secrets.MissingSecret) as info:
        secrets.resolve({"api_key_auth": {"value": "{{secrets/hdr/gone}}"}}, lookup)
    assert info.value.message == "field 'api_key_auth.value': secret {{secrets/hdr/gone}} does not exist."


@pytest.mark.parametrize("config, problem", [
    ({"openai_api_key": "x", "openai_api_key_plaintext": "y"},
     "give 'openai_api_key' or 'openai_api_key_plaintext', not both."),
    ({"auth": {"token": "x", "token_plaintext": "y"}}, "give 'auth.token' or 'auth.token_plaintext', not both."),
    ({"openai_api_key": "{{secrets/openai key}}"}, "'openai_api_key' is not a valid secret reference"),
    ({"openai_api_key": "{{ secrets/openai/key }}"}, None),  # not a reference at all: sent as written
])
def test_resolve_refuses_a_field_given_both_ways_and_a_malformed_reference(config, problem):
    if problem is None:
        assert secrets.resolve(config, lookup) == config
        return
    with pytest.raises(secrets.SecretsError) as info:
        secrets.resolve(config, lookup)
    assert info.value.message.startswith(problem)


def test_mask_shows_references_and_masks_every_documented_credential():
    config = {
        "openai_api_base": "https://vendor.example/v1",
        "openai_api_key": "{{secrets/openai/key}}",
        "anthropic_api_key_plaintext": "sk-ant-0123456789abcdef",
        "databricks_api_token": "dapi0123",
        "aws_access_key_id": "AKIA0123456789ABCDEF",
        "aws_secret_access_key": "short",
        "private_key": "-----BEGIN PRIVATE KEY-----abcdWXYZ",
        "microsoft_entra_client_secret": "entra-secret",
        "password": "hunter2",
        "max_tokens": 256,
        "api_key_auth": {"key": "X-Api-Key", "value": "header-value-0123456789"},
        "bearer_token_auth": {"token": "{{secrets/hdr/token}}"},
    }
    assert masked(config) == {
        "openai_api_base": "https://vendor.example/v1",
        "openai_api_key": "{{secrets/openai/key}}",
        "anthropic_api_key_plaintext": "••••cdef",
        "databricks_api_token": "••••",
        "aws_access_key_id": "••••CDEF",
        "aws_secret_access_key": "••••",
        "private_key": "••••WXYZ",
        "microsoft_entra_client_secret": "••••",
        "password": "••••",
        "max_tokens": 256,
        "api_key_auth": {"key": "X-Api-Key", "value": "••••6789"},
        "bearer_token_auth": {"token": "{{secrets/hdr/token}}"},
    }


# --- declaring endpoints ----------------------------------------------------------------------

VENDOR = textwrap.dedent("""\
    endpoints:
      - name: {name}
        task: llm/v1/chat
        served_entities:
          - name: {name}-model
            external_model:
              name: some-model
              provider: openai-compatible
              openai_config:
                openai_api_base: "{base}"
                {key_field}: "{key_value}"
    """)


def vendor_yaml(base: str, name: str = "vendor-chat", key_field: str = "openai_api_key",
                key_value: str = "{{secrets/vendor/api_key}}") -> str:
    return VENDOR.format(name=name, base=base, key_field=key_field, key_value=key_value)


@pytest.mark.django_db
def test_a_config_may_name_a_secret_before_it_exists_with_a_warning(caplog):
    caplog.set_level(logging.WARNING, logger="endpoints.secrets")
    [decl] = parse_text(vendor_yaml("http://127.0.0.1:9/v1"))
    assert decl.name == "vendor-chat"
    assert "served entity 'vendor-chat-model': secret {{secrets/vendor/api_key}} does not exist." in caplog.text
    assert "`python manage.py secrets put vendor api_key`" in caplog.text


@pytest.mark.django_db
def test_a_config_that_gives_a_field_both_ways_is_refused_naming_the_line():
    text = vendor_yaml("http://127.0.0.1:9/v1", key_value="sk-x") + "            openai_api_key_plaintext: sk-y\n"
    with pytest.raises(ConfigError) as info:
        parse_text(text, "endpoints.yaml")
    assert info.value.line == 5  # the served entity
    assert "give 'openai_api_key' or 'openai_api_key_plaintext', not both" in info.value.problem


# --- what the vendor receives -----------------------------------------------------------------

HELLO = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}


@pytest_asyncio.fixture
async def pool():
    yield
    await http.aclose_client()


async def ask(auth_headers, name: str = "vendor-chat"):
    return await api_client(auth_headers).post(
        f"/serving-endpoints/{name}/invocations", data=json.dumps(HELLO), content_type="application/json"
    )


def apply_yaml(text: str) -> None:
    from endpoints.config import apply

    apply(parse_text(text))


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_vendor_receives_the_secret_and_a_new_value_takes_effect_at_once(
    openai_upstream, auth_headers, pool  # noqa: F811
):
    from asgiref.sync import sync_to_async

    await sync_to_async(secrets.put)("vendor", "api_key", VALUE)
    await sync_to_async(apply_yaml)(vendor_yaml(openai_upstream.base_url))
    response = await ask(auth_headers)
    assert response.status_code == 200, response.content
    assert openai_upstream.last_request.headers["authorization"] == f"Bearer {VALUE}"
    await sync_to_async(secrets.put)("vendor", "api_key", OTHER)
    assert (await ask(auth_headers)).status_code == 200
    assert openai_upstream.last_request.headers["authorization"] == f"Bearer {OTHER}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_plaintext_key_reaches_the_vendor_under_its_plain_name(openai_upstream, auth_headers, pool):  # noqa: F811
    from asgiref.sync import sync_to_async

    await sync_to_async(apply_yaml)(
        vendor_yaml(openai_upstream.base_url, key_field="openai_api_key_plaintext", key_value=VALUE)
    )
    assert (await ask(auth_headers)).status_code == 200
    assert openai_upstream.last_request.headers["authorization"] == f"Bearer {VALUE}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_missing_secret_fails_only_the_queries_of_its_endpoint_saying_how_to_fix_it(
    openai_upstream, auth_headers, pool, caplog  # noqa: F811
):
    from asgiref.sync import sync_to_async

    caplog.set_level(logging.DEBUG)
    await sync_to_async(secrets.put)("vendor", "api_key", VALUE)
    await sync_to_async(apply_yaml)(
        vendor_yaml(openai_upstream.base_url)
        + vendor_yaml(openai_upstream.base_url, name="broken-chat", key_value="{{secrets/vendor/missing}}").split("\n", 1)[1]
    )
    response = await ask(auth_headers, "broken-chat")
    assert response.status_code == 400
    assert response.json() == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "Endpoint 'broken-chat' cannot be queried: served entity 'broken-chat-model', "
        "field 'openai_api_key': secret {{secrets/vendor/missing}} does not exist. Create it with "
        "`python manage.py secrets put vendor missing` (the value is read from stdin) or in the admin under Secrets.",
    }
    assert len(openai_upstream.requests) == 0
    assert (await ask(auth_headers)).status_code == 200  # the other endpoint keeps serving
    models = (await api_client(auth_headers).get("/serving-endpoints/models")).json()
    assert {m["id"] for m in models["data"]} >= {"vendor-chat", "broken-chat"}
    await sync_to_async(secrets.put)("vendor", "missing", OTHER)  # the fix, as the message says
    assert (await ask(auth_headers, "broken-chat")).status_code == 200
    assert openai_upstream.last_request.headers["authorization"] == f"Bearer {OTHER}"
    assert VALUE not in caplog.text and OTHER not in caplog.text


# --- the command ------------------------------------------------------------------------------


def run(*args: str, stdin: str = "") -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    old, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        call_command("secrets", *args, stdout=out, stderr=err)
    finally:
        sys.stdin = old
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_secrets_put_reads_the_value_from_stdin_and_never_prints_it():
    out, err = run("put", "openai", "api_key", stdin=VALUE + "\n")
    assert out == "Created {{secrets/openai/api_key}}.\n" and err == ""
    assert secrets.get("openai", "api_key") == VALUE
    out, _ = run("put", "openai", "api_key", stdin=OTHER)
    assert out == "Updated {{secrets/openai/api_key}}.\n"
    assert secrets.get("openai", "api_key") == OTHER


@pytest.mark.django_db
def test_secrets_put_with_value_warns_about_shell_history():
    out, err = run("put", "openai", "api_key", "--value", VALUE)
    assert "shell history" in err and VALUE not in out + err
    assert secrets.get("openai", "api_key") == VALUE


@pytest.mark.django_db
def test_secrets_list_shows_references_and_dates_never_values():
    assert run("list")[0] == "No secrets.\n"
    run("put", "openai", "api_key", stdin=VALUE)
    run("put", "anthropic", "key", stdin=OTHER)
    out, _ = run("list")
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["{{secrets/anthropic/key}}", "{{secrets/openai/api_key}}"]
    assert all(" updated 20" in line and line.endswith(" UTC") for line in lines)
    assert VALUE not in out and OTHER not in out
    assert run("list", "openai")[0].split()[0] == "{{secrets/openai/api_key}}"
    assert run("list", "nope")[0] == "No secrets in scope 'nope'.\n"


@pytest.mark.django_db
def test_secrets_delete_removes_it_and_errors_are_clear():
    run("put", "openai", "api_key", stdin=VALUE)
    assert run("delete", "openai", "api_key")[0] == "Deleted {{secrets/openai/api_key}}.\n"
    with pytest.raises(CommandError, match=r"\{\{secrets/openai/api_key\}\} does not exist"):
        run("delete", "openai", "api_key")
    with pytest.raises(CommandError, match="A secret scope is 1–100 letters"):
        run("put", "my scope", "k", stdin=VALUE)
    with pytest.raises(CommandError, match="must not be empty"):
        run("put", "openai", "api_key", stdin="\n")


def test_the_command_puts_a_piped_value_in_a_fresh_install(tmp_path):
    """`echo … | manage.py secrets put` as a person runs it: a new database, a new key file."""
    env = {**os.environ, "FONDASI_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "playground.settings",
           "FONDASI_ENDPOINTS_AUTO_LOAD": "0"}
    for name in ("DATABASE_URL", "FONDASI_SECRETS_KEY", "FONDASI_SECRETS_KEY_FILE"):
        env.pop(name, None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True)
    put = subprocess.run([*manage, "secrets", "put", "openai", "api_key"], input=VALUE + "\n", env=env,
                         capture_output=True, text=True)
    assert put.returncode == 0, put.stderr
    assert put.stdout == "Created {{secrets/openai/api_key}}.\n" and VALUE not in put.stderr
    key_file = tmp_path / "secrets_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    missing = subprocess.run([*manage, "secrets", "delete", "openai", "nope"], env=env, capture_output=True, text=True)
    assert missing.returncode == 1
    assert "CommandError: Secret {{secrets/openai/nope}} does not exist." in missing.stderr


# --- the admin --------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, db):
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw-0123456789"))
    return client


def test_the_admin_adds_a_secret_from_a_password_field_and_never_shows_it(admin_client):
    page = admin_client.get("/admin/endpoints/secret/add/").content.decode()
    assert 'type="password" name="value"' in page
    response = admin_client.post("/admin/endpoints/secret/add/", {"scope": "openai", "key": "api_key", "value": VALUE})
    assert response.status_code == 302
    assert secrets.get("openai", "api_key") == VALUE
    listing = admin_client.get("/admin/endpoints/secret/").content.decode()
    assert "{{secrets/openai/api_key}}" in listing and VALUE not in listing
    pk = Secret.objects.get().pk
    change = admin_client.get(f"/admin/endpoints/secret/{pk}/change/").content.decode()
    assert 'type="password" name="value"' in change and VALUE not in change
    history = admin_client.get(f"/admin/endpoints/secret/{pk}/history/").content.decode()
    assert VALUE not in history


def test_the_admin_replaces_a_value_or_keeps_it_when_left_blank(admin_client):
    secrets.put("openai", "api_key", VALUE)
    url = f"/admin/endpoints/secret/{Secret.objects.get().pk}/change/"
    assert admin_client.post(url, {"value": ""}).status_code == 302
    assert secrets.get("openai", "api_key") == VALUE
    assert admin_client.post(url, {"value": OTHER}).status_code == 302
    assert secrets.get("openai", "api_key") == OTHER


def test_the_admin_wants_a_value_for_a_new_secret_and_never_echoes_a_refused_one(admin_client):
    response = admin_client.post("/admin/endpoints/secret/add/", {"scope": "openai", "key": "api_key", "value": ""})
    assert "A new secret needs a value." in response.content.decode()
    response = admin_client.post("/admin/endpoints/secret/add/", {"scope": "bad scope", "key": "k", "value": VALUE})
    page = html.unescape(response.content.decode())
    assert "A secret scope is 1–100 letters, digits, '.', '_' or '-'; got 'bad scope'." in page and VALUE not in page
    assert not Secret.objects.exists()


def test_the_admin_deletes_secrets(admin_client):
    secrets.put("openai", "api_key", VALUE)
    secrets.put("openai", "other", OTHER)
    response = admin_client.post(
        "/admin/endpoints/secret/",
        {"action": "delete_selected", "_selected_action": [s.pk for s in Secret.objects.all()], "post": "yes"},
    )
    assert response.status_code == 302 and not Secret.objects.exists()


# --- pages ------------------------------------------------------------------------------------


def test_the_endpoint_page_shows_a_reference_as_written_and_masks_a_plaintext_key(client, alice):
    secrets.put("vendor", "api_key", VALUE)
    apply_yaml(vendor_yaml("https://vendor.example/v1") + vendor_yaml(
        "https://vendor.example/v1", name="plain-chat", key_field="openai_api_key_plaintext", key_value=OTHER
    ).split("\n", 1)[1])
    client.force_login(alice)
    page = client.get("/endpoints/vendor-chat/").content.decode()
    assert "{{secrets/vendor/api_key}}" in page and VALUE not in page
    page = client.get("/endpoints/plain-chat/").content.decode()
    assert "openai_api_key_plaintext" in page and "••••abcd" in page and OTHER not in page
