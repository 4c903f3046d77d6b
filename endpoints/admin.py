from django import forms
from django.contrib import admin

from . import admin_identities  # noqa: F401 - registers ServicePrincipalAdmin
from . import admin_secrets  # registers SecretScopeACLAdmin; scope permissions for SecretAdmin
from . import registry, secrets
from .config import check_entity
from .errors import ServingError
from .json_limits import MAX_CONFIG_DEPTH, check_json
from .masking import MASK, find_mask, masked, unmask
from .models import AccessToken, ExampleInput, Secret, ServedEntity, ServingEndpoint


def _bounded(value, field: str, **limits):
    """``value`` when within the JSON limits (endpoints/json_limits.py), else a form error saying which."""
    try:
        check_json(value, field, **limits)
    except ServingError as exc:
        raise forms.ValidationError(exc.message) from None
    return value


class ServingEndpointForm(forms.ModelForm):
    class Meta:
        model = ServingEndpoint
        fields = "__all__"

    def clean_tags(self):
        return _bounded(self.cleaned_data.get("tags"), "tags")

    def clean_rate_limits(self):
        return _bounded(self.cleaned_data.get("rate_limits"), "rate_limits")

    def clean_ai_gateway(self):
        return _bounded(self.cleaned_data.get("ai_gateway"), "ai_gateway")


class ServedEntityForm(forms.ModelForm):
    """A served entity; its provider config is shown masked as the API and the pages show it
    (endpoints/masking.py). A masked value submitted unchanged keeps the stored credential."""

    class Meta:
        model = ServedEntity
        fields = ["name", "provider", "model", "config", "vision", "position"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and "config" in self.fields:
            self.initial["config"] = masked(self.instance.config)

    def clean_config(self):
        config = _bounded(self.cleaned_data.get("config"), "config", max_depth=MAX_CONFIG_DEPTH)
        if self.instance.pk is not None:
            # The stored config: the instance takes the cleaned data only after clean().
            config, problem = unmask(config, self.instance.config)
        else:
            problem = find_mask(config)
        if problem is not None:
            raise forms.ValidationError(
                f"'{problem}' holds a masked value ({MASK}…), not a credential: type the credential "
                "itself or a {{secrets/scope/key}} reference."
            )
        return config

    def clean(self):
        data = super().clean()
        endpoint = getattr(self.instance, "endpoint", None) if self.instance.endpoint_id else None
        task = self.data.get("task") or (endpoint.task if endpoint else None)
        if task and data.get("provider") and data.get("model"):
            row = {k: data.get(k) for k in ("name", "provider", "model", "config", "vision")}
            try:  # as the signed-in user: READ on each secret's scope, the upstream address policy
                problem = check_entity(task, row, user=getattr(self, "acting_user", None))
            except ServingError as exc:
                problem = exc.message
            if problem:
                raise forms.ValidationError(problem)
        return data


class ServedEntityInline(admin.StackedInline):
    model = ServedEntity
    form = ServedEntityForm
    extra = 0
    min_num = 1

    def get_formset(self, request, obj=None, **kwargs):
        # Each entity's config is checked as the signed-in user saves it (ServedEntityForm.clean).
        kwargs["form"] = admin_secrets.with_user(kwargs.get("form", self.form), request.user)
        return super().get_formset(request, obj, **kwargs)


class ExampleInputInline(admin.StackedInline):
    """Example inputs for the Query dialog. Those from the endpoints file are replaced when it is applied."""

    model = ExampleInput
    extra = 0
    fields = ["name", "body", "source", "created_by", "created_at"]
    readonly_fields = ["source", "created_by", "created_at"]


@admin.register(ServingEndpoint)
class ServingEndpointAdmin(admin.ModelAdmin):
    form = ServingEndpointForm
    list_display = ["name", "task", "ready", "source", "updated_at"]
    list_filter = ["task", "source", "ready"]
    search_fields = ["name", "description"]
    readonly_fields = ["created_at", "updated_at"]
    inlines = [ServedEntityInline, ExampleInputInline]

    def save_formset(self, request, form, formset, change):
        # Examples added here are people's own (source "user"), like those saved from the Query dialog.
        for instance in formset.save(commit=False):
            if isinstance(instance, ExampleInput) and instance.pk is None:
                instance.created_by = request.user
            instance.save()
        for obj in formset.deleted_objects:
            obj.delete()
        formset.save_m2m()

    def save_model(self, request, obj, form, change):
        if not change:
            obj.creator = request.user.get_username()
            obj.source = ServingEndpoint.Source.ADMIN
        super().save_model(request, obj, form, change)


@admin.register(AccessToken)
class AccessTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "hint", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["hint", "created_at", "last_used_at"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # values are shown once; create them with `manage.py create_token` or the tokens page

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        for token in queryset.filter(revoked_at__isnull=True):
            token.revoke()


class SecretForm(forms.ModelForm):
    """A secret's scope, key and value. The value goes in a password field and never comes back:
    not on the change page, not after a failed submission."""

    value = forms.CharField(
        # new-password: a browser must not fill in the admin's own saved password here.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        required=False,
        help_text="Stored encrypted; never shown again. On an existing secret, leave it blank to keep the value.",
    )

    class Meta:
        model = Secret
        fields = ["scope", "key"]

    def clean_scope(self) -> str:
        return self._name("scope")

    def clean_key(self) -> str:
        return self._name("key")

    def _name(self, kind: str) -> str:
        try:
            secrets.check_name(kind, self.cleaned_data[kind])
        except secrets.SecretsError as exc:
            raise forms.ValidationError(exc.message) from None
        return self.cleaned_data[kind]

    def clean_value(self) -> str:
        value = self.cleaned_data["value"]
        if not value and self.instance.pk is None:
            raise forms.ValidationError("A new secret needs a value.")
        if value:
            try:
                self.instance.ciphertext = secrets.encrypt(value)
            except secrets.SecretsError as exc:  # the secrets key is unusable: say so on the form
                raise forms.ValidationError(exc.message) from None
        return ""  # the value is encrypted; the cleaned data keeps no copy


@admin.register(Secret)
class SecretAdmin(admin_secrets.SecretScopeAccess, admin.ModelAdmin):
    """Secrets referenced from provider configs as ``{{secrets/<scope>/<key>}}``."""

    form = SecretForm
    list_display = ["__str__", "scope", "key", "updated_at"]
    list_filter = ["scope"]
    search_fields = ["scope", "key"]

    def get_readonly_fields(self, request, obj=None):
        # Another scope or key is another secret (configs refer to it by name): add that one.
        return ["scope", "key", "updated_at"] if obj is not None else []

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        registry.invalidate()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        registry.invalidate()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        registry.invalidate()
