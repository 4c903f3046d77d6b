"""Google's Gemini models, through the Gemini API (``google-gemini``) or Vertex AI (``google-cloud-vertex-ai``).

Both speak the same ``generateContent`` format: one set of pure translators (ours → vendor,
vendor response → our events) serves two thin classes that differ only in auth, URLs and the
embeddings call.

``gemini_config`` (``google-gemini``):

- ``gemini_api_key`` (required): sent as ``x-goog-api-key``.
- ``gemini_api_base``: default ``https://generativelanguage.googleapis.com``; the paths are
  ``/v1beta/models/{model}:generateContent``, ``:streamGenerateContent?alt=sse``,
  ``:embedContent`` (one input) and ``:batchEmbedContents`` (several, 100 a call).

``google_cloud_vertex_ai_config`` (``google-cloud-vertex-ai``):

- ``project_id``, ``region`` (required).
- ``private_key`` (required): the service account's JSON key file, as text. Its ``token_uri`` is
  where access tokens come from (google-auth signs the JWT grant; the token is cached until
  shortly before it expires, and refreshed in a worker thread, never on the event loop).
- ``vertex_api_base``: default ``https://{region}-aiplatform.googleapis.com``
  (``https://aiplatform.googleapis.com`` for the ``global`` region); the paths are
  ``/v1/projects/{project}/locations/{region}/publishers/google/models/{model}`` then
  ``:generateContent``, ``:streamGenerateContent?alt=sse`` and ``:predict`` (embeddings).

How a chat request maps (https://ai.google.dev/api/generate-content):

==============================  ============================================================
ours                            Gemini
==============================  ============================================================
system / developer messages     ``systemInstruction.parts`` (in order)
user / assistant                ``contents[].role`` ``user`` / ``model``
image parts (data URLs)         ``inlineData {mimeType, data}``
assistant ``tool_calls``        ``functionCall {name, args}`` parts
tool messages                   ``functionResponse {name, response}`` parts of one user turn
                                (a JSON-object result is sent as is, anything else as
                                ``{"output": text}``; the name comes from the matching call)
reasoning blocks sent back      their signature as ``thoughtSignature`` on the first
                                ``functionCall`` part, else on the last text part (Gemini
                                does not read earlier thought text; the signature carries it)
max_tokens, temperature, top_p  ``generationConfig.maxOutputTokens``, ``temperature``, ``topP``
stop (at most 5), n, seed       ``stopSequences``, ``candidateCount``, ``seed``
presence / frequency_penalty    ``presencePenalty``, ``frequencyPenalty``
thinking / reasoning_effort     ``thinkingConfig {thinkingBudget, includeThoughts: true}``;
                                ``thinking: disabled`` is ``thinkingBudget: 0``
response_format                 ``responseMimeType: application/json`` (+ ``responseJsonSchema``)
tools, tool_choice              ``tools[0].functionDeclarations`` (``parametersJsonSchema``),
                                ``toolConfig.functionCallingConfig`` NONE / ANY (+ allowed name)
parallel_tool_calls: false      a 400: Gemini has no such switch
==============================  ============================================================

``extra_params``: ``safetySettings``, ``cachedContent`` and ``labels`` (Vertex) are request
fields and go into the body; every other key goes into ``generationConfig`` (``topK``,
``responseModalities``, a ``thinkingConfig`` of its own…), where it wins over ours. For
embeddings they go into each ``embedContent`` request (``taskType``, ``title``,
``outputDimensionality``) on the Gemini API; on Vertex, ``task_type`` and ``title`` go into each
instance and the rest into ``parameters`` (``outputDimensionality``, ``autoTruncate``).

Back, parts become events: thought parts are ``ReasoningDelta``s, a ``thoughtSignature`` their
``signature`` (one on a ``functionCall`` part always travels: Gemini 3 refuses the next turn
without it; one on a text part when the choice showed its reasoning); ``functionCall`` parts are
whole ``ToolCallDelta``s whose id is the vendor's or, as Gemini gives none, one derived from the
call; ``finishReason`` STOP is ``tool_calls`` after a call, MAX_TOKENS ``length``, the safety
reasons ``content_filter``; ``usageMetadata.thoughtsTokenCount`` counts as reasoning tokens
within ``completion_tokens``.
"""
from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, ClassVar

