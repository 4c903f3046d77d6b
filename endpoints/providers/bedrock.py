"""Amazon Bedrock: chat over the Converse API, embeddings over InvokeModel.

Served entity config (``EntitySpec.config``, Databricks' ``amazon_bedrock_config``):

- ``aws_region`` (required): e.g. ``us-east-1``.
- ``aws_access_key_id`` and ``aws_secret_access_key`` (required, resolved), ``aws_session_token``
  (optional, for temporary credentials).
- ``bedrock_provider`` (required): who made the model (``anthropic``, ``amazon``, ``cohere``,
  ``meta``, ``mistral``…). Chat is the same Converse API for all of them; it decides how
  ``thinking`` is asked for (Anthropic models only) and which embeddings body is sent
  (``amazon``: Titan, ``cohere``: Cohere Embed).
- ``bedrock_endpoint_url`` (optional): default ``https://bedrock-runtime.{aws_region}.amazonaws.com``
  (a VPC endpoint or a proxy goes here).

``spec.model`` is the Bedrock model ID, inference profile ID or ARN; it is URL-encoded into the
path (``/model/{id}/converse``, ``/converse-stream``, ``/invoke``). Every request is signed
with Signature Version 4 by botocore's signer (service ``bedrock``) and sent with the pooled
client of :mod:`.http`. A streaming chat reads ``/converse-stream``, whose body is AWS
event-stream framing (``application/vnd.amazon.eventstream``: binary messages with CRCs), parsed
by botocore's :class:`~botocore.eventstream.EventStreamBuffer`; a non-streaming one reads the
JSON answer of ``/converse`` into the same events.

Not sent to Bedrock, so refused with a 400 naming them: ``n``, ``seed``, the penalties and
``response_format`` (the Converse API has no equivalent); model-specific fields go in
``extra_params``, which become ``additionalModelRequestFields`` (e.g. ``{"top_k": 40}``).
"""
from __future__ import annotations

import asyncio
import re
from typing import Any, AsyncIterator, Iterable, Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from ..errors import ServingError, invalid
from ..events import Embeddings, Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from ..schemas import CHAT, EMBEDDINGS, ChatMessage, ChatRequest, EmbeddingsRequest, ImagePart, ReasoningPart, TextPart
from . import http
from .base import EntitySpec, Provider
from .cohere import embed_body as cohere_embed_body, embed_vectors as cohere_embed_vectors, gather_all

LABEL = "Amazon Bedrock"
SERVICE = "bedrock"  # the SigV4 signing name of bedrock-runtime
EVENT_STREAM = "application/vnd.amazon.eventstream"
BEDROCK_PROVIDERS = (
    "ai21labs", "amazon", "anthropic", "cohere", "deepseek", "meta", "mistral", "openai", "qwen", "writer",
)
PARAMS = frozenset({
    "max_tokens", "temperature", "top_p", "stop",
    "tools", "tool_choice", "parallel_tool_calls", "thinking", "reasoning_effort",
})
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
# A region goes into the default host name: only a region's shape may (us-east-1, us-gov-west-1).
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# Exception events inside a stream, as the HTTP status Bedrock gives the same exception.
_STREAM_ERRORS = {
    "validationException": 400,
    "throttlingException": 429,
    "modelTimeoutException": 408,
    "internalServerException": 500,
    "serviceUnavailableException": 503,
    "modelStreamErrorException": 503,  # 424 at Bedrock, but "retry your request": the model failed, not the request
}
# Titan embeds one text per call: this many calls at once for a list of inputs.
TITAN_CONCURRENCY = 8
COHERE_BATCH = 96  # Cohere Embed's limit of texts per call

# --- ours → vendor -------------------------------------------------------------------------


