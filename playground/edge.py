"""The server's edge: who may send how large a body, decided before the body is read.

Every request gets a byte budget from its path and credentials, checked from the headers alone:

* The token APIs (``/serving-endpoints``, ``/api/``): a request with no usable ``Authorization``
  header is answered 401 at once; one whose body may be larger than the anonymous limit has its
  token checked (``endpoints.auth.authenticate``) before more is read, and may then send up to
  ``MAX_REQUEST_BYTES``.
* The APIs without tokens (the probe, ``/healthz``, ``/oidc``: the token endpoint's credentials
  are in its body) and the sign-in pages: ``MAX_ANONYMOUS_REQUEST_BYTES``, whoever sends them.
* Every other page: ``MAX_ANONYMOUS_REQUEST_BYTES`` without a signed-in session, up to
  ``MAX_REQUEST_BYTES`` with one (checked before more is read).

A ``Content-Length`` over the budget is refused before a byte of the body is read (413 in the
API's error shape, a short page on the pages); a body without one (chunked) is counted as it
arrives and cut at the budget.

Two layers apply the same decision (:func:`decide`, then :func:`verify` when credentials must be
checked first):

* :class:`GuardedWebRequest`, installed into daphne by :func:`install_daphne_guard`: daphne (through
  Twisted) receives the whole body — to a temporary file — before it starts the application, so
  the refusal has to happen in its request object, as the headers end and as each chunk arrives.
  While a token or session is being checked, the socket is not read (TCP back-pressure).
* :class:`BodyLimit`, ASGI middleware, for any ASGI server that streams bodies to the
  application (and as a second check under daphne).

Also here: :class:`StaticFiles`, the pages' asset handler, for which any path outside the static
roots (``..``, encoded or not, backslashes, NUL bytes) is a 404.
"""
from __future__ import annotations

import asyncio
import logging
import posixpath
from dataclasses import dataclass
from http import HTTPStatus
from html import escape as html_escape
from importlib import import_module
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest
from django.http.cookie import parse_cookie

from endpoints.auth import authenticate, token_from_header
from endpoints.errors import ServingError
from endpoints.registry import release_connections
from endpoints.views import API_PREFIXES, too_large_message

log = logging.getLogger(__name__)

#: API paths whose views take no token (``api(auth=False)`` and the OAuth endpoints).
ANONYMOUS_API_PREFIXES = ("/.well-known/", "/oidc", "/healthz")
#: Pages whose credentials travel in the body.
SIGN_IN_PAGES = ("/login", "/admin/login")

TOKEN, SESSION = "token", "session"
API, OAUTH, PAGE = "api", "oauth", "page"


@dataclass(frozen=True)
class Plan:
    """What a path allows: ``limit`` bytes once ``check`` (``TOKEN``, ``SESSION`` or None) holds;
    ``shape`` is how refusals are written (``API``, ``OAUTH`` or ``PAGE``)."""

    limit: int
    check: str | None
    shape: str


@dataclass(frozen=True)
class Refusal:
    status: int
    content_type: str
    body: bytes

    def asgi_messages(self) -> list[dict[str, Any]]:
        headers = [(b"content-type", self.content_type.encode()), (b"content-length", str(len(self.body)).encode()),
                   (b"x-content-type-options", b"nosniff")]
        return [{"type": "http.response.start", "status": self.status, "headers": headers},
                {"type": "http.response.body", "body": self.body}]

    def http_bytes(self) -> bytes:
        """The whole HTTP/1.1 response, for a connection that is then closed."""
        head = (f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}\r\n"
                f"Content-Type: {self.content_type}\r\nContent-Length: {len(self.body)}\r\n"
                "X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n")
        return head.encode("ascii") + self.body


#: A verdict: refuse, or read at most this many bytes; None from :func:`decide`: check credentials first.
Verdict = Refusal | int