import google.auth.transport.urllib3
import orjson
import urllib3
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import TokenState
from google.oauth2 import service_account

from ..errors import ServingError, invalid
from ..events import Embeddings, Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from ..schemas import CHAT, EMBEDDINGS, ChatMessage, ChatRequest, EmbeddingsRequest, ImagePart, TextPart
from . import http
from .base import EntitySpec, Provider
from .openai_compatible import api_root, config_secret, join

GEMINI_API_BASE = "https://generativelanguage.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
MAX_STOP_SEQUENCES = 5
EMBED_BATCH = 100  # batchEmbedContents takes at most 100 requests
TOKEN_TIMEOUT = 30.0  # seconds the token endpoint may take to answer

# Request parameters by generationConfig name.
_CONFIG_NAMES = {
    "max_tokens": "maxOutputTokens",
    "temperature": "temperature",
    "top_p": "topP",
    "stop": "stopSequences",
    "n": "candidateCount",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}
PARAMS = frozenset({
    *_CONFIG_NAMES, "tools", "tool_choice", "parallel_tool_calls", "response_format", "thinking", "reasoning_effort",
})
# extra_params keys that are fields of the request itself rather than of generationConfig.
_BODY_FIELDS = frozenset({"safetySettings", "cachedContent", "labels"})
_TOOL_MODES = {"none": "NONE", "required": "ANY", "function": "ANY"}
_FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.+)$", re.DOTALL)
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._@:-]+$")

# --- ours → vendor -------------------------------------------------------------------------


def chat_body(request: ChatRequest, provider: str) -> dict[str, Any]:
    """The vendor's body for ``request`` (the same for generateContent and its streaming twin).

    ``provider`` names the provider in the 400 for what Gemini cannot do. Sample
    (https://ai.google.dev/api/generate-content#request-body)::

        {"contents": [{"role": "user", "parts": [{"text": "Hi"},
                       {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ…"}}]}],
         "systemInstruction": {"parts": [{"text": "Be brief."}]},
         "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "…",
                    "parametersJsonSchema": {"type": "object", "properties": {…}}}]}],
         "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
         "generationConfig": {"maxOutputTokens": 256, "temperature": 0.2, "stopSequences": ["END"],
                              "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": true}}}
    """
    contents, system = _contents(request.messages, provider)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    plan = request.tool_plan
    if plan is not None:
        if not plan.parallel:
            raise invalid(
                f"Parameter 'parallel_tool_calls' is not supported by provider '{provider}': Gemini has no "
                "switch to keep it to one call per answer. Leave it out."
            )
        declarations = []
        for tool in plan.tools:
            declaration: dict[str, Any] = {"name": tool.name}
            if tool.description:
                declaration["description"] = tool.description
            declaration["parametersJsonSchema"] = tool.parameters
            declarations.append(declaration)
        body["tools"] = [{"functionDeclarations": declarations}]
        if plan.choice in _TOOL_MODES:
            calling: dict[str, Any] = {"mode": _TOOL_MODES[plan.choice]}
            if plan.function is not None:
                calling["allowedFunctionNames"] = [plan.function]
            body["toolConfig"] = {"functionCallingConfig": calling}
    config = _generation_config(request, provider)
    for key, value in request.extra_params.items():
        (body if key in _BODY_FIELDS else config)[key] = value
    if config:
        body["generationConfig"] = config
    return body


