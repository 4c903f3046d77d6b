"""The server's edge (playground/edge.py): bodies are bounded and credentials checked before a body
is read; static paths never leave the static roots; user text stays on one log line.

Most tests speak raw HTTP to a live daphne (the ``fondasi_server`` fixture, as ``make run`` serves):
they send the headers only, and the answer must come before any of the body is sent.
"""
from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.conftest import api_client

LIMIT = 32 * 1024 * 1024  # the default FONDASI_MAX_REQUEST_BYTES
SMALL = 64 * 1024  # the default FONDASI_MAX_ANONYMOUS_REQUEST_BYTES
GIB = 1024 ** 3


class Answer:
    def __init__(self, raw: bytes) -> None:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if self.headers.get("transfer-encoding") == "chunked":
            out = b""
            while body:
                size, _, rest = body.partition(b"\r\n")
                n = int(size, 16)
                out, body = out + rest[:n], rest[n + 2:]
                if n == 0:
                    break
            body = out
        self.body = body

    def json(self):
        return json.loads(self.body)


def _connect(server):
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def _read_answer(sock, deadline: float = 5.0) -> Answer:
    """The response: up to its Content-Length, else (``Connection: close``) until EOF."""
    sock.settimeout(deadline)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"no complete answer within {deadline} s; got {data[:200]!r}") from None
        if not chunk:
            break
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = [h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
        if not head.startswith(b"HTTP/1.1 100") and length and len(body) >= int(length[0].split(b":")[1]):
            break  # a refusal keeps reading (and dropping) the body for a while: no need to wait
    while data.startswith(b"HTTP/1.1 100"):
        data = data.partition(b"\r\n\r\n")[2]
    return Answer(data)


def headers_only(server, method: str, path: str, headers: dict[str, str]) -> Answer:
    """Send the request line and headers, no body, and read the answer."""
    with _connect(server) as sock:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(head.encode() + b"\r\n")
        return _read_answer(sock)


JSON = {"Content-Type": "application/json"}
INVOCATIONS = "/serving-endpoints/local-smollm2-chat/invocations"


def test_a_gigabyte_without_a_token_is_401_before_the_body_is_sent(fondasi_server):
    answer = headers_only(fondasi_server, "POST", INVOCATIONS, {**JSON, "Content-Length": str(GIB)})
    assert answer.status == 401 and answer.json()["error_code"] == "UNAUTHENTICATED"
    assert answer.headers["connection"] == "close"
    # A small body is read and answered by the view, as before.
    small = httpx.post(fondasi_server.url + INVOCATIONS, json={"messages": []})
    assert small.status_code == 401 and small.json()["error_code"] == "UNAUTHENTICATED"
    served = httpx.post(fondasi_server.url + "/serving-endpoints/no-such-endpoint/invocations", json={"messages": []},
                        headers={"Authorization": f"Bearer {fondasi_server.token}"})
    assert served.status_code == 404 and served.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_a_large_body_with_a_wrong_token_is_401_before_the_body_is_sent(fondasi_server):
    for route in (INVOCATIONS, "/serving-endpoints/chat/completions", "/api/2.0/serving-endpoints"):
        answer = headers_only(fondasi_server, "POST", route,
                              {**JSON, "Content-Length": str(LIMIT), "Authorization": "Bearer dapi-not-a-token"})
        assert answer.status == 401 and answer.json()["error_code"] == "UNAUTHENTICATED", route
    # With the right token the same large body is asked for (100 Continue), read and served.
    body = json.dumps({"messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}).encode()
    with _connect(fondasi_server) as sock:
        sock.sendall((f"POST /serving-endpoints/no-such-endpoint/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n"
                      f"Authorization: Bearer {fondasi_server.token}\r\nConnection: close\r\n\r\n").encode())
        sock.settimeout(5)
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        answer = _read_answer(sock)
    assert answer.status == 404 and answer.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_a_body_over_the_limit_is_413_before_it_is_sent_even_with_a_valid_token(fondasi_server):
    answer = headers_only(fondasi_server, "POST", INVOCATIONS,
                          {**JSON, "Content-Length": str(LIMIT + 1), "Authorization": f"Bearer {fondasi_server.token}"})
    assert answer.status == 413
    assert answer.json() == {"error_code": "BAD_REQUEST",
                             "message": f"The request body is larger than the limit of {LIMIT} bytes (32 MiB)."}


@pytest.mark.parametrize(("path", "shape"), [
    ("/login/", "page"), ("/admin/login/", "page"), ("/playground/code", "page"), ("/endpoints/", "page"),
    ("/oidc/v1/token", "oauth"), ("/healthz", "api"),
])
def test_requests_without_credentials_may_send_only_a_small_body(fondasi_server, path, shape):
    answer = headers_only(fondasi_server, "POST", path,
                          {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(SMALL + 1)})
    assert answer.status == 413
    if shape == "page":
        assert answer.headers["content-type"].startswith("text/html")
        assert b"Request too large" in answer.body and f"{SMALL} bytes".encode() in answer.body
    elif shape == "oauth":
        assert answer.json()["error"] == "invalid_request" and f"{SMALL} bytes" in answer.json()["error_description"]
    else:
        assert answer.json()["error_code"] == "BAD_REQUEST"


def test_a_signed_in_session_may_send_a_large_body_and_a_forged_one_may_not(fondasi_server):
    with httpx.Client(base_url=fondasi_server.url) as browser:
        browser.get("/login/")
        browser.post("/login/", data={"username": fondasi_server.username, "password": fondasi_server.password,
                                      "csrfmiddlewaretoken": browser.cookies["csrftoken"]})
        assert "sessionid" in browser.cookies
        upload = {"images": ("big.txt", b"x" * (SMALL * 4), "text/plain")}
        signed_in = browser.post("/playground/images", files=upload, headers={"X-CSRFToken": browser.cookies["csrftoken"]})
        assert signed_in.status_code == 400 and b"Request too large" not in signed_in.content  # the view's answer
        forged = httpx.post(fondasi_server.url + "/playground/images", files=upload, cookies={"sessionid": "forged"})
        assert forged.status_code == 413 and b"sign in first" in forged.content


def test_a_chunked_body_is_counted_as_it_streams_and_cut_at_the_limit(fondasi_server):
    """No Content-Length: the sign-in page takes 64 KiB; the 413 comes although the client goes on."""
    with _connect(fondasi_server) as sock:
        sock.sendall(b"POST /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
        piece = b"a=" + b"x" * 16382
        for _ in range(8):  # 128 KiB in 16 KiB chunks
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        sock.sendall(b"0\r\n\r\n")
        answer = _read_answer(sock)
    assert answer.status == 413 and b"Request too large" in answer.body


# --- the ASGI layer, as any ASGI server that streams bodies would drive it ---------------------

@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_asgi_application_cuts_a_streamed_body_at_the_limit(settings, token):
    from asgiref.testing import ApplicationCommunicator

    from playground.asgi import application

    settings.MAX_REQUEST_BYTES = 100_000
    scope = {"type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "root_path": "",
             "path": "/serving-endpoints/nope/invocations", "raw_path": b"/serving-endpoints/nope/invocations",
             "query_string": b"", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
             "headers": [(b"host", b"127.0.0.1"), (b"transfer-encoding", b"chunked"),
                         (b"authorization", f"Bearer {token}".encode())]}
    app = ApplicationCommunicator(application, scope)
    for _ in range(3):
        await app.send_input({"type": "http.request", "body": b"x" * 60_000, "more_body": True})
    start = await app.receive_output(5)
    body = await app.receive_output(5)
    assert start["status"] == 413
    assert json.loads(body["body"])["message"] == "The request body is larger than the limit of 100000 bytes (97.7 KiB)."


# --- the API's own answer for a body that reached a view (Django's test client) ---------------

@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_management_api_answers_an_oversized_body_with_413(settings, default_endpoints, auth_headers):
    settings.MAX_REQUEST_BYTES = 1000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = await api_client(auth_headers).post("/api/2.0/serving-endpoints", data=json.dumps({"name": "x" * 2000}),
                                                   content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"error_code": "BAD_REQUEST",
                                "message": "The request body is larger than the limit of 1000 bytes."}


# --- static files ------------------------------------------------------------------------------

def _raw_get(server, target: bytes) -> Answer:
    with _connect(server) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return _read_answer(sock)


def test_no_static_path_reaches_outside_the_static_roots(fondasi_server):
    var = fondasi_server.log.parent
    secret = (var / "secret_key").read_text().strip()
    up = "../" * 12
    targets = [
        "/static/%2e%2e/%2e%2e/var/secret_key", "/static/%2e%2e/var/secret_key", "/static/../var/secret_key",
        "/static/%2E%2E/%2E%2E/%2E%2E/etc/passwd", "/static/%252e%252e/%252e%252e/var/secret_key",
        "/static/..%2fvar%2fsecret_key", "/static/..%5cvar%5csecret_key", "/static/..\\..\\var\\secret_key",
        "/static/css/%2e%2e/%2e%2e/%2e%2e/var/secret_key", "/static/css/base.css%00.png", "/static/%00",
        "/static//etc/passwd", "/static/%2fetc%2fpasswd", f"/static/{up}{var}/secret_key".replace("//", "/"),
        f"/static/{up.replace('..', '%2e%2e')}{str(var).lstrip('/')}/secret_key",
        "/static/admin/%2e%2e/%2e%2e/%2e%2e/%2e%2e/settings.py",
    ]
    for target in targets:
        answer = _raw_get(fondasi_server, target.encode())
        assert answer.status == 404, (target, answer.status, answer.body[:300])
        assert secret.encode() not in answer.body and b"root:" not in answer.body, target
    # Assets are still served.
    assert _raw_get(fondasi_server, b"/static/css/base.css").status == 200


# --- logs ----------------------------------------------------------------------------------------

def test_a_client_request_id_with_newlines_stays_on_one_log_line(fondasi_server):
    forged = "abc\nFORGED-LINE endpoint=admin-secrets\r\nFORGED-TOO"
    response = httpx.post(fondasi_server.url + "/serving-endpoints/fake-vision/invocations",
                          json={"messages": [{"role": "user", "content": "hi"}], "client_request_id": forged},
                          headers={"Authorization": f"Bearer {fondasi_server.token}"}, timeout=30)
    assert response.status_code == 200
    for _ in range(50):  # the line is written as the answer completes
        log = fondasi_server.log.read_text()
        if "client_request_id=abc" in log:
            break
        time.sleep(0.1)
    lines = [line for line in log.splitlines() if "client_request_id=abc" in line]
    assert lines == [line for line in lines if "endpoint=fake-vision" in line] and len(lines) == 1
    assert "abc\\nFORGED-LINE endpoint=admin-secrets\\r\\nFORGED-TOO" in lines[0]
    assert not any(line.startswith("FORGED") for line in log.splitlines())
