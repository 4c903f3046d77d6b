"""Secrets: provider credentials stored encrypted and referenced from provider configs.

**Store.** A secret is a value under a scope and a key (each 1–100 letters, digits, ``.``, ``_``
or ``-``). Only its Fernet token is stored (:class:`~endpoints.models.Secret`; Fernet is AES-128
in CBC mode with an HMAC-SHA256, from ``cryptography``). The encryption key is
``FONDASI_SECRETS_KEY`` (a Fernet key, e.g. from ``python -c "from cryptography.fernet import
Fernet; print(Fernet.generate_key().decode())"``), or else the key file ``SECRETS_KEY_FILE``
(``FONDASI_SECRETS_KEY_FILE``, default ``var/secrets_key`` beside the SQLite database), made on
the first :func:`put`, readable by its owner only. Back the key up with the database: stored
secrets cannot be read without it. Values go in with ``python manage.py secrets put`` or the
admin, and never come back out to a person: :func:`list_secrets` gives scopes, keys and dates.

**References.** In a served entity's provider config (Databricks' external-model format):

- a string value that is exactly ``{{secrets/<scope>/<key>}}`` stands for that secret's value;
- a field named ``<field>_plaintext`` gives ``<field>`` its value as written (for trying things
  out: the value then sits in the config, the endpoints file and the database in clear).

:func:`resolve` turns a config into what its provider receives (``EntitySpec.config``), at any
depth: ``{"openai_api_key": "{{secrets/openai/key}}"}`` becomes ``{"openai_api_key": "sk-…"}``,
``{"api_key_auth": {"key": "X-Key", "value_plaintext": "abc"}}`` becomes ``{"api_key_auth":
{"key": "X-Key", "value": "abc"}}``. The registry resolves when it reads the database, so
putting a secret again takes effect within ``REGISTRY_TTL_SECONDS`` everywhere, and at once in
the process that put it.

**Permissions.** Like Databricks' secret ACLs, a scope grants users and groups ``READ`` (list
its keys, refer to its secrets in an endpoint's provider config), ``WRITE`` (also put and delete
its secrets) or ``MANAGE`` (also grant and revoke; :class:`~endpoints.models.SecretScopeACL`).
Superusers have ``MANAGE`` on every scope, and so has :data:`OPERATOR` — whoever runs
``manage.py`` on the server, who can read the secrets key anyway. The user who creates a scope (puts
its first secret) gets ``MANAGE`` on it. :func:`require_references` is the check every surface
that saves a provider config makes (the management API, the endpoints file as its owner, the
admin): each reference needs ``READ`` on its scope, else :class:`PermissionDenied` names the
scope, the permission and how to grant it.

**Masking.** How a config is shown (references as written, credentials masked) is
:mod:`endpoints.masking`, the one masking of the API, the pages and the admin; it imports this
module, never the other way round. No value reaches a log line, an error message or a repr.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from django.conf import settings

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # endpoints.models.Secret's scope and key
NAME_RULE = "1–100 letters, digits, '.', '_' or '-'"
REFERENCE = re.compile(r"\{\{secrets/([A-Za-z0-9_.-]{1,100})/([A-Za-z0-9_.-]{1,100})\}\}")
PLAINTEXT = "_plaintext"
#: stands in for a secret that cannot be read yet when a config is validated (:func:`declared`)
PLACEHOLDER = "<secret>"


class SecretsError(Exception):
    """A secret cannot be stored or read, or a config refers to one wrongly.

    The message says what to do; it names scopes, keys and fields, never a value.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MissingSecret(SecretsError):
    """The secret does not exist."""


class PermissionDenied(SecretsError):
    """The acting user lacks a permission on a scope (a 403 wherever it reaches an API)."""

    def __init__(self, message: str, scope: str, needed: str) -> None:
        super().__init__(message)
        self.scope, self.needed = scope, needed


@dataclass(frozen=True)
class SecretInfo:
    """What may be shown about a stored secret."""

    scope: str
    key: str
    updated_at: datetime

    @property
    def reference(self) -> str:
        return reference(self.scope, self.key)


def reference(scope: str, key: str) -> str:
    return f"{{{{secrets/{scope}/{key}}}}}"


