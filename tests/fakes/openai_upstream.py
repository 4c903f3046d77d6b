"""A fake OpenAI-compatible vendor over real HTTP on 127.0.0.1 (stdlib only).

It speaks the real wire format — JSON answers, and ``text/event-stream`` with chunked transfer
encoding, ``data: {...}`` events and ``data: [DONE]`` — so a provider under test runs its real
HTTP client, SSE parser and connection pool against it.

Routes: ``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings`` (any path ending
that way, e.g. Azure's ``/openai/deployments/{name}/chat/completions``; a query string is
ignored), and Databricks Model Serving's ``/serving-endpoints/{name}/invocations`` (any path
ending in ``/invocations``), which answers chat, completions or embeddings as the body has
``messages``, ``prompt`` or ``input``. Anything else answers 404 with an OpenAI error body.

Use the ``openai_upstream`` fixture (a fresh server per test)::

    provider = OpenAICompatibleProvider(spec(openai_api_base=openai_upstream.base_url))
    openai_upstream.pieces = ["Hi", "!"]              # what each choice streams
    openai_upstream.fail(429, "slow down", headers={"Retry-After": "7"})
    ... run the provider ...
    sent = openai_upstream.last_request               # .method .path .headers .json .raw
    assert sent.json["model"] == "m" and sent.headers["authorization"] == "Bearer sk-test"
    assert openai_upstream.wait_for_disconnect(2)      # after cancelling a slow stream

Knobs (plain attributes; set them before the request):

- ``pieces``: text pieces every choice streams (joined for non-streamed answers).
- ``finish_reason``: the finish reason of every choice (``None`` sends none).
- ``usage``: ``{"prompt_tokens", "completion_tokens"}`` reported when the request asks
  ``stream_options.include_usage`` (and on non-streamed answers); ``None`` sends no usage.
- ``delay``: seconds to wait before answering (status line included).
- ``chunk_delay``: seconds between streamed events (a slow stream, to test cancellation).
- ``fail(status, message, ...)``: answer every request with that status and a vendor error body.
- ``mid_stream_error``: an error object sent as a ``data:`` event after the first content event.
- ``send_done``: whether the stream ends with ``data: [DONE]``.
- ``ignore_stream``: answer one JSON body even when the request says ``stream: true``.
- ``reverse_embeddings``: list embeddings in reverse index order (clients must sort by index).
- ``reasoning_pieces``: reasoning streamed as ``delta.reasoning_content`` (vLLM's field) before
  the text; whole as ``message.reasoning_content``; counted in ``completion_tokens_details``.
- ``tool_calls``: ``[{"name", "arguments"}]`` answered with ``finish_reason: "tool_calls"``;
  streamed as OpenAI does (id, type, name and empty arguments, then two argument fragments).
- ``content_blocks``: chat text and reasoning travel as content blocks, the shape of a thinking
  answer from Databricks (and Fondasi): ``content: [{"type": "reasoning", "summary":
  [{"type": "summary_text", "text", "signature"?}]}, {"type": "text", "text"}]``, streamed one
  block per delta.
- ``reasoning_signature``: with ``content_blocks``, the signature on the last reasoning piece.

Recorded: ``requests`` (list of :class:`RecordedRequest`: method, path, headers with lower-cased
names, raw body, decoded json, peer address), ``last_request``, ``disconnects``
(clients that went away before the answer was complete) and :meth:`wait_for_disconnect`.
"""
from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from tests.fakes.base import FakeUpstream, RecordedRequest, UpstreamHandler


