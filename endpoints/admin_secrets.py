"""The admin side of secret scope permissions (:mod:`endpoints.secrets`, Databricks' secret ACLs).

- :class:`SecretScopeACLAdmin` grants ``READ`` / ``WRITE`` / ``MANAGE`` on a scope to a user or a
  group. Changing a scope's ACLs takes ``MANAGE`` on it; a user who is not a superuser sees only
  the ACLs of the scopes they manage.
- :class:`SecretScopeAccess` is mixed into the Secret admin: it lists only the secrets of scopes
  the user may read; putting a value into, or deleting from, an existing scope takes ``WRITE``; a
  user who creates a scope (adds its first secret) gets ``MANAGE`` on it.

Django's model permissions still apply first (a staff user needs them to see either page at all).
"""
from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied

from . import secrets
from .models import SecretScopeACL


def with_user(form_class: type[forms.ModelForm], user) -> type[forms.ModelForm]:
    """``form_class`` knowing who submits it (its checks run as that user)."""
    return type(form_class.__name__, (form_class,), {"acting_user": user})


def _refuse(user, scope: str, needed: str, doing: str) -> None:
    """A form error unless ``user`` has ``needed`` on ``scope``."""
    try:
        secrets.require(user, scope, needed, doing)
    except secrets.PermissionDenied as exc:
        raise forms.ValidationError(exc.message) from None


class SecretScopeAccess:
    """For the Secret admin: scope permissions on top of Django's model permissions."""

    def get_queryset(self, request):
        rows = super().get_queryset(request)
        readable = secrets.readable_scopes(request.user)
        return rows if readable is None else rows.filter(scope__in=readable)

    def has_change_permission(self, request, obj=None):
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or secrets.has_permission(request.user, obj.scope, secrets.WRITE))

    def has_delete_permission(self, request, obj=None):
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or secrets.has_permission(request.user, obj.scope, secrets.WRITE))

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        user = request.user

        class ScopeChecked(form):
            def clean(self):
                data = super().clean()
                scope = data.get("scope") or (self.instance.scope if self.instance.pk else None)
                if scope and secrets.scope_exists(scope):  # a new scope is the creator's
                    _refuse(user, scope, secrets.WRITE, f"putting a secret into scope '{scope}'")
                return data

        ScopeChecked.__name__ = form.__name__
        return ScopeChecked

    def save_model(self, request, obj, form, change):
        new_scope = not change and not secrets.scope_exists(obj.scope)
        super().save_model(request, obj, form, change)
        if new_scope:
            SecretScopeACL.objects.get_or_create(
                scope=obj.scope, user=request.user, defaults={"permission": secrets.MANAGE}
            )

    def delete_queryset(self, request, queryset):
        # The bulk "delete selected" action checks model permissions only: check every scope.
        for scope in set(queryset.values_list("scope", flat=True)):
            if not secrets.has_permission(request.user, scope, secrets.WRITE):
                raise PermissionDenied(f"Deleting secrets of scope '{scope}' takes WRITE permission on it.")
        super().delete_queryset(request, queryset)


class SecretScopeACLForm(forms.ModelForm):
    acting_user = None  # set per request (SecretScopeACLAdmin.get_form)

    class Meta:
        model = SecretScopeACL
        fields = ["scope", "user", "group", "permission"]
        help_texts = {
            "scope": "The secret scope: 1–100 letters, digits, '.', '_' or '-'.",
            "user": "A user, or else a group (not both).",
            "permission": "READ: list and use its secrets in endpoints; WRITE: also put and delete them; "
            "MANAGE: also change these ACLs.",
        }

    def clean_scope(self) -> str:
        scope = self.cleaned_data["scope"]
        try:
            secrets.check_name("scope", scope)
        except secrets.SecretsError as exc:
            raise forms.ValidationError(exc.message) from None
        _refuse(self.acting_user, scope, secrets.MANAGE, f"changing the ACLs of secret scope '{scope}'")
        if self.instance.pk and self.instance.scope != scope:
            old = self.instance.scope
            _refuse(self.acting_user, old, secrets.MANAGE, f"changing the ACLs of secret scope '{old}'")
        return scope

    def clean(self):
        data = super().clean()
        if (data.get("user") is None) == (data.get("group") is None):
            raise forms.ValidationError("An ACL is for a user or for a group: give exactly one.")
        return data


@admin.register(SecretScopeACL)
class SecretScopeACLAdmin(admin.ModelAdmin):
    """Secret scope ACLs: who may read, write or manage the secrets of a scope."""

    form = SecretScopeACLForm
    list_display = ["scope", "principal", "permission", "created_at"]
    list_filter = ["permission"]
    search_fields = ["scope", "user__username", "group__name"]

    def get_queryset(self, request):
        rows = super().get_queryset(request).select_related("user", "group")
        managed = secrets.scopes_with(request.user, secrets.MANAGE)
        return rows if managed is None else rows.filter(scope__in=managed)

    def get_form(self, request, obj=None, change=False, **kwargs):
        return with_user(super().get_form(request, obj, change=change, **kwargs), request.user)

    def has_change_permission(self, request, obj=None):
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or secrets.has_permission(request.user, obj.scope, secrets.MANAGE))

    def has_delete_permission(self, request, obj=None):
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or secrets.has_permission(request.user, obj.scope, secrets.MANAGE))

    def delete_queryset(self, request, queryset):
        for scope in set(queryset.values_list("scope", flat=True)):
            if not secrets.has_permission(request.user, scope, secrets.MANAGE):
                raise PermissionDenied(f"Changing the ACLs of secret scope '{scope}' takes MANAGE permission on it.")
        super().delete_queryset(request, queryset)
