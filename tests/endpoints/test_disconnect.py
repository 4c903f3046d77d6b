"""A client that goes away mid-stream stops the generation, through the real ASGI stack."""
import asyncio
import json

import pytest

from endpoints.providers.local import LOCAL_MODELS, runtime_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def call_and_leave(token: str, path: str, body: dict, leave_after_chunks: int) -> list[bytes]:
    """POST through the ASGI application; report `http.disconnect` after some SSE chunks."""
    from playground.asgi import application

    raw = json.dumps(body).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode()),
                    (b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }
    gone = asyncio.Event()
    delivered = False
    chunks: list[bytes] = []

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body" and message.get("body", b"").startswith(b"data: "):
            chunks.append(message["body"])
            if len(chunks) >= leave_after_chunks:
                gone.set()

    await asyncio.wait_for(application(scope, receive, send), timeout=120)
    return chunks


async def test_generation_stops_within_a_few_tokens_when_the_client_leaves(default_endpoints, token):
    runtime = runtime_for(LOCAL_MODELS["smollm2-135m-instruct"])
    body = {"messages": [{"role": "user", "content": "Write a very long story about a dragon and a knight."}],
            "max_tokens": 400, "temperature": 0.7, "seed": 1, "stream": True}
    # Load the model first so the measurement below is about generation only.
    await call_and_leave(token, "/serving-endpoints/local-smollm2-chat/invocations", {**body, "max_tokens": 2}, 99)
    before = runtime.stats()["tokens_sampled"]

    chunks = await call_and_leave(token, "/serving-endpoints/local-smollm2-chat/invocations", body, leave_after_chunks=3)
    for _ in range(50):  # the worker notices at its next token
        if runtime.stats()["waiting"] == 0:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    sampled = runtime.stats()["tokens_sampled"] - before

    assert len(chunks) >= 3
    assert sampled <= len(chunks) + 3, f"{sampled} tokens were generated after {len(chunks)} chunks were sent"
    assert b"data: [DONE]" not in b"".join(chunks)
