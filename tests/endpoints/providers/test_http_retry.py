"""Retries in the shared HTTP plumbing (``http.open_stream`` / ``http.post_json``), against a real
vendor over HTTP on 127.0.0.1 that fails its first requests and then answers."""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from endpoints.errors import ServingError
from endpoints.providers import http
from tests.endpoints.providers.helpers import free_port

KEY = "sk-retry-0123456789abcdef"
HEADERS = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
BODY = b'{"model": "m", "input": "x"}'


pytestmark = pytest.mark.usefixtures("pool")  # each test's pooled client is closed afterwards


class FlakyUpstream:
    """Answers its first requests with the statuses in ``failures``, then 200 with JSON.

    Knobs: ``failures`` (``[(status, headers), …]``, used up one per request), ``delay``
    (seconds before any answer), ``truncate`` (a 200 that promises more body than it sends, then
    closes). Recorded: ``times`` (monotonic arrival of each request), ``headers`` (of each).
    """

    def __init__(self) -> None:
        self.failures: list[tuple[int, dict[str, str]]] = []
        self.delay = 0.0
        self.truncate = False
        self.times: list[float] = []
        self.headers: list[dict[str, str]] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self, port: int = 0) -> "FlakyUpstream":
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/embeddings"

    @property
    def waits(self) -> list[float]:
        """Seconds between consecutive requests."""
        return [b - a for a, b in zip(self.times, self.times[1:])]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        fake: FlakyUpstream = self.server.fake  # type: ignore[attr-defined]
        fake.times.append(time.monotonic())
        fake.headers.append({k.lower(): v for k, v in self.headers.items()})
        if fake.delay:
            time.sleep(fake.delay)
        if fake.failures:
            status, headers = fake.failures.pop(0)
            body = json.dumps({"error": {"message": f"failure {len(fake.times)} from key {KEY}"}}).encode()
        else:
            status, headers = 200, {}
            body = json.dumps({"answer": len(fake.times)}).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) + (100 if fake.truncate else 0)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
            return
        if fake.truncate:
            self.close_connection = True


@pytest.fixture
def upstream() -> Iterator[FlakyUpstream]:
    fake = FlakyUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def retry_settings(monkeypatch):
    # The defaults, stated: the suite may run with other values in the environment.
    monkeypatch.setenv("FONDASI_HTTP_RETRIES", "2")
    monkeypatch.setenv("FONDASI_HTTP_RETRY_MAX_WAIT", "8")


async def post(url: str, **kw: Any) -> Any:
    return await http.post_json("Test vendor", url, BODY, HEADERS, secrets=[KEY], **kw)


@pytest.mark.asyncio
async def test_it_retries_5xx_with_a_growing_jittered_backoff_and_then_answers(upstream):
    upstream.failures = [(503, {}), (500, {})]
    assert await post(upstream.url) == {"answer": 3}
    first, second = upstream.waits
    assert 0.25 <= first < 0.5 + 0.3 and 0.5 <= second < 1.0 + 0.3
    assert all(h["authorization"] == f"Bearer {KEY}" for h in upstream.headers)  # the same request each time


@pytest.mark.asyncio
async def test_it_gives_up_after_the_configured_retries_with_the_last_error(upstream):
    upstream.failures = [(502, {})] * 5
    with pytest.raises(ServingError) as info:
        await post(upstream.url)
    assert len(upstream.times) == 3
    assert (info.value.status, info.value.code, info.value.retry_after) == (503, "TEMPORARILY_UNAVAILABLE", 1)
    assert "(HTTP 502): failure 3 from key [redacted]" in info.value.message


@pytest.mark.asyncio
async def test_it_waits_what_a_429_retry_after_asks_for(upstream):
    upstream.failures = [(429, {"Retry-After": "1"})]
    async with http.open_stream("Test vendor", upstream.url, BODY, HEADERS, secrets=[KEY]) as response:
        assert json.loads(await response.aread()) == {"answer": 2}
    assert len(upstream.waits) == 1 and 1.0 <= upstream.waits[0] < 1.5