def put_command(scope: str, key: str) -> str:
    return f"python manage.py secrets put {scope} {key}"


# --- the store -----------------------------------------------------------------------------


def put(scope: str, key: str, value: str, user: Any = None) -> bool:
    """Store ``value`` under ``scope``/``key``, replacing any value there; True when it is new.

    ``user`` (default :data:`OPERATOR`) needs ``WRITE`` on an existing scope; a user who creates
    the scope gets ``MANAGE`` on it.
    """
    from django.db import transaction

    from . import registry
    from .models import Secret, SecretScopeACL

    user = OPERATOR if user is None else user
    check_name("scope", scope)
    check_name("key", key)
    ciphertext = encrypt(value)
    with transaction.atomic():
        new_scope = not scope_exists(scope)
        if new_scope:
            _require_active(user, f"creating secret scope '{scope}'")
        else:
            require(user, scope, WRITE, f"putting {reference(scope, key)}")
        _, created = Secret.objects.update_or_create(scope=scope, key=key, defaults={"ciphertext": ciphertext})
        if new_scope and user is not OPERATOR:
            SecretScopeACL.objects.get_or_create(scope=scope, user=user, defaults={"permission": MANAGE})
    registry.invalidate()
    return created


def get(scope: str, key: str) -> str:
    """The value of a secret. Raises :class:`MissingSecret`, or :class:`SecretsError` when the
    secrets key cannot decrypt it."""
    from .models import Secret

    token = Secret.objects.filter(scope=scope, key=key).values_list("ciphertext", flat=True).first()
    if token is None:
        raise _missing(scope, key)
    return _decrypt(scope, key, bytes(token))


def delete(scope: str, key: str, user: Any = None) -> None:
    """Remove a secret; :class:`MissingSecret` when there is none. ``user`` (default
    :data:`OPERATOR`) needs ``WRITE`` on the scope."""
    from . import registry
    from .models import Secret

    require(OPERATOR if user is None else user, scope, WRITE, f"deleting {reference(scope, key)}")
    deleted, _ = Secret.objects.filter(scope=scope, key=key).delete()
    if not deleted:
        raise MissingSecret(f"Secret {reference(scope, key)} does not exist.")
    registry.invalidate()


def list_secrets(scope: str | None = None, user: Any = None) -> list[SecretInfo]:
    """Every stored secret (of ``scope``) that ``user`` (default :data:`OPERATOR`) may read, by
    scope and key: names and dates, never values."""
    from .models import Secret

    rows = Secret.objects.order_by("scope", "key")
    if scope is not None:
        rows = rows.filter(scope=scope)
    readable = readable_scopes(OPERATOR if user is None else user)
    if readable is not None:
        rows = rows.filter(scope__in=readable)
    return [SecretInfo(*row) for row in rows.values_list("scope", "key", "updated_at")]


def reader() -> Callable[[str, str], str]:
    """A :func:`get` that reads all stored secrets in one query, on its first call (for resolving
    a whole registry; a registry with no reference makes no query)."""
    from .models import Secret

    tokens: dict[tuple[str, str], bytes] | None = None

    def read(scope: str, key: str) -> str:
        nonlocal tokens
        if tokens is None:
            tokens = {(s, k): bytes(t) for s, k, t in Secret.objects.values_list("scope", "key", "ciphertext")}
        token = tokens.get((scope, key))
        if token is None:
            raise _missing(scope, key)
        return _decrypt(scope, key, token)

    return read


def check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise SecretsError(f"A secret {kind} is {NAME_RULE}; got {name!r}.")


def encrypt(value: str) -> bytes:
    """The Fernet token stored for ``value`` (makes the key file on first use)."""
    if not isinstance(value, str) or not value:
        raise SecretsError("A secret's value must not be empty.")
    return _fernet(create=True).encrypt(value.encode())


def _missing(scope: str, key: str) -> MissingSecret:
    return MissingSecret(
        f"secret {reference(scope, key)} does not exist. Create it with `{put_command(scope, key)}` "
        "(the value is read from stdin) or in the admin under Secrets."
    )


