"""Any server that speaks the OpenAI API: vLLM, Ollama, llama.cpp server, LM Studio, …

Served entity config (``EntitySpec.config``):

- ``openai_api_base`` (required): e.g. ``http://127.0.0.1:11434/v1``; ``/chat/completions``,
  ``/completions`` and ``/embeddings`` are appended.
- ``openai_api_key`` (or ``openai_api_key_plaintext``): the resolved key, sent as a Bearer token.
- ``openai_organization``: sent as ``OpenAI-Organization``.
- ``timeout``: seconds the upstream may stay silent (the read timeout; default 300);
  ``connect_timeout``: seconds to connect (default 5).

``spec.model`` is sent as ``model``. A streaming request streams from the upstream (always with
``stream_options.include_usage``); a non-streaming one asks for the JSON answer, which is read
into the same events (the service joins them, as for every provider).

The module is pure translators (ours → vendor, vendor chunk → our events) plus a thin class
that does the auth headers, the URLs and the call; the HTTP plumbing lives in :mod:`.http`.
Vendors that speak the same API behind other URLs, headers or bodies (OpenAI and Azure OpenAI,
a ``custom`` provider, Databricks Model Serving) subclass the class and override its hooks:
``label``, ``_locate`` (URLs), ``_auth`` (headers), ``_chat_body`` / ``_completion_body`` /
``_embeddings_body`` and ``_chat_events``.
"""
from __future__ import annotations

import base64
from array import array
from contextlib import aclosing
from typing import Any, AsyncIterator, Callable, ClassVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

import orjson

from ..errors import ServingError, invalid
from ..events import Embeddings, Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from ..schemas import (
    CHAT, COMPLETIONS, EMBEDDINGS, ChatMessage, ChatRequest, CompletionRequest, EmbeddingsRequest, ReasoningPart, TextPart,
)
from . import http
from .base import EntitySpec, Provider

LABEL = "OpenAI-compatible upstream"  # how errors name the vendor

PARAMS = frozenset({
    "max_tokens", "temperature", "top_p", "stop", "n", "seed", "presence_penalty", "frequency_penalty",
    # Rich requests in OpenAI's own shape, passed through. ``thinking`` has no OpenAI-API
    # equivalent (servers differ: vLLM wants chat_template_kwargs), so it is a 400 naming it.
    "tools", "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort",
})
# vLLM's sampling extensions its OpenAI server takes in the body (OpenAI's own API refuses them,
# so the openai and databricks providers leave them out of their supported_params).
VLLM_PARAMS = frozenset({"min_tokens"})
# Keys of the vendor body that extra_params may not replace: they decide what we parse back.
_RESERVED = frozenset({"model", "messages", "prompt", "input", "stream"})
_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",  # the legacy name
    "content_filter": "content_filter",
}

# --- ours → vendor -------------------------------------------------------------------------


def chat_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """The vendor's streaming chat body for ``request``.

    Sample (https://platform.openai.com/docs/api-reference/chat/create)::

        {"model": "llama3.1:8b",
         "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
         "max_tokens": 64, "temperature": 0.2,
         "stream": true, "stream_options": {"include_usage": true}}
    """
    body: dict[str, Any] = {"model": model, "messages": [_message(m) for m in request.messages]}
    return _finish_body(body, request.generation_params(), request.extra_params, request.stream)


def completion_body(request: CompletionRequest, model: str) -> dict[str, Any]:
    """The vendor's streaming completions body for ``request``.

    Sample (https://platform.openai.com/docs/api-reference/completions/create)::

        {"model": "qwen2.5-0.5b", "prompt": "Once upon a time", "max_tokens": 16,
         "stream": true, "stream_options": {"include_usage": true}}
    """
    body: dict[str, Any] = {"model": model, "prompt": request.prompt}
    return _finish_body(body, request.generation_params(), request.extra_params, request.stream)


def embeddings_body(request: EmbeddingsRequest, model: str) -> dict[str, Any]:
    """The vendor's embeddings body for ``request``.

    Sample (https://platform.openai.com/docs/api-reference/embeddings/create)::

        {"model": "nomic-embed-text", "input": ["first", "second"], "encoding_format": "float"}
    """
    body: dict[str, Any] = {"model": model, "input": request.input, "encoding_format": "float"}
    _merge_extra(body, request.extra_params)
    return body


