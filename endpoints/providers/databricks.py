"""Databricks Model Serving as a provider: a serving endpoint of a Databricks workspace — or of
another Fondasi, which speaks the same wire (spec/WIRE.md).

Served entity config ``databricks_model_serving_config``:

- ``databricks_workspace_url`` (required): e.g. ``https://my-workspace.cloud.databricks.com``.
- ``databricks_api_token`` (required; resolved from a secret or ``databricks_api_token_plaintext``):
  sent as ``Authorization: Bearer``.
- ``timeout``: seconds the endpoint may stay silent (default 300).

``spec.model`` is the remote serving endpoint's name: every task POSTs the Databricks query body
to ``{workspace}/serving-endpoints/{name}/invocations``. The answers are OpenAI-shaped JSON or
SSE, read by :mod:`.openai_compatible`'s relay; a thinking answer's content is a list of
reasoning and text blocks (read by :func:`chat_events`). Errors come as
``{"error_code", "message"}``, which :mod:`.http` maps.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import BaseModel

from ..errors import invalid
from ..events import Event, ReasoningDelta, TextDelta
from ..schemas import CHAT, COMPLETIONS, EMBEDDINGS, ChatMessage, ChatRequest, CompletionRequest, EmbeddingsRequest
from . import http, openai_compatible
from .openai_compatible import PARAMS, OpenAICompatibleProvider, api_root, config_secret, join

# --- ours → vendor -------------------------------------------------------------------------


def chat_body(request: ChatRequest) -> dict[str, Any]:
    """The Databricks query body for a chat ``request``.

    Sample (https://docs.databricks.com/aws/en/machine-learning/foundation-model-apis/api-reference#chat-request)::

        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
         "max_tokens": 64, "temperature": 0.2, "thinking": {"type": "enabled", "budget_tokens": 32},
         "extra_params": {"top_k": 40}, "stream": true, "stream_options": {"include_usage": true}}

    Messages travel in our own shape, which is Databricks': reasoning blocks of the latest
    assistant turn go back with their signature, for the remote model to check and build on.
    """
    body: dict[str, Any] = {"messages": [_message(m) for m in request.messages]}
    return _query(body, request.generation_params(), request.extra_params, request.stream)


def completion_body(request: CompletionRequest) -> dict[str, Any]:
    """The Databricks query body for a completions ``request``.

    Sample (https://docs.databricks.com/aws/en/machine-learning/foundation-model-apis/api-reference#completion-request)::

        {"prompt": "Once upon a time", "max_tokens": 16, "stop": ["\\n"], "stream": false}
    """
    body: dict[str, Any] = {"prompt": request.prompt}
    return _query(body, request.generation_params(), request.extra_params, request.stream)


def embeddings_body(request: EmbeddingsRequest) -> dict[str, Any]:
    """The Databricks query body for an embeddings ``request``; the answer is read by
    :func:`.openai_compatible.embeddings_result` (``data[i].embedding``).

    Sample (https://docs.databricks.com/aws/en/machine-learning/foundation-model-apis/api-reference#embedding-request)::

        {"input": ["first", "second"], "extra_params": {"instruction": "Represent this sentence:"}}
    """
    body: dict[str, Any] = {"input": request.input}
    if request.extra_params:
        body["extra_params"] = request.extra_params
    return body


def _message(message: ChatMessage) -> dict[str, Any]:
    content: Any = message.content
    if isinstance(content, list):
        content = [part.model_dump(exclude_none=True) for part in content]
    out: dict[str, Any] = {"role": message.role, "content": content}
    for name in ("name", "tool_calls", "tool_call_id"):
        if getattr(message, name) is not None:
            out[name] = getattr(message, name)
    return out


def _query(body: dict[str, Any], params: dict[str, Any], extra: dict[str, Any], stream: bool) -> dict[str, Any]:
    # Every parameter we accept is a Databricks query field, so all go at the top level (the
    # remote endpoint answers 400 for what its model cannot do); extra_params stay a mapping of
    # their own, as the query API takes them.
    for name, value in params.items():
        body[name] = value.model_dump(exclude_none=True) if isinstance(value, BaseModel) else value
    if extra:
        body["extra_params"] = extra
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}  # else usage never comes (WIRE.md)
    return body


# --- vendor → ours -------------------------------------------------------------------------


def chat_events(chunk: dict[str, Any]) -> list[Event]:
    """Our events in one chat chunk (or a whole chat answer) from a serving endpoint.

    A thinking answer's content is a list of blocks, a reasoning block carrying its signature
    (https://docs.databricks.com/aws/en/machine-learning/model-serving/query-reason-models)::

        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "claude-sonnet",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": [{"type": "reasoning",
                      "summary": [{"type": "summary_text", "text": "The user asks…", "signature": "EqoB…"}]}]},
                      "finish_reason": null}]}
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "claude-sonnet",
         "choices": [{"index": 0, "delta": {"content": [{"type": "text", "text": "Hello"}]}, "finish_reason": null}]}

    Plain-string content, tool calls, finish reasons and usage are OpenAI's, read by
    :func:`.openai_compatible.chat_events`.
    """
    events: list[Event] = []
    for choice in chunk.get("choices") or ():
        key = "delta" if "delta" in choice else "message"
        delta = choice.get(key) or {}
        content = delta.get("content")
        if isinstance(content, list):
            events.extend(_block_events(content, choice.get("index") or 0))
            choice = {**choice, key: {**delta, "content": None}}
        events.extend(openai_compatible.chat_events({"choices": [choice]}))
    if chunk.get("usage"):
        events.extend(openai_compatible.chat_events({"usage": chunk["usage"]}))
    return events


def _block_events(blocks: list[Any], index: int) -> list[Event]:
    events: list[Event] = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"]:
            events.append(TextDelta(block["text"], index))
        elif block.get("type") == "reasoning":
            for summary in block.get("summary") or ():
                text, signature = summary.get("text") or "", summary.get("signature")
                if text or signature:
                    events.append(ReasoningDelta(text, index, signature))
    return events


# --- the provider --------------------------------------------------------------------------


class DatabricksModelServingProvider(OpenAICompatibleProvider):
    """Relays chat, completions and embeddings to a Databricks (or Fondasi) serving endpoint."""

    supported_params = PARAMS | {"thinking"}
    label = "Databricks Model Serving"
    _chat_events = staticmethod(chat_events)

    def _locate(self, config: dict[str, Any]) -> tuple[str, dict[str, str]]:
        root = api_root(
            config.get("databricks_workspace_url"), "databricks_workspace_url",
            "A databricks-model-serving endpoint needs 'databricks_workspace_url', the workspace's URL "
            "(for example https://my-workspace.cloud.databricks.com).",
        )
        url = join(root, f"/serving-endpoints/{quote(self.spec.model, safe='')}/invocations")
        return join(root), {CHAT: url, COMPLETIONS: url, EMBEDDINGS: url}

    def _auth(self, config: dict[str, Any]) -> tuple[dict[str, str], tuple[str, ...]]:
        token = config_secret(config, "databricks_api_token")
        if not token:
            raise invalid(
                "A databricks-model-serving endpoint needs 'databricks_api_token', a token of the workspace "
                "(a secret reference or databricks_api_token_plaintext)."
            )
        return {"authorization": f"Bearer {token}"}, (token,)

    def _chat_body(self, request: ChatRequest) -> dict[str, Any]:
        return chat_body(request)

    def _completion_body(self, request: CompletionRequest) -> dict[str, Any]:
        return completion_body(request)

    def _embeddings_body(self, request: EmbeddingsRequest) -> dict[str, Any]:
        return embeddings_body(request)

    def describe(self) -> dict[str, Any]:
        return {"databricks_workspace_url": http.safe_url(self.base_url), "serving_endpoint": self.spec.model}