def _decrypt(scope: str, key: str, token: bytes) -> str:
    fernet = _fernet(create=False)
    if fernet is not None:
        from cryptography.fernet import InvalidToken

        try:
            return fernet.decrypt(token).decode()
        except InvalidToken:
            pass
    raise SecretsError(
        f"secret {reference(scope, key)} cannot be decrypted with the current secrets key ({_key_source()}): "
        f"it was stored with another key. Restore that key, or store the secret again with `{put_command(scope, key)}`."
    )


def _key_source() -> str:
    return "FONDASI_SECRETS_KEY" if settings.SECRETS_KEY else f"the key file {settings.SECRETS_KEY_FILE}"


def _fernet(create: bool) -> Fernet | None:
    """The Fernet of the configured key; None when there is no key file yet and ``create`` is false."""
    # Imported here: cryptography costs every server ~9 MiB, and most never read a secret.
    from cryptography.fernet import Fernet

    if settings.SECRETS_KEY:
        key = settings.SECRETS_KEY.encode()
    else:
        path = Path(settings.SECRETS_KEY_FILE)
        if create and not path.exists():
            _create_key_file(path)
        try:
            key = path.read_bytes().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SecretsError(f"Cannot read the secrets key file {path}: {exc.strerror}.") from None
    try:
        return Fernet(key)
    except ValueError:
        raise SecretsError(
            f"{_key_source()} does not hold a Fernet key (32 url-safe base64-encoded bytes). Generate one with "
            '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`.'
        ) from None