@pytest.mark.asyncio
async def test_it_returns_a_retry_after_longer_than_the_cap_at_once(upstream):
    upstream.failures = [(429, {"Retry-After": "30"}), (503, {"Retry-After": "30"})]
    started = time.monotonic()
    with pytest.raises(ServingError) as info:
        await post(upstream.url)
    assert time.monotonic() - started < 0.5 and len(upstream.times) == 1
    assert (info.value.status, info.value.code, info.value.retry_after) == (429, "REQUEST_LIMIT_EXCEEDED", 30)


@pytest.mark.asyncio
async def test_it_caps_the_backoff_at_the_max_wait(upstream, monkeypatch):
    monkeypatch.setenv("FONDASI_HTTP_RETRIES", "4")
    monkeypatch.setenv("FONDASI_HTTP_RETRY_MAX_WAIT", "0.1")
    upstream.failures = [(500, {})] * 4
    assert await post(upstream.url) == {"answer": 5}
    assert sum(upstream.waits) < 1.0  # uncapped, the four waits would take 3.75 s at least


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [400, 401, 404, 408, 422])
async def test_it_does_not_retry_other_errors(upstream, status):
    upstream.failures = [(status, {})]
    with pytest.raises(ServingError):
        await post(upstream.url)
    assert len(upstream.times) == 1


@pytest.mark.asyncio
async def test_retries_can_be_turned_off(upstream, monkeypatch):
    monkeypatch.setenv("FONDASI_HTTP_RETRIES", "0")
    upstream.failures = [(503, {})]
    with pytest.raises(ServingError) as info:
        await post(upstream.url)
    assert info.value.status == 503 and len(upstream.times) == 1


@pytest.mark.asyncio
async def test_it_retries_a_refused_connection_until_the_vendor_is_up():
    port = free_port()  # nothing listens there yet
    late = FlakyUpstream()
    timer = threading.Timer(0.15, late.start, kwargs={"port": port})
    timer.start()
    try:
        assert await post(f"http://127.0.0.1:{port}/v1/embeddings") == {"answer": 1}
    finally:
        timer.join()
        late.stop()


@pytest.mark.asyncio
async def test_it_says_it_could_not_reach_the_vendor_after_the_retries(caplog):
    port = free_port()
    caplog.set_level(logging.INFO, logger="endpoints.providers.http")
    with pytest.raises(ServingError) as info:
        await post(f"http://user:hunter2@127.0.0.1:{port}/v1/embeddings?api-key={KEY}")
    assert info.value.message == f"Could not reach http://127.0.0.1:{port}/v1/embeddings (Test vendor): connection failed."
    retries = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(retries) == 2
    for n, message in enumerate(retries, 1):
        assert message.startswith(f"Test vendor at http://127.0.0.1:{port}/v1/embeddings: ConnectError; retry {n} in ")
    assert KEY not in caplog.text and "hunter2" not in caplog.text


@pytest.mark.asyncio
async def test_it_logs_each_retry_at_info_without_the_key(upstream, caplog):
    caplog.set_level(logging.INFO, logger="endpoints.providers.http")
    upstream.failures = [(503, {"X-Echo": KEY})]
    await post(upstream.url)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(messages) == 1 and messages[0].startswith("Test vendor answered HTTP 503; retry 1 in ")
    assert KEY not in caplog.text


@pytest.mark.asyncio
async def test_it_does_not_retry_a_read_timeout(upstream):
    upstream.delay = 0.6
    started = time.monotonic()
    with pytest.raises(ServingError) as info:
        await post(upstream.url, timeout=http.timeout(read=0.2))
    assert info.value.code == "DEADLINE_EXCEEDED" and time.monotonic() - started < 0.5
    await asyncio.sleep(0.6)  # let a retry, if any, arrive
    assert len(upstream.times) == 1


@pytest.mark.asyncio
async def test_it_does_not_retry_once_the_response_reached_the_caller(upstream):
    upstream.truncate = True  # 200, then the connection drops in the middle of the body
    with pytest.raises(ServingError) as info:
        async with http.open_stream("Test vendor", upstream.url, BODY, HEADERS) as response:
            await response.aread()
    assert info.value.message.endswith("closed the connection.")
    assert len(upstream.times) == 1


def test_it_refuses_a_negative_retry_count(monkeypatch):
    monkeypatch.setenv("FONDASI_HTTP_RETRIES", "-1")
    with pytest.raises(ValueError, match="FONDASI_HTTP_RETRIES must be zero or more"):
        http.retry_wait(1, None)
