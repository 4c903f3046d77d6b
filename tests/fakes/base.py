"""What every fake vendor shares: a stdlib ``ThreadingHTTPServer`` on 127.0.0.1, the requests it
received, the clients that went away, and the HTTP/1.1 plumbing of its answers.

A fake vendor is a :class:`FakeUpstream` subclass (its knobs in :meth:`FakeUpstream.reset`, its
error body in ``fail``) plus an :class:`UpstreamHandler` subclass that answers in
:meth:`UpstreamHandler.respond`; ``FakeX.handler = _XHandler`` ties them. The handler records each
request, waits ``delay``, and counts a client that closes the connection mid-answer as a
disconnect, so ``respond`` only speaks the vendor's wire format::

    class _XHandler(UpstreamHandler["FakeX"]):
        def respond(self, request):
            self._start_stream()
            for event in self._paced(events(self.fake)):   # chunk_delay between events
                self._write_event(event)
            self._end_stream()

    @pytest.fixture
    def x_upstream() -> Iterator[FakeX]:
        with FakeX() as fake:
            yield fake

Knobs every fake has: ``pieces`` (the answer's text pieces), ``delay`` (seconds before
answering), ``chunk_delay`` (seconds between streamed events) and ``error`` (``(status, body,
headers)`` answered instead, set by the vendor's ``fail``).
Recorded: ``requests`` (:class:`RecordedRequest`), ``last_request``, ``disconnects`` and
:meth:`FakeUpstream.wait_for_disconnect`.
"""
from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")
F = TypeVar("F", bound="FakeUpstream")


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    raw: bytes
    json: Any  # the decoded body, or None if it was not JSON
    peer: tuple[str, int]  # the client's address: the same port twice means a reused connection


class ClientGone(Exception):
    """The client closed the connection before the answer was complete."""


class FakeUpstream:
    #: the request handler class (set after its definition in the vendor's module)
    handler: type[UpstreamHandler[Any]]

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0
        self._disconnected = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    def reset(self) -> None:
        """Set every knob to its default (a subclass sets its vendor's knobs too)."""
        self.pieces: list[str] = ["Hello", ",", " world", "!"]  # the answer's text, a streamed event each
        self.delay = 0.0
        self.chunk_delay = 0.0
        self.error: tuple[int, bytes, dict[str, str]] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self: F) -> F:
        server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self: F) -> F:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- what happened -----------------------------------------------------------------------

    @property
    def last_request(self) -> RecordedRequest:
        assert self.requests, "the fake received no request"
        return self.requests[-1]

    def wait_for_disconnect(self, timeout: float = 2.0) -> bool:
        """Whether a client went away mid-answer (waiting up to ``timeout`` seconds)."""
        return self._disconnected.wait(timeout)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _note_disconnect(self) -> None:
        with self._lock:
            self.disconnects += 1
        self._disconnected.set()


class UpstreamHandler(BaseHTTPRequestHandler, Generic[F]):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, like real servers
    disable_nagle_algorithm = True  # else headers-then-body writes wait ~40 ms on delayed ACKs
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    @property
    def fake(self) -> F:
        return self.server.fake  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        """Record the request, wait ``delay``, then :meth:`respond`; a client that goes away
        before the answer is complete counts as a disconnect."""
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        fake = self.fake
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = RecordedRequest("POST", self.path, headers, raw, body, tuple(self.client_address))
        fake._record(request)
        try:
            if fake.delay:
                self._wait(fake.delay)
            self.respond(request)
        except (ClientGone, BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            fake._note_disconnect()
            self.close_connection = True

    def respond(self, request: RecordedRequest) -> None:
        """Answer ``request`` (as recorded: header names lower-cased, the body decoded)."""
        raise NotImplementedError

    # --- wire helpers ------------------------------------------------------------------------

    def _send_json(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _start_stream(self, content_type: str = "text/event-stream", headers: dict[str, str] | None = None) -> None:
        """A 200 whose body follows in chunks (:meth:`_write_chunk`, then :meth:`_end_stream`)."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _paced(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, waiting the fake's ``chunk_delay`` between two (ClientGone if the client leaves)."""
        for i, item in enumerate(items):
            if i and self.fake.chunk_delay:
                self._wait(self.fake.chunk_delay)
            yield item

    def _write_event(self, data: dict[str, Any], name: str | None = None) -> None:
        """One server-sent event: ``event: <name>`` when named, then its ``data:`` line."""
        line = f"data: {json.dumps(data)}\n\n"
        self._write_chunk((line if name is None else f"event: {name}\n{line}").encode())

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, raising ClientGone as soon as the client closes the connection."""
        deadline = time.monotonic() + seconds
        sock = self.connection
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], left)
            if readable:
                try:
                    peeked = sock.recv(1, socket.MSG_PEEK)
                except OSError:
                    raise ClientGone from None
                if not peeked:
                    raise ClientGone
                time.sleep(left)  # the client sent more (a pipelined request): just wait
                return
