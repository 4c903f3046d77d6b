"""Secret scope permissions (READ / WRITE / MANAGE, as Databricks' secret ACLs) and the upstream
address policy, on every surface that saves a provider config: the management API (create and
PUT config), the endpoints file (applied as its owner) and the admin."""
from __future__ import annotations

import html
import io
import json

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command

from endpoints import secrets
from endpoints.config import ConfigError, parse_text
from endpoints.models import SecretScopeACL, ServingEndpoint
from tests.conftest import api_client
from tests.endpoints.test_management_api import URL, assert_error, create_body, external, send

pytestmark = pytest.mark.django_db(transaction=True)

VALUE = "sk-ant-admins-own-key-0123456789"
FAKE = "http://127.0.0.1:9/v1"  # a loopback upstream: where the key would be sent


@pytest.fixture(autouse=True)
def production_policy(settings, tmp_path):
    """The shipped defaults: public upstreams only (the test settings list loopback), the file
    applied as the operator; and a key file of this test's own."""
    settings.UPSTREAM_ALLOWED_NETWORKS = ()
    settings.UPSTREAM_ALLOWED_HOSTS = ()
    settings.ENDPOINTS_FILE_OWNER = ""
    settings.SECRETS_KEY = ""
    settings.SECRETS_KEY_FILE = tmp_path / "secrets_key"


def user(name: str, *, staff: bool = True, superuser: bool = False):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(name, password="pw-4-tests-only", is_staff=staff,
                                                is_superuser=superuser)


@sync_to_async
def aclient_of(person):
    from endpoints.models import AccessToken

    return api_client({"Authorization": f"Bearer {AccessToken.issue(person, 'tests')[1]}"})


@pytest.fixture
def anthropic_key(db):
    """The admin's stored key, in scope 'anthropic' (put by the operator: no one else has an ACL)."""
    secrets.put("anthropic", "api_key", VALUE)
    return "{{secrets/anthropic/api_key}}"


def stealing(ref: str, base: str = FAKE, name: str = "exfil") -> dict:
    return create_body(name, external("e", base=base, openai_api_key=ref))


# --- the management API -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_staff_user_without_read_on_the_scope_cannot_create_an_endpoint_using_its_secret(anthropic_key):
    bob = await aclient_of(await sync_to_async(user)("bob"))
    response = await send(bob, "post", URL, stealing(anthropic_key))
    body = assert_error(response, 403, "PERMISSION_DENIED", "READ", "secret scope 'anthropic'",
                        "{{secrets/anthropic/api_key}}", "secrets acl put anthropic READ --user bob")
    assert VALUE not in body["message"]
    assert not await ServingEndpoint.objects.filter(name="exfil").aexists()


@pytest.mark.asyncio
@pytest.mark.parametrize("via_group", [False, True])
async def test_with_read_granted_to_the_user_or_a_group_it_works(settings, anthropic_key, via_group):
    settings.UPSTREAM_ALLOWED_NETWORKS = ("127.0.0.0/8",)  # the upstream is the operator's own
    bob = await sync_to_async(user)("bob")

    @sync_to_async
    def grant():
        if via_group:
            from django.contrib.auth.models import Group

            team = Group.objects.create(name="ml-team")
            bob.groups.add(team)
            secrets.acl_put("anthropic", "READ", group=team)
        else:
            secrets.acl_put("anthropic", "READ", user=bob)

    await grant()
    response = await send(await aclient_of(bob), "post", URL, stealing(anthropic_key, name="allowed"))
    assert response.status_code == 200, response.content
    assert await ServingEndpoint.objects.filter(name="allowed").aexists()