def plan_for(path: str) -> Plan:
    small, large = settings.MAX_ANONYMOUS_REQUEST_BYTES, settings.MAX_REQUEST_BYTES
    if path.startswith(API_PREFIXES):  # the same test as playground/asgi.py's router
        if path.startswith("/oidc"):
            return Plan(small, None, OAUTH)
        if path.startswith(ANONYMOUS_API_PREFIXES):
            return Plan(small, None, API)
        return Plan(large, TOKEN, API)
    if path.rstrip("/") in SIGN_IN_PAGES:
        return Plan(small, None, PAGE)
    return Plan(large, SESSION, PAGE)


def too_large(plan: Plan, limit: int) -> Refusal:
    message = too_large_message(limit)
    if plan.check == SESSION and limit < plan.limit:
        message += " Without a signed-in session a request may send only this much: sign in first."
    if plan.shape == API:
        return Refusal(413, "application/json", orjson.dumps({"error_code": "BAD_REQUEST", "message": message}))
    if plan.shape == OAUTH:  # RFC 6749's error shape, as the token endpoint answers
        return Refusal(413, "application/json", orjson.dumps({"error": "invalid_request", "error_description": message}))
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Request too large · Fondasi</title>"
            "</head><body><h1>Request too large</h1><p>" + html_escape(message) + "</p>"
            "<p><a href=\"/\">Back to Fondasi</a></p></body></html>")
    return Refusal(413, "text/html; charset=utf-8", page.encode())


def unauthenticated(exc: ServingError) -> Refusal:
    return Refusal(exc.status, "application/json", orjson.dumps({"error_code": exc.code, "message": exc.message}))


def bad_length() -> Refusal:
    body = {"error_code": "BAD_REQUEST", "message": "The Content-Length header is not a number."}
    return Refusal(400, "application/json", orjson.dumps(body))


def _header(headers: dict[bytes, list[bytes]], name: bytes) -> str:
    values = headers.get(name)
    return values[-1].decode("latin-1") if values else ""


def session_key(headers: dict[bytes, list[bytes]]) -> str | None:
    cookies = "; ".join(v.decode("latin-1") for v in headers.get(b"cookie", ()))
    return parse_cookie(cookies).get(settings.SESSION_COOKIE_NAME) if cookies else None


def decide(plan: Plan, length: int | None, headers: dict[bytes, list[bytes]]) -> Verdict | None:
    """The verdict from the headers alone (``length``: the declared Content-Length, None when the
    body is chunked); None when credentials must be checked (:func:`verify`) first."""
    if plan.check == TOKEN:
        try:
            token_from_header(_header(headers, b"authorization"))
        except ServingError as exc:
            return unauthenticated(exc)
    if length is not None and length > plan.limit:
        return too_large(plan, plan.limit)  # nobody may send that much here
    if plan.check is None:
        return plan.limit
    small = settings.MAX_ANONYMOUS_REQUEST_BYTES
    if length is not None and length <= small:
        return small  # small enough for anyone; the view checks the credentials as usual
    if plan.check == SESSION and not session_key(headers):
        return small if length is None else too_large(plan, small)
    return None


async def verify(plan: Plan, length: int | None, headers: dict[bytes, list[bytes]]) -> Verdict:
    """The verdict once the request's token or session has been checked."""
    if plan.check == TOKEN:
        try:
            await authenticate(_header(headers, b"authorization"))
        except ServingError as exc:
            return unauthenticated(exc)
        return plan.limit
    if await _signed_in(session_key(headers) or ""):
        return plan.limit
    small = settings.MAX_ANONYMOUS_REQUEST_BYTES
    return small if length is None else too_large(plan, small)


def _signed_in_sync(key: str) -> bool:
    from django.contrib.auth import get_user

    try:
        request = HttpRequest()
        request.session = import_module(settings.SESSION_ENGINE).SessionStore(key)
        return bool(get_user(request).is_authenticated)
    except SuspiciousOperation:  # a tampered session: anonymous
        return False
    finally:
        release_connections()  # no request signals run here (see endpoints.auth)


