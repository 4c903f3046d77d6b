"""The normalised stream every provider adapter yields.

A provider turns one request into an async iterator of these typed events; nothing past the
adapter sees a vendor's dict. ``index`` is the choice index (for ``n > 1``). The non-streaming
answer is the joined stream (see :func:`endpoints.service.collect`).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TextDelta:
    """A piece of answer text for choice ``index``."""

    text: str
    index: int = 0


@dataclass(slots=True)
class ReasoningDelta:
    """A piece of the model's reasoning for choice ``index``, streamed before its answer text.

    ``signature`` comes with the last piece of a reasoning block (possibly with empty ``text``):
    the vendor's own, passed through untouched, or the local model's HMAC.
    """

    text: str
    index: int = 0
    signature: str | None = None


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of tool call number ``call`` of choice ``index``.

    The first piece of a call carries ``id`` and ``name``; every piece may carry a fragment of
    the arguments' JSON text, which joined make the whole arguments string.
    """

    call: int
    index: int = 0
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class Finish:
    """Choice ``index`` is complete. ``reason`` is ``stop``, ``length``, ``tool_calls`` or ``content_filter``."""

    reason: str
    index: int = 0


@dataclass(slots=True)
class Usage:
    """Token counts for the whole request, from the model's tokenizer or the provider's own figures."""

    prompt_tokens: int
    completion_tokens: int
    #: completion tokens that went to reasoning (included in ``completion_tokens``)
    reasoning_tokens: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


Event = TextDelta | ReasoningDelta | ToolCallDelta | Finish | Usage


@dataclass(slots=True)
class Embeddings:
    """An embeddings answer: one vector per input, in input order."""

    vectors: list[list[float]]
    prompt_tokens: int
