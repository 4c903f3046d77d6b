"""The endpoint registry as the query path sees it: an immutable snapshot, cached per process.

The database is the source of truth (the YAML file, the admin and the REST API all write to it).
A process re-reads it at most every ``REGISTRY_TTL_SECONDS`` and at once after a change made in
the same process. When the endpoints file changed on disk since this process last looked, it is
applied first; a malformed file is logged with its line and the last good configuration keeps
serving.

Provider configs are resolved as they are read (:func:`endpoints.secrets.resolve`): providers
receive secret values under their plain field names. A served entity whose secret cannot be read
(it does not exist, or the secrets key changed) gets an empty config and a line in
``Endpoint.problems`` saying how to fix it; every other endpoint keeps serving, and queries to
that entity are refused with that line (``endpoints.service.prepare``).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

from . import secrets
from .errors import not_found
from .providers.base import EntitySpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    name: str
    task: str
    description: str
    tags: tuple[tuple[str, str], ...]
    entities: tuple[EntitySpec, ...]
    ready: str
    config_update: str
    source: str
    creator: str
    created_at: datetime
    updated_at: datetime
    #: served entity name -> why it cannot be queried (a 400 naming the fix; never a secret value)
    problems: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


_lock = threading.Lock()
_snapshot: dict[str, Endpoint] = {}
_loaded_at = float("-inf")
_file_stamp: tuple | None = None


def release_connections() -> None:
    """Django's ``close_old_connections`` for this thread, sparing connections in a transaction.

    A connection inside an atomic block belongs to whoever opened the block (a management
    command, a test), which closes it; closing it here would end their transaction.
    """
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


def invalidate() -> None:
    global _loaded_at
    _loaded_at = float("-inf")


def sync_file(force: bool = False) -> Any:
    """Apply the endpoints file if it changed since this process last applied it.

    Returns the :class:`~endpoints.config.Changes`, or None when nothing was applied.
    """
    global _file_stamp
    from .config import ConfigError, apply, load_file

    path = settings.ENDPOINTS_FILE
    if not path:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    stamp = (str(path), stat.st_mtime_ns, stat.st_size)
    if stamp == _file_stamp and not force:
        return None
    _file_stamp = stamp
    try:
        decls = load_file(path)
    except ConfigError as exc:
        log.error("%s. The last good configuration keeps serving.", exc)
        return None
    changes = apply(decls)
    if changes.added or changes.changed or changes.removed:
        log.info("Applied %s: %s", path, "; ".join(changes.lines()))
    return changes


def _read() -> dict[str, Endpoint]:
    from .models import ServingEndpoint

    if getattr(settings, "ENDPOINTS_AUTO_LOAD", True):
        sync_file()
    read_secret = secrets.reader()
    out: dict[str, Endpoint] = {}
    for ep in ServingEndpoint.objects.prefetch_related("entities"):
        entities: list[EntitySpec] = []
        problems: dict[str, str] = {}
        for e in ep.entities.all():
            try:
                config = secrets.resolve(e.config, read_secret)
            except secrets.SecretsError as exc:
                config = {}  # nothing half-resolved reaches a provider
                problems[e.name] = f"Endpoint '{ep.name}' cannot be queried: served entity '{e.name}', {exc.message}"
                if _snapshot.get(ep.name) is None or _snapshot[ep.name].problems.get(e.name) != problems[e.name]:
                    log.warning("%s", problems[e.name])
            entities.append(EntitySpec(name=e.name, provider=e.provider, model=e.model, task=ep.task, vision=e.vision,
                                       config=config))
        out[ep.name] = Endpoint(
            name=ep.name,
            task=ep.task,
            description=ep.description,
            tags=tuple((t.get("key", ""), t.get("value", "")) for t in ep.tags or ()),
            entities=tuple(entities),
            ready=ep.ready,
            config_update=ep.config_update,
            source=ep.source,
            creator=ep.creator,
            created_at=ep.created_at,
            updated_at=ep.updated_at,
            problems=problems,
        )
    return out


def snapshot() -> dict[str, Endpoint]:
    """All endpoints by name (sync callers)."""
    global _snapshot, _loaded_at
    if time.monotonic() - _loaded_at < settings.REGISTRY_TTL_SECONDS:
        return _snapshot
    with _lock:
        if time.monotonic() - _loaded_at >= settings.REGISTRY_TTL_SECONDS:
            started = time.monotonic()
            try:
                _snapshot = _read()
            finally:
                # The API handler sends no request signals in this thread (playground/asgi.py):
                # release the connection here, by Django's own rules.
                release_connections()
            _loaded_at = started
    return _snapshot


_snapshot_async = sync_to_async(snapshot)


async def asnapshot() -> dict[str, Endpoint]:
    """All endpoints by name; touches the database (in a worker thread) only when the cache is stale."""
    if time.monotonic() - _loaded_at < settings.REGISTRY_TTL_SECONDS:
        return _snapshot
    return await _snapshot_async()


async def get(name: str) -> Endpoint:
    endpoint = (await asnapshot()).get(name)
    if endpoint is None:
        raise not_found(f"Endpoint '{name}' does not exist. List endpoints with GET /api/2.0/serving-endpoints.")
    return endpoint
