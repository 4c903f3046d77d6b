"""The endpoint registry and API tokens."""
from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from .schemas import TASKS

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
NAME_RULE = "1–63 letters, digits, '-' or '_', starting with a letter or digit"


class ServingEndpoint(models.Model):
    """A named endpoint: one task, served by one or more entities."""

    class Source(models.TextChoices):
        YAML = "yaml", "endpoints file"
        API = "api", "REST API"
        ADMIN = "admin", "admin"

    name = models.CharField(
        max_length=63, unique=True, validators=[RegexValidator(NAME_PATTERN, f"Endpoint names are {NAME_RULE}.")]
    )
    task = models.CharField(max_length=32, choices=[(t, t) for t in TASKS])
    description = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True, help_text='A list of {"key": …, "value": …}.')
    ready = models.CharField(max_length=16, default="READY", choices=[("READY", "READY"), ("NOT_READY", "NOT_READY")])
    config_update = models.CharField(
        max_length=16,
        default="NOT_UPDATING",
        choices=[(s, s) for s in ("NOT_UPDATING", "IN_PROGRESS", "UPDATE_FAILED")],
    )
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.ADMIN)
    # Governance settings set through the management API (stored now; enforced by a later issue).
    rate_limits = models.JSONField(default=list, blank=True, help_text="Databricks' rate-limits list.")
    ai_gateway = models.JSONField(default=dict, blank=True, help_text="Databricks' AI gateway configuration.")
    creator = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ServedEntity(models.Model):
    """What answers an endpoint's queries: a local model or an external provider's model."""

    endpoint = models.ForeignKey(ServingEndpoint, related_name="entities", on_delete=models.CASCADE)
    name = models.CharField(max_length=63, help_text="Shown as the served-model-name response header.")
    provider = models.CharField(max_length=40, help_text="'local' or an external provider such as 'openai-compatible'.")
    model = models.CharField(max_length=200, help_text="The model name at the provider (or in the local catalog).")
    config = models.JSONField(default=dict, blank=True, help_text="The provider's configuration.")
    vision = models.BooleanField(
        null=True, blank=True, default=None,
        help_text="Whether the model sees images (image parts are sent to it). Unknown: as the model is "
        "known to (yes for Claude, Gemini, Bedrock, Cohere; no for the embedded models, openai-compatible and custom).",
    )
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["endpoint", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["endpoint", "name"], name="unique_entity_name_per_endpoint")]
        verbose_name_plural = "served entities"

    def __str__(self) -> str:
        return f"{self.name} ({self.provider}: {self.model})"


TOKEN_PREFIX = "dapi"


def hash_token(token: str) -> str:
    # Tokens carry 128 bits of randomness, so a fast hash is enough (no password stretching).
    return hashlib.sha256(token.encode()).hexdigest()