def _generation_config(request: ChatRequest, provider: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name, value in request.generation_params().items():
        if name in _CONFIG_NAMES:
            config[_CONFIG_NAMES[name]] = value
    stops = config.get("stopSequences")
    if stops is not None and len(stops) > MAX_STOP_SEQUENCES:
        raise invalid(
            f"Parameter 'stop' takes at most {MAX_STOP_SEQUENCES} sequences with provider '{provider}'; "
            f"got {len(stops)}."
        )
    output = request.output_format
    if output is not None and output.kind != "text":
        config["responseMimeType"] = "application/json"
        if output.schema is not None:
            config["responseJsonSchema"] = output.schema
    budget = request.thinking_budget
    if budget is not None:
        config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": True}
    elif request.thinking is not None:  # thinking explicitly disabled
        config["thinkingConfig"] = {"thinkingBudget": 0}
    return config


def _contents(messages: list[ChatMessage], provider: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``contents`` and the ``systemInstruction`` parts for ``messages``."""
    names = {
        call.get("id"): (call.get("function") or {}).get("name")
        for message in messages if message.role == "assistant"
        for call in message.tool_calls or () if isinstance(call, dict)
    }
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    previous = ""
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.role in ("system", "developer"):
            system.append({"text": message.text()})
        elif message.role == "assistant":
            contents.append({"role": "model", "parts": _model_parts(message, where, provider)})
        elif message.role == "tool":
            name = message.name or names.get(message.tool_call_id)
            if not name:
                raise invalid(
                    f"{where} is a tool result whose tool_call_id {message.tool_call_id!r} matches no tool call of "
                    f"an earlier assistant message; provider '{provider}' needs the called function's name."
                )
            part = {"functionResponse": {"name": name, "response": _tool_result(message.text())}}
            if previous == "tool":  # the results of one answer's calls travel in one turn
                contents[-1]["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part]})
        else:
            contents.append({"role": "user", "parts": _parts(message, where, provider)})
        previous = message.role
    return contents, system


def _parts(message: ChatMessage, where: str, provider: str) -> list[dict[str, Any]]:
    """The text and image parts of ``message`` (reasoning blocks are left to the caller)."""
    content = message.content
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if isinstance(part, TextPart):
            parts.append({"text": part.text})
        elif isinstance(part, ImagePart):
            match = _DATA_URL.match(part.image_url.url)
            if match is None:
                raise invalid(
                    f"{where}.content[{j}]: provider '{provider}' takes images as base64 data URLs "
                    "(data:image/png;base64,…)."
                )
            parts.append({"inlineData": {"mimeType": match.group(1), "data": match.group(2)}})
    return parts


def _model_parts(message: ChatMessage, where: str, provider: str) -> list[dict[str, Any]]:
    parts = [part for part in _parts(message, where, provider) if part.get("text") != ""]
    calls = []
    for j, call in enumerate(message.tool_calls or ()):
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise invalid(f"{where}.tool_calls[{j}].function.name is missing.")
        arguments = function.get("arguments") or "{}"
        try:
            args = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            raise invalid(f"{where}.tool_calls[{j}].function.arguments must be a JSON object (as text).")
        calls.append({"functionCall": {"name": name, "args": args}})
    signatures = [s.signature for _, block in message.reasoning_parts() for s in block.summary if s.signature]
    if signatures:
        if not calls and not parts:
            parts.append({"text": ""})
        (calls[0] if calls else parts[-1])["thoughtSignature"] = signatures[-1]
    return parts + calls or [{"text": ""}]


def _tool_result(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"output": text}


def gemini_embed_body(text: str, extra: dict[str, Any]) -> dict[str, Any]:
    """One ``embedContent`` request (the batch's items take a ``model`` too).

    Sample (https://ai.google.dev/api/embeddings#method:-models.embedcontent)::

        {"content": {"parts": [{"text": "What is the meaning of life?"}]}, "taskType": "RETRIEVAL_QUERY"}
    """
    return {"content": {"parts": [{"text": text}]}, **extra}


def vertex_embed_body(texts: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    """The Vertex ``:predict`` body for text embeddings.

    Sample (https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/text-embeddings-api)::

        {"instances": [{"content": "first", "task_type": "RETRIEVAL_DOCUMENT"}],
         "parameters": {"outputDimensionality": 256}}
    """
    per_instance = {k: v for k, v in extra.items() if k in ("task_type", "title")}
    parameters = {k: v for k, v in extra.items() if k not in per_instance}
    body: dict[str, Any] = {"instances": [{"content": text, **per_instance} for text in texts]}
    if parameters:
        body["parameters"] = parameters
    return body


# --- vendor → ours -------------------------------------------------------------------------


@dataclass
class StreamState:
    """What reading one answer remembers between its chunks."""

    choices: int
    calls: dict[int, int] = field(default_factory=dict)  # choice → function calls so far
    reasoned: set[int] = field(default_factory=set)  # choices that showed thought parts
    finished: set[int] = field(default_factory=set)
    usage: Usage | None = None  # the latest usageMetadata: each chunk reports the total so far


def chunk_events(chunk: dict[str, Any], state: StreamState) -> list[Event]:
    """Our events in one streamed chunk or in a whole generateContent answer (usage goes to ``state``).

    Sample chunks (https://ai.google.dev/api/generate-content#v1beta.GenerateContentResponse)::

        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Let me think…", "thought": true}]}}],
         "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}}
        {"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "CiQB…"}]},
          "finishReason": "STOP"}],
         "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 12, "thoughtsTokenCount": 30}}
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 9}}

    A candidate's ``index`` is left out when it is 0 (proto3 JSON).
    """
    events: list[Event] = []
    candidates = chunk.get("candidates") or ()
    for candidate in candidates:
        index = int(candidate.get("index") or 0)
        for part in (candidate.get("content") or {}).get("parts") or ():
            events.extend(_part_events(part, index, state))
        reason = candidate.get("finishReason")
        if reason and reason != "FINISH_REASON_UNSPECIFIED" and index not in state.finished:
            state.finished.add(index)
            mapped = _FINISH_REASONS.get(reason, "stop")
            events.append(Finish("tool_calls" if mapped == "stop" and index in state.calls else mapped, index))
    if not candidates and (chunk.get("promptFeedback") or {}).get("blockReason"):
        for index in range(state.choices):
            if index not in state.finished:
                state.finished.add(index)
                events.append(Finish("content_filter", index))
    usage = chunk.get("usageMetadata")
    if usage:
        state.usage = _usage(usage)
    return events


def closing_events(state: StreamState) -> list[Event]:
    """``Finish("stop")`` for each choice the vendor never finished, then the usage (0/0 if none came)."""
    events: list[Event] = [Finish("stop", index) for index in range(state.choices) if index not in state.finished]
    events.append(state.usage if state.usage is not None else Usage(0, 0))
    return events


def _part_events(part: dict[str, Any], index: int, state: StreamState) -> list[Event]:
    signature = part.get("thoughtSignature")
    text = part.get("text")
    if part.get("thought"):
        state.reasoned.add(index)
        return [ReasoningDelta(text or "", index, signature)] if text or signature else []
    events: list[Event] = []
    call = part.get("functionCall")
    if call is not None:
        if signature:
            events.append(ReasoningDelta("", index, signature))
        position = state.calls.get(index, 0)
        state.calls[index] = position + 1
        name = call.get("name") or ""
        arguments = orjson.dumps(call.get("args") or {}).decode()
        call_id = call.get("id") or _call_id(index, position, name, arguments)
        events.append(ToolCallDelta(call=position, index=index, id=call_id, name=name, arguments=arguments))
        return events
    if signature and index in state.reasoned:
        events.append(ReasoningDelta("", index, signature))
    if text:
        events.append(TextDelta(text, index))
    return events


def _call_id(index: int, position: int, name: str, arguments: str) -> str:
    """A call id made from the call itself: the same answer read twice gets the same ids."""
    return "call_" + hashlib.sha256(f"{index}/{position}/{name}/{arguments}".encode()).hexdigest()[:24]


def _usage(meta: dict[str, Any]) -> Usage:
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    return Usage(
        prompt_tokens=int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0),
        completion_tokens=int(meta.get("candidatesTokenCount") or 0) + thoughts,
        reasoning_tokens=thoughts,
    )


def gemini_embeddings(payload: dict[str, Any], count: int, label: str) -> list[list[float]]:
    """The vectors of an embedContent (``embedding``) or batchEmbedContents (``embeddings``) answer.

    Samples (https://ai.google.dev/api/embeddings)::

        {"embedding": {"values": [0.013, -0.008, …]}}
        {"embeddings": [{"values": [0.013, …]}, {"values": [-0.021, …]}]}
    """
    items = payload.get("embeddings") if "embeddings" in payload else [payload.get("embedding")]
    return _vectors([item.get("values") if isinstance(item, dict) else None for item in items or ()], count, label)


def vertex_embeddings(payload: dict[str, Any], count: int, label: str) -> Embeddings:
    """Our embeddings from a Vertex ``:predict`` answer.

    Sample (https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/text-embeddings-api)::

        {"predictions": [{"embeddings": {"values": [0.0058, …],
                                         "statistics": {"token_count": 4, "truncated": false}}}]}
    """
    found = [(p.get("embeddings") or {}) if isinstance(p, dict) else {} for p in payload.get("predictions") or ()]
    vectors = _vectors([item.get("values") for item in found], count, label)
    tokens = sum(int((item.get("statistics") or {}).get("token_count") or 0) for item in found)
    return Embeddings(vectors=vectors, prompt_tokens=tokens)


def _vectors(values: list[Any], count: int, label: str) -> list[list[float]]:
    if len(values) != count:
        raise ServingError(
            f"{label} returned {len(values)} embeddings for {count} inputs.", "TEMPORARILY_UNAVAILABLE", retryable=False
        )
    if not all(isinstance(v, list) for v in values):
        raise ServingError(f"{label} returned an embedding that is not a vector.", "TEMPORARILY_UNAVAILABLE")
    return values


# --- the providers -------------------------------------------------------------------------


class _GeminiFormat(Provider):
    """Chat over generateContent, shared by both providers; subclasses give auth and URLs."""

    tasks = frozenset({CHAT, EMBEDDINGS})
    supported_params = PARAMS
    supported_extra_params = None
    vision = True
    counts_image_tokens = True  # promptTokenCount counts the images
    label: ClassVar[str]

    def _model_url(self, method: str) -> str:
        raise NotImplementedError

    async def _headers(self) -> dict[str, str]:
        """The request headers, credentials included."""
        raise NotImplementedError

    def _secrets(self) -> tuple[str, ...]:
        raise NotImplementedError

    # chat() returns the relay generator itself, so the consumer's aclose() or cancellation
    # reaches the upstream response directly; the body is built first, so its 400s come at once.
    def chat(self, request: ChatRequest) -> AsyncIterator[Event]:
        body = orjson.dumps(chat_body(request, self.spec.provider))
        method = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        return self._relay(self._model_url(method), body, request.n, stream=request.stream)

    async def _relay(self, url: str, body: bytes, choices: int, *, stream: bool) -> AsyncIterator[Event]:
        """Relay the vendor's answer as our events, per the contract in :mod:`.base`."""
        headers = {**await self._headers(), "accept": "text/event-stream" if stream else "application/json"}
        state = StreamState(choices)
        async with http.open_stream(self.label, url, body, headers, self._timeout, secrets=self._secrets()) as response:
            if stream and http.is_event_stream(response):
                async with aclosing(http.iter_sse(response)) as sse_events:
                    async for sse in sse_events:
                        if sse.data:
                            for chunk in self._chunks(sse.data):
                                for event in chunk_events(chunk, state):
                                    yield event
            else:
                for chunk in self._chunks(await response.aread()):
                    for event in chunk_events(chunk, state):
                        yield event
        for event in closing_events(state):
            yield event

    def _chunks(self, data: str | bytes) -> list[dict[str, Any]]:
        """The answers in one payload: an object, or a JSON array of them (streaming without SSE)."""
        payload = http.loads(self.label, data)
        return [self._answer(chunk) for chunk in (payload if isinstance(payload, list) else [payload])]

    def _answer(self, payload: Any) -> dict[str, Any]:
        """``payload`` if it is an answer; ServingError if malformed or an error object."""
        if type(payload) is not dict:
            raise ServingError(f"{self.label} sent a malformed answer.", "TEMPORARILY_UNAVAILABLE")
        if "error" in payload:
            raise http.error_for_payload(self.label, payload, secrets=self._secrets())
        return payload

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {**await self._headers(), "accept": "application/json"}
        return self._answer(await http.post_json(self.label, url, orjson.dumps(body), headers, self._timeout, secrets=self._secrets()))


class GeminiProvider(_GeminiFormat):
    """Gemini models through the Gemini API, with an API key."""

    label = "Google Gemini API"

    def __init__(self, spec: EntitySpec) -> None:
        super().__init__(spec)
        self._timeout = http.entity_timeout(spec.config)
        config = spec.config
        key = config_secret(config, "gemini_api_key")
        if key is None:
            raise invalid(
                "A google-gemini endpoint needs 'gemini_api_key' in its gemini_config: a secret reference such as "
                "'{{secrets/scope/key}}', or 'gemini_api_key_plaintext'."
            )
        self._key = key
        self.base_url = _base_url(config.get("gemini_api_base") or GEMINI_API_BASE, "gemini_api_base")
        self._model = _segment(spec.model, "The model name", "gemini-2.5-flash")

    def __repr__(self) -> str:  # never the key
        return f"<GeminiProvider {self.spec.model!r} at {http.safe_url(self.base_url)}>"

    def describe(self) -> dict[str, Any]:
        return {"gemini_api_base": http.safe_url(self.base_url), "upstream_model": self.spec.model}

    def _model_url(self, method: str) -> str:
        return f"{self.base_url}/v1beta/models/{self._model}:{method}"

    async def _headers(self) -> dict[str, str]:
        return {"content-type": "application/json", "x-goog-api-key": self._key}

    def _secrets(self) -> tuple[str, ...]:
        return (self._key,)

    async def embed(self, request: EmbeddingsRequest) -> Embeddings:
        texts, extra = request.texts, request.extra_params
        if len(texts) == 1:
            payload = await self._post(self._model_url("embedContent"), gemini_embed_body(texts[0], extra))
            return Embeddings(vectors=gemini_embeddings(payload, 1, self.label), prompt_tokens=0)
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBED_BATCH):
            batch = texts[start:start + EMBED_BATCH]
            body = {"requests": [{"model": f"models/{self._model}", **gemini_embed_body(t, extra)} for t in batch]}
            payload = await self._post(self._model_url("batchEmbedContents"), body)
            vectors.extend(gemini_embeddings(payload, len(batch), self.label))
        # The Gemini API reports no token counts for embeddings.
        return Embeddings(vectors=vectors, prompt_tokens=0)


class VertexProvider(_GeminiFormat):
    """Gemini models (and Google's text-embedding models) through Vertex AI, with a service account."""

    label = "Google Vertex AI"

    def __init__(self, spec: EntitySpec) -> None:
        super().__init__(spec)
        self._timeout = http.entity_timeout(spec.config)
        config = spec.config
        project = _segment(config.get("project_id"), "'project_id'", "my-project")
        region = _segment(config.get("region"), "'region'", "us-central1, or global")
        default_base = (
            "https://aiplatform.googleapis.com" if region == "global" else f"https://{region}-aiplatform.googleapis.com"
        )
        self.project, self.region = project, region
        self.base_url = _base_url(config.get("vertex_api_base") or default_base, "vertex_api_base")
        self._prefix = (
            f"{self.base_url}/v1/projects/{project}/locations/{region}/publishers/google/models/"
            f"{_segment(spec.model, 'The model name', 'gemini-2.5-flash')}"
        )
        from ..secrets import PLACEHOLDER

        key = config_secret(config, "private_key")
        # A config may name a secret before it is put: it is checked at declaration with a
        # placeholder (endpoints.secrets.declared), which is no service account to parse yet.
        # Queries never see the placeholder (a missing secret stops them before the provider).
        self._account = None if key == PLACEHOLDER else ServiceAccount(_service_account_info(key))

    def __repr__(self) -> str:  # never the key
        return f"<VertexProvider {self.spec.model!r} in {self.project}/{self.region}>"

    def describe(self) -> dict[str, Any]:
        return {
            "vertex_api_base": http.safe_url(self.base_url), "project_id": self.project, "region": self.region,
            "upstream_model": self.spec.model,
        }

    def _model_url(self, method: str) -> str:
        return f"{self._prefix}:{method}"

    async def _headers(self) -> dict[str, str]:
        return {"content-type": "application/json", "authorization": f"Bearer {await self._account.token()}"}

    def _secrets(self) -> tuple[str, ...]:
        token = self._account.cached_token if self._account is not None else None
        return (token,) if token else ()

    async def embed(self, request: EmbeddingsRequest) -> Embeddings:
        body = vertex_embed_body(request.texts, request.extra_params)
        payload = await self._post(self._model_url("predict"), body)
        return vertex_embeddings(payload, len(request.texts), self.label)

    async def aclose(self) -> None:
        if self._account is not None:
            self._account.close()


class ServiceAccount:
    """A service account's OAuth access token for Vertex AI, cached until shortly before it expires.

    google-auth refreshes synchronously (over urllib3), so a refresh runs in a worker thread; a
    lock makes concurrent requests that find the token stale wait for one refresh.
    """

    def __init__(self, info: dict[str, Any]) -> None:
        try:
            self._credentials = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
        except (ValueError, TypeError):
            # The library's message may quote the key material: ours names only the field.
            raise invalid(
                "'private_key' holds a service account key whose private_key is not a PEM-encoded RSA key."
            ) from None
        self._token_uri = str(info["token_uri"])
        timeout = urllib3.Timeout(connect=http.setting("FONDASI_HTTP_CONNECT_TIMEOUT"), read=TOKEN_TIMEOUT)
        self._pool = urllib3.PoolManager(timeout=timeout)
        self._request = google.auth.transport.urllib3.Request(self._pool)
        self._lock = threading.Lock()

    @property
    def cached_token(self) -> str | None:
        return self._credentials.token

    async def token(self) -> str:
        """A valid access token: the cached one, or a new one from the token endpoint."""
        if self._credentials.token_state is TokenState.FRESH:
            return self._credentials.token
        return await asyncio.to_thread(self._refresh)

    def _refresh(self) -> str:
        with self._lock:
            if self._credentials.token_state is not TokenState.FRESH:  # else another thread just refreshed it
                try:
                    self._credentials.refresh(self._request)
                except auth_exceptions.RefreshError as exc:
                    raise _refresh_error(exc) from None
                except auth_exceptions.TransportError:
                    raise ServingError(
                        f"Could not reach the service account's token endpoint "
                        f"({http.safe_url(self._token_uri)}).",
                        "TEMPORARILY_UNAVAILABLE", retry_after=1,
                    ) from None
            return self._credentials.token

    def close(self) -> None:
        """Close the token endpoint's pooled connections."""
        self._pool.clear()


def _refresh_error(exc: auth_exceptions.RefreshError) -> ServingError:
    detail = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
    detail = " ".join(detail.split())[: http.MAX_MESSAGE_CHARS]
    if exc.retryable:
        return ServingError(
            f"The service account's token endpoint is unavailable: {detail}", "TEMPORARILY_UNAVAILABLE", retry_after=1
        )
    return ServingError(
        f"Google did not accept the service account in 'private_key' ({detail}). Check that the key is current "
        "and the account may use Vertex AI.",
        "INVALID_PARAMETER_VALUE", retryable=False,
    )


def _service_account_info(key: str | None) -> dict[str, Any]:
    """The service account key file's fields from ``private_key`` (the whole JSON key file, as text)."""
    if key is None:
        raise invalid(
            "A google-cloud-vertex-ai endpoint needs 'private_key' in its google_cloud_vertex_ai_config: the "
            "service account's JSON key file, as text (a secret reference such as '{{secrets/scope/key}}', or "
            "'private_key_plaintext')."
        )
    try:
        info = orjson.loads(key)
    except orjson.JSONDecodeError:
        info = None
    if not isinstance(info, dict):  # never echo it
        raise invalid(
            "'private_key' must be the service account's whole JSON key file, as text; it is not a JSON object."
        )
    missing = [name for name in ("client_email", "private_key", "token_uri") if not info.get(name)]
    if missing:
        raise invalid(f"'private_key' is a JSON key file without {', '.join(repr(m) for m in missing)}.")
    return info


def _base_url(value: Any, field: str) -> str:
    return join(api_root(value, field, f"'{field}' must be a URL."), query="")


def _segment(value: Any, name: str, example: str) -> str:
    """``value`` if it can stand as one segment of a URL path; a 400 naming ``name`` otherwise."""
    if not isinstance(value, str) or not value:
        raise invalid(f"{name} is required (for example {example}).")
    if not _PATH_SEGMENT.match(value):
        raise invalid(f"{name} must be letters, digits, '.', '_', '@', ':' or '-'; got {value!r}.")
    return value
