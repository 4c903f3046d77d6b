"""OpenAI (api.openai.com or Azure OpenAI) and ``custom`` providers: the OpenAI API behind other
URLs and headers, served by :class:`~.openai_compatible.OpenAICompatibleProvider`'s relay.

``openai`` — served entity config ``openai_config`` (Databricks' external-model fields):

- ``openai_api_key`` (required; resolved from a secret or ``openai_api_key_plaintext``).
- ``openai_api_type``: ``openai`` (default), ``azure`` or ``azuread``.
- ``openai_api_base``: for ``openai`` the API root (default ``https://api.openai.com/v1``;
  ``/chat/completions``, ``/completions`` and ``/embeddings`` are appended) and the key goes as
  ``Authorization: Bearer``, with ``openai_organization`` as ``OpenAI-Organization``. For Azure
  it is the resource URL (required), with ``openai_deployment_name`` and ``openai_api_version``
  (both required): ``{base}/openai/deployments/{deployment}/chat/completions?api-version={version}``
  (and ``/completions``, ``/embeddings``). ``azure`` sends the key as ``api-key``; ``azuread``
  takes a Microsoft Entra ID access token as the key and sends it as ``Authorization: Bearer``.
- ``timeout``: seconds the upstream may stay silent (default 300).

Reasoning models (o1, o3, o4-mini, gpt-5…, recognised by the entity's model name — on Azure
too, whatever the deployment is called — see :func:`is_reasoning_model`) reason before they
answer and keep the reasoning hidden; only its token count comes back
(``usage.completion_tokens_details.reasoning_tokens``, our ``Usage.reasoning_tokens``). For them
``max_tokens`` is sent as ``max_completion_tokens`` (it bounds reasoning and answer together),
``reasoning_effort`` passes through, and ``thinking`` becomes a ``reasoning_effort`` by
:func:`effort_for_budget`. They accept sampling parameters only at their defaults
(:data:`REASONING_DEFAULTS`): a default value is left out, any other is a 400 naming the
parameter. Other models cannot reason: ``thinking`` enabled or ``reasoning_effort`` is a 400
naming it. Everything else (tools, ``response_format``, image parts, ``n``, ``stop``, ``seed``,
``extra_params``) passes through in OpenAI's own shape.

``custom`` — config ``custom_provider_config``: ``custom_provider_url`` (required), the root of an
OpenAI-compatible API, and at most one of ``api_key_auth: {key, value}`` (sent as the header
``<key>: <value>``) or ``bearer_token_auth: {token}`` (``Authorization: Bearer <token>``); the
secret may come as ``value_plaintext`` / ``token_plaintext``. Behaves as ``openai-compatible``.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlencode

from ..errors import ServingError, invalid
from ..schemas import REASONING_EFFORT_BUDGETS, ChatRequest
from . import http, openai_compatible
from .base import EntitySpec
from .openai_compatible import PARAMS, OpenAICompatibleProvider, api_root, config_secret, join, task_urls

DEFAULT_API_BASE = "https://api.openai.com/v1"
API_TYPES = ("openai", "azure", "azuread")

# o1, o3-mini, o4-mini-2025-04-16, gpt-5, gpt-5.1-codex, ft:o4-mini-…:org::id; not gpt-5-chat-latest
# (a chat model without reasoning), not gpt-4o or omni-moderation.
_REASONING_MODEL = re.compile(r"(?:ft:)?(?:o[1-9]\d*|gpt-5(?:\.\d+)?)(?:-(?!chat)[\w.-]+)?(?::.*)?", re.IGNORECASE)
#: Sampling parameters OpenAI's reasoning models take only at their default value
#: (https://platform.openai.com/docs/guides/reasoning); OpenAI answers anything else with a 400.
REASONING_DEFAULTS: dict[str, float] = {"temperature": 1, "top_p": 1, "presence_penalty": 0, "frequency_penalty": 0}
# A header name (RFC 9110 token): what api_key_auth.key may be.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def is_reasoning_model(model: str) -> bool:
    """Whether OpenAI model ``model`` is a reasoning model (o-series, gpt-5 family)."""
    return _REASONING_MODEL.fullmatch(model.strip()) is not None


def effort_for_budget(budget: int) -> str:
    """The ``reasoning_effort`` for a ``thinking.budget_tokens`` of ``budget``.

    The smallest effort whose budget in :data:`endpoints.schemas.REASONING_EFFORT_BUDGETS`
    (low 1024, medium 4096, high 16384 tokens) covers it: 1–1024 → ``low``, 1025–4096 →
    ``medium``, more → ``high``. A ``reasoning_effort`` turned into a budget by the schema maps
    back to itself.
    """
    for effort, tokens in sorted(REASONING_EFFORT_BUDGETS.items(), key=lambda item: item[1]):
        if budget <= tokens:
            return effort
    return "high"


# --- ours → vendor -------------------------------------------------------------------------


def chat_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """OpenAI's chat body for ``request`` to ``model``; 400 for what the model cannot do.

    Sample for a reasoning model (https://platform.openai.com/docs/api-reference/chat/create,
    https://platform.openai.com/docs/guides/reasoning)::

        {"model": "o4-mini",
         "messages": [{"role": "user", "content": "Prove that there are infinitely many primes."}],
         "max_completion_tokens": 4096, "reasoning_effort": "medium",
         "stream": true, "stream_options": {"include_usage": true}}

    Other models get :func:`.openai_compatible.chat_body` unchanged (``max_tokens``, sampling
    parameters as given).
    """
    body = openai_compatible.chat_body(request, model)
    thinking = request.thinking
    if not is_reasoning_model(model):
        if thinking is not None and thinking.type == "enabled":
            raise _cannot_reason("thinking", model)
        if request.reasoning_effort is not None:
            raise _cannot_reason("reasoning_effort", model)
        return body
    for name, default in REASONING_DEFAULTS.items():
        value = body.pop(name, None)  # extra_params included: they were merged into the body
        if value is not None and value != default:
            raise invalid(
                f"Parameter '{name}' ({value}) is not supported by OpenAI reasoning model '{model}' "
                f"(provider 'openai'): it takes only the default, {default}. Leave '{name}' out."
            )
    if "max_tokens" in body:
        body["max_completion_tokens"] = body.pop("max_tokens")
    if thinking is not None:
        if thinking.type == "disabled":
            raise invalid(
                f"Parameter 'thinking' cannot disable reasoning on OpenAI reasoning model '{model}' "
                "(provider 'openai'): it always reasons. Leave 'thinking' out, or ask for the least "
                "reasoning with reasoning_effort 'low' (gpt-5 models also take extra_params "
                "{\"reasoning_effort\": \"minimal\"})."
            )
        body["reasoning_effort"] = effort_for_budget(thinking.budget_tokens)
    return body


def _cannot_reason(name: str, model: str) -> ServingError:
    return invalid(
        f"Parameter '{name}' is not supported by OpenAI model '{model}' (provider 'openai'): it is not a "
        "reasoning model. Use a reasoning model (o3, o4-mini, gpt-5…) or leave it out."
    )


# --- the providers -------------------------------------------------------------------------


class OpenAIProvider(OpenAICompatibleProvider):
    """OpenAI's API at api.openai.com (or another ``openai_api_base``), or Azure OpenAI."""

    supported_params = PARAMS | {"thinking"}
    vision = True  # OpenAI's current chat models (GPT-4o, 4.1, 5, o-series) see images; else `vision: false`

    def __init__(self, spec: EntitySpec) -> None:
        api_type = spec.config.get("openai_api_type") or "openai"
        if not isinstance(api_type, str) or api_type.lower() not in API_TYPES:
            raise invalid(f"'openai_api_type' must be one of 'openai', 'azure' or 'azuread'; got '{api_type}'.")
        self.api_type = api_type.lower()
        self.label = "OpenAI" if self.api_type == "openai" else "Azure OpenAI"
        super().__init__(spec)

    def _locate(self, config: dict[str, Any]) -> tuple[str, dict[str, str]]:
        if self.api_type == "openai":
            root = api_root(config.get("openai_api_base") or DEFAULT_API_BASE, "openai_api_base", "")
            return join(root), task_urls(root)
        root = api_root(
            config.get("openai_api_base"), "openai_api_base",
            f"An Azure OpenAI endpoint (openai_api_type '{self.api_type}') needs 'openai_api_base', "
            "the resource URL (for example https://my-resource.openai.azure.com).",
        )
        version = self._required(config, "openai_api_version", "the Azure OpenAI API version, for example 2024-10-21")
        deployment = self._required(config, "openai_deployment_name", "the model's deployment in the resource")
        deployment_root = root._replace(path=f"{root.path}/openai/deployments/{quote(deployment, safe='')}")
        return join(root), task_urls(deployment_root, urlencode({"api-version": version}))

    def _required(self, config: dict[str, Any], field: str, what: str) -> str:
        value = config.get(field)
        if not isinstance(value, str) or not value.strip():
            raise invalid(f"An Azure OpenAI endpoint (openai_api_type '{self.api_type}') needs '{field}', {what}.")
        return value.strip()

    def _auth(self, config: dict[str, Any]) -> tuple[dict[str, str], tuple[str, ...]]:
        key = config_secret(config, "openai_api_key")
        if not key:
            what = "a Microsoft Entra ID access token" if self.api_type == "azuread" else "the API key"
            raise invalid(
                f"An openai endpoint needs 'openai_api_key', {what} (a secret reference or openai_api_key_plaintext)."
            )
        if self.api_type == "azure":
            return {"api-key": key}, (key,)
        headers = {"authorization": f"Bearer {key}"}
        if self.api_type == "openai" and config.get("openai_organization"):
            headers["openai-organization"] = str(config["openai_organization"])
        return headers, (key,)

    def _chat_body(self, request: ChatRequest) -> dict[str, Any]:
        return chat_body(request, self.spec.model)

    def describe(self) -> dict[str, Any]:
        out = {"openai_api_type": self.api_type, **super().describe()}
        if self.api_type != "openai":
            out["openai_deployment_name"] = self.spec.config.get("openai_deployment_name")
            out["openai_api_version"] = self.spec.config.get("openai_api_version")
        return out


class CustomProvider(OpenAICompatibleProvider):
    """Any OpenAI-compatible API at ``custom_provider_url``, with an API-key header or a bearer token."""

    label = "Custom provider"

    def _locate(self, config: dict[str, Any]) -> tuple[str, dict[str, str]]:
        root = api_root(
            config.get("custom_provider_url"), "custom_provider_url",
            "A custom provider endpoint needs 'custom_provider_url', the root of its OpenAI-compatible API "
            "(for example https://llm.example.com/v1).",
        )
        return join(root), task_urls(root)

    def _auth(self, config: dict[str, Any]) -> tuple[dict[str, str], tuple[str, ...]]:
        api_key_auth, bearer = config.get("api_key_auth"), config.get("bearer_token_auth")
        if api_key_auth is not None and bearer is not None:
            raise invalid("A custom provider takes one of 'api_key_auth' or 'bearer_token_auth', not both.")
        if api_key_auth is not None:
            name = api_key_auth.get("key") if isinstance(api_key_auth, dict) else None
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                raise invalid("'api_key_auth.key' must be the name of the HTTP header to send, for example X-API-Key.")
            value = _auth_secret(api_key_auth, "api_key_auth", "value")
            return {name: value}, (value,)
        if bearer is not None:
            token = _auth_secret(bearer, "bearer_token_auth", "token")
            return {"authorization": f"Bearer {token}"}, (token,)
        return {}, ()

    def describe(self) -> dict[str, Any]:
        return {"custom_provider_url": http.safe_url(self.base_url), "upstream_model": self.spec.model}


def _auth_secret(auth: Any, name: str, field: str) -> str:
    """The resolved secret ``field`` (or ``<field>_plaintext``) of the ``name`` mapping; never echoed."""
    value = (auth.get(field) or auth.get(f"{field}_plaintext")) if isinstance(auth, dict) else None
    if not isinstance(value, str) or not value:
        raise invalid(f"'{name}' needs '{field}', the resolved secret (a secret reference or {field}_plaintext).")
    return value