_signed_in = sync_to_async(_signed_in_sync)


async def admit(path: str, length: int | None, headers: dict[bytes, list[bytes]]) -> tuple[Plan, Verdict]:
    plan = plan_for(path)
    verdict = decide(plan, length, headers)
    if verdict is None:
        verdict = await verify(plan, length, headers)
    return plan, verdict


# --- ASGI ----------------------------------------------------------------------------------------

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: the budget above, by ``Content-Length`` before the application runs and by
    counting ``http.request`` messages as they arrive. Past the budget the client gets the 413 and
    the application sees ``http.disconnect`` (Django then drops the request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers: dict[bytes, list[bytes]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.lower(), []).append(value)
        lengths = headers.get(b"content-length")
        if lengths:
            if len(set(lengths)) > 1 or not lengths[0].strip().isdigit():
                return await _send_all(send, bad_length())
            length: int | None = int(lengths[0])
            if length == 0:
                return await self.app(scope, receive, send)
        elif b"transfer-encoding" in headers:
            length = None
        else:  # no body is declared: count what comes anyway against the anonymous limit
            return await self._counted(scope, receive, send, plan_for(scope["path"]), settings.MAX_ANONYMOUS_REQUEST_BYTES)
        plan, verdict = await admit(scope["path"], length, headers)
        if isinstance(verdict, Refusal):
            return await _send_all(send, verdict)
        await self._counted(scope, receive, send, plan, verdict)

    async def _counted(self, scope, receive, send, plan: Plan, limit: int) -> None:
        seen = 0
        refused = False
        started = False

        async def counting_receive() -> dict:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    if not started:
                        await _send_all(send, too_large(plan, limit))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if refused:
                return  # the 413 was the answer
            started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)


async def _send_all(send, refusal: Refusal) -> None:
    for message in refusal.asgi_messages():
        await send(message)


# --- daphne ---------------------------------------------------------------------------------------

#: How long the rest of a refused body is still read (and thrown away): see ``_refuse``.
DRAIN_SECONDS = 5.0


def request_path(target: bytes) -> str:
    """The ASGI ``path`` daphne makes of a request target."""
    return unquote(target.split(b"?", 1)[0].decode("ascii", "replace"))


