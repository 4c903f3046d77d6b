"""Admin for service principals: the identities of OAuth machine-to-machine clients.

Add one by its name; rotate secrets and delete from the list. A client secret exists only in the
response that creates or rotates it (a page rendered there, never cached, never put in a message
cookie or the session), as a personal access token on the tokens page. Deleting a service
principal deletes its user, and with it the access tokens it obtained.
"""
from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import reverse

from .models import ServicePrincipal
from .oauth import create_service_principal, rotate_secret

# The new credentials, shown once. Autoescaped like every template.
CREDENTIALS_PAGE = engines["django"].from_string("""{% extends "admin/base_site.html" %}
{% block content %}
<p>Store each client secret now: it is not shown again. Clients take them as
<code>DATABRICKS_CLIENT_ID</code> and <code>DATABRICKS_CLIENT_SECRET</code>.</p>
<table>
  <thead><tr><th>Service principal</th><th>Client id</th><th>Client secret</th></tr></thead>
  <tbody>
  {% for principal, secret in credentials %}
    <tr>
      <td>{{ principal.user.get_username }}</td>
      <td><code>{{ principal.client_id }}</code></td>
      <td><code>{{ secret }}</code></td>
    </tr>
  {% endfor %}
  </tbody>
</table>
<p><a href="{{ changelist_url }}">Back to service principals</a></p>
{% endblock %}""")


class ServicePrincipalCreationForm(forms.ModelForm):
    name = forms.CharField(max_length=150, help_text="The user name it acts as, e.g. ci-pipeline.")

    class Meta:
        model = ServicePrincipal
        fields: list[str] = []

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        User = get_user_model()
        User.username_validator(name)
        if User.objects.filter(username=name).exists():
            raise forms.ValidationError(f"A user named '{name}' already exists; choose another name.")
        return name


@admin.register(ServicePrincipal)
class ServicePrincipalAdmin(admin.ModelAdmin):
    list_display = ["name", "client_id", "active", "created_at"]
    search_fields = ["user__username", "client_id"]
    readonly_fields = ["user", "client_id", "created_at"]
    actions = ["rotate"]

    @admin.display(description="name", ordering="user__username")
    def name(self, obj: ServicePrincipal) -> str:
        return obj.user.get_username()

    @admin.display(boolean=True, description="active")
    def active(self, obj: ServicePrincipal) -> bool:
        return obj.user.is_active

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user")

    def get_fields(self, request, obj=None):
        return ["name"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ServicePrincipalCreationForm
        return super().get_form(request, obj, **kwargs)

    def save_form(self, request, form, change):
        if change:
            return super().save_form(request, form, change)
        principal, secret = create_service_principal(form.cleaned_data["name"])
        request.new_credentials = [(principal, secret)]
        return principal

    # A new one is saved by save_form, with its user and nothing related.
    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        if change:
            super().save_related(request, form, formsets, change)

    def response_add(self, request, obj, post_url_continue=None):
        return self.credentials_page(request, request.new_credentials)

    def delete_model(self, request, obj):
        obj.user.delete()

    def delete_queryset(self, request, queryset):
        get_user_model().objects.filter(service_principal__in=queryset).delete()

    @admin.action(description="Rotate the client secret (revokes the access tokens it obtained)",
                  permissions=["change"])
    def rotate(self, request, queryset):
        return self.credentials_page(request, [(principal, rotate_secret(principal)) for principal in queryset])

    def credentials_page(self, request: HttpRequest, credentials: list[tuple[ServicePrincipal, str]]) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "New client secrets",
            "credentials": credentials,
            "changelist_url": reverse("admin:endpoints_serviceprincipal_changelist"),
        }
        return HttpResponse(CREDENTIALS_PAGE.render(context, request))
