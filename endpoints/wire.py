"""Answers in the wire shapes of ``spec/WIRE.md``: JSON bodies, SSE chunks and error objects.

Pure functions of a :class:`~endpoints.service.Query` and its events, shared by every HTTP surface.
"""
from __future__ import annotations

import asyncio
import base64
from typing import Any, AsyncIterator

import numpy as np
import orjson

from .errors import ServingError
from .events import Embeddings, Event, Finish, TextDelta, Usage
from .schemas import CHAT

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b"\n"  # a blank line: the only keepalive every client tolerates


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def chat_response(query, result) -> dict[str, Any]:
    return {
        "id": query.id,
        "object": "chat.completion",
        "created": query.created,
        "model": query.model,
        "choices": [
            {
                "index": c.index,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": c.finish_reason,
                "finishReason": c.finish_reason,  # the Databricks SDK reads camelCase
                "logprobs": None,
            }
            for c in result.choices
        ],
        "usage": usage_dict(result.usage),
    }


def completion_response(query, result) -> dict[str, Any]:
    return {
        "id": query.id,
        "object": "text_completion",
        "created": query.created,
        "model": query.model,
        "choices": [
            {
                "text": c.text,
                "index": c.index,
                "logprobs": None,
                "finish_reason": c.finish_reason,
                "finishReason": c.finish_reason,
            }
            for c in result.choices
        ],
        "usage": usage_dict(result.usage),
    }


def answer(query, result) -> dict[str, Any]:
    return chat_response(query, result) if query.task == CHAT else completion_response(query, result)


def embeddings_response(query, out: Embeddings, encoding_format: str = "float") -> dict[str, Any]:
    if encoding_format == "base64":
        vectors = np.asarray(out.vectors, dtype="<f4")
        data = [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
    else:
        data = out.vectors
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(data)],
        "model": query.model,
        "usage": {"prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens},
    }


def error_body(exc: ServingError) -> dict[str, Any]:
    return {"error_code": exc.code, "message": exc.message}


def sse_error(exc: ServingError) -> bytes:
    """A mid-stream error: the OpenAI client raises on ``error``; mlflow passes the dict through."""
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    body = {"error": {"message": exc.message, "type": kind, "code": exc.code}, "error_code": exc.code, "message": exc.message}
    return b"data: " + orjson.dumps(body) + b"\n\n"


class ChunkWriter:
    """Turns one query's events into SSE ``data:`` lines."""

    def __init__(self, query) -> None:
        self.chat = query.task == CHAT
        self.include_usage = query.request.include_usage
        self.base = {
            "id": query.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": query.created,
            "model": query.model,
        }
        self._started: set[int] = set()

    def _chunk(self, choice: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps({**self.base, "choices": [choice]}) + b"\n\n"

    def _delta(self, index: int, text: str | None) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        if index not in self._started:
            self._started.add(index)
            delta["role"] = "assistant"
            if text is None:
                text = ""
        if text is not None:
            delta["content"] = text
        return delta

    def encode(self, event: Event) -> bytes | None:
        if isinstance(event, TextDelta):
            if self.chat:
                return self._chunk({"index": event.index, "delta": self._delta(event.index, event.text), "finish_reason": None})
            return self._chunk({"text": event.text, "index": event.index, "logprobs": None, "finish_reason": None})
        if isinstance(event, Finish):
            if self.chat:
                return self._chunk({"index": event.index, "delta": self._delta(event.index, None), "finish_reason": event.reason})
            return self._chunk({"text": "", "index": event.index, "logprobs": None, "finish_reason": event.reason})
        if isinstance(event, Usage) and self.include_usage:
            # Usage travels alone, after the choices (ChatDatabricks counts it twice otherwise).
            return b"data: " + orjson.dumps({**self.base, "choices": [], "usage": usage_dict(event)}) + b"\n\n"
        return None


async def with_keepalive(events: AsyncIterator[Event], seconds: float) -> AsyncIterator[Event | None]:
    """Yield ``events``, and ``None`` whenever ``seconds`` pass without one."""
    pending: asyncio.Future | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait((pending,), timeout=seconds)
            if not done:
                yield None
                continue
            task, pending = pending, None
            try:
                yield task.result()
            except StopAsyncIteration:
                return
    finally:
        if pending is not None:
            pending.cancel()
            try:
                await pending
            except BaseException:  # noqa: BLE001 - the stream is being torn down
                pass
