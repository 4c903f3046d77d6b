"""The one query path. Every surface (REST, OpenAI API, SDKs, SQL, the Query dialog, the
playground consumer) calls :func:`prepare` and then one of :meth:`Query.stream`,
:meth:`Query.result` or :meth:`Query.embed`.

``prepare`` validates the body into a typed request for the endpoint's task, resolves the
endpoint and its served entity, checks that the entity's provider honours every parameter the
client set, and returns a :class:`Query`. Streaming is the primitive: the non-streaming answer is
the joined stream.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from . import images, registry
from .errors import ServingError, invalid
from .events import Embeddings, Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from .images import PreparedImage
from .logtext import escape
from .providers import get_provider
from .providers.base import EntitySpec, Provider
from .registry import Endpoint
from .schemas import CHAT, COMPLETIONS, EMBEDDINGS, ChatRequest, CompletionRequest, EmbeddingsRequest, Request, parse
from .structured import ToolCall

log = logging.getLogger("fondasi.queries")

_ID_PREFIX = {CHAT: "chatcmpl-", COMPLETIONS: "cmpl-", EMBEDDINGS: "emb-"}


@dataclass
class Choice:
    index: int
    text: str = ""
    finish_reason: str | None = None
    reasoning: str | None = None  # None: the model did not reason (or kept it hidden)
    signature: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass
class Result:
    """A joined answer."""

    choices: list[Choice]
    usage: Usage


@dataclass
class Query:
    endpoint: Endpoint
    entity: EntitySpec
    provider: Provider
    request: Request
    id: str
    #: what the image pipeline sent for each image, in request order (see ``PreparedImage.report``)
    images: list[PreparedImage] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.perf_counter)

    @property
    def task(self) -> str:
        return self.endpoint.task

    @property
    def model(self) -> str:
        """The ``model`` field of answers: the served entity's model."""
        return self.entity.model

    @property
    def streaming(self) -> bool:
        return bool(getattr(self.request, "stream", False))

    def _events(self) -> AsyncIterator[Event]:
        if isinstance(self.request, ChatRequest):
            return self.provider.chat(self.request)
        if isinstance(self.request, CompletionRequest):
            return self.provider.complete(self.request)
        raise invalid(f"Endpoint '{self.endpoint.name}' serves {self.task}; it does not generate text.")

    async def stream(self) -> "EventStream":
        """Start generating. Errors that happen before the first event are raised here, so the
        caller can still answer with a proper status; later ones are raised while iterating."""
        events = self._events()
        try:
            first = await anext(events)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await events.aclose()
            raise
        return EventStream(self, first, events)

    async def result(self) -> Result:
        """The whole answer: the joined stream."""
        stream = await self.stream()
        async with stream:
            return await collect(stream)

    async def embed(self) -> Embeddings:
        if not isinstance(self.request, EmbeddingsRequest):
            raise invalid(f"Endpoint '{self.endpoint.name}' serves {self.task}; it does not compute embeddings.")
        out = await self.provider.embed(self.request)
        self.log(prompt_tokens=out.prompt_tokens, completion_tokens=0)
        return out

    @property
    def image_tokens(self) -> int:
        return sum(image.tokens for image in self.images)

    def count_images(self, usage: Usage) -> Usage:
        """``usage`` with the images' estimated tokens in ``prompt_tokens``, unless the provider's
        own figure already counts them."""
        if not self.images or self.provider.counts_image_tokens:
            return usage
        return dataclasses.replace(usage, prompt_tokens=usage.prompt_tokens + self.image_tokens)

    def log(self, prompt_tokens: int, completion_tokens: int, error: str = "") -> None:
        """One line per query; text from the request is escaped (endpoints/logtext.py)."""
        request = self.request
        log.info(
            "endpoint=%s entity=%s task=%s stream=%s prompt_tokens=%d completion_tokens=%d ms=%.1f%s%s",
            escape(self.endpoint.name), escape(self.entity.name), self.task, self.streaming, prompt_tokens,
            completion_tokens, (time.perf_counter() - self.started) * 1000,
            f" client_request_id={escape(request.client_request_id)}" if request.client_request_id else "",
            f" error={escape(error)}" if error else "",
        )


class EventStream:
    """An async iterator over a started query's events; ``aclose()`` stops generation."""

    def __init__(self, query: Query, first: Event | None, rest: AsyncIterator[Event]) -> None:
        self.query = query
        self._first = first
        self._rest = rest
        self._done = first is None
        self.usage: Usage | None = None

    def __aiter__(self) -> "EventStream":
        return self

    async def __anext__(self) -> Event:
        if self._first is not None:
            event, self._first = self._first, None
        else:
            if self._done:
                raise StopAsyncIteration
            try:
                event = await anext(self._rest)
            except StopAsyncIteration:
                self._done = True
                raise
        if type(event) is Usage:
            event = self.query.count_images(event)
            self.usage = event
            self.query.log(event.prompt_tokens, event.completion_tokens)
        return event

    async def aclose(self) -> None:
        self._done = True
        self._first = None
        await self._rest.aclose()

    async def __aenter__(self) -> "EventStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


