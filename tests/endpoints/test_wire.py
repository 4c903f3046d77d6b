"""The SSE helpers of endpoints/wire.py: keepalives, errors and teardown of the event source."""
import asyncio

import pytest

from endpoints.events import TextDelta
from endpoints.wire import with_keepalive

pytestmark = pytest.mark.asyncio


async def test_it_yields_a_keepalive_for_each_silent_interval_and_loses_no_event():
    async def slow():
        yield TextDelta("a")
        await asyncio.sleep(0.35)
        yield TextDelta("b")

    out = [e async for e in with_keepalive(slow(), 0.1)]
    assert out[0] == TextDelta("a") and out[-1] == TextDelta("b")
    assert 2 <= out.count(None) <= 4 and len(out) == out.count(None) + 2


async def test_it_sends_no_keepalive_when_events_keep_coming():
    async def fast():
        for i in range(50):
            yield TextDelta(str(i))

    out = [e async for e in with_keepalive(fast(), 0.5)]
    assert [e.text for e in out] == [str(i) for i in range(50)]


async def test_it_raises_the_sources_error_after_the_events_before_it():
    async def failing():
        yield TextDelta("a")
        raise ValueError("boom")

    seen = []
    with pytest.raises(ValueError, match="boom"):
        async for event in with_keepalive(failing(), 1):
            seen.append(event)
    assert seen == [TextDelta("a")]


async def test_closing_it_stops_the_source():
    closed = asyncio.Event()

    async def endless():
        try:
            while True:
                yield TextDelta("x")
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    stream = with_keepalive(endless(), 1)
    assert await anext(stream) == TextDelta("x")
    await stream.aclose()
    await asyncio.wait_for(closed.wait(), 1)


async def test_cancelling_its_consumer_stops_the_source():
    closed = asyncio.Event()

    async def endless():
        try:
            while True:
                yield TextDelta("x")
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    async def consume():
        async for _ in with_keepalive(endless(), 1):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(closed.wait(), 1)
