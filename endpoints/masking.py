"""How a provider configuration may be shown: one masking used by the management API, the pages
and the admin.

:func:`masked` returns a copy of a config in which

- every field that holds a credential by its name is masked (:func:`is_secret_field`: any
  ``*_plaintext`` field, and the names :func:`is_credential` knows — ``*_key``,
  token, secret, password, … — plus cookies), whatever its type;
- the ``value`` of a ``{"key" | "name" | "header": <credential header>, "value": …}`` pair is masked
  (a header given as name and value, e.g. ``{"name": "Authorization", "value": "Bearer …"}``);
- in every other string, credentials that ride inside it are masked: a URL's userinfo
  (``http://user:••••@host``, ``https://••••@host``) and its credential-like query and fragment
  parameters (``?api-key=••••&api-version=2024-02-01``), a header line (``Authorization: ••••``)
  and an authorization value (``Bearer ••••abcd``);
- a secret reference ``{{secrets/scope/key}}`` shows as written: it names a secret, it is not one.

A masked credential is ``••••`` plus at most its last 4 characters (:func:`mask_value`).
The walk is iterative: however deep a stored config is nested, showing it cannot exhaust the stack.

:func:`find_mask` finds a masked value sent back (an answer reused as an update body), and
:func:`unmask` puts the stored credential back where a form returns the masked value unchanged.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Callable, Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

# Only names from secrets; secrets never imports this module (no cycle).
from .secrets import PLAINTEXT, parse_reference

__all__ = [
    "MASK", "find_mask", "is_credential", "is_secret_field", "is_secret_metadata", "mask_text", "mask_value",
    "masked", "unmask",
]

MASK = "••••"

# Field names that hold credentials (checked without a ``_plaintext`` suffix): any "key"
# (openai_api_key, anthropic_api_key, x-api-key, aws_access_key_id, private_key — Vertex AI's
# service-account key), "token" but not "tokens" (databricks_api_token, bearer_token_auth.token,
# aws_session_token; not max_tokens), "secret" (aws_secret_access_key, client_secret,
# microsoft_entra_client_secret), password, passphrase, credential(s), authorization.
_CREDENTIAL_NAME = re.compile(r"key|token(?!s)|secret|password|passphrase|credential|authorization", re.IGNORECASE)

# Provider metadata (``Provider.describe``) promises no secrets; it is masked anyway, but counts
# such as ``default_max_tokens`` are not credentials.
_SECRET_METADATA = re.compile(r"key|token(?!s)|secret|password|private", re.IGNORECASE)
# Header names and URL parameters that carry credentials (besides what is_credential knows):
# cookies, Azure SAS ``sig``, AWS ``X-Amz-Signature``/``X-Amz-Credential``, ``auth``, ``session``.
_CREDENTIAL_WORD = re.compile(
    r"key|token(?!s)|secret|password|passphrase|passwd|pwd|credential|authorization|auth|cookie|session|"
    r"signature|^sig$|^code$",
    re.IGNORECASE,
)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_HEADER_LINE = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*:\s*(\S.*)$", re.DOTALL)
_AUTH_VALUE = re.compile(
    r"^\s*(Bearer|Basic|Token|Digest|Negotiate|ApiKey|Api-Key|SharedKey|AWS4-HMAC-SHA256)\s+(\S.*)$",
    re.IGNORECASE | re.DOTALL,
)
# A sibling that names the header whose credential ``value`` holds.
_PAIR_NAMES = ("key", "name", "header")
# An unnamed URL parameter this long may be a key (``?sk-…``).
_BARE_PARAMETER_LEN = 16


def is_credential(path: str) -> bool:
    """Whether the config field at dotted ``path`` holds a credential: by its own name (see
    ``_CREDENTIAL_NAME``), except in ``api_key_auth`` (the custom provider's header), where
    ``value`` is the credential and ``key`` the header's name."""
    parts = path.split(".")
    name = parts[-1].removesuffix(PLAINTEXT)
    if len(parts) > 1 and parts[-2] == "api_key_auth":
        return name == "value"
    return bool(_CREDENTIAL_NAME.search(name))


def mask_value(value: Any) -> str:
    """``••••`` plus at most the last 4 characters: enough to recognise a key, never to use it.

    Short values show no characters at all (four of eight would give half the secret away).
    """
    if isinstance(value, str) and len(value) >= 16:
        return MASK + value[-4:]
    return MASK


def is_secret_field(path: str) -> bool:
    """Whether the config field at dotted ``path`` holds a credential by its name: every
    ``*_plaintext`` field, every name :func:`is_credential` knows, and cookies."""
    name = path.rsplit(".", 1)[-1]
    return name.endswith(PLAINTEXT) or is_credential(path) or "cookie" in name.lower()


def is_secret_metadata(path: str) -> bool:
    """The (looser) rule for provider metadata shown on the endpoint page."""
    return bool(_SECRET_METADATA.search(path.rsplit(".", 1)[-1]))


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and parse_reference(value) is not None


def _mask_parameters(text: str) -> str:
    """``a=1&api-key=…`` with the credential-like values masked (the encoding of the rest kept)."""
    out = []
    for part in text.split("&"):
        name, eq, value = part.partition("=")
        if eq:
            out.append(f"{name}={MASK}" if value and _CREDENTIAL_WORD.search(unquote(name)) else part)
        else:
            out.append(MASK if len(part) >= _BARE_PARAMETER_LEN else part)
    return "&".join(out)


def _mask_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        # Unparseable: show it only when nothing could hide in it.
        return MASK if ("@" in url or "?" in url or "#" in url) else url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _password = userinfo.partition(":")
        # A lone user name in a URL is usually a token (https://<token>@host).
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    query = _mask_parameters(parts.query) if parts.query else ""
    fragment = _mask_parameters(parts.fragment) if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def mask_text(text: str) -> str:
    """``text`` with the credentials that ride inside it masked (URLs, header lines, authorization values)."""
    if _is_reference(text):
        return text
    if _URL.match(text):
        return _mask_url(text)
    header = _HEADER_LINE.match(text)
    if header and _CREDENTIAL_WORD.search(header.group(1)):
        return f"{header.group(1)}: {mask_text(header.group(2)) if _AUTH_VALUE.match(header.group(2)) else MASK}"
    auth = _AUTH_VALUE.match(text)
    if auth:
        return f"{auth.group(1)} {mask_value(auth.group(2).strip())}"
    return text


def _pair_holds_credential(mapping: Mapping) -> bool:
    """``{"name": "Authorization", "value": …}``: ``value`` is the credential of a named header."""
    if "value" not in mapping:
        return False
    return any(isinstance(mapping.get(k), str) and _CREDENTIAL_WORD.search(mapping[k]) for k in _PAIR_NAMES)


def masked(config: Any, is_secret: Callable[[str], bool] = is_secret_field) -> Any:
    """A copy of ``config`` as it may be shown (see the module doc); ``is_secret`` decides which
    dotted field paths hold credentials by name (list items share their list's path)."""
    root: list[Any] = [None]
    # (value to copy, its dotted path, where the copy goes, at which key or index)
    stack: list[tuple[Any, str, Any, Any]] = [(config, "", root, 0)]
    while stack:
        value, path, target, slot = stack.pop()
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            target[slot] = out
            pair = _pair_holds_credential(value)
            for name, item in value.items():
                sub = f"{path}.{name}" if path else str(name)
                secret = is_secret(sub) or (pair and name == "value")
                if secret and not isinstance(item, Mapping) and not _is_reference(item):
                    out[name] = mask_value(item)
                else:
                    out[name] = None
                    stack.append((item, sub, out, name))
        elif isinstance(value, list):
            items: list[Any] = [None] * len(value)
            target[slot] = items
            stack.extend((item, path, items, i) for i, item in enumerate(value))
        elif isinstance(value, str):
            target[slot] = mask_text(value)
        else:
            target[slot] = value
    return root[0]


def _leaves(value: Any) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) of ``value`` that is not a mapping or a list, iteratively."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(((*path, k), v) for k, v in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend(((*path, i), v) for i, v in reversed(list(enumerate(item))))
        else:
            yield path, item


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


def find_mask(config: Any) -> str | None:
    """The dotted path of the first string in ``config`` that holds a masked value, else None."""
    for path, value in _leaves(config):
        if isinstance(value, str) and MASK in value:
            return _dotted(path)
    return None


def _at(value: Any, path: tuple[Any, ...]) -> tuple[bool, Any]:
    for step in path:
        if isinstance(value, Mapping) and step in value:
            value = value[step]
        elif isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value):
            value = value[step]
        else:
            return False, None
    return True, value


def _put(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    holder = value
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = new
    return value


def unmask(new: Any, old: Any, is_secret: Callable[[str], bool] = is_secret_field) -> tuple[Any, str | None]:
    """``new`` (an edited copy of ``masked(old)``) with each masked value left unchanged replaced
    by the stored one, and None; or ``new`` and the dotted path of a masked value that is not
    ``old``'s (typed in, or moved), which must not be stored."""
    shown = masked(old, is_secret)
    for path, value in list(_leaves(new)):
        if not (isinstance(value, str) and MASK in value):
            continue
        found, was_shown = _at(shown, path)
        if not found or was_shown != value:
            return new, _dotted(path)
        new = _put(new, path, _at(old, path)[1])
    return new, None