def _message(message: ChatMessage) -> dict[str, Any]:
    content: Any = message.content
    if isinstance(content, list):
        # Reasoning blocks sent back are not part of the OpenAI API (servers reject the part type,
        # and vLLM's docs say earlier reasoning is not fed back): they stay here. Text and
        # image_url parts pass through in OpenAI's own shape; an assistant turn's text blocks
        # become the plain string OpenAI-compatible servers expect there.
        parts = [part for part in content if not isinstance(part, ReasoningPart)]
        if message.role == "assistant" and all(isinstance(part, TextPart) for part in parts):
            content = "".join(part.text for part in parts) if parts or not message.tool_calls else None
        else:
            content = [part.model_dump(exclude_none=True) for part in parts]
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls is not None:
        out["tool_calls"] = message.tool_calls
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def _finish_body(body: dict[str, Any], params: dict[str, Any], extra: dict[str, Any], stream: bool) -> dict[str, Any]:
    for name, value in params.items():
        if name in PARAMS or name in VLLM_PARAMS:  # the provider's supported_params refused the rest
            body[name] = value
    _merge_extra(body, extra)
    if not stream:
        # The client wants one answer: so do we. Parsing ten SSE events to join them again costs
        # more than the JSON answer, which the same translators read (its choices have "message").
        body["stream"] = False
        body.pop("stream_options", None)
        return body
    # Streaming, we always ask for usage: it arrives in a last chunk with "choices": [].
    options = body.get("stream_options")
    body["stream"] = True
    body["stream_options"] = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    return body


def _merge_extra(body: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if key not in _RESERVED:
            body[key] = value


# --- vendor → ours -------------------------------------------------------------------------


def chat_events(chunk: dict[str, Any]) -> list[Event]:
    """Our events in one vendor chat chunk (or in a whole non-streamed chat completion).

    Sample chunks (https://platform.openai.com/docs/api-reference/chat-streaming)::

        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "llama3.1:8b",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": null}]}
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "llama3.1:8b",
         "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                      "function": {"name": "get_weather", "arguments": ""}}]}, "finish_reason": null}]}
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "llama3.1:8b",
         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "llama3.1:8b", "choices": [],
         "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21,
                   "completion_tokens_details": {"reasoning_tokens": 4}}}

    A non-streamed completion has ``message`` where a chunk has ``delta`` (its tool calls carry
    no ``index``: their position is the index). Reasoning arrives as ``reasoning_content``
    (vLLM, DeepSeek, llama.cpp server) or ``reasoning`` (Ollama, OpenRouter).
    """
    events: list[Event] = []
    for choice in chunk.get("choices") or ():
        index = choice.get("index") or 0
        delta = choice.get("delta") or choice.get("message")
        if delta:
            thought = delta.get("reasoning_content") or delta.get("reasoning")
            if thought and isinstance(thought, str):
                events.append(ReasoningDelta(thought, index))
            text = delta.get("content")
            if text and isinstance(text, str):
                events.append(TextDelta(text, index))
            for position, call in enumerate(delta.get("tool_calls") or ()):
                function = call.get("function") or {}
                arguments = function.get("arguments")
                if arguments is None:
                    arguments = ""
                elif not isinstance(arguments, str):  # some servers send the object itself
                    arguments = orjson.dumps(arguments).decode()
                events.append(ToolCallDelta(
                    call=call.get("index", position), index=index, id=call.get("id"), name=function.get("name"),
                    arguments=arguments,
                ))
        reason = choice.get("finish_reason")
        if reason:
            events.append(Finish(_FINISH_REASONS.get(reason, "stop"), index))
    usage = chunk.get("usage")
    if usage:
        events.append(_usage(usage))
    return events


def completion_events(chunk: dict[str, Any]) -> list[Event]:
    """Our events in one vendor completions chunk (or a whole non-streamed answer).

    Sample chunk (https://platform.openai.com/docs/api-reference/completions/object)::

        {"id": "cmpl-1", "object": "text_completion", "model": "qwen2.5-0.5b",
         "choices": [{"index": 0, "text": " there", "logprobs": null, "finish_reason": null}]}

    With several prompts and ``n``, choice ``index`` is ``prompt_index * n + j``.
    """
    events: list[Event] = []
    for choice in chunk.get("choices") or ():
        index = choice.get("index") or 0
        text = choice.get("text")
        if text and isinstance(text, str):
            events.append(TextDelta(text, index))
        reason = choice.get("finish_reason")
        if reason:
            events.append(Finish(_FINISH_REASONS.get(reason, "stop"), index))
    usage = chunk.get("usage")
    if usage:
        events.append(_usage(usage))
    return events


def embeddings_result(payload: dict[str, Any], count: int, label: str = LABEL) -> Embeddings:
    """Our embeddings from the vendor's answer, in input order.

    Sample (https://platform.openai.com/docs/api-reference/embeddings/object)::

        {"object": "list", "model": "nomic-embed-text",
         "data": [{"object": "embedding", "index": 0, "embedding": [0.0023, -0.0093, …]}],
         "usage": {"prompt_tokens": 8, "total_tokens": 8}}

    Raises ServingError when the vendor returns a different number of vectors than inputs.
    """
    data = payload.get("data")
    if not isinstance(data, list) or len(data) != count:
        got = len(data) if isinstance(data, list) else 0
        raise ServingError(
            f"{label} returned {got} embeddings for {count} inputs.", "TEMPORARILY_UNAVAILABLE", retryable=False
        )
    if any(item.get("index", i) != i for i, item in enumerate(data)):
        data = sorted(data, key=lambda item: item.get("index", 0))
    vectors = [_vector(item.get("embedding"), label) for item in data]
    usage = payload.get("usage") or {}
    return Embeddings(vectors=vectors, prompt_tokens=int(usage.get("prompt_tokens") or 0))


def _usage(usage: dict[str, Any]) -> Usage:
    details = usage.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        reasoning_tokens=int(details.get("reasoning_tokens") or 0) if isinstance(details, dict) else 0,
    )