@pytest.mark.asyncio
async def test_put_config_needs_read_too_and_cannot_move_a_secret_to_another_address(settings, anthropic_key):
    """A superuser's endpoint holding a secret: a staff user (CAN_MANAGE) cannot re-point it."""
    settings.UPSTREAM_ALLOWED_NETWORKS = ("127.0.0.0/8",)
    root = await aclient_of(await sync_to_async(user)("root", superuser=True))
    assert (await send(root, "post", URL, stealing(anthropic_key, name="claude"))).status_code == 200
    bob = await sync_to_async(user)("bob")
    moved = {"served_entities": [external("e", base="http://127.0.0.1:4444/v1", openai_api_key=anthropic_key)]}
    response = await send(await aclient_of(bob), "put", f"{URL}/claude/config", moved)
    assert_error(response, 403, "PERMISSION_DENIED", "READ", "secret scope 'anthropic'")
    # With READ, the address is still checked: loopback is no longer listed.
    await sync_to_async(secrets.acl_put)("anthropic", "READ", user=bob)
    settings.UPSTREAM_ALLOWED_NETWORKS = ()
    response = await send(await aclient_of(bob), "put", f"{URL}/claude/config", moved)
    assert_error(response, 403, "PERMISSION_DENIED", "'openai_api_base' (127.0.0.1)", "loopback")
    entity = await sync_to_async(lambda: ServingEndpoint.objects.get(name="claude").entities.get())()
    assert entity.config["openai_api_base"] == FAKE  # unchanged


@pytest.mark.asyncio
@pytest.mark.parametrize("base, shown, label", [
    ("http://127.0.0.1:9/v1", "(127.0.0.1)", "loopback"),
    ("http://[::1]:9/v1", "(::1)", "loopback"),
    ("http://localhost:9/v1", "(localhost) resolves to ", "loopback"),  # 127.0.0.1 or ::1
    ("http://2130706433:9/v1", "resolves to 127.0.0.1", "loopback"),  # decimal
    ("http://0x7f000001:9/v1", "resolves to 127.0.0.1", "loopback"),  # hex
    ("http://127.1:9/v1", "resolves to 127.0.0.1", "loopback"),  # short form
    ("http://[::ffff:127.0.0.1]:9/v1", "(::ffff:127.0.0.1)", "loopback"),  # IPv4-mapped
    ("http://0.0.0.0:9/v1", "(0.0.0.0)", "unspecified"),
    ("http://10.1.2.3/v1", "(10.1.2.3)", "private"),
    ("http://192.168.0.10/v1", "(192.168.0.10)", "private"),
    ("http://172.16.5.4/v1", "(172.16.5.4)", "private"),
    ("http://[fd00::1]/v1", "(fd00::1)", "private"),
    ("http://169.254.169.254/latest", "(169.254.169.254)", "link-local"),  # cloud metadata
    ("http://[fe80::1]/v1", "(fe80::1)", "link-local"),
    ("http://100.64.0.1/v1", "(100.64.0.1)", "carrier-grade NAT"),
    (" HTTPS://127.0.0.1/v1", "(127.0.0.1)", "loopback"),
])
async def test_a_non_superuser_is_refused_every_non_public_upstream(base, shown, label):
    bob = await aclient_of(await sync_to_async(user)("bob"))
    response = await send(bob, "post", URL, create_body("inside", external("e", base=base)))
    assert_error(response, 403, "PERMISSION_DENIED", "'openai_api_base'", shown, f"{label} address",
                 "only a superuser", "FONDASI_UPSTREAM_ALLOWED_NETWORKS")
    assert not await ServingEndpoint.objects.filter(name="inside").aexists()


