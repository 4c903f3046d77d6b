"""A fake Anthropic Messages API over real HTTP on 127.0.0.1 (stdlib only).

It speaks the documented wire format — a JSON ``message`` answer, and ``text/event-stream`` with
chunked transfer encoding and named events (``event: content_block_delta`` then its ``data:``
line) — so the provider under test runs its real HTTP client, SSE parser and connection pool.
Like the real API it checks ``x-api-key`` (401 ``authentication_error``), ``anthropic-version``
and ``max_tokens`` (400 ``invalid_request_error``).

Route: ``POST /v1/messages`` (a query string is ignored). Anything else answers 404.

Use the ``anthropic_upstream`` fixture (a fresh server per test)::

    provider = AnthropicProvider(spec(anthropic_api_base=anthropic_upstream.base_url,
                                      anthropic_api_key=anthropic_upstream.api_key))
    anthropic_upstream.thinking = ["Let me", " think."]   # a thinking block before the text
    anthropic_upstream.fail(529, "Overloaded", type="overloaded_error")
    sent = anthropic_upstream.last_request            # .method .path .headers .json .raw

Knobs (plain attributes; set them before the request):

- ``api_key``: the key the fake accepts.
- ``pieces``: text pieces of the answer's text block (no text block when empty).
- ``thinking``: thinking pieces, streamed as ``thinking_delta`` in a block before the text,
  closed by a ``signature_delta`` carrying ``signature``.
- ``redacted``: the ``data`` of a ``redacted_thinking`` block sent before the text (None: none).
- ``tool_uses``: ``[{"name", "input"}]`` answered after the text as ``tool_use`` blocks (ids
  ``toolu_0``, ``toolu_1``…), the input streamed as ``input_json_delta`` (an empty fragment,
  then two halves of its JSON text, as the API does).
- ``stop_reason``: sent in ``message_delta`` (default: ``tool_use`` with tool uses, else ``end_turn``).
- ``usage``: the answer's usage object (``input_tokens`` and cache counts in ``message_start``,
  ``output_tokens`` in ``message_delta``).
- ``delay``: seconds before answering; ``chunk_delay``: seconds between streamed events.
- ``fail(status, message, type=..., headers=...)``: answer every request with an error body.
- ``mid_stream_error``: an ``{"type", "message"}`` error sent as an ``error`` event after the first
  content delta; the stream then ends.
- ``cut_short``: end the stream after the content blocks, without ``message_delta``/``message_stop``.

Recorded (see :mod:`tests.fakes.base`): ``requests``, ``last_request``, ``disconnects``, :meth:`wait_for_disconnect`.
"""
from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from tests.fakes.base import FakeUpstream, RecordedRequest, UpstreamHandler

API_KEY = "sk-ant-test-0123456789abcdef"
API_VERSION = "2023-06-01"


