"""Answers in the wire shapes of ``spec/WIRE.md``: JSON bodies, SSE chunks and error objects.

Pure functions of a :class:`~endpoints.service.Query` and its events, shared by every HTTP surface.
"""
from __future__ import annotations

import asyncio
import base64
import sys
from array import array
from typing import Any, AsyncIterator

import orjson

from .errors import ServingError
from .events import Embeddings, Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from .schemas import CHAT

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b"\n"  # a blank line: the only keepalive every client tolerates


def usage_dict(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.reasoning_tokens:
        # OpenAI's field: completion tokens that went to reasoning (counted in completion_tokens).
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def blocks_mode(query) -> bool:
    """Whether answer text travels as content blocks: when the request asked the model to think
    (PRODUCT.md §4). Otherwise ``content`` stays a plain string."""
    return query.task == CHAT and query.request.thinking_budget is not None


def reasoning_block(text: str, signature: str | None) -> dict[str, Any]:
    summary: dict[str, Any] = {"type": "summary_text", "text": text}
    if signature is not None:
        summary["signature"] = signature
    return {"type": "reasoning", "summary": [summary]}


def tool_call_dict(call) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def chat_message(choice, blocks: bool) -> dict[str, Any]:
    content: Any = choice.text
    if blocks or choice.reasoning is not None:
        content = []
        if choice.reasoning is not None:
            content.append(reasoning_block(choice.reasoning, choice.signature))
        if choice.text or not choice.tool_calls:
            content.append({"type": "text", "text": choice.text})
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if choice.tool_calls:
        if content == "":
            message["content"] = None  # what OpenAI and LangChain expect beside tool calls
        message["tool_calls"] = [tool_call_dict(c) for c in choice.tool_calls]
    return message


def chat_response(query, result) -> dict[str, Any]:
    blocks = blocks_mode(query)
    return {
        "id": query.id,
        "object": "chat.completion",
        "created": query.created,
        "model": query.model,
        "choices": [
            {
                "index": c.index,
                "message": chat_message(c, blocks),
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


def _float32_le(vector) -> bytes:
    """``vector`` as little-endian float32 bytes (OpenAI's base64 embeddings)."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def embeddings_response(query, out: Embeddings, encoding_format: str = "float") -> dict[str, Any]:
    if encoding_format == "base64":
        data = [base64.b64encode(_float32_le(row)).decode("ascii") for row in out.vectors]
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
        self.blocks = blocks_mode(query)
        self.include_usage = query.request.include_usage
        self.base = {
            "id": query.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": query.created,
            "model": query.model,
        }
        self._started: set[int] = set()
        self._calls: set[tuple[int, int]] = set()
        self._reasoned: set[int] = set()  # choices that reasoned: their text travels as blocks too

    def _chunk(self, choice: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps({**self.base, "choices": [choice]}) + b"\n\n"

    def _delta(self, index: int, **fields: Any) -> dict[str, Any]:
        if index in self._started:
            return fields
        self._started.add(index)
        return {"role": "assistant", **fields}

    def encode(self, event: Event) -> bytes | None:
        kind = type(event)
        if kind is TextDelta:
            if not self.chat:
                return self._chunk({"text": event.text, "index": event.index, "logprobs": None, "finish_reason": None})
            blocks = self.blocks or event.index in self._reasoned
            content: Any = [{"type": "text", "text": event.text}] if blocks else event.text
            return self._chunk({"index": event.index, "delta": self._delta(event.index, content=content), "finish_reason": None})
        if kind is ReasoningDelta:
            self._reasoned.add(event.index)
            block = reasoning_block(event.text, event.signature)
            return self._chunk({"index": event.index, "delta": self._delta(event.index, content=[block]), "finish_reason": None})
        if kind is ToolCallDelta:
            call: dict[str, Any] = {"index": event.call}
            if (event.index, event.call) not in self._calls:
                # The first piece of a call: id, type and name, with the arguments so far.
                self._calls.add((event.index, event.call))
                call.update(id=event.id, type="function", function={"name": event.name, "arguments": event.arguments})
            else:
                call["function"] = {"arguments": event.arguments}
            delta = self._delta(event.index, tool_calls=[call])
            if len(delta) > 1:  # the opening delta of a choice that starts with a call
                delta["content"] = None
            return self._chunk({"index": event.index, "delta": delta, "finish_reason": None})
        if kind is Finish:
            if self.chat:
                delta = self._delta(event.index)
                if delta:  # a choice that ends before saying anything still opens with its role
                    delta["content"] = [] if self.blocks else ""
                return self._chunk({"index": event.index, "delta": delta, "finish_reason": event.reason})
            return self._chunk({"text": "", "index": event.index, "logprobs": None, "finish_reason": event.reason})
        if kind is Usage and self.include_usage:
            # Usage travels alone, after the choices (ChatDatabricks counts it twice otherwise).
            return b"data: " + orjson.dumps({**self.base, "choices": [], "usage": usage_dict(event)}) + b"\n\n"
        return None


_END = object()


class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def with_keepalive(events: AsyncIterator[Event], seconds: float, buffer: int = 16) -> AsyncIterator[Event | None]:
    """Yield ``events``, and ``None`` whenever ``seconds`` pass without one.

    One task pumps ``events`` into a small queue (``buffer`` events ahead at most, so a slow
    client still slows the producer); waiting on the queue with a timeout is safe because
    ``Queue.get()`` loses nothing when cancelled. This costs one task per stream rather than one
    per event. Errors raised by ``events`` are raised here; closing this generator (or
    cancelling its consumer) cancels the pump, and so the iteration of ``events``.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=buffer)

    async def pump() -> None:
        try:
            async for event in events:
                await queue.put(event)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            await queue.put(_Raised(exc))
            return
        await queue.put(_END)

    task = asyncio.get_running_loop().create_task(pump())
    try:
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    async with asyncio.timeout(seconds):
                        item = await queue.get()
                except TimeoutError:
                    yield None
                    continue
            if item is _END:
                return
            if type(item) is _Raised:
                raise item.exc
            yield item
    finally:
        if not task.done():
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001 - the stream is being torn down
                pass