@pytest.mark.asyncio
async def test_any_url_field_at_any_depth_is_checked_written_in_plaintext_or_in_a_secret(anthropic_key):
    bob_user = await sync_to_async(user)("bob")
    bob = await aclient_of(bob_user)
    plaintext = {"openai_api_base_plaintext": "http://10.0.0.7/v1"}
    response = await send(bob, "post", URL, create_body("p", {"name": "e", "external_model": {
        "name": "m", "provider": "openai-compatible", "task": "llm/v1/chat", "openai_config": plaintext}}))
    assert_error(response, 403, "PERMISSION_DENIED", "'openai_api_base' (10.0.0.7)", "private address")
    custom = {"custom_provider_url": "http://localhost:8080/v1",
              "api_key_auth": {"key": "X-Key", "value": "abc"}}
    response = await send(bob, "post", URL, create_body("c", {"name": "e", "external_model": {
        "name": "m", "provider": "custom", "task": "llm/v1/chat", "custom_provider_config": custom}}))
    assert_error(response, 403, "PERMISSION_DENIED", "'custom_provider_url' (localhost)", "loopback")

    # A base URL kept in a secret the user may read: refused, and its address never shown.
    @sync_to_async
    def base_in_a_secret():
        secrets.put("internal", "base", "http://10.9.8.7:8000/v1")
        secrets.acl_put("internal", "READ", user=bob_user)

    await base_in_a_secret()
    response = await send(bob, "post", URL, create_body("s", external("e", base="{{secrets/internal/base}}")))
    body = assert_error(response, 403, "PERMISSION_DENIED", "the URL in 'openai_api_base' (from a secret)",
                        "private address")
    assert "10.9.8.7" not in body["message"]


@pytest.mark.asyncio
async def test_a_superuser_may_point_at_loopback_and_the_settings_open_hosts_or_networks(settings):
    root = await aclient_of(await sync_to_async(user)("root", superuser=True))
    response = await send(root, "post", URL, create_body("mine", external("e", base=FAKE)))
    assert response.status_code == 200, response.content
    bob = await aclient_of(await sync_to_async(user)("bob"))
    settings.UPSTREAM_ALLOWED_NETWORKS = ("10.20.0.0/16",)
    assert (await send(bob, "post", URL, create_body("n", external("e", base="http://10.20.1.2/v1")))).status_code == 200
    response = await send(bob, "post", URL, create_body("n2", external("e", base="http://10.21.1.2/v1")))
    assert_error(response, 403, "PERMISSION_DENIED", "10.21.1.2", "private")
    settings.UPSTREAM_ALLOWED_HOSTS = ("localhost",)
    assert (await send(bob, "post", URL, create_body("h", external("e", base="http://localhost:9/v1")))).status_code == 200
    # A public address is open to everyone (an IP literal: no DNS needed offline).
    assert (await send(bob, "post", URL, create_body("pub", external("e", base="http://8.8.8.8/v1")))).status_code == 200


@pytest.mark.asyncio
async def test_a_host_that_does_not_resolve_cannot_be_checked_and_is_refused():
    bob = await aclient_of(await sync_to_async(user)("bob"))
    response = await send(bob, "post", URL, create_body("x", external("e", base="http://no-such-host.invalid/v1")))
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "'openai_api_base' (no-such-host.invalid)",
                 "cannot be resolved")


# --- the endpoints file, applied as its owner ------------------------------------------------------

FILE = """
endpoints:
  - name: from-file
    task: llm/v1/chat
    served_entities:
      - name: e
        external_model:
          name: m
          provider: openai-compatible
          openai_config: {{openai_api_base: "{base}", openai_api_key: "{ref}"}}
"""


def test_the_file_is_applied_as_its_owner(settings, anthropic_key):
    bob = user("bob")
    text = FILE.format(base="http://8.8.8.8/v1", ref=anthropic_key)
    assert parse_text(text)  # by default as the operator, who has every permission
    settings.ENDPOINTS_FILE_OWNER = "bob"
    with pytest.raises(ConfigError, match=r"<endpoints>:6: endpoint 'from-file': Using \{\{secrets/anthropic/api_key\}\}.* "
                                          r"READ permission on secret scope 'anthropic'"):
        parse_text(text)
    secrets.acl_put("anthropic", "READ", user=bob)
    assert parse_text(text)[0].name == "from-file"
    with pytest.raises(ConfigError, match=r"'openai_api_base' \(127.0.0.1\) is a loopback address"):
        parse_text(FILE.format(base=FAKE, ref=anthropic_key))
    settings.ENDPOINTS_FILE_OWNER = "nobody"
    with pytest.raises(ConfigError, match="FONDASI_ENDPOINTS_FILE_OWNER names user 'nobody', who does not exist"):
        parse_text(text)


