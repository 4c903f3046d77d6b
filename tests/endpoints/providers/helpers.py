"""What the provider tests share: a chat request builder, draining a provider's event stream, the
error its first step raises, a port nothing listens on, and the check that closing a stream
closes the vendor's. Fixtures are in ``conftest.py``."""
from __future__ import annotations

import asyncio
import socket
import time
from typing import Any, AsyncIterator

import pytest

from endpoints.errors import ServingError
from endpoints.events import Event, TextDelta
from endpoints.providers.base import Provider
from endpoints.schemas import ChatRequest
from tests.fakes.base import FakeUpstream


def chat(**body: Any) -> ChatRequest:
    """A streaming chat request saying "Hi" (what most tests relay); pass stream=False for one answer."""
    return ChatRequest.model_validate({"messages": [{"role": "user", "content": "Hi"}], "stream": True, **body})


async def drain(stream: AsyncIterator[Event]) -> list[Event]:
    """Every event of ``stream``."""
    return [event async for event in stream]


async def failure(stream: AsyncIterator[Event]) -> ServingError:
    """The ServingError raised by the first step of ``stream`` (nothing may be yielded first)."""
    with pytest.raises(ServingError) as info:
        await stream.__anext__()
    await stream.aclose()  # type: ignore[attr-defined]  # providers' streams are async generators
    return info.value


def free_port() -> int:
    """A port on 127.0.0.1 bound then released: nothing listens there (until something does)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def assert_closing_the_stream_disconnects(provider: Provider, fake: FakeUpstream) -> None:
    """The consumer takes the first event of a 10-second stream from ``fake``, then closes the
    stream: the vendor must see its client go within a second."""
    fake.pieces = ["tok"] * 100
    fake.chunk_delay = 0.1
    stream = provider.chat(chat())
    assert await stream.__anext__() == TextDelta("tok")
    started = time.monotonic()
    await stream.aclose()  # type: ignore[attr-defined]
    assert await asyncio.to_thread(fake.wait_for_disconnect, 2)
    assert time.monotonic() - started < 1
