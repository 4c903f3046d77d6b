"""Fixtures for the real client packages against the live server (``fondasi_server``).

Every Databricks client reads ``DATABRICKS_*`` variables and ``~/.databrickscfg``: each test starts
with none of them (a developer's own workspace must never be called, nor its credentials mixed
with ours), and sets what the product page tells a user to set.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Iterator

import httpx
import pytest

from tests.conftest import ROOT, LiveServer
from tests.fakes.openai_upstream import FakeOpenAIUpstream, openai_upstream  # noqa: F401 (fixture)

LOCAL_CHAT = "local-smollm2-chat"
LOCAL_COMPLETIONS = "local-smollm2-completions"
LOCAL_EMBEDDINGS = "local-minilm-embeddings"
VENDOR_KEY = "sk-vendor-0123456789"  # what the fake vendor is given as its key


@pytest.fixture(autouse=True)
def _no_databricks_config(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith(("DATABRICKS_", "MLFLOW_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))


@pytest.fixture
def databricks_env(fondasi_server, monkeypatch) -> LiveServer:
    """``DATABRICKS_HOST`` and ``DATABRICKS_TOKEN`` set, as the product page does for mlflow and the SDK."""
    monkeypatch.setenv("DATABRICKS_HOST", fondasi_server.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", fondasi_server.token)
    return fondasi_server


def manage(server: LiveServer, *args: str) -> str:
    """Run ``manage.py`` on the live server's database; its standard output."""
    # The server's database lives in the folder of its log (see tests/conftest.py).
    env = {**os.environ, "FONDASI_VAR_DIR": str(server.log.parent), "DJANGO_SETTINGS_MODULE": "playground.settings",
           "FONDASI_ENDPOINTS_FILE": str(server.log.parent / "endpoints.yaml")}
    env.pop("DATABASE_URL", None)
    done = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="session")
def service_principal(fondasi_server) -> tuple[str, str]:
    """A service principal of the live server: its OAuth client id and client secret."""
    out = manage(fondasi_server, "create_service_principal", "--name", "clients-sdk-bot")
    client_id, secret = out.strip().splitlines()[-2:]
    return client_id, secret


def management(server: LiveServer, method: str, path: str = "", body: Any = None) -> httpx.Response:
    """A plain HTTP call to the management API, as the admin (to set up what a test needs)."""
    return httpx.request(method, f"{server.url}/api/2.0/serving-endpoints{path}", json=body, timeout=30,
                         headers={"Authorization": f"Bearer {server.token}"})


def openai_entity(vendor: FakeOpenAIUpstream, task: str, provider: str = "openai-compatible") -> dict[str, Any]:
    """A served entity relaying to ``vendor`` (its body for the management API)."""
    config = {"openai_api_base": vendor.base_url, "openai_api_key_plaintext": VENDOR_KEY}
    return {"name": "upstream", "external_model": {"name": "vendor-model", "provider": provider, "task": task,
                                                   "openai_config": config}}


@pytest.fixture
def gone(fondasi_server) -> Iterator[list[str]]:
    """Names of endpoints a test creates: deleted afterwards, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        management(fondasi_server, "DELETE", f"/{name}")
