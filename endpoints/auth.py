"""Token authentication for the HTTP APIs.

Accepts ``Authorization: Bearer <token>`` and HTTP Basic with user ``token`` and the token as the
password (``curl -u token:$TOKEN``). Tokens are personal access tokens and the short-lived access
tokens a service principal gets from the OAuth token endpoint (:mod:`endpoints.oauth`): both are
:class:`AccessToken` rows. A verified token is trusted for ``TOKEN_CACHE_SECONDS`` by this process,
never past its expiry (revoking in this process takes effect at once; in another process within
that time). The cache holds at most ``TOKEN_CACHE_SIZE`` tokens (the least recently used go first)
and only tokens that were valid: an unknown, revoked or expired one is looked up each time and
never stored, so random tokens cannot grow it.
"""
from __future__ import annotations

import base64
import binascii
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from .errors import ServingError
from .models import AccessToken, hash_token
from .registry import release_connections


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    token_id: int


DEFAULT_CACHE_SIZE = 10_000
# digest -> (principal, monotonic time it is trusted until), least recently used first.
_cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
_cache_lock = threading.Lock()  # signals clear it from request threads


def forget_tokens() -> None:
    with _cache_lock:
        _cache.clear()


def _cached(digest: str) -> Principal | None:
    with _cache_lock:
        hit = _cache.get(digest)
        if hit is None:
            return None
        if hit[1] <= time.monotonic():
            del _cache[digest]
            return None
        _cache.move_to_end(digest)
        return hit[0]


def _remember(digest: str, principal: Principal, until: float) -> None:
    size = max(0, int(getattr(settings, "TOKEN_CACHE_SIZE", DEFAULT_CACHE_SIZE)))
    with _cache_lock:
        _cache[digest] = (principal, until)
        _cache.move_to_end(digest)
        while len(_cache) > size:
            _cache.popitem(last=False)


def unauthenticated(message: str) -> ServingError:
    return ServingError(message, "UNAUTHENTICATED")


def token_from_header(header: str) -> str:
    """The token carried by an Authorization header value; UNAUTHENTICATED when there is none."""
    if not header:
        raise unauthenticated(
            "Authentication required: send 'Authorization: Bearer <token>' or HTTP Basic 'token:<token>'."
        )
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme == "basic" and value:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise unauthenticated("The Basic credentials are not valid base64.") from None
        if password:
            return password
        raise unauthenticated("HTTP Basic auth must be 'token:<token>' with the token as the password.")
    raise unauthenticated("Unsupported Authorization scheme: use 'Bearer <token>' or HTTP Basic 'token:<token>'.")


INVALID = "Invalid access token: it is unknown, revoked or expired. Create one with `python manage.py create_token`."


def expired(expires_at: datetime) -> ServingError:
    when = expires_at.astimezone(dt_timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return unauthenticated(
        f"The access token expired at {when}. An OAuth client gets a new one from the token endpoint "
        "(/oidc/v1/token); a personal access token is replaced with `python manage.py create_token`."
    )


def _lookup(digest: str) -> tuple[Principal, datetime | None]:
    """The principal a token's digest names and the token's expiry; UNAUTHENTICATED otherwise."""
    try:
        token = AccessToken.objects.select_related("user").filter(token_hash=digest).first()
        if token is None or token.revoked_at is not None or not token.user.is_active:
            raise unauthenticated(INVALID)
        now = timezone.now()
        if token.expires_at is not None and token.expires_at <= now:
            raise expired(token.expires_at)
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            AccessToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return Principal(token.user_id, token.user.get_username(), token.pk), token.expires_at
    finally:
        # The API handler sends no request signals in this thread (playground/asgi.py): release
        # the connection here, by Django's own rules.
        release_connections()


_lookup_async = sync_to_async(_lookup)


async def authenticate(header: str) -> Principal:
    """The principal a request's Authorization header names; ServingError(401) otherwise."""
    digest = hash_token(token_from_header(header))
    principal = _cached(digest)
    if principal is not None:
        return principal
    principal, expires_at = await _lookup_async(digest)  # raises for an invalid token: nothing cached
    ttl = settings.TOKEN_CACHE_SECONDS
    if expires_at is not None:
        ttl = min(ttl, (expires_at - timezone.now()).total_seconds())
    if ttl > 0:
        _remember(digest, principal, time.monotonic() + ttl)
    return principal
