"""A fake Amazon Bedrock runtime over real HTTP on 127.0.0.1 (stdlib and botocore only).

It checks every request's Signature Version 4 for real: it recomputes the signature with
botocore's signer from the request it received (method, raw path, the signed headers, the body)
and the known test secret, and answers 403 as Bedrock does when it differs. It streams in AWS
event-stream framing (``application/vnd.amazon.eventstream``): each message is a prelude (total
and headers length, CRC32), string headers ``:event-type``/``:message-type``/``:content-type``,
a JSON payload and a message CRC32, so a provider under test runs botocore's real parser.

Routes: ``POST /model/{modelId}/converse``, ``/model/{modelId}/converse-stream`` and
``/model/{modelId}/invoke`` (Titan ``{"inputText"}`` and Cohere ``{"texts"}`` embeddings).

Use the ``bedrock_upstream`` fixture (a fresh server per test)::

    provider = BedrockProvider(spec(aws_access_key_id=FakeBedrock.ACCESS_KEY, ...,
                                    bedrock_endpoint_url=bedrock_upstream.url))
    bedrock_upstream.pieces = ["Hi", "!"]
    bedrock_upstream.fail(429, "ThrottlingException", "Too many requests")
    sent = bedrock_upstream.last_request             # .path (raw, model id encoded) .headers .json

Knobs (plain attributes; set them before the request):

- ``pieces``: answer text pieces (one ``contentBlockDelta`` each).
- ``reasoning_pieces`` and ``signature``: a reasoning block streamed before the text, its
  signature in a last delta.
- ``tool_calls``: ``[{"name", "input"}]``, answered after the text with ``stopReason: tool_use``
  (streamed as ``contentBlockStart`` with the id and name, then the input JSON in two deltas).
- ``stop_reason``, ``usage`` (``{"inputTokens", "outputTokens"}``).
- ``chunk_delay``: seconds between stream messages (a slow stream, to test cancellation).
- ``stream_exception``: ``(type, message)`` sent as an exception message, before any event when
  ``exception_first`` else after the first content delta; the stream then ends.
- ``corrupt_crc``: spoil the message CRC of the first content delta.
- ``session_token``: the token requests must carry (signed) in ``X-Amz-Security-Token``.
- ``fail(status, error_type, message, times=None)``: answer every request (or the next
  ``times``) as Bedrock answers an error.

Recorded: ``requests`` (see :class:`~tests.fakes.base.RecordedRequest`),
``last_request``, ``disconnects`` and ``wait_for_disconnect``.
"""
from __future__ import annotations

import datetime
import hmac
import json
import re
import struct
import zlib
from typing import Any, Iterator
from urllib.parse import unquote

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.fakes.base import FakeUpstream, RecordedRequest, UpstreamHandler

_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})$"
)
_ROUTE = re.compile(r"^/model/(?P<model>[^/]+)/(?P<action>converse|converse-stream|invoke)$")


class FakeBedrock(FakeUpstream):
    ACCESS_KEY = "AKIAFAKEBEDROCK0000"
    SECRET_KEY = "fake/Secret+Key0123456789abcdefghijKLMN"
    REGION = "us-east-1"

    def reset(self) -> None:
        super().reset()
        self.reasoning_pieces: list[str] = []
        self.signature = "EqoBCkgIARAB-fake-signature"
        self.tool_calls: list[dict[str, Any]] = []  # [{"name", "input"}]
        self.stop_reason = "end_turn"
        self.usage = {"inputTokens": 11, "outputTokens": 4}
        self.stream_exception: tuple[str, str] | None = None
        self.exception_first = False
        self.corrupt_crc = False
        self.session_token: str | None = None
        self.error_times: int | None = None

    def fail(
        self, status: int, error_type: str = "ValidationException", message: str = "Bad request.",
        *, times: int | None = None,
    ) -> None:
        """Answer as Bedrock answers an error (``{"message"}`` and ``x-amzn-errortype``): every
        request, or the next ``times`` ones."""
        self.error = (status, json.dumps({"message": message}).encode(), _error_headers(error_type))
        self.error_times = times

    @property
    def base_url(self) -> str:
        """What goes in ``bedrock_endpoint_url``."""
        return self.url