def test_load_endpoints_refuses_a_file_its_owner_may_not_apply(settings, tmp_path, anthropic_key):
    user("bob")
    settings.ENDPOINTS_FILE_OWNER = "bob"
    path = tmp_path / "endpoints.yaml"
    path.write_text(FILE.format(base="http://8.8.8.8/v1", ref=anthropic_key))
    with pytest.raises(CommandError, match="READ permission on secret scope 'anthropic'"):
        call_command("load_endpoints", str(path), stdout=io.StringIO())
    assert not ServingEndpoint.objects.exists()


# --- the admin -------------------------------------------------------------------------------------


def staff_with(*codenames: str, name: str = "bob"):
    from django.contrib.auth.models import Permission

    person = user(name)
    person.user_permissions.add(*Permission.objects.filter(content_type__app_label="endpoints", codename__in=codenames))
    return person


ENDPOINT_PERMS = ("add_servingendpoint", "change_servingendpoint", "view_servingendpoint",
                  "add_servedentity", "change_servedentity", "view_servedentity")


def admin_add_endpoint(client, config: dict):
    return client.post("/admin/endpoints/servingendpoint/add/", {
        "name": "admin-made", "task": "llm/v1/chat", "description": "", "tags": "[]", "ready": "READY",
        "config_update": "NOT_UPDATING", "source": "admin", "rate_limits": "[]", "ai_gateway": "{}", "creator": "",
        "entities-TOTAL_FORMS": "1", "entities-INITIAL_FORMS": "0", "entities-MIN_NUM_FORMS": "1",
        "entities-MAX_NUM_FORMS": "1000",
        "entities-0-name": "e", "entities-0-provider": "openai-compatible", "entities-0-model": "m",
        "entities-0-config": json.dumps(config), "entities-0-position": "0",
    })


def test_the_admin_checks_scope_read_and_the_upstream_as_the_signed_in_user(client, anthropic_key):
    bob = staff_with(*ENDPOINT_PERMS)
    client.force_login(bob)
    response = admin_add_endpoint(client, {"openai_api_base": "http://8.8.8.8/v1", "openai_api_key": anthropic_key})
    page = html.unescape(response.content.decode())
    assert response.status_code == 200 and "READ permission on secret scope 'anthropic'" in page
    assert not ServingEndpoint.objects.exists()
    response = admin_add_endpoint(client, {"openai_api_base": FAKE})
    assert "'openai_api_base' (127.0.0.1) is a loopback address" in html.unescape(response.content.decode())
    secrets.acl_put("anthropic", "READ", user=bob)
    response = admin_add_endpoint(client, {"openai_api_base": "http://8.8.8.8/v1", "openai_api_key": anthropic_key})
    assert response.status_code == 302, html.unescape(response.content.decode())
    assert ServingEndpoint.objects.get().entities.get().config["openai_api_key"] == anthropic_key


def test_the_secret_admin_lists_readable_scopes_and_writes_only_with_write(client):
    secrets.put("anthropic", "api_key", VALUE)
    secrets.put("team", "key", VALUE)
    bob = staff_with("add_secret", "change_secret", "delete_secret", "view_secret")
    secrets.acl_put("team", "READ", user=bob)
    client.force_login(bob)
    listing = client.get("/admin/endpoints/secret/").content.decode()
    assert "{{secrets/team/key}}" in listing and "{{secrets/anthropic/api_key}}" not in listing
    refused = client.post("/admin/endpoints/secret/add/", {"scope": "team", "key": "other", "value": "v-123"})
    assert "WRITE permission on secret scope 'team'" in html.unescape(refused.content.decode())
    # A new scope is its creator's: MANAGE.
    made = client.post("/admin/endpoints/secret/add/", {"scope": "bobs", "key": "k", "value": "v-123"})
    assert made.status_code == 302
    assert SecretScopeACL.objects.get(scope="bobs").permission == "MANAGE"