def _vector(embedding: Any, label: str) -> list[float]:
    if isinstance(embedding, str):  # base64 of little-endian float32, if the vendor ignored "float"
        return array("f", base64.b64decode(embedding)).tolist()
    if not isinstance(embedding, list):
        raise ServingError(f"{label} returned an embedding that is not a vector.", "TEMPORARILY_UNAVAILABLE")
    return embedding


# --- the provider --------------------------------------------------------------------------


class OpenAICompatibleProvider(Provider):
    """Serves chat, completions and embeddings from an OpenAI-compatible server."""

    tasks = frozenset({CHAT, COMPLETIONS, EMBEDDINGS})
    supported_params = PARAMS | VLLM_PARAMS
    supported_extra_params = None
    vision = False  # a server's model is unknown: the served entity says `vision: true` when it sees images
    counts_image_tokens = True  # vLLM, llama.cpp server and the like count image tokens in prompt_tokens
    #: how errors name the vendor
    label: str = LABEL
    #: vendor chat chunk → our events
    _chat_events: ClassVar[Callable[[dict[str, Any]], list[Event]]] = staticmethod(chat_events)

    def __init__(self, spec: EntitySpec) -> None:
        super().__init__(spec)
        config = spec.config
        self.base_url, self._urls = self._locate(config)
        headers, self._secrets = self._auth(config)
        headers = {"content-type": "application/json", **headers}
        self._stream_headers = {**headers, "accept": "text/event-stream"}
        self._json_headers = {**headers, "accept": "application/json"}
        self._timeout = http.entity_timeout(config)

    # --- hooks -----------------------------------------------------------------------------

    def _locate(self, config: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """The base URL shown in ``describe()`` and the URL of each task."""
        root = api_root(
            config.get("openai_api_base"), "openai_api_base",
            "An openai-compatible endpoint needs 'openai_api_base', the server's API root "
            "(for example http://127.0.0.1:11434/v1).",
        )
        return join(root), task_urls(root)

    def _auth(self, config: dict[str, Any]) -> tuple[dict[str, str], tuple[str, ...]]:
        """The auth headers, and the secrets among them (scrubbed from every vendor text)."""
        key = config_secret(config, "openai_api_key")
        headers = {"authorization": f"Bearer {key}"} if key else {}
        if config.get("openai_organization"):
            headers["openai-organization"] = str(config["openai_organization"])
        return headers, (key,) if key else ()

    def _chat_body(self, request: ChatRequest) -> dict[str, Any]:
        return chat_body(request, self.spec.model)

    def _completion_body(self, request: CompletionRequest) -> dict[str, Any]:
        return completion_body(request, self.spec.model)

    def _embeddings_body(self, request: EmbeddingsRequest) -> dict[str, Any]:
        return embeddings_body(request, self.spec.model)

    def __repr__(self) -> str:  # never the key
        return f"<{type(self).__name__} {self.spec.model!r} at {http.safe_url(self.base_url)}>"

    def describe(self) -> dict[str, Any]:
        return {"openai_api_base": http.safe_url(self.base_url), "upstream_model": self.spec.model}

    # chat() and complete() return the relay generator itself rather than re-yielding from it, so
    # the consumer's aclose() or cancellation reaches the upstream response directly.
    def chat(self, request: ChatRequest) -> AsyncIterator[Event]:
        body = self._chat_body(request)
        return self._stream(self._urls[CHAT], body, self._chat_events, request.n)

    def complete(self, request: CompletionRequest) -> AsyncIterator[Event]:
        body = self._completion_body(request)
        return self._stream(self._urls[COMPLETIONS], body, completion_events, len(request.prompts) * request.n)

    async def embed(self, request: EmbeddingsRequest) -> Embeddings:
        body = orjson.dumps(self._embeddings_body(request))
        payload = await http.post_json(
            self.label, self._urls[EMBEDDINGS], body, self._json_headers, self._timeout, secrets=self._secrets
        )
        if not isinstance(payload, dict):
            raise ServingError(f"{self.label} answered with an unexpected body.", "TEMPORARILY_UNAVAILABLE")
        if _is_error(payload):
            raise http.error_for_payload(self.label, payload, secrets=self._secrets)
        return embeddings_result(payload, len(request.texts), self.label)

    async def _stream(
        self, url: str, body: dict[str, Any], translate: Callable[[dict[str, Any]], list[Event]], choices: int
    ) -> AsyncIterator[Event]:
        """Relay the upstream stream as our events, per the contract in :mod:`.base`.

        Usage is held back and yielded last (0/0 if the vendor sent none); a choice the vendor
        never finished gets ``Finish("stop")``. The final events go out as soon as ``[DONE]``
        arrives; the rest of the body is then drained so the connection goes back to the pool.
        """
        finished: set[int] = set()
        usage: Usage | None = None
        done = False
        async with http.open_stream(
            self.label, url, orjson.dumps(body), self._stream_headers, self._timeout, secrets=self._secrets
        ) as response:
            if not http.is_event_stream(response):
                # Some servers ignore "stream" (or answer an error with 200): one JSON body.
                for event in self._translate(http.loads(self.label, await response.aread()), translate):
                    if type(event) is Usage:
                        usage = event
                    else:
                        if type(event) is Finish:
                            finished.add(event.index)
                        yield event
            else:
                async with aclosing(http.iter_sse(response)) as sse_events:
                    async for sse in sse_events:
                        data = sse.data
                        if done or not data:
                            continue
                        if data == "[DONE]":
                            done = True
                            for event in _closing_events(choices, finished, usage):
                                yield event
                            continue
                        if sse.event == "error":
                            raise http.error_for_payload(self.label, _as_error(data), secrets=self._secrets)
                        for event in self._translate(http.loads(self.label, data), translate):
                            if type(event) is Usage:
                                usage = event
                            else:
                                if type(event) is Finish:
                                    finished.add(event.index)
                                yield event
        if not done:  # the body ended without [DONE]
            for event in _closing_events(choices, finished, usage):
                yield event

    def _translate(self, chunk: Any, translate: Callable[[dict[str, Any]], list[Event]]) -> list[Event]:
        if type(chunk) is not dict:
            raise ServingError(f"{self.label} sent a malformed stream event.", "TEMPORARILY_UNAVAILABLE")
        if _is_error(chunk):
            raise http.error_for_payload(self.label, chunk, secrets=self._secrets)
        return translate(chunk)


# --- config helpers (shared with the subclasses' modules) -----------------------------------


def api_root(value: Any, field: str, needed: str) -> SplitResult:
    """The http(s) URL in config field ``field``, without a trailing slash; 400 ``needed`` if absent."""
    if not isinstance(value, str) or not value.strip():
        raise invalid(needed)
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(f"'{field}' must be an http:// or https:// URL; got '{http.safe_url(value)}'.")
    return parts._replace(path=parts.path.rstrip("/"), fragment="")


def join(root: SplitResult, path: str = "", query: str | None = None) -> str:
    """``root`` with ``path`` appended; a query string of the root stays after the path
    (an api-version, a gateway token) unless ``query`` replaces it."""
    return urlunsplit(root._replace(path=root.path + path, query=root.query if query is None else query))


def task_urls(root: SplitResult, query: str | None = None) -> dict[str, str]:
    """The OpenAI API's URL for each task under the API root ``root`` (``query`` as in :func:`join`)."""
    return {
        task: join(root, suffix, query)
        for task, suffix in ((CHAT, "/chat/completions"), (COMPLETIONS, "/completions"), (EMBEDDINGS, "/embeddings"))
    }


def config_secret(config: dict[str, Any], field: str) -> str | None:
    """The resolved secret in config field ``field`` (or ``<field>_plaintext``), or None."""
    value = config.get(field) or config.get(f"{field}_plaintext")
    if value is not None and not isinstance(value, str):
        raise invalid(f"'{field}' must be the resolved key, a string.")  # never echo it
    return value or None


def _is_error(payload: dict[str, Any]) -> bool:
    # {"error": …} from OpenAI-style servers; {"error_code", "message"} from Databricks and Fondasi.
    return "error" in payload or "error_code" in payload


def _closing_events(choices: int, finished: set[int], usage: Usage | None) -> list[Event]:
    events: list[Event] = [Finish("stop", index) for index in range(choices) if index not in finished]
    events.append(usage if usage is not None else Usage(0, 0))
    return events


def _as_error(data: str) -> dict[str, Any]:
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {"error": data}
    return payload if isinstance(payload, dict) else {"error": data}