def converse_body(request: ChatRequest, bedrock_provider: str) -> dict[str, Any]:
    """The Converse (and ConverseStream) body for ``request``.

    Sample (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html)::

        {"system": [{"text": "Be brief."}],
         "messages": [{"role": "user", "content": [
             {"text": "What is this?"},
             {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo…"}}}]}],
         "inferenceConfig": {"maxTokens": 512, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
         "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "description": "…",
                                                "inputSchema": {"json": {"type": "object", …}}}}],
                        "toolChoice": {"any": {}}},
         "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 1024}}}

    Raises a 400 for what Bedrock cannot be asked: ``parallel_tool_calls: false`` and thinking
    for a model that is not Anthropic's.
    """
    system, messages = _conversation(request.messages)
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    inference = _inference_config(request)
    if inference:
        body["inferenceConfig"] = inference
    tools = _tool_config(request)
    if tools:
        body["toolConfig"] = tools
    additional = dict(request.extra_params)
    budget = request.thinking_budget
    if budget is not None:
        if bedrock_provider != "anthropic":
            raise invalid(
                f"'thinking' is supported on Amazon Bedrock for Anthropic models only; this endpoint's "
                f"bedrock_provider is '{bedrock_provider}'."
            )
        additional["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if additional:
        body["additionalModelRequestFields"] = additional
    return body


def _conversation(messages: list[ChatMessage]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System blocks, and the turns with consecutive same-role ones merged (Bedrock wants them
    alternating; a run of tool results and the user's next words make one user turn)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if message.role in ("system", "developer"):
            system.append({"text": message.text()})
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message, i)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _blocks(message: ChatMessage, i: int) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [{"toolResult": {"toolUseId": message.tool_call_id or "", "content": [{"text": message.text()}]}}]
    blocks: list[dict[str, Any]] = []
    content = message.content
    parts = [TextPart(type="text", text=content)] if isinstance(content, str) else list(content or ())
    # Reasoning comes first in an assistant turn, as the model wrote it.
    for j, part in sorted(enumerate(parts), key=lambda item: not isinstance(item[1], ReasoningPart)):
        if isinstance(part, TextPart):
            if part.text:  # Bedrock rejects blank text blocks (an assistant turn of tool calls has "")
                blocks.append({"text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append({"image": _image(part.image_url.url, f"messages[{i}].content[{j}]")})
        elif isinstance(part, ReasoningPart):
            for summary in part.summary:
                text: dict[str, Any] = {"text": summary.text}
                if summary.signature is not None:
                    text["signature"] = summary.signature
                blocks.append({"reasoningContent": {"reasoningText": text}})
    for j, call in enumerate(message.tool_calls or ()):
        blocks.append({"toolUse": _tool_use(call, f"messages[{i}].tool_calls[{j}]")})
    return blocks


def _image(url: str, where: str) -> dict[str, Any]:
    """Bedrock's image block from a ``data:`` URL (the image pipeline made every image one)."""
    header, _, data = url.partition(",")
    media_type = header[5:].split(";")[0].strip().lower() if header[:5].lower() == "data:" else ""
    fmt = IMAGE_FORMATS.get(media_type)
    if fmt is None or not data:
        raise invalid(f"{where} must be a PNG, JPEG, GIF or WebP image as a base64 data: URL for Amazon Bedrock.")
    return {"format": fmt, "source": {"bytes": data}}  # JSON carries the bytes as base64


def _tool_use(call: dict[str, Any], where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise invalid(f"{where} must have a 'function' with a 'name' and its 'arguments' (a JSON string).")
    arguments = function.get("arguments") or "{}"
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        raise invalid(f"{where}.function.arguments is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise invalid(f"{where}.function.arguments must be a JSON object.")
    return {"toolUseId": str(call.get("id") or ""), "name": function["name"], "input": parsed}


def _inference_config(request: ChatRequest) -> dict[str, Any]:
    params = request.generation_params()
    config: dict[str, Any] = {}
    for ours, theirs in (("max_tokens", "maxTokens"), ("temperature", "temperature"), ("top_p", "topP")):
        if ours in params:
            config[theirs] = params[ours]
    if request.stop_list:
        config["stopSequences"] = request.stop_list
    return config


def _tool_config(request: ChatRequest) -> dict[str, Any] | None:
    plan = request.tool_plan
    # tool_choice "none": Converse has no such choice, so the model is offered no tools (Bedrock
    # then refuses a conversation holding earlier tool calls, and says so: a 400 with its words).
    if plan is None or plan.choice == "none":
        return None
    if not plan.parallel:
        raise invalid("'parallel_tool_calls': false is not supported by Amazon Bedrock's Converse API.")
    tools = []
    for tool in plan.tools:
        spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": tool.parameters}}
        if tool.description:
            spec["description"] = tool.description
        tools.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": tools}
    # "auto" is Bedrock's default and the only choice every model accepts: it is left out.
    if plan.choice == "required":
        config["toolChoice"] = {"any": {}}
    elif plan.choice == "function":
        config["toolChoice"] = {"tool": {"name": plan.function}}
    return config


def titan_body(text: str, extra: dict[str, Any]) -> dict[str, Any]:
    """An Amazon Titan Embeddings body (one text per call).

    Sample (https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-embed-text.html)::

        {"inputText": "first", "dimensions": 512, "normalize": true}
    """
    return {**extra, "inputText": text}


# --- vendor → ours -------------------------------------------------------------------------


class StreamState:
    """What reading a ConverseStream must remember: which content block is which tool call."""

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}  # contentBlockIndex -> our call number

    def call(self, block: int) -> int:
        if block not in self.calls:
            self.calls[block] = len(self.calls)
        return self.calls[block]


def stream_events(event_type: str, payload: dict[str, Any], state: StreamState) -> list[Event]:
    """Our events in one ConverseStream event.

    Samples (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStreamOutput.html),
    each the JSON payload of an event-stream message whose ``:event-type`` header names it::

        messageStart       {"role": "assistant"}
        contentBlockDelta  {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Let me"}}}
        contentBlockDelta  {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "EqoB…"}}}
        contentBlockDelta  {"contentBlockIndex": 1, "delta": {"text": "Hello"}}
        contentBlockStart  {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "f"}}}
        contentBlockDelta  {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{\\"city\\": "}}}
        contentBlockStop   {"contentBlockIndex": 2}
        messageStop        {"stopReason": "tool_use"}
        metadata           {"usage": {"inputTokens": 12, "outputTokens": 30, "totalTokens": 42},
                            "metrics": {"latencyMs": 812}}

    Redacted reasoning (``redactedContent``) has no text to show and is not passed on.
    """
    block = payload.get("contentBlockIndex") or 0
    if event_type == "contentBlockDelta":
        delta = payload.get("delta") or {}
        if isinstance(delta.get("text"), str):
            return [TextDelta(delta["text"])] if delta["text"] else []
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, dict):
            events: list[Event] = []
            if reasoning.get("text"):
                events.append(ReasoningDelta(reasoning["text"]))
            if isinstance(reasoning.get("signature"), str):
                events.append(ReasoningDelta("", signature=reasoning["signature"]))
            return events
        tool = delta.get("toolUse")
        if isinstance(tool, dict):
            return [ToolCallDelta(call=state.call(block), arguments=tool.get("input") or "")]
        return []
    if event_type == "contentBlockStart":
        tool = (payload.get("start") or {}).get("toolUse")
        if isinstance(tool, dict):
            return [ToolCallDelta(call=state.call(block), id=tool.get("toolUseId"), name=tool.get("name"))]
        return []
    if event_type == "messageStop":
        return [Finish(_STOP_REASONS.get(payload.get("stopReason"), "stop"))]
    if event_type == "metadata":
        return [_usage(payload.get("usage") or {})]
    return []  # messageStart, contentBlockStop


def converse_events(payload: dict[str, Any]) -> list[Event]:
    """Our events in a whole Converse answer.

    Sample (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html)::

        {"output": {"message": {"role": "assistant", "content": [
             {"reasoningContent": {"reasoningText": {"text": "Let me see.", "signature": "EqoB…"}}},
             {"text": "Hello!"},
             {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}}]}},
         "stopReason": "tool_use",
         "usage": {"inputTokens": 12, "outputTokens": 30, "totalTokens": 42},
         "metrics": {"latencyMs": 812}}
    """
    message = (payload.get("output") or {}).get("message") or {}
    events: list[Event] = []
    call = 0
    for block in message.get("content") or ():
        if isinstance(block.get("text"), str):
            if block["text"]:
                events.append(TextDelta(block["text"]))
        elif isinstance(block.get("reasoningContent"), dict):
            reasoning = block["reasoningContent"].get("reasoningText") or {}
            if isinstance(reasoning.get("text"), str):
                events.append(ReasoningDelta(reasoning["text"], signature=reasoning.get("signature")))
        elif isinstance(block.get("toolUse"), dict):
            tool = block["toolUse"]
            arguments = orjson.dumps(tool.get("input") or {}).decode()
            events.append(ToolCallDelta(call, id=tool.get("toolUseId"), name=tool.get("name"), arguments=arguments))
            call += 1
    events.append(Finish(_STOP_REASONS.get(payload.get("stopReason"), "stop")))
    events.append(_usage(payload.get("usage") or {}))
    return events


def stream_error(exception_type: str, payload: bytes, secrets: Iterable[str]) -> ServingError:
    """Our error for an exception message inside a ConverseStream.

    Sample: headers ``:message-type: exception``, ``:exception-type: throttlingException``;
    payload ``{"message": "Too many requests, please wait before trying again."}``.
    """
    status = _STREAM_ERRORS.get(exception_type, 503)
    return http.error_for_status(LABEL, status, payload, None, secrets=secrets)


def titan_vector(payload: Any) -> tuple[list[float], int]:
    """The vector and token count of a Titan Embeddings answer.

    Sample: ``{"embedding": [0.012, -0.034, …], "inputTextTokenCount": 3}``
    """
    vector = payload.get("embedding") if isinstance(payload, dict) else None
    if not isinstance(vector, list):
        raise ServingError(f"{LABEL} returned no embedding.", "TEMPORARILY_UNAVAILABLE")
    return vector, int(payload.get("inputTextTokenCount") or 0)


def _usage(usage: dict[str, Any]) -> Usage:
    return Usage(int(usage.get("inputTokens") or 0), int(usage.get("outputTokens") or 0))


def _frames(buffer: EventStreamBuffer) -> Iterator[EventStreamMessage]:
    try:
        yield from buffer
    except ParserError:
        raise ServingError(f"{LABEL} sent a malformed event-stream message.", "TEMPORARILY_UNAVAILABLE") from None


# --- the provider --------------------------------------------------------------------------


class BedrockProvider(Provider):
    """Serves chat (any Converse model) and embeddings (Titan and Cohere Embed) from Amazon Bedrock."""

    tasks = frozenset({CHAT, EMBEDDINGS})
    supported_params = PARAMS
    supported_extra_params = None  # passed to the model as additionalModelRequestFields
    vision = True
    counts_image_tokens = True  # Bedrock's inputTokens count the images

    def __init__(self, spec: EntitySpec) -> None:
        super().__init__(spec)
        self._timeout = http.entity_timeout(spec.config)
        config = spec.config
        region = config.get("aws_region")
        if not isinstance(region, str) or not _REGION.match(region.strip()):
            raise invalid("An amazon-bedrock endpoint needs 'aws_region', an AWS region such as us-east-1.")
        self.region = region.strip()
        key_id, secret = config.get("aws_access_key_id"), config.get("aws_secret_access_key")
        for name, value in (("aws_access_key_id", key_id), ("aws_secret_access_key", secret)):
            if not isinstance(value, str) or not value.strip():
                # never echo a value: it may be the other credential pasted in the wrong field
                raise invalid(f"An amazon-bedrock endpoint needs '{name}' (the resolved credential, a string).")
        token = config.get("aws_session_token")
        if token is not None and not isinstance(token, str):
            raise invalid("'aws_session_token' must be the resolved token, a string.")
        self._credentials = Credentials(key_id.strip(), secret.strip(), token or None)
        self._secrets = tuple(s for s in (secret.strip(), token, key_id.strip()) if s)
        vendor = config.get("bedrock_provider")
        if not isinstance(vendor, str) or vendor.strip().lower() not in BEDROCK_PROVIDERS:
            raise invalid(
                f"'bedrock_provider' must name the model's maker on Bedrock: one of {', '.join(BEDROCK_PROVIDERS)}."
            )
        self.bedrock_provider = vendor.strip().lower()
        if spec.task == EMBEDDINGS and self.bedrock_provider not in ("amazon", "cohere"):
            raise invalid(
                "Embeddings on Amazon Bedrock are served for Amazon Titan and Cohere Embed models "
                f"(bedrock_provider 'amazon' or 'cohere'); this one is '{self.bedrock_provider}'."
            )
        self.endpoint_url = _endpoint_url(config.get("bedrock_endpoint_url"), self.region)
        self._model_path = "/model/" + quote(spec.model, safe="")

    def __repr__(self) -> str:  # never the credentials
        return f"<BedrockProvider {self.spec.model!r} in {self.region}>"

    def describe(self) -> dict[str, Any]:
        return {
            "aws_region": self.region,
            "bedrock_provider": self.bedrock_provider,
            "bedrock_endpoint_url": http.safe_url(self.endpoint_url),
            "upstream_model": self.spec.model,
        }

    def chat(self, request: ChatRequest) -> AsyncIterator[Event]:
        body = orjson.dumps(converse_body(request, self.bedrock_provider))
        if request.stream:
            return self._stream(body)
        return self._whole(body)

    async def embed(self, request: EmbeddingsRequest) -> Embeddings:
        texts, extra = request.texts, request.extra_params
        if self.bedrock_provider == "cohere":
            batches = [texts[i:i + COHERE_BATCH] for i in range(0, len(texts), COHERE_BATCH)]
            answers = await gather_all(self._invoke(orjson.dumps(cohere_embed_body(batch, extra))) for batch in batches)
            vectors = [
                vector for (payload, _), batch in zip(answers, batches)
                for vector in cohere_embed_vectors(LABEL, payload, len(batch))
            ]
            return Embeddings(vectors, sum(tokens for _, tokens in answers))
        limit = asyncio.Semaphore(TITAN_CONCURRENCY)

        async def one(text: str) -> tuple[list[float], int]:
            async with limit:
                payload, tokens = await self._invoke(orjson.dumps(titan_body(text, extra)))
            vector, counted = titan_vector(payload)
            return vector, tokens or counted

        results = await gather_all(one(text) for text in texts)
        return Embeddings([vector for vector, _ in results], sum(tokens for _, tokens in results))

    # --- calls ---------------------------------------------------------------------------

    def _signed(self, url: str, body: bytes, accept: str) -> dict[str, str]:
        """The headers of a POST of ``body`` to ``url``, SigV4-signed (a fresh signature per call)."""
        headers = {"content-type": "application/json", "accept": accept}
        request = AWSRequest(method="POST", url=url, data=body, headers=headers)
        SigV4Auth(self._credentials, SERVICE, self.region).add_auth(request)
        return dict(request.headers.items())

    async def _stream(self, body: bytes) -> AsyncIterator[Event]:
        """Relay a ConverseStream as our events, per the contract in :mod:`.base`: usage (from
        the ``metadata`` event) last, and ``Finish`` even if the stream ended without ``messageStop``."""
        url = f"{self.endpoint_url}{self._model_path}/converse-stream"
        state = StreamState()
        finished = False
        usage: Usage | None = None
        headers = self._signed(url, body, EVENT_STREAM)
        async with http.open_stream(LABEL, url, body, headers, self._timeout, secrets=self._secrets) as response:
            buffer = EventStreamBuffer()
            async for chunk in response.aiter_bytes():
                buffer.add_data(chunk)
                for frame in _frames(buffer):
                    for event in self._read(frame, state):
                        if type(event) is Usage:
                            usage = event
                        else:
                            finished = finished or type(event) is Finish
                            yield event
        if not finished:
            yield Finish("stop")
        yield usage if usage is not None else Usage(0, 0)

    def _read(self, frame: EventStreamMessage, state: StreamState) -> list[Event]:
        headers = frame.headers
        kind = headers.get(":message-type")
        if kind == "exception":
            raise stream_error(str(headers.get(":exception-type")), frame.payload, self._secrets)
        if kind == "error":  # a framing-level error: the reason travels in headers
            message = http.redact(str(headers.get(":error-message") or headers.get(":error-code") or ""), self._secrets)
            detail = message or "the stream ended with an error."
            raise ServingError(f"{LABEL} failed: {detail}", "TEMPORARILY_UNAVAILABLE", retry_after=1)
        payload = http.loads(LABEL, frame.payload) if frame.payload else {}
        if not isinstance(payload, dict):
            raise ServingError(f"{LABEL} sent a malformed stream event.", "TEMPORARILY_UNAVAILABLE")
        return stream_events(str(headers.get(":event-type")), payload, state)

    async def _whole(self, body: bytes) -> AsyncIterator[Event]:
        url = f"{self.endpoint_url}{self._model_path}/converse"
        headers = self._signed(url, body, "application/json")
        payload = await http.post_json(LABEL, url, body, headers, self._timeout, secrets=self._secrets)
        if not isinstance(payload, dict):
            raise ServingError(f"{LABEL} answered with an unexpected body.", "TEMPORARILY_UNAVAILABLE")
        for event in converse_events(payload):
            yield event

    async def _invoke(self, body: bytes) -> tuple[Any, int]:
        """InvokeModel: the decoded answer and the input token count Bedrock reports in a header."""
        url = f"{self.endpoint_url}{self._model_path}/invoke"
        headers = self._signed(url, body, "application/json")
        async with http.open_stream(LABEL, url, body, headers, self._timeout, secrets=self._secrets) as response:
            content = await response.aread()
            tokens = int(response.headers.get("x-amzn-bedrock-input-token-count") or 0)
        try:
            return orjson.loads(content), tokens
        except orjson.JSONDecodeError:
            raise ServingError(f"{LABEL} answered with a body that is not JSON.", "TEMPORARILY_UNAVAILABLE") from None


def _endpoint_url(value: Any, region: str) -> str:
    if value is None or value == "":
        return f"https://bedrock-runtime.{region}.amazonaws.com"
    parts = urlsplit(value.strip()) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(f"'bedrock_endpoint_url' must be an http:// or https:// URL; got '{http.safe_url(str(value))}'.")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))

