"""A fake Google vendor over real HTTP on 127.0.0.1: the Gemini API, Vertex AI and an OAuth token endpoint.

It speaks the real wire formats — generateContent JSON, ``streamGenerateContent?alt=sse`` as
``text/event-stream`` with chunked transfer encoding, Google's error body
``{"error": {"code", "message", "status"}}`` — so a provider under test runs its real HTTP
client, SSE parser, google-auth token refresh and connection pool against it.

Routes (the part of the path after the last ``:`` is the method):

- ``POST /v1beta/models/{model}:generateContent``, ``:streamGenerateContent``, ``:embedContent``,
  ``:batchEmbedContents`` — the Gemini API; ``x-goog-api-key`` must be ``api_key`` (else the
  400 ``API key not valid`` Gemini answers).
- ``POST /v1/projects/{project}/locations/{region}/publishers/google/models/{model}:generateContent``,
  ``:streamGenerateContent``, ``:predict`` — Vertex AI; ``Authorization`` must be ``Bearer`` and a
  token this fake issued (else 401 ``UNAUTHENTICATED``).
- ``POST /token`` — the OAuth JWT-bearer grant a service account makes: the assertion's RS256
  signature is checked with ``public_key`` and its claims (issuer, audience, scope, expiry);
  the answer is ``{"access_token": "ya29.fake-N", "expires_in": token_expires_in, ...}``.

Use the ``gemini_upstream`` fixture (a fresh server per test) and :func:`service_account_json`
(a throwaway RSA key whose public half the token endpoint then checks)::

    provider = GeminiProvider(spec(gemini_api_key=gemini_upstream.api_key, gemini_api_base=gemini_upstream.url))
    gemini_upstream.fail(429, "Resource exhausted", status_text="RESOURCE_EXHAUSTED", headers={"Retry-After": "7"})
    sent = gemini_upstream.last_request             # .method .path .headers .json .raw

Knobs (plain attributes; set them before the request):

- ``pieces``: text pieces every candidate streams (joined for generateContent).
- ``thoughts``: thought pieces sent before the text when the request asks ``includeThoughts``.
- ``signature``: a ``thoughtSignature`` put, as Gemini 3 does, on the first ``functionCall``
  part, else on a last empty text part.
- ``function_calls``: ``[{"name", "args"}]`` answered instead of text, all in one chunk.
- ``finish_reason``: every candidate's ``finishReason`` (``None`` sends none).
- ``usage``: the final ``usageMetadata`` (earlier chunks carry only ``promptTokenCount``).
- ``block_reason``: answer ``promptFeedback.blockReason`` and no candidates.
- ``fail(status, message, ...)``: answer every vendor request with that status and error body.
- ``mid_stream_error``: an error object sent as a ``data:`` event after the first chunk.
- ``token_error``: ``(status, body)`` the token endpoint answers instead of a token.
- ``token_expires_in``: the tokens' lifetime in seconds; ``token_delay``: seconds before it answers.
- ``delay`` / ``chunk_delay`` (as every fake, :mod:`tests.fakes.base`): wait before answering / between chunks.

Recorded: ``requests`` (vendor calls, :class:`RecordedRequest`), ``last_request``,
``token_requests`` (the decoded claims of each good JWT grant), ``issued_tokens``.
"""
from __future__ import annotations

import base64
import functools
import json
import time
import urllib.parse
from typing import Any, Iterator

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.base import FakeUpstream, RecordedRequest, UpstreamHandler

CLIENT_EMAIL = "fondasi-test@fondasi-test.iam.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
AUDIENCE = "https://oauth2.googleapis.com/token"  # what a grant is addressed to, wherever it is posted