def test_the_acl_admin_grants_only_on_scopes_the_user_manages(client):
    secrets.put("anthropic", "api_key", VALUE)
    bob = staff_with("add_secretscopeacl", "change_secretscopeacl", "view_secretscopeacl")
    alice = user("alice", staff=False)
    client.force_login(bob)
    form = {"scope": "anthropic", "user": alice.pk, "group": "", "permission": "READ"}
    refused = client.post("/admin/endpoints/secretscopeacl/add/", form)
    assert "MANAGE permission on secret scope 'anthropic'" in html.unescape(refused.content.decode())
    assert not SecretScopeACL.objects.exists()
    secrets.acl_put("anthropic", "MANAGE", user=bob)
    assert client.post("/admin/endpoints/secretscopeacl/add/", form).status_code == 302
    assert secrets.permission(alice, "anthropic") == "READ"


# --- the store and the command ---------------------------------------------------------------------


def test_write_puts_and_deletes_read_does_not_and_the_creator_of_a_scope_manages_it(anthropic_key):
    bob, carol = user("bob"), user("carol")
    with pytest.raises(secrets.PermissionDenied, match="WRITE permission on secret scope 'anthropic'"):
        secrets.put("anthropic", "api_key", "sk-mine", user=bob)
    secrets.acl_put("anthropic", "READ", user=bob)
    with pytest.raises(secrets.PermissionDenied, match="user 'bob' has READ only"):
        secrets.delete("anthropic", "api_key", user=bob)
    secrets.acl_put("anthropic", "WRITE", user=bob)  # replaces READ
    secrets.put("anthropic", "api_key", "sk-new-value-0123456789", user=bob)
    with pytest.raises(secrets.PermissionDenied, match="MANAGE"):
        secrets.acl_put("anthropic", "READ", user=carol, acting=bob)
    assert [s.key for s in secrets.list_secrets(user=carol)] == []
    secrets.put("bobs", "k", "v", user=bob)
    assert secrets.permission(bob, "bobs") == "MANAGE"
    secrets.acl_put("bobs", "READ", user=carol, acting=bob)
    assert [s.reference for s in secrets.list_secrets(user=carol)] == ["{{secrets/bobs/k}}"]


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("secrets", *args, stdout=out)
    return out.getvalue()


def test_the_command_grants_lists_and_revokes():
    from django.contrib.auth.models import Group

    bob = user("bob")
    Group.objects.create(name="ml-team")
    assert run("acl", "put", "anthropic", "read", "--user", "bob") == "Granted READ on scope 'anthropic' for user 'bob'.\n"
    assert run("acl", "put", "anthropic", "WRITE", "--user", "bob") == "Set WRITE on scope 'anthropic' for user 'bob'.\n"
    run("acl", "put", "anthropic", "MANAGE", "--group", "ml-team")
    assert run("acl", "list") == "anthropic  MANAGE  group ml-team\nanthropic  WRITE   user bob\n"
    assert secrets.permission(bob, "anthropic") == "WRITE"
    assert run("acl", "delete", "anthropic", "--user", "bob") == "Removed the ACL of user 'bob' on scope 'anthropic'.\n"
    assert secrets.permission(bob, "anthropic") is None
    assert run("acl", "list", "other") == "No ACLs on scope 'other'. Superusers have MANAGE on every scope.\n"
    with pytest.raises(CommandError, match="There is no user 'nobody'"):
        run("acl", "put", "anthropic", "READ", "--user", "nobody")
    with pytest.raises(CommandError, match="user 'bob' has no ACL on secret scope 'anthropic'"):
        run("acl", "delete", "anthropic", "--user", "bob")
    with pytest.raises(CommandError, match="invalid choice: 'OWN'"):
        run("acl", "put", "anthropic", "own", "--user", "bob")
    with pytest.raises(CommandError, match="one of the arguments --user --group is required"):
        run("acl", "put", "anthropic", "READ")
