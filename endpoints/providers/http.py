"""HTTP plumbing shared by every provider that calls a vendor over HTTP.

- :func:`get_client` — one pooled ``httpx.AsyncClient`` per running event loop (an AsyncClient's
  connections belong to the loop that opened them; see the note on ``_clients``).
- :func:`timeout` — ``httpx.Timeout`` from settings / environment, with a per-endpoint read timeout.
- :func:`open_stream` — POST and hold the response open for streaming; failures that may pass
  are retried first (below), an error status becomes a :class:`~endpoints.errors.ServingError`
  *before* the caller sees the response, and transport errors raised while the caller reads it
  are mapped too.
- :func:`iter_sse` — server-sent events of a streamed response (parsed by ``httpx-sse``).
- :func:`post_json` — a plain JSON POST (embeddings), retried and mapped the same way.
- :func:`error_for_status`, :func:`error_for_exception`, :func:`error_for_payload` — how upstream
  failures map to our errors:

  ===============================  =======  ==================================================
  upstream                         retried  ours
  ===============================  =======  ==================================================
  401 / 403                        no       400 INVALID_PARAMETER_VALUE "rejected the configured
                                            API key" (the vendor's text is *not* echoed: it
                                            may quote the key)
  408                              no       504 DEADLINE_EXCEEDED
  429                              yes      429 REQUEST_LIMIT_EXCEEDED, upstream ``Retry-After``
                                            (default 1)
  other 4xx                        no       400 INVALID_PARAMETER_VALUE with the vendor's message
  5xx                              yes      503 TEMPORARILY_UNAVAILABLE (retryable), upstream
                                            ``Retry-After``
  connect error / connect timeout  yes      503 "could not reach <url>"
  pool timeout (our pool is full)  no       503
  read / write timeout             no       504 DEADLINE_EXCEEDED
  connection dropped mid-response  no       503
  ===============================  =======  ==================================================

Retries happen only before the response reaches the caller (so before any byte reaches our
client), up to ``FONDASI_HTTP_RETRIES`` times. Each waits the vendor's ``Retry-After``, or else
an exponential backoff with jitter (0.25–0.5 s, then 0.5–1 s, …), never more than
``FONDASI_HTTP_RETRY_MAX_WAIT``: when the vendor asks for longer, its error is returned at once,
with its ``Retry-After``, for the client to wait. A read timeout is not retried: a model too slow
to answer would be paid for twice. Each retry is logged at INFO (the label, the URL without
credentials, the status or the exception's type).

Settings (a Django setting of the same name wins over the environment variable):
``FONDASI_HTTP_MAX_CONNECTIONS`` (200), ``FONDASI_HTTP_MAX_KEEPALIVE_CONNECTIONS`` (50),
``FONDASI_HTTP_KEEPALIVE_EXPIRY`` (30 s), ``FONDASI_HTTP_CONNECT_TIMEOUT`` (5 s),
``FONDASI_HTTP_READ_TIMEOUT`` (300 s), ``FONDASI_HTTP_WRITE_TIMEOUT`` (30 s),
``FONDASI_HTTP_POOL_TIMEOUT`` (30 s), ``FONDASI_HTTP_RETRIES`` (2; 0 turns retries off),
``FONDASI_HTTP_RETRY_MAX_WAIT`` (8 s), ``FONDASI_HTTP_POOLS`` (4: the connection limits are shared between them).

Secrets: callers pass the API keys they send as ``secrets``; they are scrubbed from every vendor
text that reaches an error message, and no URL shown to a user keeps its userinfo or query string.
"""
from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import math
import os
import random
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Iterable, Iterator, Mapping
from urllib.parse import urlsplit

import httpx
import orjson
from httpx_sse import EventSource, ServerSentEvent

from ..errors import STATUS_BY_CODE, ServingError

logger = logging.getLogger(__name__)

USER_AGENT = "fondasi-gateway"
MAX_MESSAGE_CHARS = 1000

_DEFAULTS: dict[str, float] = {
    "FONDASI_HTTP_MAX_CONNECTIONS": 200,
    "FONDASI_HTTP_MAX_KEEPALIVE_CONNECTIONS": 50,
    "FONDASI_HTTP_KEEPALIVE_EXPIRY": 30.0,
    "FONDASI_HTTP_CONNECT_TIMEOUT": 5.0,
    "FONDASI_HTTP_READ_TIMEOUT": 300.0,
    "FONDASI_HTTP_WRITE_TIMEOUT": 30.0,
    "FONDASI_HTTP_POOL_TIMEOUT": 30.0,
    "FONDASI_HTTP_RETRIES": 2,
    "FONDASI_HTTP_RETRY_MAX_WAIT": 8.0,
    "FONDASI_HTTP_POOLS": 4,
}
_MAY_BE_ZERO = frozenset({"FONDASI_HTTP_RETRIES"})
RETRY_BASE_DELAY = 0.5  # seconds: the first backoff is 0.25–0.5 s, doubling after each retry