def _create_key_file(path: Path) -> None:
    """Write a new key to ``path``, readable by its owner only, unless another process just did.

    The key is written to a temporary file (``mkstemp``: ``O_CREAT | O_EXCL``, mode 0600) that is
    then linked to ``path`` — so no process ever reads a half-written key, and of two processes
    making it at once the first wins and the other reads its key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            from cryptography.fernet import Fernet

            fh.write(Fernet.generate_key())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return
    finally:
        os.unlink(tmp)
    log.warning("Created the secrets key file %s: back it up with the database.", path)


# --- scope permissions (Databricks' secret ACLs) -------------------------------------------

READ, WRITE, MANAGE = "READ", "WRITE", "MANAGE"
#: each level includes the ones before it
LEVELS = (READ, WRITE, MANAGE)


class _Operator:
    """Whoever runs ``manage.py`` on the server (and applies the endpoints file unless
    ``ENDPOINTS_FILE_OWNER`` names a user): they can read the secrets key and the database, so
    they have every permission."""

    is_superuser = True
    is_active = True
    pk = None

    def get_username(self) -> str:
        return "the server's operator"

    def __repr__(self) -> str:
        return "OPERATOR"


OPERATOR: Any = _Operator()


@dataclass(frozen=True)
class ACLInfo:
    """One grant, as :func:`acl_list` shows it."""

    scope: str
    kind: str  # "user" or "group"
    principal: str
    permission: str


def is_superuser(user: Any) -> bool:
    """Whether ``user`` has every permission: :data:`OPERATOR` or an active superuser."""
    return user is OPERATOR or bool(
        user is not None and getattr(user, "is_active", False) and getattr(user, "is_superuser", False)
    )


def permission(user: Any, scope: str) -> str | None:
    """The highest permission ``user`` has on ``scope`` (its own ACL or one of its groups'), or None."""
    from django.db.models import Q

    from .models import SecretScopeACL

    if is_superuser(user):
        return MANAGE
    if user is None or not getattr(user, "is_active", False) or getattr(user, "pk", None) is None:
        return None  # anonymous, inactive
    granted = SecretScopeACL.objects.filter(Q(user_id=user.pk) | Q(group__user=user.pk), scope=scope)
    return max(granted.values_list("permission", flat=True), key=LEVELS.index, default=None)


def has_permission(user: Any, scope: str, needed: str) -> bool:
    have = permission(user, scope)
    return have is not None and LEVELS.index(have) >= LEVELS.index(needed)


def require(user: Any, scope: str, needed: str, doing: str) -> None:
    """:class:`PermissionDenied` unless ``user`` has ``needed`` on ``scope``; the message says
    what ``doing`` needed and how to grant it."""
    if has_permission(user, scope, needed):
        return
    name = user.get_username() if user is not None and hasattr(user, "get_username") else ""
    who = f"user '{name}'" if name else "an anonymous user"
    have = permission(user, scope)
    grant = f"python manage.py secrets acl put {scope} {needed} --user {name or 'NAME'}"
    raise PermissionDenied(
        f"{doing[:1].upper()}{doing[1:]} takes {needed} permission on secret scope '{scope}', and {who} has "
        f"{have + ' only' if have else 'none'}. A user with MANAGE on the scope (or a superuser) can grant it: "
        f"`{grant}`, or in the admin under Secret scope ACLs.",
        scope,
        needed,
    )


def _require_active(user: Any, doing: str) -> None:
    if not is_superuser(user) and (user is None or not getattr(user, "is_active", False) or getattr(user, "pk", None) is None):
        raise PermissionDenied(f"{doing[:1].upper()}{doing[1:]} takes a signed-in, active user.", "", WRITE)


def scope_exists(scope: str) -> bool:
    """Whether ``scope`` holds a secret or an ACL (scopes have no row of their own)."""
    from .models import Secret, SecretScopeACL

    return Secret.objects.filter(scope=scope).exists() or SecretScopeACL.objects.filter(scope=scope).exists()


def scopes_with(user: Any, needed: str) -> set[str] | None:
    """The scopes on which ``user`` has ``needed`` (or more); None for all of them (a superuser)."""
    from django.db.models import Q

    from .models import SecretScopeACL

    if is_superuser(user):
        return None
    if user is None or not getattr(user, "is_active", False) or getattr(user, "pk", None) is None:
        return set()
    rows = SecretScopeACL.objects.filter(Q(user_id=user.pk) | Q(group__user=user.pk))
    return set(rows.filter(permission__in=LEVELS[LEVELS.index(needed):]).values_list("scope", flat=True))


def readable_scopes(user: Any) -> set[str] | None:
    """The scopes ``user`` may read (list and refer to); None for all of them (a superuser)."""
    return scopes_with(user, READ)


def acl_put(scope: str, level: str, *, user: Any = None, group: Any = None, acting: Any = None) -> bool:
    """Give ``user`` or ``group`` ``level`` on ``scope``, replacing what it had; True when new.
    ``acting`` (default :data:`OPERATOR`) needs ``MANAGE`` on the scope."""
    from .models import SecretScopeACL

    check_name("scope", scope)
    if level not in LEVELS:
        raise SecretsError(f"A permission is one of {', '.join(LEVELS)}; got {level!r}.")
    if (user is None) == (group is None):
        raise SecretsError("Give a user or a group, one of them.")
    require(OPERATOR if acting is None else acting, scope, MANAGE, f"changing the ACLs of secret scope '{scope}'")
    _, created = SecretScopeACL.objects.update_or_create(
        scope=scope, user=user, group=group, defaults={"permission": level}
    )
    return created


def acl_delete(scope: str, *, user: Any = None, group: Any = None, acting: Any = None) -> None:
    """Take back what ``user`` or ``group`` had on ``scope``; :class:`SecretsError` when it had
    nothing. ``acting`` (default :data:`OPERATOR`) needs ``MANAGE`` on the scope."""
    from .models import SecretScopeACL

    if (user is None) == (group is None):
        raise SecretsError("Give a user or a group, one of them.")
    require(OPERATOR if acting is None else acting, scope, MANAGE, f"changing the ACLs of secret scope '{scope}'")
    deleted, _ = SecretScopeACL.objects.filter(scope=scope, user=user, group=group).delete()
    if not deleted:
        who = f"group '{group.name}'" if group is not None else f"user '{user.get_username()}'"
        raise SecretsError(f"{who} has no ACL on secret scope '{scope}'.")


def acl_list(scope: str | None = None, acting: Any = None) -> list[ACLInfo]:
    """The grants (on ``scope``) that ``acting`` (default :data:`OPERATOR`) may see: those of the
    scopes it manages (as Databricks' list-acls)."""
    from .models import SecretScopeACL

    rows = SecretScopeACL.objects.select_related("user", "group")
    if scope is not None:
        rows = rows.filter(scope=scope)
    managed = scopes_with(OPERATOR if acting is None else acting, MANAGE)
    if managed is not None:
        rows = rows.filter(scope__in=managed)
    found = [
        ACLInfo(r.scope, "group", r.group.name, r.permission) if r.group_id
        else ACLInfo(r.scope, "user", r.user.get_username(), r.permission)
        for r in rows
    ]
    return sorted(found, key=lambda e: (e.scope, e.kind, e.principal))  # groups first, on every database


# --- references ----------------------------------------------------------------------------


def parse_reference(value: Any) -> tuple[str, str] | None:
    """``(scope, key)`` when ``value`` is a secret reference, else None."""
    match = REFERENCE.fullmatch(value) if isinstance(value, str) else None
    return (match[1], match[2]) if match else None


def references(config: Any, prefix: str = "") -> list[tuple[str, str, str]]:
    """Every ``(field path, scope, key)`` that ``config`` refers to, at any depth (``<field>_plaintext``
    values are never references)."""
    found: list[tuple[str, str, str]] = []
    if isinstance(config, Mapping):
        for name, value in config.items():
            name = str(name)
            path = f"{prefix}.{name}" if prefix else name
            if not (name.endswith(PLAINTEXT) and name != PLAINTEXT):
                found.extend(references(value, path))
    elif isinstance(config, list):
        for i, item in enumerate(config):
            found.extend(references(item, f"{prefix}[{i}]"))
    else:
        ref = parse_reference(config)
        if ref is not None:
            found.append((prefix, *ref))
    return found


def require_references(config: Any, user: Any, where: str) -> None:
    """:class:`PermissionDenied` unless ``user`` has ``READ`` on the scope of every secret ``config``
    refers to: what saving a provider config takes, on every surface (``where`` names the entity)."""
    for path, scope, key in references(config):
        require(user, scope, READ, f"using {reference(scope, key)} (field '{path}') in {where}")


def resolve(config: Mapping[str, Any], get: Callable[[str, str], str] = get) -> dict[str, Any]:
    """A new config with every reference replaced by its secret's value (read with ``get``) and
    every ``<field>_plaintext`` renamed ``<field>``, in nested mappings and lists too.

    Raises :class:`SecretsError` naming the field: a secret that does not exist
    (:class:`MissingSecret`) or cannot be decrypted, a malformed reference, a field given both
    ways, a config that is not a mapping.
    """
    if not isinstance(config, Mapping):
        raise SecretsError("the provider configuration must be a mapping of fields to values.")
    return _resolve_mapping(config, get, "")


def declared(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """:func:`resolve` for validating a config as it is declared (the endpoints file, the admin):
    a secret that cannot be read yet stands in as :data:`PLACEHOLDER` and is logged as a warning
    naming ``where`` — a config may name a secret before it is put. Other problems raise."""

    def lenient(scope: str, key: str) -> str:
        try:
            return get(scope, key)
        except SecretsError as exc:
            log.warning("%s: %s Until then, queries to it fail.", where, exc.message)
            return PLACEHOLDER

    return resolve(config, lenient)


def _resolve_mapping(config: Mapping[str, Any], get: Callable[[str, str], str], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in config.items():
        name = str(name)
        path = f"{prefix}.{name}" if prefix else name
        if name.endswith(PLAINTEXT) and name != PLAINTEXT:
            field = name.removesuffix(PLAINTEXT)
            if field in config:
                where = f"{prefix}." if prefix else ""
                raise SecretsError(f"give '{where}{field}' or '{path}', not both.")
            out[field] = value  # as written: a plaintext value is never a reference
        else:
            out[name] = _resolve_value(value, get, path)
    return out


def _resolve_value(value: Any, get: Callable[[str, str], str], path: str) -> Any:
    if isinstance(value, Mapping):
        return _resolve_mapping(value, get, path)
    if isinstance(value, list):
        return [_resolve_value(item, get, f"{path}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, str) or not value.startswith("{{secrets"):
        return value
    ref = parse_reference(value)
    if ref is None:
        raise SecretsError(
            f"'{path}' is not a valid secret reference: write {{{{secrets/<scope>/<key>}}}}, "
            f"scope and key being {NAME_RULE}."
        )
    try:
        return get(*ref)
    except SecretsError as exc:
        raise type(exc)(f"field '{path}': {exc.message}") from None

