"""Shared fixtures: personas, the default endpoints, and a live Fondasi server."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
LOOPBACK = ("127.0.0.0/8", "::1/128")


def pytest_configure(config):
    # Tests load endpoints explicitly; they never depend on what the developer's file holds.
    # pytest-django has configured settings before this file is imported, so an environment
    # variable set here would come too late: the setting itself is switched off.
    from django.conf import settings

    settings.ENDPOINTS_AUTO_LOAD = False
    # The fake vendors listen on loopback, and many tests set them up as a staff user who is not a
    # superuser: the test settings list loopback (production allows only public upstreams;
    # tests/endpoints/test_secret_acls.py checks that default).
    settings.UPSTREAM_ALLOWED_NETWORKS = LOOPBACK


@pytest.fixture(autouse=True)
def _fresh_caches():
    from endpoints import auth, registry

    registry.invalidate()
    auth.forget_tokens()
    yield
    registry.invalidate()
    auth.forget_tokens()


def api_client(headers: dict[str, str], **kwargs):
    """An AsyncClient sending ``headers`` with every request.

    Django's AsyncClient(headers=…) stores WSGI names (HTTP_…) that never reach an ASGI
    request, so default headers are given by their ASGI names here.
    """
    from django.test import AsyncClient

    return AsyncClient(**kwargs, **{name.upper().replace("-", "_"): value for name, value in headers.items()})


@pytest.fixture(autouse=True)
def _no_upstream_retries(monkeypatch):
    # Error-mapping tests check the mapping, not the waiting; retries are tested in test_http_retry.py.
    monkeypatch.setenv("FONDASI_HTTP_RETRIES", "0")


@pytest.fixture
def default_endpoints(db):
    """The three embedded endpoints of the shipped endpoints.yaml."""
    from endpoints.config import apply, load_file

    apply(load_file(ROOT / "endpoints.yaml"))


@pytest.fixture
def alice(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("alice", password="wonderland-42")


@pytest.fixture
def token(alice) -> str:
    from endpoints.models import AccessToken

    return AccessToken.issue(alice, "tests")[1]


@pytest.fixture
def auth_headers(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


LIVE_PASSWORD = "e2e-pass-4-fondasi"


class LiveServer:
    def __init__(self, url: str, token: str, log: Path) -> None:
        self.url, self.token, self.log = url, token, log
        self.username, self.password = "e2e", LIVE_PASSWORD


@pytest.fixture(scope="session")
def live_vendor():
    """A fake OpenAI-compatible vendor for the live server's ``fake-vision`` endpoint."""
    from tests.fakes.openai_upstream import FakeOpenAIUpstream

    fake = FakeOpenAIUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def fondasi_server(tmp_path_factory, live_vendor) -> LiveServer:
    """A real Fondasi (daphne, ASGI) on 127.0.0.1 with its own database, started as `make run` does:
    the shipped endpoints, plus ``local-smollm2-chat-2`` (a second chat endpoint on the embedded
    model) and ``fake-vision`` served by ``live_vendor``."""
    var = tmp_path_factory.mktemp("live-var")
    endpoints = var / "endpoints.yaml"
    endpoints.write_text((ROOT / "endpoints.yaml").read_text() + f"""
  - name: local-smollm2-chat-2
    task: llm/v1/chat
    served_entities:
      - name: smollm2-135m-instruct
        foundation_model: {{name: smollm2-135m-instruct}}

  - name: fake-vision
    task: llm/v1/chat
    served_entities:
      - name: fake-vision-model
        vision: true                  # an openai-compatible model sees images only when it says so
        external_model:
          name: a-vision-model
          provider: openai-compatible
          openai_config: {{openai_api_base: "{live_vendor.base_url}"}}
""")
    env = {**os.environ, "FONDASI_VAR_DIR": str(var), "FONDASI_ENDPOINTS_AUTO_LOAD": "1",
           "FONDASI_UPSTREAM_ALLOWED_NETWORKS": ",".join(LOOPBACK),  # the fake vendors, as above
           "FONDASI_ENDPOINTS_FILE": str(endpoints), "DJANGO_SETTINGS_MODULE": "playground.settings"}
    env.pop("DATABASE_URL", None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True)
    subprocess.run([*manage, "load_endpoints"], env=env, check=True, capture_output=True)
    # A person who signs in to the pages (the browser tests).
    subprocess.run([*manage, "createsuperuser", "--noinput", "--username", "e2e", "--email", "e2e@example.com"],
                   env={**env, "DJANGO_SUPERUSER_PASSWORD": LIVE_PASSWORD}, check=True, capture_output=True)
    out = subprocess.run([*manage, "create_token", "--name", "live", "--superuser"], env=env, check=True, capture_output=True, text=True)
    token = out.stdout.strip().splitlines()[-1]
    log = var / "server.log"
    proc, url = start_daphne(env, log)
    yield LiveServer(url, token, log)
    stop_daphne(proc)


def start_daphne(env: dict[str, str], log: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start Fondasi under daphne with ``env``, its output appended to ``log``; return once
    /healthz answers 200: (the process, its base URL)."""
    port = port or _free_port()
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port), "playground.asgi:application"],
            cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"Fondasi did not start:\n{log.read_text()}")
        time.sleep(0.2)


def stop_daphne(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