def setting(name: str) -> float:
    """A numeric HTTP setting: Django settings, else the environment, else the default."""
    value: Any = None
    try:
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured

        try:
            value = getattr(settings, name, None)
        except (ImproperlyConfigured, ImportError):
            value = None  # no settings configured: tests and scripts outside Django
    except ImportError:
        value = None
    if value is None:
        value = os.environ.get(name)
    if value is None or value == "":
        return _DEFAULTS[name]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {value!r}") from None
    if number < 0 or (number == 0 and name not in _MAY_BE_ZERO):
        raise ValueError(f"{name} must be {'zero or more' if name in _MAY_BE_ZERO else 'positive'}; got {value!r}")
    return number


def timeout(read: float | None = None, connect: float | None = None) -> httpx.Timeout:
    """The timeouts for one upstream call; ``read`` and ``connect`` (seconds) override the settings."""
    return httpx.Timeout(
        connect=connect if connect is not None else setting("FONDASI_HTTP_CONNECT_TIMEOUT"),
        read=read if read is not None else setting("FONDASI_HTTP_READ_TIMEOUT"),
        write=setting("FONDASI_HTTP_WRITE_TIMEOUT"),
        pool=setting("FONDASI_HTTP_POOL_TIMEOUT"),
    )


def entity_timeout(config: Mapping[str, Any]) -> httpx.Timeout:
    """The timeouts a served entity's config sets: ``timeout`` (seconds the upstream may stay
    silent: the read timeout) and ``connect_timeout``; the settings' for what it leaves out.
    ServingError(400) naming the field when one is not a positive number."""
    return timeout(read=_config_seconds(config, "timeout"), connect=_config_seconds(config, "connect_timeout"))


def _config_seconds(config: Mapping[str, Any], field: str) -> float | None:
    value = config.get(field)
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ServingError(f"'{field}' must be a number of seconds; got {value!r}.") from None
    if not seconds > 0 or math.isinf(seconds):
        raise ServingError(f"'{field}' must be a positive number of seconds; got {value!r}.")
    return seconds


def limits(pools: int = 1) -> httpx.Limits:
    """The limits of one of ``pools`` pools: the configured totals shared between them."""
    return httpx.Limits(
        max_connections=math.ceil(setting("FONDASI_HTTP_MAX_CONNECTIONS") / pools),
        max_keepalive_connections=math.ceil(setting("FONDASI_HTTP_MAX_KEEPALIVE_CONNECTIONS") / pools),
        keepalive_expiry=setting("FONDASI_HTTP_KEEPALIVE_EXPIRY"),
    )


# --- the pooled client ---------------------------------------------------------------------
# An AsyncClient's pooled connections are bound to the event loop that opened them, so there are
# clients per running loop. Under Daphne/uvicorn that is one set for the process; code that runs
# short-lived loops (``async_to_sync`` from a sync thread, a test per loop) gets a set per loop,
# and the clients of loops that have closed are dropped the next time a set is made (they cannot
# be ``aclose()``d without their loop; their sockets close when collected).
#
# Each loop has FONDASI_HTTP_POOLS clients (4), used in turn: httpcore's pool walks all of its
# connections, polling each idle socket and counting the others for each one, whenever a request
# starts or ends, so with N connections in one pool a request costs O(N²); with N spread over k
# pools it costs k² times less (measured: bench/gateway_cost.py, 32 concurrent requests).
_clients: dict[asyncio.AbstractEventLoop, tuple[list[httpx.AsyncClient], Iterator[httpx.AsyncClient]]] = {}
_ssl_context: Any = None


def get_client() -> httpx.AsyncClient:
    """A pooled client of the running event loop (the loop's clients are made on first use)."""
    loop = asyncio.get_running_loop()
    entry = _clients.get(loop)
    if entry is None or entry[0][0].is_closed:
        for other in [other for other in list(_clients) if other.is_closed()]:
            _clients.pop(other, None)
        pools = max(1, int(setting("FONDASI_HTTP_POOLS")))
        clients = [_new_client(pools) for _ in range(pools)]
        entry = _clients[loop] = (clients, itertools.cycle(clients))
    return next(entry[1])


def _new_client(pools: int) -> httpx.AsyncClient:
    global _ssl_context
    if _ssl_context is None:
        # Built once: loading the CA bundle costs milliseconds, and an SSLContext is not bound
        # to a loop, so every per-loop client shares it.
        _ssl_context = httpx.create_ssl_context()
    return httpx.AsyncClient(
        limits=limits(pools),
        timeout=timeout(),
        verify=_ssl_context,
        headers={"user-agent": USER_AGENT},
        follow_redirects=False,
    )