class FakeGeminiUpstream(FakeUpstream):
    def reset(self) -> None:
        super().reset()
        self.api_key = "AIzaSy-test-0123456789abcdef"
        self.thoughts: list[str] = []
        self.signature: str | None = None
        self.function_calls: list[dict[str, Any]] = []
        self.finish_reason: str | None = "STOP"
        self.usage: dict[str, int] | None = {"promptTokenCount": 7, "candidatesTokenCount": 4, "totalTokenCount": 11}
        self.block_reason: str | None = None
        self.mid_stream_error: dict[str, Any] | None = None
        self.public_key: rsa.RSAPublicKey | None = None
        self.token_expires_in = 3600
        self.token_delay = 0.0
        self.token_error: tuple[int, dict[str, Any]] | None = None
        self.token_requests: list[dict[str, Any]] = []
        self.issued_tokens: list[str] = []

    def fail(
        self,
        status: int,
        message: str = "Something went wrong.",
        *,
        status_text: str = "INVALID_ARGUMENT",
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> None:
        """Answer every vendor request with ``status`` and Google's error body (or ``body`` verbatim)."""
        if body is None:
            body = json.dumps({"error": {"code": status, "message": message, "status": status_text}}).encode()
        self.error = (status, body, dict(headers or {}))

    @property
    def base_url(self) -> str:
        """What goes in ``gemini_api_base`` or ``vertex_api_base``."""
        return self.url

    @property
    def token_uri(self) -> str:
        return self.url + "/token"


class _GeminiHandler(UpstreamHandler[FakeGeminiUpstream]):
    def do_POST(self) -> None:
        if self.path.partition("?")[0] == "/token":  # not a vendor call: neither recorded nor delayed
            self._token(self.rfile.read(int(self.headers.get("content-length") or 0)))
        else:
            super().do_POST()

    def respond(self, request: RecordedRequest) -> None:
        fake = self.fake
        if fake.error is not None:
            self._send_json(*fake.error)
            return
        route, _, query = self.path.partition("?")
        vertex = route.startswith("/v1/projects/")
        refusal = self._refusal(request.headers, vertex)
        if refusal is not None:
            self._send_json(*refusal)
            return
        body = request.json if isinstance(request.json, dict) else {}
        method = route.rpartition(":")[2]
        if method == "generateContent":
            self._send_json(200, json.dumps(_full_answer(fake, body)).encode())
        elif method == "streamGenerateContent" and "alt=sse" in query:
            self._stream(body)
        elif method == "embedContent" and not vertex:
            text = body["content"]["parts"][0]["text"]
            self._send_json(200, json.dumps({"embedding": {"values": _vector(0, text)}}).encode())
        elif method == "batchEmbedContents" and not vertex:
            model = "models/" + route.rpartition("/models/")[2].rpartition(":")[0]
            items = body.get("requests") or []
            if any(item.get("model") != model for item in items):
                self._send_json(*_google_error(400, f"Each request's model must be {model}.", "INVALID_ARGUMENT"))
                return
            vectors = [{"values": _vector(i, item["content"]["parts"][0]["text"])} for i, item in enumerate(items)]
            self._send_json(200, json.dumps({"embeddings": vectors}).encode())
        elif method == "predict" and vertex:
            self._send_json(200, json.dumps(_predictions(body)).encode())
        else:
            self._send_json(*_google_error(404, f"Method not found: {self.path}", "NOT_FOUND"))

    def _refusal(self, headers: dict[str, str], vertex: bool) -> tuple[int, bytes] | None:
        fake = self.fake
        if vertex:
            token = headers.get("authorization", "").removeprefix("Bearer ")
            if token not in fake.issued_tokens:
                return _google_error(
                    401, "Request had invalid authentication credentials. Expected OAuth 2 access token.",
                    "UNAUTHENTICATED",
                )
        elif headers.get("x-goog-api-key") != fake.api_key:
            return _google_error(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT")
        return None

    def _stream(self, request: dict[str, Any]) -> None:
        fake = self.fake
        self._start_stream()
        for chunk in self._paced(_stream_chunks(fake, request)):
            self._write_chunk(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
            if fake.mid_stream_error is not None:
                self._write_chunk(b"data: " + json.dumps(fake.mid_stream_error).encode() + b"\r\n\r\n")
                break
        self._end_stream()

    def _token(self, raw: bytes) -> None:
        """The OAuth token endpoint: check the JWT grant, answer an access token."""
        fake = self.fake
        time.sleep(fake.token_delay)
        if fake.token_error is not None:
            status, error = fake.token_error
            self._send_json(status, json.dumps(error).encode())
            return
        form = urllib.parse.parse_qs(raw.decode())
        claims = None
        if form.get("grant_type") == [GRANT_TYPE] and len(form.get("assertion", [])) == 1:
            claims = _verified_claims(form["assertion"][0], fake)
        if claims is None:
            body = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            self._send_json(400, json.dumps(body).encode())
            return
        fake.token_requests.append(claims)
        token = f"ya29.fake-{len(fake.token_requests)}"
        fake.issued_tokens.append(token)
        answer = {"access_token": token, "expires_in": fake.token_expires_in, "token_type": "Bearer"}
        self._send_json(200, json.dumps(answer).encode())


FakeGeminiUpstream.handler = _GeminiHandler


def _google_error(status: int, message: str, status_text: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"code": status, "message": message, "status": status_text}}).encode()


def _verified_claims(assertion: str, fake: FakeGeminiUpstream) -> dict[str, Any] | None:
    """The claims of ``assertion`` if it is an RS256 JWT signed by the service account's key and meant for us."""
    try:
        header, payload, signature = assertion.split(".")
        if json.loads(_unb64(header)).get("alg") != "RS256" or fake.public_key is None:
            return None
        fake.public_key.verify(
            _unb64(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        claims = json.loads(_unb64(payload))
    except (ValueError, InvalidSignature):
        return None
    good = (
        claims.get("iss") == CLIENT_EMAIL and claims.get("aud") == AUDIENCE
        and claims.get("scope") == SCOPE and claims.get("exp", 0) > time.time()
    )
    return claims if good else None


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _vector(index: int, text: str) -> list[float]:
    """Vector ``index`` is [index, len(text), 0.5]: a test can tell which input it belongs to."""
    return [float(index), float(len(text)), 0.5]


def _predictions(request: dict[str, Any]) -> dict[str, Any]:
    instances = request.get("instances") or []
    predictions = [
        {"embeddings": {"values": _vector(i, inst["content"]),
                        "statistics": {"token_count": float(len(inst["content"].split())), "truncated": False}}}
        for i, inst in enumerate(instances)
    ]
    characters = sum(len(instance["content"]) for instance in instances)
    return {"predictions": predictions, "metadata": {"billableCharacterCount": characters}}


def _candidate(index: int, parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
    if index:  # proto3 JSON leaves out zero values
        candidate["index"] = index
    if finish:
        candidate["finishReason"] = finish
    return candidate


def _shows_thoughts(request: dict[str, Any]) -> bool:
    return bool(((request.get("generationConfig") or {}).get("thinkingConfig") or {}).get("includeThoughts"))


def _choices(request: dict[str, Any]) -> int:
    return int((request.get("generationConfig") or {}).get("candidateCount") or 1)


def _calls(fake: FakeGeminiUpstream) -> list[dict[str, Any]]:
    parts = [{"functionCall": {"name": c["name"], "args": c["args"]}} for c in fake.function_calls]
    if parts and fake.signature:
        parts[0]["thoughtSignature"] = fake.signature
    return parts


def _stream_chunks(fake: FakeGeminiUpstream, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    prompt = {"promptTokenCount": (fake.usage or {}).get("promptTokenCount", 0)}
    if fake.block_reason:
        yield {"promptFeedback": {"blockReason": fake.block_reason}, "usageMetadata": prompt}
        return
    n = _choices(request)
    if _shows_thoughts(request):
        for piece in fake.thoughts:
            for index in range(n):
                yield {"candidates": [_candidate(index, [{"text": piece, "thought": True}])], "usageMetadata": prompt}
    final = {"usageMetadata": fake.usage} if fake.usage is not None else {}
    if fake.function_calls:
        for index in range(n):
            yield {"candidates": [_candidate(index, _calls(fake), fake.finish_reason)], **final}
        return
    for piece in fake.pieces:
        for index in range(n):
            yield {"candidates": [_candidate(index, [{"text": piece}])], "usageMetadata": prompt}
    closing = {"text": "", "thoughtSignature": fake.signature} if fake.signature else {"text": ""}
    for index in range(n):
        yield {"candidates": [_candidate(index, [closing], fake.finish_reason)], **final}


def _full_answer(fake: FakeGeminiUpstream, request: dict[str, Any]) -> dict[str, Any]:
    prompt = {"promptTokenCount": (fake.usage or {}).get("promptTokenCount", 0)}
    if fake.block_reason:
        return {"promptFeedback": {"blockReason": fake.block_reason}, "usageMetadata": prompt}
    parts: list[dict[str, Any]] = []
    if _shows_thoughts(request) and fake.thoughts:
        parts.append({"text": "".join(fake.thoughts), "thought": True})
    if fake.function_calls:
        parts.extend(_calls(fake))
    else:
        text: dict[str, Any] = {"text": "".join(fake.pieces)}
        if fake.signature:
            text["thoughtSignature"] = fake.signature
        parts.append(text)
    answer: dict[str, Any] = {
        "candidates": [_candidate(index, list(parts), fake.finish_reason) for index in range(_choices(request))],
        "modelVersion": "gemini-fake",
    }
    if fake.usage is not None:
        answer["usageMetadata"] = fake.usage
    return answer


@functools.cache
def _rsa_key() -> rsa.RSAPrivateKey:
    """A throwaway RSA key, made once per test run (making one takes a while)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_key_pem() -> str:
    return _rsa_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def service_account_json(fake: FakeGeminiUpstream) -> str:
    """A service account key file (as text) whose tokens come from ``fake``, which will check its signatures."""
    fake.public_key = _rsa_key().public_key()
    return json.dumps({
        "type": "service_account", "project_id": "fondasi-test", "private_key_id": "key-1",
        "private_key": private_key_pem(), "client_email": CLIENT_EMAIL, "client_id": "1234567890",
        "token_uri": fake.token_uri,
    })


@pytest.fixture
def gemini_upstream() -> Iterator[FakeGeminiUpstream]:
    """A fake Google vendor (Gemini API, Vertex AI, token endpoint) on 127.0.0.1, fresh for each test."""
    with FakeGeminiUpstream() as fake:
        yield fake
