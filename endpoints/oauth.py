"""OAuth 2.0 machine-to-machine (client credentials) for service principals, as Databricks does it.

A Databricks client given a client id and secret instead of a token (``oauth-m2m``) reads
``oidc_endpoint`` from the start-up probe, GETs ``{oidc_endpoint}/.well-known/oauth-authorization-server``
for the absolute ``token_endpoint``, POSTs ``grant_type=client_credentials&scope=all-apis`` there
with the client credentials in HTTP Basic, and sends ``Bearer <access_token>`` until the token is
about to expire (``spec/WIRE.md``, "Auth").

A service principal is a Django user (no password, not staff) plus a :class:`ServicePrincipal`
holding a UUID client id and the hash of its client secret (``dose…``, shown once). An access token
is an ordinary :class:`AccessToken` row of that user expiring after an hour: hashed at rest, and
accepted by :mod:`endpoints.auth` wherever a personal access token is.

Token rows are bounded: expired ones are deleted a day after they expire, and a service principal
holds at most ``OAUTH_MAX_TOKENS`` (100) access-token rows: a new token replaces the oldest (as a
client asking again expects a token, not a 429; a well-behaved client reuses its token for the
hour, so only a runaway one loses its oldest tokens).

Token-endpoint errors follow RFC 6749 §5.2 (``{"error", "error_description"}``), which the SDK
reads, not the Databricks error shape of the other APIs.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import logging
import secrets
import uuid
from datetime import timedelta
from urllib.parse import unquote_plus

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import DisallowedHost, SuspiciousOperation
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from .errors import ServingError
from .models import AccessToken, ServicePrincipal, hash_token
from .registry import release_connections
from .views import api, json_response

log = logging.getLogger(__name__)

SECRET_PREFIX = "dose"  # as Databricks' OAuth secrets: recognisable in a leaked file or log
SCOPE = "all-apis"
ACCESS_TOKEN_SECONDS = 3600
ACCESS_TOKEN_NAME = "OAuth access token"
# Expired access tokens are kept this long before they are deleted, so that a client presenting
# one is told that it expired rather than that it is unknown.
EXPIRED_TOKENS_KEPT = timedelta(days=1)
DEFAULT_MAX_TOKENS = 100
FORM = "application/x-www-form-urlencoded"
# Token responses must not be cached (RFC 6749 §5.1), error responses neither.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# Compared against when the client id is unknown, so that every request pays one comparison.
_NO_SECRET = "0" * 64


# --- service principals -----------------------------------------------------------------------


def set_new_secret(principal: ServicePrincipal) -> str:
    """Give ``principal`` a new client secret (and a client id if it has none) and save it.

    Returns the secret: only its hash is stored, so this is the one time it can be shown.
    """
    secret = SECRET_PREFIX + secrets.token_hex(32)
    principal.client_id = principal.client_id or str(uuid.uuid4())
    principal.secret_hash = hash_token(secret)
    principal.save()
    return secret


@transaction.atomic
def create_service_principal(name: str) -> tuple[ServicePrincipal, str]:
    """A new service principal with its own user ``name``; returns it and its client secret.

    The caller checks that no user has that name (the database refuses a second one).
    """
    user = get_user_model()(username=name)
    user.set_unusable_password()
    user.save()
    principal = ServicePrincipal(user=user)
    return principal, set_new_secret(principal)


@transaction.atomic
def rotate_secret(principal: ServicePrincipal) -> str:
    """Replace the client secret and revoke the access tokens obtained with the old one."""
    secret = set_new_secret(principal)
    AccessToken.objects.filter(user=principal.user_id, name=ACCESS_TOKEN_NAME, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    return secret


# --- discovery --------------------------------------------------------------------------------


def oidc_base(request: HttpRequest) -> str:
    """The absolute ``<scheme>://<host>/oidc`` of this request; BAD_REQUEST for a host not in ALLOWED_HOSTS.

    The host is validated because the discovery document tells clients where to send their
    secret: a forged Host header must not be able to point them elsewhere.
    """
    try:
        return request.build_absolute_uri("/oidc")
    except DisallowedHost:
        host = request.META.get("HTTP_HOST", "")
        raise ServingError(
            f"The host {host!r} is not in ALLOWED_HOSTS: add it (environment variable ALLOWED_HOSTS) to use OAuth.",
            "BAD_REQUEST",
        ) from None


@api("GET", auth=False)
async def discovery(request: HttpRequest) -> HttpResponse:
    """``GET /oidc/.well-known/oauth-authorization-server`` — RFC 8414 metadata (no database)."""
    base = oidc_base(request)
    return json_response({
        "issuer": base,
        "authorization_endpoint": f"{base}/v1/authorize",
        "token_endpoint": f"{base}/v1/token",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": [SCOPE],
        # Only the client credentials grant, which never uses the authorization endpoint.
        "response_types_supported": [],
    })


# --- token endpoint ---------------------------------------------------------------------------


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: ``error`` is one of its codes, ``description`` a sentence for a person."""

    def __init__(self, error: str, description: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description)


def invalid_client(description: str) -> OAuthError:
    return OAuthError("invalid_client", description, status=401, headers={"WWW-Authenticate": 'Basic realm="fondasi"'})


def oauth_error_response(exc: OAuthError) -> HttpResponse:
    body = {"error": exc.error, "error_description": exc.description}
    return json_response(body, status=exc.status, headers={**NO_STORE, **exc.headers})


