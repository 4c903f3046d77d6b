"""The contract every provider adapter implements.

A provider serves one served entity. It yields :mod:`endpoints.events` for chat and
completions (streaming is the primitive; the service joins the stream for non-streaming
answers) and returns :class:`~endpoints.events.Embeddings` for embeddings. It raises only
:class:`~endpoints.errors.ServingError`; it never imports ``django.http``.

Stream contract for ``chat`` and ``complete``:
- for each choice ``i``: any number of ``TextDelta(index=i)``, then one ``Finish(index=i)``;
- then exactly one ``Usage`` for the whole request, last;
- errors before the first event become an HTTP error; after it, an in-stream error;
- when the consumer stops iterating (``aclose()`` or task cancellation), upstream work stops
  promptly (a local model within a token or two; an HTTP upstream's connection is closed).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, ClassVar

from ..errors import ServingError
from ..events import Embeddings, Event
from ..schemas import ChatRequest, CompletionRequest, EmbeddingsRequest


@dataclass(frozen=True)
class EntitySpec:
    """What a provider needs to know about the served entity it serves."""

    name: str  # the served entity's name (the `served-model-name` header)
    provider: str  # a key of endpoints.providers.PROVIDERS
    model: str  # the model name at the provider
    task: str
    # Holds resolved credentials: never in a repr (and so never in a log line or a traceback).
    config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)
    #: whether the model sees images, as the served entity says (``vision``); None: as the provider knows
    vision: bool | None = None

    @property
    def key(self) -> tuple:
        return (self.provider, self.model, self.task, self.vision, json.dumps(self.config, sort_keys=True))


class Provider:
    """Base class: subclasses override what they serve and declare what they honour."""

    #: tasks this provider can serve for the configured model
    tasks: ClassVar[frozenset[str]] = frozenset()
    #: optional request parameters it honours (names from ``generation_params()``)
    supported_params: ClassVar[frozenset[str]] = frozenset()
    #: keys of ``extra_params`` it honours; ``None`` means passed through to the vendor untouched
    supported_extra_params: ClassVar[frozenset[str] | None] = frozenset()
    #: whether the models this provider serves are known to see images: the default of a served
    #: entity's ``vision`` setting (read :attr:`sees_images`, which honours the setting)
    vision: ClassVar[bool] = False
    #: whether the provider's own prompt_tokens already count images (else the pipeline's estimate is added)
    counts_image_tokens: ClassVar[bool] = False
    #: whether returned vectors are L2-normalised (embeddings metadata)
    normalized_embeddings: ClassVar[bool | None] = None

    def __init__(self, spec: EntitySpec) -> None:
        self.spec = spec

    @property
    def sees_images(self) -> bool:
        """Whether image parts may be sent to this served entity: its ``vision`` setting, else :attr:`vision`."""
        return self.vision if self.spec.vision is None else self.spec.vision

    def chat(self, request: ChatRequest) -> AsyncIterator[Event]:
        raise ServingError(f"Provider '{self.spec.provider}' cannot serve chat.", "NOT_IMPLEMENTED")

    def complete(self, request: CompletionRequest) -> AsyncIterator[Event]:
        raise ServingError(f"Provider '{self.spec.provider}' cannot serve completions.", "NOT_IMPLEMENTED")

    async def embed(self, request: EmbeddingsRequest) -> Embeddings:
        raise ServingError(f"Provider '{self.spec.provider}' cannot serve embeddings.", "NOT_IMPLEMENTED")

    def describe(self) -> dict[str, Any]:
        """Metadata shown with the endpoint (never secrets)."""
        return {}

    async def aclose(self) -> None:
        """Release pools and models."""