class FakeOpenAIUpstream(FakeUpstream):
    # --- knobs -------------------------------------------------------------------------------

    def reset(self) -> None:
        super().reset()
        self.finish_reason: str | None = "stop"
        self.usage: dict[str, int] | None = {"prompt_tokens": 7, "completion_tokens": 4}
        self.mid_stream_error: dict[str, Any] | None = None
        self.send_done = True
        self.ignore_stream = False
        self.reverse_embeddings = False
        self.embedding_dim = 3
        self.reasoning_pieces: list[str] = []  # streamed as delta.reasoning_content before the text
        self.tool_calls: list[dict[str, str]] = []  # [{"name", "arguments"}]: answered instead of text
        self.content_blocks = False  # text and reasoning as Databricks content blocks
        self.reasoning_signature: str | None = None  # on the last reasoning block, with content_blocks

    def fail(
        self,
        status: int,
        message: str = "Something went wrong.",
        *,
        type: str = "invalid_request_error",
        code: str | int | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> None:
        """Answer every request with ``status`` and an OpenAI error body (or ``body`` verbatim)."""
        if body is None:
            body = json.dumps({"error": {"message": message, "type": type, "param": None, "code": code}}).encode()
        self.error = (status, body, dict(headers or {}))

    @property
    def base_url(self) -> str:
        """What goes in ``openai_api_base``."""
        return self.url + "/v1"


class _Handler(UpstreamHandler[FakeOpenAIUpstream]):
    def respond(self, request: RecordedRequest) -> None:
        if self.fake.error is not None:
            self._send_json(*self.fake.error)
            return
        body = request.json if isinstance(request.json, dict) else {}
        route = self.path.partition("?")[0]
        if route.endswith("/invocations"):  # Databricks Model Serving: the body says the task
            for key, suffix in (("messages", "/chat/completions"), ("prompt", "/completions"), ("input", "/embeddings")):
                if key in body:
                    route = suffix
                    break
        if route.endswith("/chat/completions"):
            self._answer(body, chat=True)
        elif route.endswith("/completions"):
            self._answer(body, chat=False)
        elif route.endswith("/embeddings"):
            self._embeddings(body)
        else:
            self._send_json(404, json.dumps({"error": {"message": f"No route {self.path}", "type": "not_found"}}).encode())

    # --- answers -----------------------------------------------------------------------------

    def _answer(self, request: dict[str, Any], *, chat: bool) -> None:
        fake = self.fake
        model = request.get("model", "fake-model")
        n = int(request.get("n") or 1)
        if not chat:
            prompts = request.get("prompt", "")
            n *= len(prompts) if isinstance(prompts, list) else 1
        if not request.get("stream") or fake.ignore_stream:
            self._send_json(200, json.dumps(_full_answer(fake, model, n, chat)).encode())
            return
        self._start_stream(headers={"Cache-Control": "no-cache"})
        wants_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        first_content = n if chat else 0  # chat opens with one role-only event per choice
        for i, chunk in enumerate(self._paced(_stream_chunks(fake, model, n, chat, wants_usage))):
            self._write_event(chunk)
            if fake.mid_stream_error is not None and i == first_content:
                self._write_event(fake.mid_stream_error)
                break
        else:
            if fake.send_done:
                self._write_chunk(b"data: [DONE]\n\n")
        self._end_stream()

    def _embeddings(self, request: dict[str, Any]) -> None:
        fake = self.fake
        texts = request.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        # Vector i is [i, len(text), 0.5, ...]: a test can tell which input it belongs to.
        data = [
            {"object": "embedding", "index": i, "embedding": [float(i), float(len(t))] + [0.5] * (fake.embedding_dim - 2)}
            for i, t in enumerate(texts)
        ]
        if fake.reverse_embeddings:
            data.reverse()
        tokens = sum(len(str(t).split()) for t in texts)
        answer = {
            "object": "list",
            "model": request.get("model"),
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        self._send_json(200, json.dumps(answer).encode())


FakeOpenAIUpstream.handler = _Handler


def _stream_chunks(fake: FakeOpenAIUpstream, model: str, n: int, chat: bool, wants_usage: bool) -> Iterator[dict[str, Any]]:
    base = {"id": "chatcmpl-fake" if chat else "cmpl-fake", "created": 1700000000, "model": model}
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {**base, "object": kind, "choices": choices, **extra}

    def choice(index: int, text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {} if text is None else {"content": _content(fake, text)}
            if first:
                delta["role"] = "assistant"
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}

    if chat:  # OpenAI opens each choice with the role and empty content
        for index in range(n):
            yield chunk([choice(index, "", None, first=True)])
    if chat:
        for number, piece in enumerate(fake.reasoning_pieces, 1):
            if fake.content_blocks:
                last = number == len(fake.reasoning_pieces)
                delta: dict[str, Any] = {"content": [_reasoning_block(piece, fake.reasoning_signature if last else None)]}
            else:
                delta = {"reasoning_content": piece}
            for index in range(n):
                yield chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}])
    if chat and fake.tool_calls:
        for position, call in enumerate(fake.tool_calls):
            half = len(call["arguments"]) // 2
            for index in range(n):
                opening = {"index": position, "id": f"call_{position}", "type": "function",
                           "function": {"name": call["name"], "arguments": ""}}
                yield chunk([{"index": index, "delta": {"tool_calls": [opening]}, "logprobs": None, "finish_reason": None}])
                for fragment in (call["arguments"][:half], call["arguments"][half:]):
                    piece = {"index": position, "function": {"arguments": fragment}}
                    yield chunk([{"index": index, "delta": {"tool_calls": [piece]}, "logprobs": None, "finish_reason": None}])
        for index in range(n):
            yield chunk([choice(index, None, "tool_calls")])
        if wants_usage and fake.usage is not None:
            yield chunk([], usage=_usage(fake.usage, fake))
        return
    for piece in fake.pieces:
        for index in range(n):
            yield chunk([choice(index, piece, None)])
    if fake.finish_reason is not None:
        for index in range(n):
            yield chunk([choice(index, None, fake.finish_reason)])
    if wants_usage and fake.usage is not None:
        yield chunk([], usage=_usage(fake.usage, fake))