def _error_headers(error_type: str) -> dict[str, str]:
    return {
        "x-amzn-errortype": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        "x-amzn-requestid": "00000000-0000-0000-0000-000000000000",
    }


def event_stream_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (lengths + CRC), string headers, payload, message CRC."""
    encoded = b"".join(_header(name.encode(), value.encode()) for name, value in headers.items())
    prelude = struct.pack("!II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack("!I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack("!I", zlib.crc32(message))


def _header(name: bytes, value: bytes) -> bytes:
    """A header of type 7 (string): name length, name, type, value length, value."""
    return struct.pack("!B", len(name)) + name + b"\x07" + struct.pack("!H", len(value)) + value


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    # Bedrock pads payloads with a "p" field of random length, so sizes do not leak the content.
    body = json.dumps({**payload, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"[: 4 + len(event_type)]}).encode()
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return event_stream_message(headers, body)


def exception(exception_type: str, message: str) -> bytes:
    body = json.dumps({"message": message}).encode()
    return event_stream_message(
        {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"}, body
    )


class _BedrockHandler(UpstreamHandler[FakeBedrock]):
    def respond(self, request: RecordedRequest) -> None:
        fake = self.fake
        refused = _check_signature(fake, request.path, request.headers, request.raw)
        if refused is not None:
            status, error_type, message = refused
            self._send_json(status, json.dumps({"message": message}).encode(), _error_headers(error_type))
            return
        if fake.error is not None:
            error = fake.error
            if fake.error_times is not None:
                fake.error_times -= 1
                if fake.error_times <= 0:
                    fake.error = None
            self._send_json(*error)
            return
        route = _ROUTE.match(self.path)
        if route is None:
            message = json.dumps({"message": f"Unknown operation {self.path}"}).encode()
            self._send_json(404, message, _error_headers("UnknownOperationException"))
            return
        body = request.json
        if not isinstance(body, dict):
            message = json.dumps({"message": "Malformed input request, please reformat your input and try again."})
            self._send_json(400, message.encode(), _error_headers("ValidationException"))
            return
        action = route["action"]
        if action == "converse":
            self._send_json(200, json.dumps(_whole_answer(fake)).encode())
        elif action == "converse-stream":
            self._stream(fake)
        else:
            self._invoke(body)

    def _stream(self, fake: FakeBedrock) -> None:
        self._start_stream("application/vnd.amazon.eventstream",
                           {"x-amzn-requestid": "00000000-0000-0000-0000-000000000000"})
        if fake.stream_exception is not None and fake.exception_first:
            self._write_chunk(exception(*fake.stream_exception))
            self._end_stream()
            return
        first_delta = True
        for kind, message in self._paced(_stream_messages(fake)):
            if kind == "contentBlockDelta" and first_delta and fake.corrupt_crc:
                message = message[:-4] + bytes(b ^ 0xFF for b in message[-4:])
            self._write_chunk(message)
            if kind == "contentBlockDelta" and first_delta:
                first_delta = False
                if fake.stream_exception is not None:
                    self._write_chunk(exception(*fake.stream_exception))
                    break
        self._end_stream()

    def _invoke(self, body: dict[str, Any]) -> None:
        # Vector i is [i, len(text), 0.5]: a test can tell which input it belongs to.
        if "inputText" in body:
            text = str(body["inputText"])
            tokens = len(text.split())
            answer: dict[str, Any] = {"embedding": [0.0, float(len(text)), 0.5], "inputTextTokenCount": tokens}
        else:
            texts = list(body.get("texts") or [])
            tokens = sum(len(str(t).split()) for t in texts)
            answer = {
                "id": "emb-fake", "response_type": "embeddings_by_type", "texts": texts,
                "embeddings": {"float": [[float(i), float(len(t)), 0.5] for i, t in enumerate(texts)]},
            }
        self._send_json(200, json.dumps(answer).encode(), {"X-Amzn-Bedrock-Input-Token-Count": str(tokens)})


FakeBedrock.handler = _BedrockHandler


def _check_signature(fake: FakeBedrock, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, str] | None:
    """Why Bedrock would refuse this request's credentials or signature, or None when it is valid."""
    match = _AUTHORIZATION.match(headers.get("authorization", ""))
    if match is None:
        return 403, "MissingAuthenticationTokenException", "Missing Authentication Token"
    if match["key"] != fake.ACCESS_KEY:
        return 403, "UnrecognizedClientException", "The security token included in the request is invalid."
    if (match["region"], match["service"]) != (fake.REGION, "bedrock"):
        return 403, "InvalidSignatureException", "Credential should be scoped to a valid region and service 'bedrock'."
    stamp = headers.get("x-amz-date", "")
    try:
        when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return 403, "IncompleteSignatureException", "Authorization header requires a 'X-Amz-Date' header."
    if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 300 or stamp[:8] != match["date"]:
        return 403, "InvalidSignatureException", "Signature expired or not yet current."
    signed = match["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed or any(name not in headers for name in signed):
        return 403, "InvalidSignatureException", "The request signature does not cover the required headers."
    if fake.session_token is not None and (
        headers.get("x-amz-security-token") != fake.session_token or "x-amz-security-token" not in signed
    ):
        return 403, "UnrecognizedClientException", "The security token included in the request is invalid."
    request = AWSRequest(method="POST", url=f"http://{headers['host']}{path}", data=body,
                         headers={name: headers[name] for name in signed})
    request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(fake.ACCESS_KEY, fake.SECRET_KEY), "bedrock", fake.REGION)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected, match["signature"]):
        return 403, "InvalidSignatureException", (
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    return None


def model_of(path: str) -> str:
    """The model id of a recorded request's path (decoded)."""
    route = _ROUTE.match(path)
    assert route is not None, f"not a Bedrock runtime path: {path}"
    return unquote(route["model"])


def _stream_messages(fake: FakeBedrock) -> Iterator[tuple[str, bytes]]:
    def send(kind: str, payload: dict[str, Any]) -> tuple[str, bytes]:
        return kind, event(kind, payload)

    yield send("messageStart", {"role": "assistant"})
    block = 0
    if fake.reasoning_pieces:
        for piece in fake.reasoning_pieces:
            yield send("contentBlockDelta", {"contentBlockIndex": block, "delta": {"reasoningContent": {"text": piece}}})
        signature = {"reasoningContent": {"signature": fake.signature}}
        yield send("contentBlockDelta", {"contentBlockIndex": block, "delta": signature})
        yield send("contentBlockStop", {"contentBlockIndex": block})
        block += 1
    if fake.pieces:
        for piece in fake.pieces:
            yield send("contentBlockDelta", {"contentBlockIndex": block, "delta": {"text": piece}})
        yield send("contentBlockStop", {"contentBlockIndex": block})
        block += 1
    for i, call in enumerate(fake.tool_calls):
        start = {"toolUse": {"toolUseId": f"tooluse_{i}", "name": call["name"]}}
        yield send("contentBlockStart", {"contentBlockIndex": block, "start": start})
        arguments = json.dumps(call["input"])
        half = len(arguments) // 2
        for fragment in (arguments[:half], arguments[half:]):
            yield send("contentBlockDelta", {"contentBlockIndex": block, "delta": {"toolUse": {"input": fragment}}})
        yield send("contentBlockStop", {"contentBlockIndex": block})
        block += 1
    yield send("messageStop", {"stopReason": "tool_use" if fake.tool_calls else fake.stop_reason})
    usage = {**fake.usage, "totalTokens": fake.usage["inputTokens"] + fake.usage["outputTokens"]}
    yield send("metadata", {"usage": usage, "metrics": {"latencyMs": 42}})


def _whole_answer(fake: FakeBedrock) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if fake.reasoning_pieces:
        reasoning = {"text": "".join(fake.reasoning_pieces), "signature": fake.signature}
        content.append({"reasoningContent": {"reasoningText": reasoning}})
    if fake.pieces:
        content.append({"text": "".join(fake.pieces)})
    for i, call in enumerate(fake.tool_calls):
        content.append({"toolUse": {"toolUseId": f"tooluse_{i}", "name": call["name"], "input": call["input"]}})
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": "tool_use" if fake.tool_calls else fake.stop_reason,
        "usage": {**fake.usage, "totalTokens": fake.usage["inputTokens"] + fake.usage["outputTokens"]},
        "metrics": {"latencyMs": 42},
    }


@pytest.fixture
def bedrock_upstream() -> Iterator[FakeBedrock]:
    """A fake Bedrock runtime on 127.0.0.1, fresh for each test."""
    with FakeBedrock() as fake:
        yield fake
