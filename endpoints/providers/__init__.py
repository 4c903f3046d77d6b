"""Provider kinds, imported on first use.

Adding a provider: write ``endpoints/providers/<name>.py`` with a :class:`~.base.Provider`
subclass, add it to ``PROVIDERS``, and add ``tests/endpoints/providers/test_<name>.py`` with its
fake vendor server in ``tests/fakes/``.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from ..errors import invalid

if TYPE_CHECKING:
    from .base import EntitySpec, Provider

PROVIDERS: dict[str, str] = {
    "local": "endpoints.providers.local.LocalProvider",
    "openai-compatible": "endpoints.providers.openai_compatible.OpenAICompatibleProvider",
    "openai": "endpoints.providers.openai.OpenAIProvider",
    "custom": "endpoints.providers.openai.CustomProvider",
    "databricks-model-serving": "endpoints.providers.databricks.DatabricksModelServingProvider",
    "anthropic": "endpoints.providers.anthropic.AnthropicProvider",
    "google-gemini": "endpoints.providers.gemini.GeminiProvider",
    "google-cloud-vertex-ai": "endpoints.providers.gemini.VertexProvider",
    "amazon-bedrock": "endpoints.providers.bedrock.BedrockProvider",
    "cohere": "endpoints.providers.cohere.CohereProvider",
}

_classes: dict[str, type] = {}
_instances: dict[tuple, "Provider"] = {}


def provider_class(kind: str) -> type["Provider"]:
    """The Provider subclass for ``kind``; ServingError(400) for an unknown kind."""
    cls = _classes.get(kind)
    if cls is None:
        path = PROVIDERS.get(kind)
        if path is None:
            raise invalid(f"Unknown provider '{kind}'. Known providers: {', '.join(sorted(PROVIDERS))}.")
        module, _, name = path.rpartition(".")
        cls = _classes[kind] = getattr(import_module(module), name)
    return cls


def get_provider(spec: "EntitySpec") -> "Provider":
    """The provider instance serving ``spec``, created once and kept (it owns pools and models)."""
    provider = _instances.get(spec.key)
    if provider is None:
        provider = _instances[spec.key] = provider_class(spec.provider)(spec)
    return provider