def _full_answer(fake: FakeOpenAIUpstream, model: str, n: int, chat: bool) -> dict[str, Any]:
    text = "".join(fake.pieces)
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = fake.finish_reason
        if fake.content_blocks:
            thought = "".join(fake.reasoning_pieces)
            reasoning = [_reasoning_block(thought, fake.reasoning_signature)] if thought else []
            message["content"] = reasoning + [{"type": "text", "text": text}]
        elif fake.reasoning_pieces:
            message["reasoning_content"] = "".join(fake.reasoning_pieces)
        if fake.tool_calls:
            message["content"] = None
            message["tool_calls"] = [
                {"id": f"call_{i}", "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for i, c in enumerate(fake.tool_calls)
            ]
            finish = "tool_calls"
        choices = [{"index": i, "message": dict(message), "logprobs": None, "finish_reason": finish} for i in range(n)]
    else:
        choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": fake.finish_reason} for i in range(n)]
    answer: dict[str, Any] = {
        "id": "chatcmpl-fake" if chat else "cmpl-fake",
        "object": "chat.completion" if chat else "text_completion",
        "created": 1700000000,
        "model": model,
        "choices": choices,
    }
    if fake.usage is not None:
        answer["usage"] = _usage(fake.usage, fake)
    return answer


def _content(fake: FakeOpenAIUpstream, text: str) -> str | list[dict[str, Any]]:
    if not fake.content_blocks:
        return text
    return [{"type": "text", "text": text}] if text else []


def _reasoning_block(text: str, signature: str | None) -> dict[str, Any]:
    summary: dict[str, Any] = {"type": "summary_text", "text": text}
    if signature is not None:
        summary["signature"] = signature
    return {"type": "reasoning", "summary": [summary]}


def _usage(usage: dict[str, int], fake: FakeOpenAIUpstream | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {**usage, "total_tokens": usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)}
    if fake is not None and fake.reasoning_pieces:
        out["completion_tokens_details"] = {"reasoning_tokens": len(fake.reasoning_pieces)}
    return out


@pytest.fixture
def openai_upstream() -> Iterator[FakeOpenAIUpstream]:
    """A fake OpenAI-compatible vendor on 127.0.0.1, fresh for each test."""
    with FakeOpenAIUpstream() as fake:
        yield fake
