"""Cohere: chat and embeddings over Cohere's v2 API.

Served entity config (``EntitySpec.config``, Databricks' ``cohere_config``):

- ``cohere_api_key`` (required): the resolved key, sent as a Bearer token.
- ``cohere_api_base`` (optional): default ``https://api.cohere.com``; ``/v2/chat`` and
  ``/v2/embed`` are appended (a private deployment or a proxy goes here).

``spec.model`` is sent as ``model``. A streaming chat reads Cohere's server-sent events; a
non-streaming one asks for the JSON answer, read into the same events. Cohere's ``tool_plan``
(what the model says it will do before calling tools) is answer text, as an Anthropic model's
words before a tool call are; sent back, an assistant turn's text beside tool calls becomes
``tool_plan`` again. ``extra_params`` are merged into the vendor body untouched (``k``,
``safety_mode``; for embeddings ``input_type``, ``truncate``, ``output_dimension``).
"""
from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any, AsyncIterator, Awaitable, Iterable
from urllib.parse import urlsplit, urlunsplit

import orjson

from ..errors import ServingError, invalid
from ..events import Embeddings, Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from ..schemas import CHAT, EMBEDDINGS, ChatMessage, ChatRequest, EmbeddingsRequest, ImagePart, ReasoningPart, TextPart
from . import http
from .base import EntitySpec, Provider

LABEL = "Cohere"
DEFAULT_API_BASE = "https://api.cohere.com"
PARAMS = frozenset({
    "max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty",
    "tools", "tool_choice", "parallel_tool_calls", "response_format", "thinking", "reasoning_effort",
})
# Keys of the vendor body that extra_params may not replace: they decide what we parse back.
_RESERVED = frozenset({"model", "messages", "stream", "texts", "embedding_types"})
_FINISH_REASONS = {"COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length", "TOOL_CALL": "tool_calls"}
EMBED_BATCH = 96  # texts per /v2/embed call, Cohere's limit

# --- ours → vendor -------------------------------------------------------------------------


