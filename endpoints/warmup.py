"""Warm the embedded models at start-up, in the background.

The embedded models load on their first request (endpoints/providers/local.py), which made the
first request after a start wait many seconds with nothing to say why. With ``FONDASI_WARMUP`` on
(``make run`` turns it on; it is off by default, and so in the tests), :func:`start` runs one
daemon thread that, after a short pause that lets the server start listening, hands each local
model served by some endpoint a job that does nothing: the model's worker loads its weights as it
would for a first request. Start-up never waits for it; a request that arrives meanwhile queues
behind the load like any first request, and the pages say "Loading the model…" while it runs
(``playground.pages.model_state``).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections, connections

log = logging.getLogger(__name__)

_started = False
_lock = threading.Lock()


def served_local_models() -> list[str]:
    """The local models that some endpoint serves, in the order of their first endpoint."""
    from .models import ServedEntity

    names = ServedEntity.objects.filter(provider="local").order_by("endpoint_id", "pk").values_list("model", flat=True)
    return list(dict.fromkeys(names))


async def warm(models: list[str]) -> dict[str, float]:
    """Load each of ``models`` (catalog names) as a first request would; seconds each took.
    A model that fails to load is logged and skipped: its first request reports the failure."""
    from .providers.local import LOCAL_MODELS, Job, runtime_for

    took: dict[str, float] = {}
    for name in models:
        model = LOCAL_MODELS.get(name)
        if model is None:
            continue
        started = time.monotonic()
        job = Job(lambda instance, job: None)  # the worker loads the instance first, then runs this
        try:
            runtime_for(model).submit(job)
            async for _ in job:
                pass
        except Exception as exc:  # noqa: BLE001 - warm-up must never take the server down
            log.warning("Warm-up of local model %s failed: %s", name, exc)
            continue
        took[name] = round(time.monotonic() - started, 3)
        log.info("Local model %s loaded in %.1f s (warm-up)", name, took[name])
    return took


def _run(delay: float) -> None:
    time.sleep(delay)  # let the server bind its port first: start-up never waits for the weights
    try:
        close_old_connections()
        models = served_local_models()
    except Exception as exc:  # noqa: BLE001 - e.g. the database is not migrated yet
        log.warning("Warm-up skipped: %s", exc)
        return
    finally:
        connections.close_all()
    asyncio.run(warm(models))


def start(delay: float = 1.0) -> bool:
    """Start the warm-up thread once per process when ``settings.WARMUP`` is on; whether it started."""
    global _started
    if not settings.WARMUP:
        return False
    with _lock:
        if _started:
            return False
        _started = True
    threading.Thread(target=_run, args=(delay,), name="warm-up", daemon=True).start()
    return True