async def aclose_client() -> None:
    """Close the running loop's clients (ASGI lifespan shutdown, test teardown)."""
    entry = _clients.pop(asyncio.get_running_loop(), None)
    for client in entry[0] if entry is not None else ():
        await client.aclose()


# --- calls ---------------------------------------------------------------------------------


@asynccontextmanager
async def open_stream(
    label: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: httpx.Timeout | None = None,
    *,
    secrets: Iterable[str] = (),
) -> AsyncIterator[httpx.Response]:
    """POST ``body`` (JSON bytes) to ``url`` and yield the open response, status already checked.

    Connect failures, 429 and 5xx are retried before yielding (see the module docstring).
    ``timeout`` None means the timeouts of the settings. Raises :class:`ServingError` for an error
    status (before yielding) and for transport errors and timeouts, whether they happen while
    connecting or while the caller reads the response.
    Leaving the block — normally, by an exception, by ``aclose()`` of an enclosing generator or
    by task cancellation — closes the response, which closes its connection if unread.
    """
    client = get_client()
    try:
        response = await _send(client, label, url, body, headers, timeout, secrets)
        try:
            yield response
        finally:
            await response.aclose()
    except httpx.HTTPError as exc:
        raise error_for_exception(label, url, exc) from exc


async def _send(
    client: httpx.AsyncClient,
    label: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: httpx.Timeout | None,
    secrets: Iterable[str],
) -> httpx.Response:
    """POST until the vendor answers a success status, retrying what may pass (see the module
    docstring); return that response, its body unread. Raises ServingError for a status or a
    connect failure that is not retried (any more), httpx errors for other transport failures."""
    attempt = 0
    while True:
        attempt += 1
        request = client.build_request(
            "POST", url, content=body, headers=headers, timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout
        )
        try:
            response = await client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            wait = retry_wait(attempt, None)
            if wait is None:
                raise error_for_exception(label, url, exc) from exc
            logger.info("%s at %s: %s; retry %d in %.2f s.", label, safe_url(url), type(exc).__name__, attempt, wait)
        else:
            if response.status_code < 400:
                return response
            try:
                await response.aread()
            finally:
                await response.aclose()
            status = response.status_code
            retry_after = _retry_after_seconds(response.headers.get("retry-after"))
            wait = retry_wait(attempt, retry_after) if status == 429 or status >= 500 else None
            if wait is None:
                raise error_for_status(label, status, response.content, response.headers, secrets=secrets)
            logger.info("%s answered HTTP %s; retry %d in %.2f s.", label, status, attempt, wait)
        await asyncio.sleep(wait)


