"""Anthropic's Messages API (Claude models): chat only.

Served entity config (``EntitySpec.config``, the ``anthropic_config`` of the entity):

- ``anthropic_api_key`` (required; or ``anthropic_api_key_plaintext``): the resolved key, sent as
  ``x-api-key`` with ``anthropic-version: 2023-06-01``.
- ``anthropic_api_base``: the API root, as the Anthropic SDKs take it (default
  ``https://api.anthropic.com``); ``/v1/messages`` is appended (only ``/messages`` when the root
  already ends in ``/v1``).
- ``timeout``: seconds the upstream may stay silent (the read timeout; default 300);
  ``connect_timeout``: seconds to connect (default 5).

``spec.model`` is sent as ``model``. A streaming request streams from Anthropic; a non-streaming
one asks for the JSON answer (``stream: false``), which is read into the same events.

How our request becomes Anthropic's (each rule has its translator below):

- ``system`` and ``developer`` messages, wherever they are, become the top-level ``system`` text
  (joined by blank lines). ``tool`` messages become ``tool_result`` blocks of a user turn, an
  assistant's ``tool_calls`` ``tool_use`` blocks, and consecutive turns of the same role are merged
  into one, as the API requires. A message's ``name`` has no Anthropic equivalent and is dropped.
- Images (``data:`` URLs, which the image pipeline has produced by the time a provider sees them)
  become base64 ``image`` blocks; an ``http(s)`` URL becomes a ``url`` image source. OpenAI's
  ``detail`` hint has no Anthropic equivalent.
- ``max_tokens`` is required by Anthropic. When the client gives none, we send
  :data:`DEFAULT_MAX_TOKENS` (4096), plus the thinking budget when the model is asked to think, so
  the answer keeps 4096 tokens whatever the budget.
- ``stop`` is sent as ``stop_sequences``. ``temperature`` must be within 0..1 (Anthropic's range;
  a 400 says so before any call). ``n`` > 1, ``seed``, ``presence_penalty`` and
  ``frequency_penalty`` have no Anthropic equivalent: they are not in :data:`PARAMS`, so the
  service answers 400 naming the parameter and the provider.
- ``thinking`` (or ``reasoning_effort``, as a budget; see ``ChatRequest.thinking_budget``) becomes
  Anthropic's ``thinking: {"type": "enabled", "budget_tokens": N}``; Anthropic's minimum budget is
  1024 tokens (a 400 says so, naming what the client gave). Thinking blocks stream as
  :class:`ReasoningDelta` with the block's ``signature`` on its last piece. A ``redacted_thinking``
  block (encrypted reasoning) has no text: it streams as an empty piece whose signature is
  :data:`REDACTED_PREFIX` + its ``data``, so that sending the assistant turn back restores it
  unmodified, as Anthropic requires during tool use. Reasoning sent back without a signature
  cannot be verified by Anthropic and is left out.
- ``tools``/``tool_choice``/``parallel_tool_calls`` become ``tools`` (``input_schema``; ``strict``
  when the tool asks for it) and ``tool_choice`` (``auto``, ``none``, ``required`` → ``any``, a named
  function → ``tool``; ``disable_parallel_tool_use`` when parallel calls are off).
- ``response_format`` ``json_schema`` uses Anthropic's native structured outputs
  (``output_config.format``, constrained decoding; Claude Sonnet 4.5, Opus 4.5, Haiku 4.5 and
  later). The schema is sent as given: Anthropic's own 400 names what it cannot enforce (it wants
  ``additionalProperties: false`` on objects) or a model without structured outputs.
  ``json_object`` (JSON without a schema) has no Anthropic equivalent: a 400 asks for a schema.
- ``extra_params`` are merged into the body untouched (``top_k``, ``metadata``, ``service_tier``,
  …), except ``model``, ``messages`` and ``stream``, which decide what we parse back; an object
  given both ways is merged, the request's own fields winning.

Back: ``stop_reason`` ``end_turn``/``stop_sequence``/``pause_turn`` → ``stop``, ``max_tokens`` →
``length``, ``tool_use`` → ``tool_calls``, ``refusal`` → ``content_filter``. Usage:
``input_tokens`` plus both cache counts → ``prompt_tokens`` (Anthropic counts images there),
``output_tokens`` → ``completion_tokens`` (thinking included; Anthropic does not report it apart).

Errors: HTTP errors map as in :mod:`.http` (429 keeps ``Retry-After``; 529 ``overloaded_error``
→ 503). An ``error`` event in a stream maps by its ``error.type`` the same way.

Reference: https://docs.anthropic.com/en/api/messages (request and answer),
https://docs.anthropic.com/en/docs/build-with-claude/streaming (events),
https://docs.anthropic.com/en/api/errors (errors).
"""
from __future__ import annotations