def chat_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """The ``/v2/chat`` body for ``request``.

    Sample (https://docs.cohere.com/reference/chat)::

        {"model": "command-a-03-2025", "stream": true,
         "messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                   {"type": "image_url", "image_url": {"url": "data:…"}}]}],
         "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {…}}}],
         "tool_choice": "REQUIRED",
         "response_format": {"type": "json_object", "json_schema": {…}},
         "thinking": {"type": "enabled", "token_budget": 1024},
         "max_tokens": 512, "temperature": 0.2, "p": 0.9, "stop_sequences": ["END"], "seed": 7}

    Raises a 400 for ``parallel_tool_calls: false``, which Cohere cannot be asked.
    """
    body: dict[str, Any] = {"model": model, "messages": [_message(m, i) for i, m in enumerate(request.messages)]}
    params = request.generation_params()
    for ours, theirs in (
        ("max_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "p"), ("seed", "seed"),
        ("presence_penalty", "presence_penalty"), ("frequency_penalty", "frequency_penalty"),
    ):
        if ours in params:
            body[theirs] = params[ours]
    if request.stop_list:
        body["stop_sequences"] = request.stop_list
    body.update(_tools(request))
    output = request.output_format
    if output is not None:
        body["response_format"] = {"type": "text"} if output.kind == "text" else {"type": "json_object"}
        if output.schema is not None:
            body["response_format"]["json_schema"] = output.schema
    if request.thinking is not None and request.thinking.type == "disabled":
        body["thinking"] = {"type": "disabled"}
    elif request.thinking_budget is not None:
        body["thinking"] = {"type": "enabled", "token_budget": request.thinking_budget}
    for key, value in request.extra_params.items():
        if key not in _RESERVED:
            body[key] = value
    body["stream"] = request.stream
    return body


def _message(message: ChatMessage, i: int) -> dict[str, Any]:
    role = "system" if message.role == "developer" else message.role
    if role in ("system", "tool"):
        out: dict[str, Any] = {"role": role, "content": message.text()}
        if role == "tool":
            out["tool_call_id"] = message.tool_call_id or ""
        return out
    content = message.content
    if role == "user":
        if isinstance(content, str):
            return {"role": "user", "content": content}
        return {"role": "user", "content": [_part(part) for part in content or ()]}
    # An assistant turn: its reasoning as thinking blocks, its text as text (or as the tool plan).
    out = {"role": "assistant"}
    thinking = [{"type": "thinking", "thinking": s.text} for _, part in message.reasoning_parts() for s in part.summary]
    text = message.text()
    if message.tool_calls:
        out["tool_calls"] = [
            _tool_call(call, f"messages[{i}].tool_calls[{j}]") for j, call in enumerate(message.tool_calls)
        ]
        if text:
            out["tool_plan"] = text
        if thinking:
            out["content"] = thinking
    else:
        out["content"] = [*thinking, {"type": "text", "text": text}] if thinking else text
    return out


def _part(part: TextPart | ImagePart | ReasoningPart) -> dict[str, Any]:
    if isinstance(part, ImagePart):
        return {"type": "image_url", "image_url": part.image_url.model_dump(exclude_none=True)}
    return part.model_dump(exclude_none=True)  # a TextPart (reasoning never reaches a user turn)


def _tool_call(call: dict[str, Any], where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise invalid(f"{where} must have a 'function' with a 'name' and its 'arguments' (a JSON string).")
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
    name = function["name"]
    return {"id": str(call.get("id") or ""), "type": "function", "function": {"name": name, "arguments": arguments}}


def _tools(request: ChatRequest) -> dict[str, Any]:
    plan = request.tool_plan
    if plan is None:
        return {}
    if not plan.parallel:
        raise invalid("'parallel_tool_calls': false is not supported by Cohere.")
    # Cohere has no "call this one function": offered that function alone, the model must call it.
    tools = plan.tools if plan.choice != "function" else plan.callable_tools
    out: dict[str, Any] = {"tools": [
        {"type": "function", "function": {
            "name": tool.name, **({"description": tool.description} if tool.description else {}),
            "parameters": tool.parameters,
        }}
        for tool in tools
    ]}
    if any(tool.strict for tool in tools):
        out["strict_tools"] = True
    if plan.choice == "none":
        out["tool_choice"] = "NONE"
    elif plan.choice in ("required", "function"):
        out["tool_choice"] = "REQUIRED"
    return out


def embed_body(texts: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    """A Cohere Embed body (``model`` is added for the Cohere API; Bedrock takes it in the path).

    Sample (https://docs.cohere.com/reference/embed)::

        {"texts": ["first", "second"], "input_type": "search_document", "embedding_types": ["float"]}
    """
    body: dict[str, Any] = {"texts": texts, "input_type": "search_document", "embedding_types": ["float"]}
    for key, value in extra.items():
        if key not in _RESERVED:
            body[key] = value
    return body


# --- vendor → ours -------------------------------------------------------------------------


class StreamState:
    """What reading a Cohere stream must remember: which tool-call ``index`` is which call."""

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}

    def call(self, index: int) -> int:
        if index not in self.calls:
            self.calls[index] = len(self.calls)
        return self.calls[index]


def stream_events(event: dict[str, Any], state: StreamState) -> list[Event]:
    """Our events in one Cohere stream event.

    Samples (https://docs.cohere.com/docs/streaming, https://docs.cohere.com/docs/tool-use-streaming)::

        {"type": "message-start", "id": "29f14a5a", "delta": {"message": {"role": "assistant"}}}
        {"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "thinking", "thinking": ""}}}}
        {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"thinking": "Let me"}}}}
        {"type": "content-delta", "index": 1, "delta": {"message": {"content": {"text": "Hello"}}}}
        {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will check"}}}
        {"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {"id": "get_weather_1",
         "type": "function", "function": {"name": "get_weather", "arguments": ""}}}}}
        {"type": "tool-call-delta", "index": 0,
         "delta": {"message": {"tool_calls": {"function": {"arguments": "{\\"city\\""}}}}}
        {"type": "message-end", "delta": {"finish_reason": "TOOL_CALL",
         "usage": {"billed_units": {"input_tokens": 9, "output_tokens": 12},
                   "tokens": {"input_tokens": 70, "output_tokens": 12}}}}

    Raises ServingError when the message ends with ``ERROR`` or ``TIMEOUT``.
    """
    kind = event.get("type")
    message = (event.get("delta") or {}).get("message") or {}
    if kind in ("content-start", "content-delta"):
        content = message.get("content") or {}
        events: list[Event] = []
        if content.get("thinking"):
            events.append(ReasoningDelta(content["thinking"]))
        if content.get("text"):
            events.append(TextDelta(content["text"]))
        return events
    if kind == "tool-plan-delta":
        return [TextDelta(message["tool_plan"])] if message.get("tool_plan") else []
    if kind in ("tool-call-start", "tool-call-delta"):
        call = message.get("tool_calls") or {}
        function = call.get("function") or {}
        return [ToolCallDelta(
            call=state.call(event.get("index") or 0), id=call.get("id"), name=function.get("name"),
            arguments=function.get("arguments") or "",
        )]
    if kind == "message-end":
        delta = event.get("delta") or {}
        return [_finish(delta.get("finish_reason"), delta.get("error")), _usage(delta.get("usage"))]
    return []


def chat_events(payload: dict[str, Any]) -> list[Event]:
    """Our events in a whole ``/v2/chat`` answer.

    Sample (https://docs.cohere.com/reference/chat)::

        {"id": "c14c80c3", "finish_reason": "TOOL_CALL",
         "message": {"role": "assistant",
                     "content": [{"type": "thinking", "thinking": "Let me see."}, {"type": "text", "text": "Hi"}],
                     "tool_plan": "I will check the weather.",
                     "tool_calls": [{"id": "get_weather_1", "type": "function",
                                     "function": {"name": "get_weather", "arguments": "{\\"city\\":\\"Paris\\"}"}}]},
         "usage": {"billed_units": {"input_tokens": 9, "output_tokens": 12},
                   "tokens": {"input_tokens": 70, "output_tokens": 12}}}
    """
    message = payload.get("message") or {}
    events: list[Event] = []
    for block in message.get("content") or ():
        if block.get("type") == "thinking" and block.get("thinking"):
            events.append(ReasoningDelta(block["thinking"]))
        elif block.get("type") == "text" and block.get("text"):
            events.append(TextDelta(block["text"]))
    if message.get("tool_plan"):
        events.append(TextDelta(message["tool_plan"]))
    for position, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
        events.append(ToolCallDelta(call=position, id=call.get("id"), name=function.get("name"), arguments=arguments))
    events.append(_finish(payload.get("finish_reason"), None))
    events.append(_usage(payload.get("usage")))
    return events


def embed_vectors(label: str, payload: Any, count: int) -> list[list[float]]:
    """The float vectors of a Cohere Embed answer, in input order.

    Sample (https://docs.cohere.com/reference/embed)::

        {"id": "da6e531f", "texts": ["first", "second"], "embeddings": {"float": [[0.016, -0.008, …], […]]},
         "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 2}}}

    (Embed models on Bedrock answer the same; older ones give ``"embeddings": [[…], […]]``.)
    Raises ServingError when the number of vectors differs from the number of texts.
    """
    embeddings = payload.get("embeddings") if isinstance(payload, dict) else None
    vectors = embeddings.get("float") if isinstance(embeddings, dict) else embeddings
    if not isinstance(vectors, list) or len(vectors) != count:
        got = len(vectors) if isinstance(vectors, list) else 0
        raise ServingError(
            f"{label} returned {got} embeddings for {count} inputs.", "TEMPORARILY_UNAVAILABLE", retryable=False
        )
    return vectors


def _finish(reason: Any, error: Any) -> Finish:
    if reason == "TIMEOUT":
        raise ServingError(f"{LABEL} timed out generating the answer.", "DEADLINE_EXCEEDED")
    if reason == "ERROR":
        detail = f": {error}" if isinstance(error, str) and error else "."
        raise ServingError(f"{LABEL} failed generating the answer{detail}", "TEMPORARILY_UNAVAILABLE", retry_after=1)
    return Finish(_FINISH_REASONS.get(reason, "stop"))


def _usage(usage: Any) -> Usage:
    """Cohere's token counts (``tokens``: what the model read and wrote), else the billed units."""
    usage = usage if isinstance(usage, dict) else {}
    counts = usage.get("tokens") or usage.get("billed_units") or {}
    return Usage(int(counts.get("input_tokens") or 0), int(counts.get("output_tokens") or 0))


# --- the provider --------------------------------------------------------------------------


class CohereProvider(Provider):
    """Serves chat and embeddings from Cohere's v2 API."""

    tasks = frozenset({CHAT, EMBEDDINGS})
    supported_params = PARAMS
    supported_extra_params = None
    vision = True  # Command A Vision; a model without vision says so itself
    counts_image_tokens = True

    def __init__(self, spec: EntitySpec) -> None:
        super().__init__(spec)
        self._timeout = http.entity_timeout(spec.config)
        config = spec.config
        key = config.get("cohere_api_key")
        if not isinstance(key, str) or not key.strip():
            raise invalid("A cohere endpoint needs 'cohere_api_key' (the resolved key, a string).")  # never echo it
        self._secrets = (key.strip(),)
        base = config.get("cohere_api_base") or DEFAULT_API_BASE
        parts = urlsplit(base.strip()) if isinstance(base, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise invalid(f"'cohere_api_base' must be an http:// or https:// URL; got '{http.safe_url(str(base))}'.")
        self.base_url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        headers = {"content-type": "application/json", "authorization": f"Bearer {key.strip()}"}
        self._stream_headers = {**headers, "accept": "text/event-stream"}
        self._json_headers = {**headers, "accept": "application/json"}

    def __repr__(self) -> str:  # never the key
        return f"<CohereProvider {self.spec.model!r} at {http.safe_url(self.base_url)}>"

    def describe(self) -> dict[str, Any]:
        return {"cohere_api_base": http.safe_url(self.base_url), "upstream_model": self.spec.model}

    def chat(self, request: ChatRequest) -> AsyncIterator[Event]:
        body = orjson.dumps(chat_body(request, self.spec.model))
        return self._stream(body) if request.stream else self._whole(body)

    async def embed(self, request: EmbeddingsRequest) -> Embeddings:
        texts = request.texts
        batches = [texts[i:i + EMBED_BATCH] for i in range(0, len(texts), EMBED_BATCH)]
        answers = await gather_all(self._embed(batch, request.extra_params) for batch in batches)
        vectors = [v for answer, batch in zip(answers, batches) for v in embed_vectors(LABEL, answer, len(batch))]
        tokens = sum(int(((a.get("meta") or {}).get("billed_units") or {}).get("input_tokens") or 0) for a in answers)
        return Embeddings(vectors, tokens)

    async def _embed(self, texts: list[str], extra: dict[str, Any]) -> dict[str, Any]:
        body = orjson.dumps({"model": self.spec.model, **embed_body(texts, extra)})
        url = self.base_url + "/v2/embed"
        payload = await http.post_json(LABEL, url, body, self._json_headers, self._timeout, secrets=self._secrets)
        if not isinstance(payload, dict):
            raise ServingError(f"{LABEL} answered with an unexpected body.", "TEMPORARILY_UNAVAILABLE")
        return payload

    async def _stream(self, body: bytes) -> AsyncIterator[Event]:
        """Relay the stream as our events, per the contract in :mod:`.base` (``message-end``
        brings the finish and the usage together; a stream cut before it still finishes)."""
        state = StreamState()
        ended = False
        url = self.base_url + "/v2/chat"
        async with http.open_stream(LABEL, url, body, self._stream_headers, self._timeout, secrets=self._secrets) as response:
            async with aclosing(http.iter_sse(response)) as sse_events:
                async for sse in sse_events:
                    if ended or not sse.data or sse.data == "[DONE]":
                        continue
                    event = http.loads(LABEL, sse.data)
                    if type(event) is not dict:
                        raise ServingError(f"{LABEL} sent a malformed stream event.", "TEMPORARILY_UNAVAILABLE")
                    for out in stream_events(event, state):
                        yield out
                    ended = event.get("type") == "message-end"
        if not ended:
            yield Finish("stop")
            yield Usage(0, 0)

    async def _whole(self, body: bytes) -> AsyncIterator[Event]:
        url = self.base_url + "/v2/chat"
        payload = await http.post_json(LABEL, url, body, self._json_headers, self._timeout, secrets=self._secrets)
        if not isinstance(payload, dict):
            raise ServingError(f"{LABEL} answered with an unexpected body.", "TEMPORARILY_UNAVAILABLE")
        for event in chat_events(payload):
            yield event


async def gather_all(calls: Iterable[Awaitable[Any]]) -> list[Any]:
    """Await ``calls`` together; when one fails, the others are cancelled rather than left running."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