class FakeAnthropicUpstream(FakeUpstream):
    def reset(self) -> None:
        super().reset()
        self.api_key = API_KEY
        self.thinking: list[str] = []
        self.signature = "sig-EqQBCgIYAhIM1gbcDa9GJwZA2b3h"
        self.redacted: str | None = None
        self.tool_uses: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.usage: dict[str, int] = {"input_tokens": 7, "output_tokens": 4}
        self.mid_stream_error: dict[str, str] | None = None
        self.cut_short = False

    def fail(
        self,
        status: int,
        message: str = "Something went wrong.",
        *,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> None:
        """Answer every request with ``status`` and an Anthropic error body (or ``body`` verbatim)."""
        if body is None:
            body = json.dumps({"type": "error", "error": {"type": type, "message": message},
                               "request_id": "req_fake"}).encode()
        self.error = (status, body, dict(headers or {}))

    @property
    def base_url(self) -> str:
        """What goes in ``anthropic_api_base``: the root, without ``/v1``."""
        return self.url

    def content(self) -> list[dict[str, Any]]:
        """The answer's content blocks, whole."""
        blocks: list[dict[str, Any]] = []
        if self.thinking:
            blocks.append({"type": "thinking", "thinking": "".join(self.thinking), "signature": self.signature})
        if self.redacted is not None:
            blocks.append({"type": "redacted_thinking", "data": self.redacted})
        if self.pieces:
            blocks.append({"type": "text", "text": "".join(self.pieces)})
        for i, use in enumerate(self.tool_uses):
            blocks.append({"type": "tool_use", "id": f"toolu_{i}", "name": use["name"], "input": use["input"]})
        return blocks

    def final_stop_reason(self) -> str:
        return self.stop_reason or ("tool_use" if self.tool_uses else "end_turn")


class _AnthropicHandler(UpstreamHandler[FakeAnthropicUpstream]):
    def respond(self, request: RecordedRequest) -> None:
        fake, headers, body = self.fake, request.headers, request.json
        if self.path.partition("?")[0] != "/v1/messages":
            self._error(404, "not_found_error", f"Not found: {self.path}")
        elif headers.get("x-api-key") != fake.api_key:
            self._error(401, "authentication_error", "invalid x-api-key")
        elif headers.get("anthropic-version") != API_VERSION:
            self._error(400, "invalid_request_error", "anthropic-version: header is required")
        elif fake.error is not None:
            self._send_json(*fake.error)
        elif not isinstance(body, dict) or not isinstance(body.get("max_tokens"), int):
            self._error(400, "invalid_request_error", "max_tokens: Field required")
        elif body.get("stream"):
            self._stream(body)
        else:
            self._send_json(200, json.dumps(_message(fake, body, fake.content(), final=True)).encode())

    def _error(self, status: int, kind: str, message: str) -> None:
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}
        self._send_json(status, json.dumps(body).encode())

    def _stream(self, request: dict[str, Any]) -> None:
        fake = self.fake
        self._start_stream("text/event-stream; charset=utf-8", {"Cache-Control": "no-cache"})
        sent_content = False
        for event in self._paced(_events(fake, request)):
            self._write_event(event, event["type"])
            if event["type"] == "content_block_delta" and not sent_content:
                sent_content = True
                if fake.mid_stream_error is not None:
                    self._write_event({"type": "error", "error": fake.mid_stream_error}, "error")
                    break
        self._end_stream()


FakeAnthropicUpstream.handler = _AnthropicHandler


def _message(fake: FakeAnthropicUpstream, request: dict[str, Any], content: list, *, final: bool) -> dict[str, Any]:
    usage = dict(fake.usage) if final else {**fake.usage, "output_tokens": 1}
    return {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": request.get("model", "claude-fake"),
        "content": content, "stop_reason": fake.final_stop_reason() if final else None, "stop_sequence": None,
        "usage": usage,
    }


def _events(fake: FakeAnthropicUpstream, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield {"type": "message_start", "message": _message(fake, request, [], final=False)}
    index = 0

    def block(start: dict[str, Any], deltas: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal index
        yield {"type": "content_block_start", "index": index, "content_block": start}
        if index == 0:
            yield {"type": "ping"}
        for delta in deltas:
            yield {"type": "content_block_delta", "index": index, "delta": delta}
        yield {"type": "content_block_stop", "index": index}
        index += 1

    if fake.thinking:
        deltas = [{"type": "thinking_delta", "thinking": piece} for piece in fake.thinking]
        deltas.append({"type": "signature_delta", "signature": fake.signature})
        yield from block({"type": "thinking", "thinking": "", "signature": ""}, deltas)
    if fake.redacted is not None:
        yield from block({"type": "redacted_thinking", "data": fake.redacted}, [])
    if fake.pieces:
        yield from block({"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in fake.pieces])
    for i, use in enumerate(fake.tool_uses):
        text = json.dumps(use["input"])
        half = len(text) // 2
        fragments = ["", text[:half], text[half:]] if use["input"] else [""]
        yield from block({"type": "tool_use", "id": f"toolu_{i}", "name": use["name"], "input": {}},
                         [{"type": "input_json_delta", "partial_json": f} for f in fragments])
    if fake.cut_short:
        return
    yield {"type": "message_delta", "delta": {"stop_reason": fake.final_stop_reason(), "stop_sequence": None},
           "usage": {"output_tokens": fake.usage.get("output_tokens", 0)}}
    yield {"type": "message_stop"}


@pytest.fixture
def anthropic_upstream() -> Iterator[FakeAnthropicUpstream]:
    """A fake Anthropic Messages API on 127.0.0.1, fresh for each test."""
    with FakeAnthropicUpstream() as fake:
        yield fake