import re
from contextlib import aclosing
from typing import Any, AsyncIterator

import orjson

from ..errors import ServingError, invalid
from ..events import Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from ..schemas import CHAT, ChatMessage, ChatRequest, ImagePart, ReasoningPart, TextPart
from ..structured import OutputFormat, ToolPlan
from . import http
from .base import EntitySpec, Provider
from .openai_compatible import api_root, config_secret, join

LABEL = "Anthropic"  # how errors name the vendor
API_VERSION = "2023-06-01"
DEFAULT_API_BASE = "https://api.anthropic.com"
#: max_tokens sent when the client gives none (plus the thinking budget, when thinking)
DEFAULT_MAX_TOKENS = 4096
MIN_THINKING_BUDGET = 1024  # Anthropic's minimum budget_tokens
#: marks a redacted_thinking block's data carried as a reasoning signature
REDACTED_PREFIX = "redacted_thinking:"

PARAMS = frozenset({
    "max_tokens", "temperature", "top_p", "stop",
    "tools", "tool_choice", "parallel_tool_calls", "response_format", "thinking", "reasoning_effort",
})
# Keys of the vendor body that extra_params may not replace: they decide what we parse back.
_RESERVED = frozenset({"model", "messages", "stream"})
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",  # a server tool's long turn paused: the answer so far is complete
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# The HTTP status each error type travels with (https://docs.anthropic.com/en/api/errors).
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)
_TOOL_CHOICES = {"auto": "auto", "none": "none", "required": "any"}

# --- ours → vendor -------------------------------------------------------------------------