def read_form(request: HttpRequest) -> dict[str, str]:
    """The token request's form parameters; each may appear once (RFC 6749 §3.2)."""
    try:
        if request.content_type != FORM and request.body:
            raise invalid_request(f"Send the parameters form-encoded (Content-Type: {FORM}).")
        form = request.POST
    except SuspiciousOperation:  # too large, or too many fields
        raise invalid_request("The request body is too large for a token request.") from None
    repeated = sorted(key for key, values in form.lists() if len(values) > 1)
    if repeated:
        raise invalid_request(f"'{repeated[0]}' is given more than once.")
    return form.dict()


def client_credentials(header: str, form: dict[str, str]) -> tuple[str, str]:
    """The client id and secret, from HTTP Basic (``client_secret_basic``) or the form (``client_secret_post``)."""
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            raise invalid_client("Authenticate the client with HTTP Basic 'client_id:client_secret', not a token.")
        if "client_secret" in form:
            raise invalid_request("Send the client credentials once: in the Authorization header or the form, not both.")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise invalid_client("The Basic credentials are not valid base64.") from None
        client_id, _, secret = decoded.partition(":")
        if not client_id or not secret:
            raise invalid_client("HTTP Basic must carry 'client_id:client_secret'.")
        # RFC 6749 §2.3.1: both are form-encoded before Basic encoding.
        return unquote_plus(client_id), unquote_plus(secret)
    client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    if not client_id or not secret:
        raise invalid_client(
            "Client authentication required: HTTP Basic 'client_id:client_secret', "
            "or client_id and client_secret in the form."
        )
    return client_id, secret


def check_scope(scope: str | None) -> None:
    unknown = sorted(set((scope or SCOPE).split()) - {SCOPE})
    if unknown:
        raise OAuthError("invalid_scope", f"Unknown scope {unknown[0]!r}: the only scope is '{SCOPE}'.")


def _grant(client_id: str, client_secret: str) -> str:
    """Authenticate a service principal and issue an access token; returns its value (never stored)."""
    try:
        principal = ServicePrincipal.objects.select_related("user").filter(client_id=client_id).first()
        expected = principal.secret_hash if principal else _NO_SECRET
        if not hmac.compare_digest(hash_token(client_secret), expected) or principal is None:
            raise invalid_client("Client authentication failed: unknown client_id or wrong client_secret.")
        if not principal.user.is_active:
            raise OAuthError(
                "invalid_grant",
                f"The service principal '{principal.user.get_username()}' is deactivated; "
                "an administrator can reactivate its user.",
            )
        now = timezone.now()
        AccessToken.objects.filter(
            name=ACCESS_TOKEN_NAME, user__service_principal__isnull=False, expires_at__lt=now - EXPIRED_TOKENS_KEPT
        ).delete()
        expires_at = now + timedelta(seconds=ACCESS_TOKEN_SECONDS)
        _, value = AccessToken.issue(principal.user, ACCESS_TOKEN_NAME, expires_at=expires_at)
        _keep_newest(principal.user_id)
        return value
    finally:
        release_connections()  # see endpoints.auth._lookup


def _keep_newest(user_id: int) -> None:
    """Delete the service principal's oldest access tokens beyond ``OAUTH_MAX_TOKENS``."""
    keep = max(1, int(getattr(settings, "OAUTH_MAX_TOKENS", DEFAULT_MAX_TOKENS)))
    mine = AccessToken.objects.filter(user=user_id, name=ACCESS_TOKEN_NAME)
    oldest = list(mine.order_by("-created_at", "-pk").values_list("pk", flat=True)[keep:])
    if oldest:
        # Each row's delete signal drops this process's cached token checks (endpoints.signals).
        mine.filter(pk__in=oldest).delete()
        log.info("oauth user_id=%s: %d oldest access tokens replaced (OAUTH_MAX_TOKENS=%d)", user_id, len(oldest), keep)


_grant_async = sync_to_async(_grant)


@csrf_exempt
async def token(request: HttpRequest) -> HttpResponse:
    """``POST /oidc/v1/token`` — the client credentials grant (RFC 6749 §4.4)."""
    try:
        if request.method != "POST":
            message = f"{request.method} is not allowed on {request.path}; use POST."
            raise OAuthError("invalid_request", message, status=405, headers={"Allow": "POST"})
        form = read_form(request)
        grant_type = form.get("grant_type")
        if not grant_type:
            raise invalid_request("Missing 'grant_type': send grant_type=client_credentials.")
        if grant_type != "client_credentials":
            message = f"Grant type {grant_type!r} is not supported: use client_credentials."
            raise OAuthError("unsupported_grant_type", message)
        check_scope(form.get("scope"))
        client_id, secret = client_credentials(request.headers.get("Authorization", ""), form)
        value = await _grant_async(client_id, secret)
    except OAuthError as exc:
        return oauth_error_response(exc)
    except Exception:  # noqa: BLE001 - the edge never shows a traceback
        ref = uuid.uuid4().hex[:12]
        log.exception("Internal error %s on %s %s", ref, request.method, request.path)
        return oauth_error_response(
            OAuthError("server_error", f"Internal error (reference {ref}); the server log has the details.", status=500)
        )
    body = {"access_token": value, "token_type": "Bearer", "expires_in": ACCESS_TOKEN_SECONDS, "scope": SCOPE}
    return json_response(body, headers=NO_STORE)


@csrf_exempt
async def authorize(request: HttpRequest) -> HttpResponse:
    """``/oidc/v1/authorize`` — named by the discovery document; no browser (user) flow is offered."""
    return oauth_error_response(OAuthError(
        "unsupported_response_type",
        "Fondasi offers OAuth only to service principals (the client credentials grant at /oidc/v1/token); "
        "people use a personal access token.",
    ))
