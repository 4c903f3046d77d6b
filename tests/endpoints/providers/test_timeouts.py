"""Per-endpoint timeouts: every external provider reads ``timeout`` (seconds the vendor may stay
silent) and ``connect_timeout`` from its config; the settings apply to what the config leaves out."""
from __future__ import annotations

import pytest

from endpoints.config import check_entity
from endpoints.secrets import OPERATOR
from endpoints.errors import ServingError
from endpoints.providers.base import EntitySpec
from endpoints.providers.cohere import CohereProvider
from endpoints.providers.openai_compatible import OpenAICompatibleProvider
from endpoints.schemas import CHAT
from tests.endpoints.providers.helpers import chat, failure
from tests.fakes.cohere_upstream import FakeCohere

CONFIGS = {
    "openai-compatible": {"openai_api_base": "http://127.0.0.1:9/v1"},
    "openai": {"openai_api_key": "sk-test"},
    "custom": {"custom_provider_url": "http://127.0.0.1:9/v1"},
    "databricks-model-serving": {"databricks_workspace_url": "http://127.0.0.1:9", "databricks_api_token": "dapi-x"},
    "anthropic": {"anthropic_api_key": "sk-ant"},
    "google-gemini": {"gemini_api_key": "g-key"},
    "amazon-bedrock": {"aws_region": "us-east-1", "aws_access_key_id": "AKIA", "aws_secret_access_key": "s",
                       "bedrock_provider": "anthropic"},
    "cohere": {"cohere_api_key": "co-key"},
}


@pytest.mark.django_db
@pytest.mark.parametrize("provider", sorted(CONFIGS))
@pytest.mark.parametrize("field", ["timeout", "connect_timeout"])
def test_every_external_provider_checks_its_timeouts(provider, field):
    row = {"name": "e", "provider": provider, "model": "some-model", "config": CONFIGS[provider]}
    assert check_entity(CHAT, {**row, "config": {**CONFIGS[provider], field: 2.5}}, user=OPERATOR) is None
    problem = check_entity(CHAT, {**row, "config": {**CONFIGS[provider], field: "soon"}}, user=OPERATOR)
    assert problem == f"'{field}' must be a number of seconds; got 'soon'."
    assert "positive" in check_entity(CHAT, {**row, "config": {**CONFIGS[provider], field: 0}}, user=OPERATOR)


@pytest.mark.asyncio
async def test_a_vendor_silent_past_the_endpoints_timeout_is_a_504(openai_upstream, pool):
    openai_upstream.delay = 2
    provider = OpenAICompatibleProvider(EntitySpec(
        name="e", provider="openai-compatible", model="m", task=CHAT,
        config={"openai_api_base": openai_upstream.base_url, "timeout": 0.3},
    ))
    error = await failure(provider.chat(chat()))
    assert (error.status, error.code) == (504, "DEADLINE_EXCEEDED")


@pytest.mark.asyncio
async def test_the_timeout_applies_to_providers_with_their_own_wire_format(pool):
    with FakeCohere() as vendor:
        vendor.delay = 2
        provider = CohereProvider(EntitySpec(
            name="e", provider="cohere", model="command-a", task=CHAT,
            config={"cohere_api_key": "co-key", "cohere_api_base": vendor.base_url, "timeout": 0.3},
        ))
        error = await failure(provider.chat(chat()))
    assert (error.status, error.code) == (504, "DEADLINE_EXCEEDED")