def chat_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """Anthropic's Messages body for ``request``; ServingError (400) for what it cannot express.

    Sample (https://docs.anthropic.com/en/api/messages)::

        {"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": "Be brief.",
         "messages": [{"role": "user", "content": [
             {"type": "text", "text": "What is this?"},
             {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO…"}}]}],
         "temperature": 0.2, "stop_sequences": ["END"],
         "tools": [{"name": "get_weather", "description": "Weather now", "input_schema": {"type": "object"}}],
         "tool_choice": {"type": "auto"},
         "thinking": {"type": "enabled", "budget_tokens": 2048},
         "stream": true}
    """
    system, messages = conversation(request.messages)
    budget = thinking_budget(request)
    body: dict[str, Any] = {"model": model, "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS + (budget or 0)}
    if system:
        body["system"] = system
    body["messages"] = messages
    if request.temperature is not None:
        if request.temperature > 1:
            raise invalid(f"'temperature' must be between 0 and 1 for Anthropic models; got {request.temperature}.")
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = request.stop_list
    if request.tool_plan is not None:
        body["tools"], body["tool_choice"] = tools(request.tool_plan)
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if request.output_format is not None and request.output_format.kind != "text":
        body["output_config"] = {"format": output_format(request.output_format)}
    for key, value in request.extra_params.items():
        if key in _RESERVED:
            continue
        mine = body.get(key)
        body[key] = {**value, **mine} if isinstance(mine, dict) and isinstance(value, dict) else value
    body["stream"] = request.stream
    return body


def thinking_budget(request: ChatRequest) -> int | None:
    """The thinking budget to send, or None; 400 when it is below Anthropic's minimum."""
    budget = request.thinking_budget
    if budget is None or budget >= MIN_THINKING_BUDGET:
        return budget
    if request.reasoning_effort is not None:
        raise invalid(
            f"reasoning_effort '{request.reasoning_effort}' with max_tokens {request.max_tokens} gives a thinking "
            f"budget of {budget} tokens, below Anthropic's minimum of {MIN_THINKING_BUDGET}: raise max_tokens to at "
            f"least {2 * MIN_THINKING_BUDGET}, or give thinking.budget_tokens."
        )
    raise invalid(f"thinking.budget_tokens must be at least {MIN_THINKING_BUDGET} for Anthropic models; got {budget}.")


def conversation(messages: list[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """The ``system`` text and Anthropic's alternating turns for our ``messages``.

    Sample turns (https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/implement-tool-use)::

        [{"role": "user", "content": "Weather in Paris?"},
         {"role": "assistant", "content": [
             {"type": "thinking", "thinking": "Use the tool.", "signature": "EqQBCgIYAh…"},
             {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}]},
         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "18°C"}]}]

    A turn that is one text block is sent as a plain string.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.role in ("system", "developer"):
            if message.has_images():
                raise invalid(f"{where} is a {message.role} message with an image; Anthropic takes only text there.")
            system.append(message.text())
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message, where)
        if not blocks:
            continue  # Anthropic rejects empty turns; an empty message says nothing
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]
    return "\n\n".join(system), turns


def _blocks(message: ChatMessage, where: str) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [_tool_result(message, where)]
    content = message.content
    blocks: list[dict[str, Any]] = []
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif content:
        thought: list[str] = []  # reasoning text waiting for the signature that closes its block
        for j, part in enumerate(content):
            if isinstance(part, ReasoningPart):
                for summary in part.summary:
                    thought.append(summary.text)
                    if summary.signature:
                        blocks.append(_thinking("".join(thought), summary.signature))
                        thought = []
            else:
                blocks.extend(_parts([part], f"{where}.content[{j}]"))
    for k, call in enumerate(message.tool_calls or ()):
        blocks.append(_tool_use(call, f"{where}.tool_calls[{k}]"))
    return blocks


def _parts(parts: list[TextPart | ImagePart], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(image_block(part.image_url.url, where))
    return blocks


def _thinking(text: str, signature: str) -> dict[str, Any]:
    if signature.startswith(REDACTED_PREFIX):
        return {"type": "redacted_thinking", "data": signature[len(REDACTED_PREFIX):]}
    return {"type": "thinking", "thinking": text, "signature": signature}


def image_block(url: str, where: str) -> dict[str, Any]:
    """An image block (https://docs.anthropic.com/en/docs/build-with-claude/vision)::

        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ…"}}
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    """
    match = _DATA_URL.fullmatch(url)
    if match:
        return {"type": "image", "source": {"type": "base64", "media_type": match[1], "data": match[2]}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise invalid(f"{where} must be a base64 data: URL or an http(s) URL.")


def _tool_use(call: dict[str, Any], where: str) -> dict[str, Any]:
    function = call.get("function")
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid(f"{where}.id is missing: Anthropic pairs each call with its result by id.")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise invalid(f"{where}.function.name is missing.")
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments) if arguments.strip() else {}
        except orjson.JSONDecodeError:
            raise invalid(f"{where}.function.arguments is not valid JSON.") from None
    elif arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise invalid(f"{where}.function.arguments must be a JSON object.")
    return {"type": "tool_use", "id": call_id, "name": function["name"], "input": arguments}


def _tool_result(message: ChatMessage, where: str) -> dict[str, Any]:
    if not message.tool_call_id:
        raise invalid(f"{where} is a 'tool' message without 'tool_call_id', the id of the call it answers.")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    content = message.content
    if isinstance(content, list):
        content = _parts(content, f"{where}.content")
    if content:
        block["content"] = content
    return block


def tools(plan: ToolPlan) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Anthropic's ``tools`` and ``tool_choice`` for ``plan``.

    Sample (https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/implement-tool-use)::

        [{"name": "get_weather", "description": "Weather now",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
        {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}
    """
    out: list[dict[str, Any]] = []
    for tool in plan.tools:
        entry: dict[str, Any] = {"name": tool.name}
        if tool.description:
            entry["description"] = tool.description
        entry["input_schema"] = tool.parameters
        if tool.strict:
            entry["strict"] = True
        out.append(entry)
    if plan.choice == "function":
        choice: dict[str, Any] = {"type": "tool", "name": plan.function}
    else:
        choice = {"type": _TOOL_CHOICES[plan.choice]}
    if not plan.parallel and plan.choice != "none":
        choice["disable_parallel_tool_use"] = True
    return out, choice


def output_format(fmt: OutputFormat) -> dict[str, Any]:
    """Anthropic's ``output_config.format`` for a JSON ``response_format``.

    Sample (https://docs.claude.com/en/docs/build-with-claude/structured-outputs)::

        {"type": "json_schema", "schema": {"type": "object", "properties": {"name": {"type": "string"}},
                                           "required": ["name"], "additionalProperties": false}}
    """
    if fmt.kind != "json_schema":
        raise invalid(
            "response_format type 'json_object' is not supported by Anthropic models: give "
            "{\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., \"schema\": {...}}} "
            "with the schema the answer must match."
        )
    return {"type": "json_schema", "schema": fmt.schema}


# --- vendor → ours -------------------------------------------------------------------------


def message_events(message: dict[str, Any]) -> list[Event]:
    """Our events in one whole (non-streamed) Anthropic answer.

    Sample (https://docs.anthropic.com/en/api/messages)::

        {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
         "content": [{"type": "thinking", "thinking": "Paris first.", "signature": "EqQBCgIYAh…"},
                     {"type": "text", "text": "Let me check."},
                     {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}],
         "stop_reason": "tool_use", "stop_sequence": null,
         "usage": {"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                   "output_tokens": 48}}
    """
    events: list[Event] = []
    call = 0
    for block in message.get("content") or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and block.get("text"):
            events.append(TextDelta(block["text"]))
        elif kind == "thinking":
            events.append(ReasoningDelta(block.get("thinking") or "", signature=block.get("signature") or None))
        elif kind == "redacted_thinking":
            events.append(ReasoningDelta("", signature=REDACTED_PREFIX + str(block.get("data") or "")))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            events.append(ToolCallDelta(call=call, id=block.get("id"), name=block.get("name"), arguments=arguments))
            call += 1
    events.append(Finish(finish_reason(message.get("stop_reason"))))
    events.append(usage(message.get("usage") or {}))
    return events


class StreamTranslator:
    """Our events from Anthropic's stream events, fed in order (it keeps the open blocks).

    Sample stream (https://docs.anthropic.com/en/docs/build-with-claude/streaming), one ``data``
    object per SSE event, the event name repeated as ``type``::

        {"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant",
         "content": [], "model": "claude-sonnet-4-5", "stop_reason": null,
         "usage": {"input_tokens": 25, "output_tokens": 1}}}
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": "", "signature": ""}}
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Paris first."}}
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAh…"}}
        {"type": "content_block_stop", "index": 0}
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}
        {"type": "ping"}
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hello"}}
        {"type": "content_block_stop", "index": 1}
        {"type": "content_block_start", "index": 2,
         "content_block": {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}}
        {"type": "content_block_delta", "index": 2,
         "delta": {"type": "input_json_delta", "partial_json": "{\\"city\\": "}}
        {"type": "content_block_stop", "index": 2}
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
         "usage": {"output_tokens": 48}}
        {"type": "message_stop"}

    ``Finish`` and ``Usage`` come out at ``message_stop`` (``done`` is then true). Event and block
    types it does not know (``ping``, citations, server tools, later additions) yield nothing.
    """

    def __init__(self) -> None:
        self.done = False
        self._usage: dict[str, Any] = {}
        self._reason: str | None = None
        self._calls: dict[int, int] = {}  # content block index -> our tool call number
        self._argued: set[int] = set()  # tool call blocks that sent some arguments

    def feed(self, payload: dict[str, Any]) -> list[Event]:
        kind = payload.get("type")
        index = payload.get("index")
        if kind == "message_start":
            self._usage.update((payload.get("message") or {}).get("usage") or {})
        elif kind == "content_block_start":
            return self._start(index, payload.get("content_block") or {})
        elif kind == "content_block_delta":
            return self._delta(index, payload.get("delta") or {})
        elif kind == "content_block_stop" and index in self._calls and index not in self._argued:
            return [ToolCallDelta(call=self._calls[index], arguments="{}")]  # a call without arguments
        elif kind == "message_delta":
            self._reason = (payload.get("delta") or {}).get("stop_reason") or self._reason
            self._usage.update(payload.get("usage") or {})  # cumulative counts
        elif kind == "message_stop":
            self.done = True
            return [Finish(finish_reason(self._reason)), usage(self._usage)]
        return []

    def _start(self, index: Any, block: dict[str, Any]) -> list[Event]:
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            return [TextDelta(block["text"])]
        if kind == "thinking" and (block.get("thinking") or block.get("signature")):
            return [ReasoningDelta(block.get("thinking") or "", signature=block.get("signature") or None)]
        if kind == "redacted_thinking":
            return [ReasoningDelta("", signature=REDACTED_PREFIX + str(block.get("data") or ""))]
        if kind == "tool_use":
            call = self._calls[index] = len(self._calls)
            arguments = orjson.dumps(block["input"]).decode() if block.get("input") else ""
            if arguments:
                self._argued.add(index)
            return [ToolCallDelta(call=call, id=block.get("id"), name=block.get("name"), arguments=arguments)]
        return []

    def _delta(self, index: Any, delta: dict[str, Any]) -> list[Event]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [TextDelta(delta["text"])]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [ReasoningDelta(delta["thinking"])]
        if kind == "signature_delta" and delta.get("signature"):
            # It arrives last, just before the block stops: the signature closes the reasoning block.
            return [ReasoningDelta("", signature=delta["signature"])]
        if kind == "input_json_delta" and delta.get("partial_json") and index in self._calls:
            self._argued.add(index)
            return [ToolCallDelta(call=self._calls[index], arguments=delta["partial_json"])]
        return []


def finish_reason(stop_reason: Any) -> str:
    return _FINISH_REASONS.get(stop_reason, "stop")


def usage(counts: dict[str, Any]) -> Usage:
    """Our usage from Anthropic's: cache reads and writes are input tokens too."""

    def count(name: str) -> int:
        value = counts.get(name)
        return value if isinstance(value, int) else 0

    prompt = count("input_tokens") + count("cache_creation_input_tokens") + count("cache_read_input_tokens")
    return Usage(prompt_tokens=prompt, completion_tokens=count("output_tokens"))


def error_for_event(payload: dict[str, Any], *, secrets: tuple[str, ...] = ()) -> ServingError:
    """Our error for an ``error`` object (a stream's ``error`` event, or an error body).

    Sample (https://docs.anthropic.com/en/api/errors)::

        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    """
    error = payload.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    status = _ERROR_STATUS.get(kind, 500)
    return http.error_for_status(LABEL, status, orjson.dumps(payload), None, secrets=secrets)


# --- the provider --------------------------------------------------------------------------


class AnthropicProvider(Provider):
    """Serves chat from Anthropic's Messages API."""

    tasks = frozenset({CHAT})
    supported_params = PARAMS
    supported_extra_params = None
    vision = True
    counts_image_tokens = True  # Anthropic's input_tokens count the images

    def __init__(self, spec: EntitySpec) -> None:
        super().__init__(spec)
        config = spec.config
        key = config_secret(config, "anthropic_api_key")
        if key is None:
            raise invalid(
                "An anthropic endpoint needs 'anthropic_api_key' in its anthropic_config: a secret reference "
                "such as '{{secrets/scope/key}}', or 'anthropic_api_key_plaintext'."
            )
        root = api_root(
            config.get("anthropic_api_base") or DEFAULT_API_BASE, "anthropic_api_base",
            "'anthropic_api_base' must be a URL such as https://api.anthropic.com.",
        )
        self.base_url = join(root, query="")
        self.url = join(root, "/messages" if root.path.endswith("/v1") else "/v1/messages")
        self._secrets = (key,)
        headers = {"x-api-key": key, "anthropic-version": API_VERSION, "content-type": "application/json"}
        self._stream_headers = {**headers, "accept": "text/event-stream"}
        self._json_headers = {**headers, "accept": "application/json"}
        self._timeout = http.entity_timeout(config)

    def __repr__(self) -> str:  # never the key
        return f"<AnthropicProvider {self.spec.model!r} at {http.safe_url(self.base_url)}>"

    def describe(self) -> dict[str, Any]:
        return {"anthropic_api_base": http.safe_url(self.base_url), "upstream_model": self.spec.model}

    # chat() returns the relay generator itself rather than re-yielding from it, so the
    # consumer's aclose() or cancellation reaches the upstream response directly.
    def chat(self, request: ChatRequest) -> AsyncIterator[Event]:
        return self._relay(request)

    async def _relay(self, request: ChatRequest) -> AsyncIterator[Event]:
        """Relay Anthropic's answer as our events, per the contract in :mod:`.base`.

        The body is translated here, so a request Anthropic cannot take fails on the first step,
        like any error before the first event. A stream that ends without ``message_stop`` was cut
        short: that is an error, not a finished answer. After ``message_stop`` the rest of the
        body is drained so the connection goes back to the pool.
        """
        body = orjson.dumps(chat_body(request, self.spec.model))
        headers = self._stream_headers if request.stream else self._json_headers
        async with http.open_stream(LABEL, self.url, body, headers, self._timeout, secrets=self._secrets) as response:
            if not http.is_event_stream(response):
                for event in message_events(self._checked(http.loads(LABEL, await response.aread()))):
                    yield event
                return
            translator = StreamTranslator()
            async with aclosing(http.iter_sse(response)) as sse_events:
                async for sse in sse_events:
                    if translator.done or not sse.data:
                        continue
                    for event in translator.feed(self._checked(http.loads(LABEL, sse.data))):
                        yield event
            if not translator.done:
                raise ServingError(
                    f"{LABEL} ended the stream before the answer was complete.", "TEMPORARILY_UNAVAILABLE"
                )

    def _checked(self, payload: Any) -> dict[str, Any]:
        if type(payload) is not dict:
            raise ServingError(f"{LABEL} sent a malformed answer.", "TEMPORARILY_UNAVAILABLE")
        if payload.get("type") == "error":
            raise error_for_event(payload, secrets=self._secrets)
        return payload
