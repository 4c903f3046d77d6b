"""Fixtures the provider tests share; helper functions are in ``helpers.py``."""
from __future__ import annotations

import pytest
import pytest_asyncio

from endpoints.providers import http
from tests.fakes.openai_upstream import FakeOpenAIUpstream, openai_upstream  # noqa: F401 (fixture)


@pytest_asyncio.fixture
async def pool():
    """Closes the pooled client of the test's event loop afterwards."""
    yield
    await http.aclose_client()


@pytest.fixture
def no_retries(monkeypatch):
    """Upstream errors reach the test at once (retrying them is http.py's work: test_http_retry.py)."""
    monkeypatch.setenv("FONDASI_HTTP_RETRIES", "0")


@pytest.fixture
def upstream(openai_upstream: FakeOpenAIUpstream, pool) -> FakeOpenAIUpstream:  # noqa: F811
    """The fake OpenAI-compatible vendor, with the pooled client closed afterwards."""
    return openai_upstream
