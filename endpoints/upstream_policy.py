"""Which upstream addresses an endpoint's provider config may point at, by who saves it.

A provider config names the server an external model's queries — and its credentials — go to
(``openai_api_base``, ``anthropic_api_base``, ``custom_provider_url``, ``databricks_workspace_url``,
``bedrock_endpoint_url``, ...). Whoever may save such a URL decides where a secret is sent and
which server the gateway calls from inside the network, so:

- a **superuser** (or :data:`endpoints.secrets.OPERATOR`) may point anywhere;
- **anyone else** only at public addresses: every ``http(s)``/``ws(s)`` URL in the config, at any
  depth and whatever the field's name (the config as the provider receives it: secret references
  resolved, ``*_plaintext`` renamed), has its host resolved (DNS, as the HTTP client will: decimal,
  hex and octal IPv4 forms like ``http://2130706433/`` and names like ``localhost`` included), and
  **every** address it resolves to must be public — not loopback, link-local, private,
  carrier-grade NAT, multicast, reserved, unspecified or otherwise non-global (IPv4 inside IPv6
  checked too; the same rule as image fetching, :func:`endpoints.images.address_allowed`).
  Exceptions are the settings ``UPSTREAM_ALLOWED_HOSTS`` (host names, exact or ``*.suffix``) and
  ``UPSTREAM_ALLOWED_NETWORKS`` (CIDR networks), which open those hosts or networks to everyone.

A refusal is a 403 ``PERMISSION_DENIED`` naming the field, the address and its class; a host that
cannot be resolved is a 400 (it cannot be checked). The check is made when a config is saved
(management API create and ``PUT …/config``, the admin, the endpoints file as its owner), with
the acting user; the providers' built-in vendor hosts (used when no URL is given) are not checked.

Upstream redirects are not followed (``follow_redirects=False`` in
:mod:`endpoints.providers.http`), so a public upstream cannot bounce a query inward. A name that
resolves to a public address when saved and to an inside one later (DNS rebinding) is not caught
here: list allowed names, or keep external endpoints to superusers, where that matters.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from . import secrets
from .errors import ServingError, invalid
from .images import address_allowed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
URL_SCHEMES = ("http", "https", "ws", "wss")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT


def check(config: Mapping[str, Any], user: Any, raw: Mapping[str, Any] | None = None) -> None:
    """Refuse ``config`` (as its provider receives it) if ``user`` may not point at one of its URLs.

    ``raw`` is the config as written: a URL that came from a secret is then never echoed.
    Raises :class:`~endpoints.errors.ServingError`: 403 for an address ``user`` may not use, 400
    for a host that cannot be resolved.
    """
    if secrets.is_superuser(user):
        return
    for path, value, from_secret in _urls(config, raw, ""):
        _check_url(path, value, from_secret)


def address_class(ip: IPAddress) -> str | None:
    """The class that keeps ``ip`` from non-superusers ("loopback", "private", ...), or None when public."""
    if address_allowed(ip):
        return None
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        candidates += [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None] + list(ip.teredo or ())
    for candidate in reversed(candidates):  # the embedded IPv4 address says more
        for label, test in (
            ("unspecified", candidate.is_unspecified),
            ("loopback", candidate.is_loopback),
            ("link-local", candidate.is_link_local),
            ("multicast", candidate.is_multicast),
            ("carrier-grade NAT", candidate in _SHARED),
            ("private", candidate.is_private),
            ("reserved", candidate.is_reserved),
            ("site-local", isinstance(candidate, ipaddress.IPv6Address) and candidate.is_site_local),
        ):
            if test:
                return label
    return "non-public"


def _urls(config: Any, raw: Any, path: str) -> Iterator[tuple[str, str, bool]]:
    """``(field path, URL, came from a secret)`` for every URL-looking string in ``config``."""
    if isinstance(config, Mapping):
        for name, value in config.items():
            written = None
            if isinstance(raw, Mapping):
                written = raw.get(name, raw.get(f"{name}{secrets.PLAINTEXT}"))
            yield from _urls(value, written, f"{path}.{name}" if path else str(name))
    elif isinstance(config, list):
        for i, item in enumerate(config):
            written = raw[i] if isinstance(raw, list) and i < len(raw) else None
            yield from _urls(item, written, f"{path}[{i}]")
    elif isinstance(config, str):
        try:
            scheme = urlsplit(config.strip()).scheme
        except ValueError:
            scheme = ""
        if scheme in URL_SCHEMES:
            yield path, config.strip(), secrets.parse_reference(raw) is not None


def _hosts(url: str) -> set[str]:
    """The host of ``url`` as urllib (the providers) and httpx (the client) read it: both are checked."""
    hosts: set[str] = set()
    try:
        hosts.add((urlsplit(url).hostname or "").rstrip("."))
    except ValueError:
        pass
    try:
        hosts.add(httpx.URL(url).raw_host.decode("ascii").lower().rstrip("."))
    except (httpx.InvalidURL, ValueError, TypeError, UnicodeError):
        pass
    return {h for h in hosts if h}


def _host_allowed(host: str) -> bool:
    for allowed in settings.UPSTREAM_ALLOWED_HOSTS:
        allowed = allowed.lower().rstrip(".")
        if host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])):
            return True
    return False


def _network_allowed(ip: IPAddress) -> bool:
    embedded = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    for network in settings.UPSTREAM_ALLOWED_NETWORKS:
        network = ipaddress.ip_network(network, strict=False)
        if ip in network or (embedded is not None and embedded in network):
            return True
    return False


def _resolve(host: str) -> list[IPAddress]:
    """Every address ``host`` resolves to, as the HTTP client's connect will find them."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    addresses: list[IPAddress] = []
    for *_, sockaddr in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM):
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # without an IPv6 scope id
        if ip not in addresses:
            addresses.append(ip)
    return addresses


_ALLOW_HINT = (
    "only a superuser may point an endpoint at loopback, link-local, private or other non-public "
    "addresses; the server's operator can open hosts or networks to everyone with "
    "FONDASI_UPSTREAM_ALLOWED_HOSTS or FONDASI_UPSTREAM_ALLOWED_NETWORKS."
)


def _check_url(path: str, url: str, from_secret: bool) -> None:
    hosts = _hosts(url)
    if not hosts:
        raise invalid(f"'{path}' is a URL without a host.")
    for host in sorted(hosts):
        if _host_allowed(host):
            continue
        shown = f"the URL in '{path}' (from a secret)" if from_secret else f"'{path}' ({host})"
        try:
            addresses = _resolve(host)
        except (OSError, UnicodeError):
            addresses = []
        if not addresses:
            raise invalid(
                f"The host of {shown} cannot be resolved, so it cannot be checked against the upstream "
                f"address policy: use a host name that resolves (to public addresses), or ask a superuser."
            )
        for ip in addresses:
            label = address_class(ip)
            if label is None or _network_allowed(ip):
                continue
            where = "" if from_secret or str(ip) == host else f" resolves to {ip}, which"
            article = "an" if label[0] in "aeiou" else "a"
            raise ServingError(f"{shown}{where} is {article} {label} address: {_ALLOW_HINT}", "PERMISSION_DENIED")
