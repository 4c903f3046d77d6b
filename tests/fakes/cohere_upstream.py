"""A fake Cohere v2 API over real HTTP on 127.0.0.1 (stdlib only).

It checks the Bearer key, answers ``POST /v2/chat`` with Cohere's JSON answer or, when the
request says ``"stream": true``, with server-sent events in Cohere's shape (``event: <type>`` and
``data: {"type": <type>, ...}``: message-start, content-start/delta/end, tool-plan-delta,
tool-call-start/delta/end, message-end with ``finish_reason`` and ``usage``), and answers
``POST /v2/embed`` with ``embeddings.float``. Anything else is a 404 with a Cohere error body.

Use the ``cohere_upstream`` fixture (a fresh server per test)::

    provider = CohereProvider(spec(cohere_api_key=FakeCohere.API_KEY, cohere_api_base=cohere_upstream.url))
    cohere_upstream.pieces = ["Hi", "!"]
    cohere_upstream.fail(429, "You are using a Trial key, which is limited to 10 API calls / minute.")
    sent = cohere_upstream.last_request              # .path .headers .json

Knobs (plain attributes; set them before the request):

- ``pieces``: answer text pieces (one ``content-delta`` each).
- ``thinking_pieces``: a thinking block streamed before the text.
- ``tool_plan`` and ``tool_calls`` (``[{"name", "arguments"}]``): answered instead of text, with
  ``finish_reason: TOOL_CALL`` (arguments streamed in two ``tool-call-delta`` events).
- ``finish_reason``, ``end_error`` (the ``error`` of ``message-end``), ``usage``
  (``{"tokens": {...}, "billed_units": {...}}``).
- ``chunk_delay``: seconds between events (a slow stream, to test cancellation).
- ``fail(status, message)``: answer every request with that status and ``{"message"}``.

Recorded: ``requests``, ``last_request``, ``disconnects`` and ``wait_for_disconnect`` (see
:mod:`tests.fakes.base`).
"""
from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from tests.fakes.base import FakeUpstream, RecordedRequest, UpstreamHandler


class FakeCohere(FakeUpstream):
    API_KEY = "co-fake-key-0123456789abcdef"

    def reset(self) -> None:
        super().reset()
        self.thinking_pieces: list[str] = []
        self.tool_plan = ""
        self.tool_calls: list[dict[str, str]] = []  # [{"name", "arguments"}]
        self.finish_reason = "COMPLETE"
        self.end_error: str | None = None
        self.usage = {
            "billed_units": {"input_tokens": 5, "output_tokens": 4}, "tokens": {"input_tokens": 71, "output_tokens": 4},
        }

    def fail(self, status: int, message: str = "invalid request") -> None:
        """Answer every request with ``status`` and a Cohere error body."""
        self.error = (status, json.dumps({"id": "err-fake", "message": message}).encode(), {})

    @property
    def base_url(self) -> str:
        """What goes in ``cohere_api_base``."""
        return self.url


class _CohereHandler(UpstreamHandler[FakeCohere]):
    def respond(self, request: RecordedRequest) -> None:
        fake = self.fake
        if request.headers.get("authorization") != f"Bearer {fake.API_KEY}":
            self._send_json(401, json.dumps({"id": "err-auth", "message": "invalid api token"}).encode())
            return
        if fake.error is not None:
            self._send_json(*fake.error)
            return
        body = request.json if isinstance(request.json, dict) else {}
        if self.path == "/v2/chat" and body.get("stream"):
            self._stream(fake)
        elif self.path == "/v2/chat":
            self._send_json(200, json.dumps(_whole_answer(fake)).encode())
        elif self.path == "/v2/embed":
            self._embed(body)
        else:
            self._send_json(404, json.dumps({"id": "err-404", "message": f"no route for {self.path}"}).encode())

    def _stream(self, fake: FakeCohere) -> None:
        self._start_stream()
        for event in self._paced(_stream_events(fake)):
            self._write_event(event, event["type"])
        self._end_stream()

    def _embed(self, request: dict[str, Any]) -> None:
        texts = list(request.get("texts") or [])
        # Vector i is [i, len(text), 0.5]: a test can tell which input it belongs to.
        answer = {
            "id": "emb-fake", "texts": texts,
            "embeddings": {"float": [[float(i), float(len(t)), 0.5] for i, t in enumerate(texts)]},
            "meta": {"api_version": {"version": "2"},
                     "billed_units": {"input_tokens": sum(len(str(t).split()) for t in texts)}},
        }
        self._send_json(200, json.dumps(answer).encode())


FakeCohere.handler = _CohereHandler


def _stream_events(fake: FakeCohere) -> Iterator[dict[str, Any]]:
    def message(**fields: Any) -> dict[str, Any]:
        return {"message": fields}

    yield {"type": "message-start", "id": "msg-fake", "delta": message(role="assistant")}
    index = 0
    if fake.thinking_pieces:
        yield {"type": "content-start", "index": index, "delta": message(content={"type": "thinking", "thinking": ""})}
        for piece in fake.thinking_pieces:
            yield {"type": "content-delta", "index": index, "delta": message(content={"thinking": piece})}
        yield {"type": "content-end", "index": index}
        index += 1
    if fake.tool_calls:
        for piece in fake.tool_plan.split(" ") if fake.tool_plan else ():
            yield {"type": "tool-plan-delta", "delta": message(tool_plan=piece + " ")}
        for i, call in enumerate(fake.tool_calls):
            start = {"id": f"{call['name']}_{i}", "type": "function", "function": {"name": call["name"], "arguments": ""}}
            yield {"type": "tool-call-start", "index": i, "delta": message(tool_calls=start)}
            half = len(call["arguments"]) // 2
            for fragment in (call["arguments"][:half], call["arguments"][half:]):
                yield {"type": "tool-call-delta", "index": i, "delta": message(tool_calls={"function": {"arguments": fragment}})}
            yield {"type": "tool-call-end", "index": i}
    else:
        yield {"type": "content-start", "index": index, "delta": message(content={"type": "text", "text": ""})}
        for piece in fake.pieces:
            yield {"type": "content-delta", "index": index, "delta": message(content={"text": piece})}
        yield {"type": "content-end", "index": index}
    end: dict[str, Any] = {"finish_reason": "TOOL_CALL" if fake.tool_calls else fake.finish_reason, "usage": fake.usage}
    if fake.end_error is not None:
        end["error"] = fake.end_error
    yield {"type": "message-end", "delta": end}


def _whole_answer(fake: FakeCohere) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if fake.thinking_pieces:
        content.append({"type": "thinking", "thinking": "".join(fake.thinking_pieces)})
    message: dict[str, Any] = {"role": "assistant"}
    if fake.tool_calls:
        message["tool_plan"] = fake.tool_plan
        message["tool_calls"] = [
            {"id": f"{c['name']}_{i}", "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for i, c in enumerate(fake.tool_calls)
        ]
    else:
        content.append({"type": "text", "text": "".join(fake.pieces)})
    message["content"] = content
    return {
        "id": "chat-fake",
        "finish_reason": "TOOL_CALL" if fake.tool_calls else fake.finish_reason,
        "message": message,
        "usage": fake.usage,
    }


@pytest.fixture
def cohere_upstream() -> Iterator[FakeCohere]:
    """A fake Cohere v2 API on 127.0.0.1, fresh for each test."""
    with FakeCohere() as fake:
        yield fake