async def collect(events: AsyncIterator[Event]) -> Result:
    """Join a stream of events into one answer."""
    choices: dict[int, Choice] = {}
    parts: dict[int, list[str]] = {}
    thoughts: dict[int, list[str]] = {}
    calls: dict[tuple[int, int], dict[str, Any]] = {}  # (choice, call) -> id, name, argument pieces
    usage = Usage(0, 0)
    async for event in events:
        kind = type(event)
        if kind is TextDelta:
            parts.setdefault(event.index, []).append(event.text)
            choices.setdefault(event.index, Choice(event.index))
        elif kind is ReasoningDelta:
            thoughts.setdefault(event.index, []).append(event.text)
            choice = choices.setdefault(event.index, Choice(event.index))
            if event.signature is not None:
                choice.signature = event.signature
        elif kind is ToolCallDelta:
            choices.setdefault(event.index, Choice(event.index))
            call = calls.setdefault((event.index, event.call), {"id": "", "name": "", "arguments": []})
            call["id"] = event.id or call["id"]
            call["name"] = event.name or call["name"]
            call["arguments"].append(event.arguments)
        elif kind is Finish:
            choices.setdefault(event.index, Choice(event.index)).finish_reason = event.reason
        elif kind is Usage:
            usage = event
    for (index, _), call in sorted(calls.items()):
        choices[index].tool_calls.append(ToolCall(call["id"], call["name"], "".join(call["arguments"])))
    for index, choice in choices.items():
        choice.text = "".join(parts.get(index, ()))
        if index in thoughts:
            choice.reasoning = "".join(thoughts[index])
    return Result([choices[i] for i in sorted(choices)], usage)


def pick_entity(endpoint: Endpoint) -> EntitySpec:
    if not endpoint.entities:
        raise ServingError(f"Endpoint '{endpoint.name}' has no served entity.", "TEMPORARILY_UNAVAILABLE", retry_after=5)
    return endpoint.entities[0]


def check_supported(endpoint: Endpoint, provider: Provider, request: Request) -> None:
    """400 naming the first parameter the provider cannot honour; nothing is silently ignored."""
    who = f"endpoint '{endpoint.name}' (provider '{provider.spec.provider}', model '{provider.spec.model}')"
    for name in request.generation_params():
        if name not in provider.supported_params:
            raise invalid(f"Parameter '{name}' is not supported by {who}.")
    allowed = provider.supported_extra_params
    if allowed is not None:
        for name in request.extra_params:
            if name not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                raise invalid(f"extra_params '{name}' is not supported by {who}. Supported extra_params: {known}.")
    if isinstance(request, ChatRequest) and not provider.sees_images:
        for i, message in enumerate(request.messages):
            if message.has_images():
                raise invalid(
                    f"messages[{i}] contains an image, but {who} cannot see images. If its model can, set "
                    f"'vision: true' on served entity '{provider.spec.name}' of endpoint '{endpoint.name}' "
                    "(endpoints file, management API or admin)."
                )


async def prepare(name: str, body: Any, *, expect_task: str | None = None, route: str = "") -> Query:
    """Validate ``body`` for endpoint ``name`` and bind it to a served entity and its provider.

    ``expect_task`` is set by task-specific routes (the OpenAI-compatible API), whose bodies must
    name an endpoint of that task. Raises ServingError (400, 404, …) with an actionable message.
    """
    endpoint = await registry.get(name)
    if expect_task and endpoint.task != expect_task:
        raise invalid(
            f"Endpoint '{name}' serves {endpoint.task}, not {expect_task}; "
            f"send this request to {route_for(endpoint.task)} or /serving-endpoints/{name}/invocations."
        )
    request = parse(endpoint.task, body, endpoint=name)
    entity = pick_entity(endpoint)
    if entity.name in endpoint.problems:  # e.g. a secret its config refers to does not exist
        raise invalid(endpoint.problems[entity.name])
    provider = get_provider(entity)
    check_supported(endpoint, provider, request)
    prepared = await prepare_images(request) if isinstance(request, ChatRequest) else []
    return Query(endpoint, entity, provider, request, id=_ID_PREFIX[endpoint.task] + uuid.uuid4().hex, images=prepared)


async def prepare_images(request: ChatRequest) -> list[PreparedImage]:
    """Run every image of ``request`` through the pipeline (limits, orientation, resizing,
    re-encoding) and point its parts at what is sent; 400 naming the first image that breaks a rule."""
    parts = [part for message in request.messages for part in message.images()]
    if not parts:
        return []
    prepared = await images.prepare_images([part.image_url.url for part in parts])
    for part, image in zip(parts, prepared):
        part.image_url.url = image.data_url
    return prepared


def route_for(task: str) -> str:
    return {
        CHAT: "/serving-endpoints/chat/completions",
        COMPLETIONS: "/serving-endpoints/completions",
        EMBEDDINGS: "/serving-endpoints/embeddings",
    }[task]