class AccessToken(models.Model):
    """A personal access token (``dapi…``). Only its hash is stored; the value is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, related_name="access_tokens", on_delete=models.CASCADE)
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=16, editable=False, help_text="The first characters, to recognise a token.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"

    @classmethod
    def issue(cls, user, name: str, expires_at=None) -> tuple["AccessToken", str]:
        """Create a token for ``user``; return it and the plaintext value (shown once, never stored)."""
        value = TOKEN_PREFIX + secrets.token_hex(16)
        token = cls.objects.create(
            user=user, name=name, token_hash=hash_token(value), hint=value[:8], expires_at=expires_at
        )
        return token, value

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())

    def revoke(self) -> None:
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])


class ExampleInput(models.Model):
    """A request body shown by the Query dialog's **Show Example**.

    Examples come from the endpoints file (``source="yaml"``: replaced whenever the file is
    applied) or are saved by a person from the Query dialog (``source="user"``: never touched by
    the file). ``body`` is any JSON object; it is validated only when it is sent.
    """

    class Source(models.TextChoices):
        YAML = "yaml", "endpoints file"
        USER = "user", "saved by a user"

    endpoint = models.ForeignKey(ServingEndpoint, related_name="examples", on_delete=models.CASCADE)
    name = models.CharField(max_length=100)
    body = models.JSONField(help_text="A request body for the endpoint's task (a JSON object).")
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.USER)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, related_name="+", on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    position = models.PositiveSmallIntegerField(default=0, help_text="Order within the endpoints file.")

    class Meta:
        # The file's examples first, in file order ("yaml" sorts after "user"), then saved ones by age.
        ordering = ["endpoint", "-source", "position", "created_at", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.endpoint_id})"


class Secret(models.Model):
    """A credential referenced as ``{{secrets/<scope>/<key>}}`` from provider configs.

    Only the Fernet token of the value is stored (see :mod:`endpoints.secrets`); the value is
    never shown again after it is put.
    """

    scope = models.CharField(max_length=100, validators=[RegexValidator(r"^[A-Za-z0-9_.-]+$")])
    key = models.CharField(max_length=100, validators=[RegexValidator(r"^[A-Za-z0-9_.-]+$")])
    ciphertext = models.BinaryField(editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scope", "key"]
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="unique_secret_per_scope")]

    def __str__(self) -> str:
        return f"{{{{secrets/{self.scope}/{self.key}}}}}"


class ServicePrincipal(models.Model):
    """A machine identity for OAuth machine-to-machine: a Django user plus client credentials.

    The client secret is stored only as a hash and shown once. Access tokens it obtains from
    the token endpoint are short-lived :class:`AccessToken` rows of its user.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, related_name="service_principal", on_delete=models.CASCADE)
    client_id = models.CharField(max_length=64, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["user__username"]

    def __str__(self) -> str:
        return f"{self.user.get_username()} ({self.client_id})"


class SecretScopeACL(models.Model):
    """Who may do what with the secrets of a scope: Databricks' secret ACLs.

    One row gives one principal — a user or a group, never both — ``READ``, ``WRITE`` or
    ``MANAGE`` on ``scope``; each level includes the ones before it. ``READ`` lets a principal
    list the scope's keys and refer to its secrets in an endpoint's provider config; ``WRITE``
    also puts and deletes its secrets; ``MANAGE`` also grants and revokes these ACLs. Superusers
    have ``MANAGE`` on every scope; the user who creates a scope gets ``MANAGE`` on it. See
    :mod:`endpoints.secrets`.
    """

    class Permission(models.TextChoices):
        READ = "READ", "READ"
        WRITE = "WRITE", "WRITE"
        MANAGE = "MANAGE", "MANAGE"

    scope = models.CharField(max_length=100, validators=[RegexValidator(r"^[A-Za-z0-9_.-]+$")])
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, related_name="secret_acls", on_delete=models.CASCADE
    )
    group = models.ForeignKey(
        "auth.Group", null=True, blank=True, related_name="secret_acls", on_delete=models.CASCADE
    )
    permission = models.CharField(max_length=8, choices=Permission.choices)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["scope", "group__name", "user__username"]
        verbose_name = "secret scope ACL"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, group__isnull=True)
                | models.Q(user__isnull=True, group__isnull=False),
                name="secret_acl_user_or_group",
                violation_error_message="An ACL is for a user or for a group: give exactly one.",
            ),
            models.UniqueConstraint(
                fields=["scope", "user"], condition=models.Q(user__isnull=False), name="unique_secret_acl_per_user",
                violation_error_message="This user already has an ACL on this scope: change that one.",
            ),
            models.UniqueConstraint(
                fields=["scope", "group"], condition=models.Q(group__isnull=False), name="unique_secret_acl_per_group",
                violation_error_message="This group already has an ACL on this scope: change that one.",
            ),
        ]

    @property
    def principal(self) -> str:
        return f"group '{self.group.name}'" if self.group_id else f"user '{self.user.get_username()}'"

    def __str__(self) -> str:
        return f"{self.permission} on scope '{self.scope}' for {self.principal}"
