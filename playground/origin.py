"""The playground WebSocket's origin check: only the site's own pages may open a socket.

A browser sends the cookie of the site a WebSocket goes to whatever page opens it, so the socket
must come from one of our own pages. An ``Origin`` is accepted when its scheme, host and port are
exactly

- the site's own origin: the request's ``Host`` (which must be in ``ALLOWED_HOSTS``, so a
  rebound DNS name is refused) with the connection's scheme (``wss`` is ``https``; behind a proxy
  that terminates TLS, ``SECURE_PROXY_SSL_HEADER`` says so, as for Django's pages), or
- one of ``CSRF_TRUSTED_ORIGINS`` (``FONDASI_CSRF_TRUSTED_ORIGINS``), Django's format:
  ``https://chat.example.com``, ``https://*.example.com``, a port where it is not the default.

Anything else — another port on the same host (another local app), another scheme, no Origin at
all, ``null`` — is refused before the socket is accepted (the handshake gets a 403). Channels'
``AllowedHostsOriginValidator`` compared only the host with ``ALLOWED_HOSTS``.
"""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import is_same_domain, split_domain_port, validate_host

log = logging.getLogger("fondasi.playground")

_DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]


def parse_origin(value: str) -> Origin | None:
    """(scheme, host, port) of an http(s) origin, the port made explicit; None when it is not one."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _allowed_hosts() -> list[str]:
    hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not hosts:  # what Django's pages accept then
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def site_origin(scope: dict[str, Any]) -> Origin | None:
    """The origin of the site the socket was opened on, or None when its Host is not allowed."""
    host = _header(scope, b"host")
    if not host:
        return None
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, _allowed_hosts()):
        return None
    secure = scope.get("scheme") in ("wss", "https")
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, expected = proxy
        forwarded = _header(scope, name.removeprefix("HTTP_").lower().replace("_", "-").encode())
        if forwarded is not None:
            secure = forwarded.split(",", 1)[0].strip() == expected
    return parse_origin(f"{'https' if secure else 'http'}://{host}")


def _trusted(origin: Origin) -> bool:
    scheme, host, port = origin
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        if "://*." in entry:  # https://*.example.com[:port]: the domain and every subdomain
            pattern = parse_origin(entry.replace("://*.", "://", 1))
            if pattern and pattern[0] == scheme and pattern[2] == port and is_same_domain(host, "." + pattern[1]):
                return True
        elif parse_origin(entry) == origin:
            return True
    return False


def origin_allowed(scope: dict[str, Any]) -> bool:
    value = _header(scope, b"origin")
    origin = parse_origin(value) if value else None
    if origin is None:
        return False
    return origin == site_origin(scope) or _trusted(origin)


class SameOriginValidator:
    """ASGI middleware for WebSockets: refuses, before it is accepted, a socket whose ``Origin``
    is not the site's own or a trusted one (see the module doc)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            log.warning("websocket refused: origin %r is not this site's (host %r)",
                        _header(scope, b"origin"), _header(scope, b"host"))
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
