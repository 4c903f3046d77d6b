"""Token authentication for the HTTP APIs.

Accepts ``Authorization: Bearer <token>`` and HTTP Basic with user ``token`` and the token as the
password (``curl -u token:$TOKEN``). A verified token is trusted for ``TOKEN_CACHE_SECONDS`` by
this process (revoking in this process takes effect at once; in another process within that time).
"""
from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass

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


_cache: dict[str, tuple[Principal, float]] = {}


def forget_tokens() -> None:
    _cache.clear()


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


def _lookup(digest: str) -> Principal | None:
    try:
        token = AccessToken.objects.select_related("user").filter(token_hash=digest).first()
        if token is None or not token.active or not token.user.is_active:
            return None
        now = timezone.now()
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            AccessToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return Principal(token.user_id, token.user.get_username(), token.pk)
    finally:
        # The API handler sends no request signals in this thread (playground/asgi.py): release
        # the connection here, by Django's own rules.
        release_connections()


_lookup_async = sync_to_async(_lookup)


async def authenticate(header: str) -> Principal:
    """The principal a request's Authorization header names; ServingError(401) otherwise."""
    digest = hash_token(token_from_header(header))
    hit = _cache.get(digest)
    if hit is not None and hit[1] > time.monotonic():
        return hit[0]
    principal = await _lookup_async(digest)
    if principal is None:
        _cache.pop(digest, None)
        raise unauthenticated("Invalid access token: it is unknown, revoked or expired. Create one with `python manage.py create_token`.")
    _cache[digest] = (principal, time.monotonic() + settings.TOKEN_CACHE_SECONDS)
    return principal
