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
class Finish:
    """Choice ``index`` is complete. ``reason`` is ``stop``, ``length``, ``tool_calls`` or ``content_filter``."""

    reason: str
    index: int = 0


@dataclass(slots=True)
class Usage:
    """Token counts for the whole request, from the model's tokenizer or the provider's own figures."""

    prompt_tokens: int
    completion_tokens: int
    extra: dict = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


Event = TextDelta | Finish | Usage


@dataclass(slots=True)
class Embeddings:
    """An embeddings answer: one vector per input, in input order."""

    vectors: list[list[float]]
    prompt_tokens: int
