"""The management commands `make run` uses, and the server's live reload of the endpoints file."""
from __future__ import annotations

import os
import textwrap
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from endpoints import registry
from endpoints.models import AccessToken, ServingEndpoint, hash_token

pytestmark = pytest.mark.django_db

ONE = textwrap.dedent("""\
    endpoints:
      - name: chat-one
        task: llm/v1/chat
        served_entities:
          - foundation_model: {name: smollm2-135m-instruct}
    """)
TWO = ONE.replace("chat-one", "chat-two")
BROKEN = ONE.replace("task: llm/v1/chat", "task: llm/v1/chatt")


def run(*args, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


def test_load_endpoints_prints_what_it_added_changed_and_removed(tmp_path):
    path = tmp_path / "endpoints.yaml"
    path.write_text(ONE)
    assert "added: chat-one" in run("load_endpoints", str(path))
    assert "unchanged: 1" in run("load_endpoints", str(path))
    path.write_text(TWO)
    out = run("load_endpoints", str(path))
    assert "added: chat-two" in out and "removed: chat-one" in out


def test_load_endpoints_refuses_a_malformed_file_naming_its_line_and_changes_nothing(tmp_path):
    path = tmp_path / "endpoints.yaml"
    path.write_text(ONE)
    run("load_endpoints", str(path))
    path.write_text(BROKEN)
    with pytest.raises(CommandError) as info:
        run("load_endpoints", str(path))
    message = str(info.value)
    assert f"{path}:3:" in message and "llm/v1/chatt" in message
    assert "last good configuration keeps serving" in message
    assert list(ServingEndpoint.objects.values_list("name", flat=True)) == ["chat-one"]


def test_create_token_prints_the_token_alone_on_its_last_line_and_stores_only_a_hash():
    out = run("create_token", name="laptop", user="bob")
    value = out.strip().splitlines()[-1]
    assert value.startswith("dapi") and len(value) == 36
    token = AccessToken.objects.get(name="laptop")
    assert token.user.username == "bob"
    assert token.token_hash == hash_token(value) and value not in (token.token_hash, token.hint)


def test_create_token_makes_a_new_user_an_ordinary_user_unless_staff_is_asked_for():
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    out = run("create_token", name="notebook", user="carol")
    assert "user (not staff)" in out
    carol = users.get(username="carol")
    assert not carol.is_staff and not carol.is_superuser
    run("create_token", name="deploy", user="ops", staff=True)
    ops = users.get(username="ops")
    assert ops.is_staff and not ops.is_superuser
    # An existing user's roles never change here.
    err = StringIO()
    call_command("create_token", name="again", user="carol", staff=True, stdout=StringIO(), stderr=err)
    assert "roles are unchanged" in err.getvalue()
    assert not users.get(username="carol").is_staff


def test_bootstrap_creates_a_token_and_a_sign_in_only_on_an_empty_database():
    from django.contrib.auth import authenticate

    first = run("bootstrap")
    lines = first.strip().splitlines()
    assert "First run" in first and any(line.startswith("dapi") for line in lines)
    password = lines[-1].split("with password ", 1)[1].split(" ", 1)[0]
    admin = authenticate(username="admin", password=password)
    assert admin is not None and admin.is_staff and admin.is_superuser
    second = run("bootstrap")
    assert "dapi" not in second and "password" not in second
    assert AccessToken.objects.count() == 1


@pytest.fixture
def watched_file(tmp_path, settings, monkeypatch):
    """The registry watching a file of this test's own, as the server does."""
    path = tmp_path / "endpoints.yaml"
    settings.ENDPOINTS_FILE = path
    settings.ENDPOINTS_AUTO_LOAD = True
    monkeypatch.setattr(registry, "_file_stamp", None)
    return path


def rewrite(path, text: str) -> None:
    path.write_text(text)
    stat = path.stat()  # a new mtime even within the filesystem's timestamp resolution
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    registry.invalidate()


def test_the_server_applies_the_file_when_it_changes_and_keeps_the_last_good_one(watched_file, caplog):
    rewrite(watched_file, ONE)
    assert set(registry.snapshot()) == {"chat-one"}
    rewrite(watched_file, BROKEN)
    assert set(registry.snapshot()) == {"chat-one"}
    assert any("llm/v1/chatt" in r.getMessage() and "last good configuration" in r.getMessage() for r in caplog.records)
    rewrite(watched_file, TWO)
    assert set(registry.snapshot()) == {"chat-two"}