def _guarded(base: type) -> type:
    class GuardedWebRequest(base):
        """daphne's request, refusing bodies over the edge's budget as they arrive (module doc)."""

        fondasi_guard = True
        _budget: int | None = None  # None: not decided here (no body, or no path to decide on)
        _seen = 0
        _plan: Plan | None = None
        _refused = False
        _checking = False
        _held: tuple | None = None  # requestReceived's arguments while credentials are checked
        _drained = 0
        _drain_budget = 0

        def gotLength(self, length):  # all headers are in; nothing of the body is yet
            super().gotLength(length)
            target = getattr(self.channel, "_path", None)  # HTTP/1.1's request target
            if length == 0 or not isinstance(target, bytes):
                return  # no body, or HTTP/2 (then BodyLimit still counts)
            headers: dict[bytes, list[bytes]] = {}
            for name, values in self.requestHeaders.getAllRawHeaders():
                headers.setdefault(name.lower(), []).extend(values)
            plan = self._plan = plan_for(request_path(target))
            verdict = decide(plan, length, headers)
            if isinstance(verdict, Refusal):
                return self._refuse(verdict, length)
            if verdict is not None:
                self._budget = verdict
                return
            # Check the credentials before reading on: no 100 Continue yet, and the socket paused.
            self._budget = plan.limit
            self._checking = True
            expects = self._withhold_continue()
            self.transport.pauseProducing()
            task = asyncio.ensure_future(verify(plan, length, headers))
            task.add_done_callback(lambda done: self._checked(done, length, expects))

        def _withhold_continue(self) -> bool:
            expects = bool(self.requestHeaders.getRawHeaders(b"expect"))
            self.requestHeaders.removeHeader(b"expect")  # Twisted answers it after gotLength otherwise
            return expects

        def _checked(self, task, length, expects: bool) -> None:
            self._checking = False
            if self.channel is None or self.transport is None or self._disconnected:
                return  # the client went away meanwhile
            try:
                verdict = task.result()
            except Exception:  # noqa: BLE001 - the check itself failed (e.g. the database)
                log.exception("Could not check the credentials of a request before reading its body")
                verdict = unauthenticated(ServingError("Could not check the credentials; try again.",
                                                       "TEMPORARILY_UNAVAILABLE"))
            self.transport.resumeProducing()
            if isinstance(verdict, Refusal):
                return self._refuse(verdict, length)
            self._budget = verdict
            if self._seen > verdict:
                return self._refuse(too_large(self._plan, verdict), None)
            if expects and self._held is None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if self._held is not None:
                held, self._held = self._held, None
                super().requestReceived(*held)

        def handleContentChunk(self, data):
            if self._refused:
                self._drained += len(data)
                if self._drained > self._drain_budget:
                    self._close()
                return
            self._seen += len(data)
            if self._budget is not None and self._seen > self._budget:
                return self._refuse(too_large(self._plan, self._budget), None)
            super().handleContentChunk(data)

        def requestReceived(self, command, path, version):
            if self._refused:
                return self._close()  # the refused body has been read to its end
            if self._checking:
                self._held = (command, path, version)
                return
            super().requestReceived(command, path, version)

        def _refuse(self, refusal: Refusal, length: int | None) -> None:
            self._refused = True
            self._withhold_continue()
            if self.content is not None and not self.content.closed:
                self.content.close()  # what was kept of the body goes now
            self.transport.write(refusal.http_bytes())
            # Up to MAX_REQUEST_BYTES more of the body is read and thrown away, for a few seconds,
            # so that a client that writes its whole body before it reads sees the answer rather
            # than a reset connection; a body declared larger than that is cut at once.
            if length is not None and length > settings.MAX_REQUEST_BYTES:
                return self._close()
            self._drain_budget = settings.MAX_REQUEST_BYTES
            from twisted.internet import reactor

            reactor.callLater(DRAIN_SECONDS, self._close)

        def _close(self) -> None:
            if self.channel is not None and self.transport is not None and not self._disconnected:
                self.channel.loseConnection()

    GuardedWebRequest.__name__ = GuardedWebRequest.__qualname__ = "GuardedWebRequest"
    return GuardedWebRequest


def install_daphne_guard() -> None:
    """Make daphne's HTTP factory build :class:`GuardedWebRequest` requests (daphne looks its
    request class up in ``daphne.http_protocol`` for each new connection). Idempotent."""
    try:
        from daphne import http_protocol
    except ImportError:  # another ASGI server: BodyLimit does the work
        return
    if not getattr(http_protocol.WebRequest, "fondasi_guard", False):
        http_protocol.WebRequest = _guarded(http_protocol.WebRequest)


# --- static files ---------------------------------------------------------------------------------


class StaticFiles(ASGIStaticFilesHandler):
    """The pages' assets (Django's handler), where any path that is not plainly inside the static
    roots is a 404: ``..`` segments (daphne has already decoded ``%2e%2e``), backslashes, NUL and
    other control characters, absolute paths. Django's finders would raise
    ``SuspiciousFileOperation`` for some of these, which its handler turns into a 500."""

    def serve(self, request):
        relative = self.file_path(request.path)
        if (
            "\\" in relative
            or any(ord(c) < 32 or ord(c) == 127 for c in relative)
            or relative.startswith("/")
            or ".." in relative.split("/")
            or posixpath.normpath(relative).startswith("..")
        ):
            raise Http404("No such file.")
        try:
            return super().serve(request)
        except (SuspiciousOperation, ValueError, OSError):
            raise Http404("No such file.") from None