def retry_wait(attempt: int, retry_after: float | None) -> float | None:
    """Seconds to wait before retry number ``attempt`` (from 1), or None to give up now.

    ``retry_after`` is what the vendor asked for, if it did: waited as asked unless it exceeds
    ``FONDASI_HTTP_RETRY_MAX_WAIT``. Otherwise an exponential backoff with jitter, capped.
    """
    if attempt > setting("FONDASI_HTTP_RETRIES"):
        return None
    cap = setting("FONDASI_HTTP_RETRY_MAX_WAIT")
    if retry_after is not None:
        return retry_after if retry_after <= cap else None
    return min(cap, RETRY_BASE_DELAY * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


async def post_json(
    label: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: httpx.Timeout | None = None,
    *,
    secrets: Iterable[str] = (),
) -> Any:
    """POST ``body`` (JSON bytes) and return the decoded JSON answer; errors as :func:`open_stream`."""
    async with open_stream(label, url, body, headers, timeout, secrets=secrets) as response:
        content = await response.aread()
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        raise ServingError(f"{label} answered with a body that is not JSON.", "TEMPORARILY_UNAVAILABLE") from None


def is_event_stream(response: httpx.Response) -> bool:
    return "text/event-stream" in response.headers.get("content-type", "")


def iter_sse(response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
    """The server-sent events of ``response``. Close it (``contextlib.aclosing``) when done early."""
    return EventSource(response).aiter_sse()


def loads(label: str, data: str | bytes) -> Any:
    """Decode one JSON payload from the vendor (an SSE ``data`` field); ServingError if malformed."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ServingError(f"{label} sent a malformed stream event.", "TEMPORARILY_UNAVAILABLE") from None


# --- error mapping -------------------------------------------------------------------------


def error_for_status(
    label: str,
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    secrets: Iterable[str] = (),
) -> ServingError:
    """Our error for an upstream HTTP error status (see the table in the module docstring)."""
    secrets = [s for s in secrets if s]
    retry_after = _retry_after(headers.get("retry-after") if headers is not None else None)
    logger.warning("%s answered HTTP %s", label, status)
    if status in (401, 403):
        if secrets:
            message = f"{label} rejected the configured API key (HTTP {status}). Check the endpoint's API key."
        else:
            message = f"{label} requires an API key (HTTP {status}) and none is configured for this endpoint."
        return ServingError(message, "INVALID_PARAMETER_VALUE", retryable=False)
    detail = _detail(body, secrets)
    suffix = f": {detail}" if detail else "."
    if status == 429:
        return ServingError(
            f"{label} is rate limiting requests (HTTP 429){suffix}", "REQUEST_LIMIT_EXCEEDED", retry_after=retry_after or 1
        )
    if status == 408:
        return ServingError(f"{label} timed out (HTTP 408){suffix}", "DEADLINE_EXCEEDED")
    if status < 500:
        return ServingError(f"{label} rejected the request (HTTP {status}){suffix}", "INVALID_PARAMETER_VALUE")
    return ServingError(
        f"{label} is unavailable (HTTP {status}){suffix}", "TEMPORARILY_UNAVAILABLE", retry_after=retry_after or 1
    )


def error_for_exception(label: str, url: str, exc: Exception) -> ServingError:
    """Our error for an httpx transport error or timeout talking to ``url``."""
    where = safe_url(url)
    logger.warning("%s at %s failed: %s", label, where, type(exc).__name__)
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        why = "connection timed out" if isinstance(exc, httpx.ConnectTimeout) else "connection failed"
        return ServingError(f"Could not reach {where} ({label}): {why}.", "TEMPORARILY_UNAVAILABLE", retry_after=1)
    if isinstance(exc, httpx.PoolTimeout):
        return ServingError(
            f"Too many requests in flight to {label} at {where}; try again shortly.",
            "TEMPORARILY_UNAVAILABLE",
            retry_after=1,
        )
    if isinstance(exc, httpx.TimeoutException):
        return ServingError(f"{label} at {where} did not answer in time.", "DEADLINE_EXCEEDED")
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return ServingError(f"{label} at {where} closed the connection.", "TEMPORARILY_UNAVAILABLE", retry_after=1)
    return ServingError(f"Calling {label} at {where} failed ({type(exc).__name__}).", "TEMPORARILY_UNAVAILABLE", retry_after=1)


def error_for_payload(label: str, payload: Mapping[str, Any], *, secrets: Iterable[str] = ()) -> ServingError:
    """Our error for an error object the vendor sent inside a 200 answer (e.g. mid-stream).

    Payload shapes seen: ``{"error": {"message", "type", "code"}}`` (OpenAI, vLLM, llama.cpp),
    ``{"error": "text"}`` (Ollama), ``{"error_code", "message"}`` (Databricks, Fondasi itself).
    """
    secrets = [s for s in secrets if s]
    code = payload.get("error_code")
    error = payload.get("error")
    status = None
    if isinstance(error, Mapping):
        for key in ("code", "status"):
            if isinstance(error.get(key), int) and 400 <= error[key] <= 599:
                status = error[key]
                break
    detail = _detail(payload, secrets)
    if isinstance(code, str) and code in STATUS_BY_CODE and code != "INTERNAL_ERROR":
        return ServingError(f"{label} failed: {detail}", code)
    if status is not None and status not in (401, 403):
        return error_for_status(label, status, orjson.dumps(payload), None, secrets=secrets)
    return ServingError(f"{label} failed: {detail or 'the stream ended with an error.'}", "TEMPORARILY_UNAVAILABLE", retry_after=1)


def safe_url(url: str) -> str:
    """``url`` without userinfo, query or fragment: what may appear in an error message."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the configured URL"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "[redacted]")
    return text


def _detail(body: bytes | Mapping[str, Any], secrets: Iterable[str]) -> str:
    """The vendor's human message from an error body, scrubbed of secrets and shortened."""
    payload: Any = body
    if isinstance(body, (bytes, bytearray)):
        try:
            payload = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            payload = body.decode("utf-8", "replace").strip()
    message = _message_of(payload)
    message = " ".join(message.split())  # one line: HTML error pages and tracebacks get long
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "…"
    return redact(message, secrets)


def _message_of(payload: Any) -> str:
    if isinstance(payload, str):
        return payload
    if isinstance(payload, Mapping):
        for key in ("error", "message", "detail", "msg", "error_description"):
            value = payload.get(key)
            if value:
                return _message_of(value)
        return ""
    if isinstance(payload, list) and payload:
        return _message_of(payload[0])  # FastAPI's 422: {"detail": [{"msg": ...}]}
    return ""


def _retry_after(value: str | None) -> int | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), at least 1."""
    seconds = _retry_after_seconds(value)
    return None if seconds is None else max(1, math.ceil(seconds))


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), at least 0."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)
