"""Browser pages: sign-in, access tokens, serving endpoints and their Query dialog.

Views are thin: they read the registry's tables, shape a context and render a template (every
user or model text goes through template autoescaping). The Query dialog's view calls the one
query path of the API (``service.prepare`` then ``views.respond``), so the dialog answers exactly
what ``POST /serving-endpoints/{name}/invocations`` would, signed in by session instead of token.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any, Callable

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import reswap, retarget

from endpoints import registry, service
from endpoints import views as api
from endpoints.errors import ServingError
from endpoints.models import AccessToken, ExampleInput, ServingEndpoint
from endpoints.providers import get_provider
from endpoints.providers.base import EntitySpec
from endpoints.providers.local import LocalProvider
from endpoints.schemas import CHAT, COMPLETIONS, EMBEDDINGS, TASKS
from endpoints.masking import is_secret_field, is_secret_metadata, masked

# --- helpers ----------------------------------------------------------------------------------

def _display(value: Any) -> str:
    # Values arrive masked (endpoints.masking.masked: credentials in fields, URLs and headers).
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ", ".join(str(v) for v in value)
    return json.dumps(value, ensure_ascii=False)


def config_rows(config: Any, is_secret: Callable[[str], bool] = is_secret_field) -> list[tuple[str, str]]:
    """Flatten a provider config into ``(dotted key, shown value)`` rows with every secret masked
    as the API and the admin mask it (:func:`endpoints.masking.masked`: a field whose dotted key
    ``is_secret``, credentials inside URLs and header values; a secret reference shows as written)."""
    return _rows(masked(config, is_secret), "")


def _rows(config: Any, prefix: str) -> list[tuple[str, str]]:
    if not isinstance(config, dict):
        return [(prefix or "value", _display(config))]
    rows: list[tuple[str, str]] = []
    for key, value in config.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            rows.extend(_rows(value, path))
        else:
            rows.append((path, _display(value)))
    return rows


def entity_metadata(spec: EntitySpec) -> tuple[list[tuple[str, str]], str]:
    """What the provider says about the served model (``Provider.describe()``), masked, and a
    problem line when the provider cannot be set up (a bad config shows, it does not crash the page)."""
    try:
        provider = get_provider(spec)
        info = dict(provider.describe())
    except ServingError as exc:
        return [], exc.message
    if spec.task == CHAT:
        info.setdefault("vision", provider.sees_images)
    if spec.task == EMBEDDINGS and provider.normalized_embeddings is not None:
        info.setdefault("normalized", provider.normalized_embeddings)
    rows = []
    for key, value in config_rows(info, is_secret=is_secret_metadata):
        rows.append((key.replace("_", " "), {"true": "yes", "false": "no"}.get(value, value)))
    return rows, ""


# The request the Query dialog and the code samples start from, per task.
SAMPLE_PROMPT = {
    CHAT: "What is a mixture of experts model?",
    COMPLETIONS: "The three primary colours are",
    EMBEDDINGS: "a cat sat on the mat",
}


def sample_body(task: str) -> dict[str, Any]:
    prompt = SAMPLE_PROMPT[task]
    if task == CHAT:
        return {"messages": [{"role": "user", "content": prompt}], "max_tokens": 64}
    if task == COMPLETIONS:
        return {"prompt": prompt, "max_tokens": 16}
    return {"input": [prompt]}


@dataclass(frozen=True)
class Snippet:
    id: str
    label: str
    language: str
    template: str


SNIPPETS = (
    Snippet("curl", "curl", "shell", "pages/snippets/curl.txt"),
    Snippet("openai", "OpenAI Python", "python", "pages/snippets/openai.txt"),
    Snippet("sdk", "Databricks SDK", "python", "pages/snippets/sdk.txt"),
    Snippet("mlflow", "MLflow Deployments", "python", "pages/snippets/mlflow.txt"),
    Snippet("langchain", "LangChain", "python", "pages/snippets/langchain.txt"),
    Snippet("sql", "SQL", "sql", "pages/snippets/sql.txt"),
)


def _python_dict(body: dict[str, Any], indent: str) -> str:
    """``body`` as a Python dict literal, one key a line. Sample bodies hold only strings, numbers
    and lists of them, whose JSON is also Python."""
    lines = "".join(f"{indent}    {json.dumps(key)}: {json.dumps(value)},\n" for key, value in body.items())
    return "{\n" + lines + indent + "}"


def snippet_context(request: HttpRequest, endpoint: ServingEndpoint) -> dict[str, Any]:
    """Values the code samples are written from. Strings here are code, not HTML: the templates
    escape them like any other text."""
    body = sample_body(endpoint.task)
    prompt = SAMPLE_PROMPT[endpoint.task]
    return {
        "host": request.build_absolute_uri("/").rstrip("/"),
        "curl_data": shlex.quote(json.dumps(body)),
        # JSON string literals are valid Python string literals for this text.
        "py_prompt": json.dumps(prompt),
        "py_inputs": _python_dict(body, indent="    "),
        "sql_prompt": "'" + prompt.replace("'", "''") + "'",
        "max_tokens": body.get("max_tokens"),
    }


def _sync_registry() -> None:
    # Applies the endpoints file first if it changed on disk, as the API would on its next query,
    # so the pages never show an older configuration than the one being served.
    registry.snapshot()


# --- home, sign-in ----------------------------------------------------------------------------


def home(request: HttpRequest) -> HttpResponse:
    return redirect("pages:endpoints")


# --- access tokens ----------------------------------------------------------------------------


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, strip=True, error_messages={"required": "Give the token a name."})


def _tokens_page(request: HttpRequest, form: TokenForm, status: int = 200) -> HttpResponse:
    tokens = AccessToken.objects.filter(user=request.user)
    return render(request, "pages/tokens.html", {"section": "tokens", "tokens": tokens, "form": form}, status=status)


@login_required
@require_http_methods(["GET", "POST"])
@never_cache
def tokens(request: HttpRequest) -> HttpResponse:
    """GET: the signed-in user's tokens. POST: create one and show its value, this once only."""
    if request.method == "GET":
        return _tokens_page(request, TokenForm())
    form = TokenForm(request.POST)
    if not form.is_valid():
        return _tokens_page(request, form, status=400)
    token, value = AccessToken.issue(request.user, form.cleaned_data["name"])
    # Rendered, not redirected: the value exists only in this response (never_cache keeps it
    # out of the browser's cache and any proxy's).
    return render(request, "pages/token_created.html", {"section": "tokens", "token": token, "value": value})


@login_required
@require_POST
def revoke_token(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke one of the signed-in user's own tokens; someone else's is a 404, not a 403."""
    token = get_object_or_404(AccessToken, pk=token_id, user=request.user)
    if token.revoked_at is None:
        token.revoke()
        messages.success(request, f"Token '{token.name}' is revoked; requests that use it are refused.")
    return redirect("pages:tokens")


# --- serving endpoints ------------------------------------------------------------------------


def filtered_endpoints(task: str, text: str) -> QuerySet[ServingEndpoint]:
    endpoints = ServingEndpoint.objects.prefetch_related("entities")
    if task:
        endpoints = endpoints.filter(task=task)
    if text:
        endpoints = endpoints.filter(
            Q(name__icontains=text)
            | Q(description__icontains=text)
            | Q(entities__model__icontains=text)
            | Q(entities__provider__icontains=text)
        ).distinct()
    return endpoints


@login_required
@require_GET
def endpoints(request: HttpRequest) -> HttpResponse:
    """Every endpoint, filtered by ``?task=`` and ``?q=``. An htmx request gets only the results
    partial (the same template the full page includes)."""
    _sync_registry()
    task = request.GET.get("task", "")
    task = task if task in TASKS else ""
    text = request.GET.get("q", "").strip()
    context = {
        "section": "endpoints",
        "endpoints": filtered_endpoints(task, text),
        "task": task,
        "q": text,
        "tasks": TASKS,
        "filtered": bool(task or text),
    }
    # A history restore asks for the whole page, though htmx sends it.
    partial = request.htmx and not request.htmx.history_restore_request
    template = "pages/_endpoint_results.html" if partial else "pages/endpoints.html"
    response = render(request, template, context)
    patch_vary_headers(response, ("HX-Request",))  # the same URL serves two bodies
    return response


def _examples_context(endpoint: ServingEndpoint, user: Any) -> dict[str, Any]:
    """The examples section and the dialog's picker: each example with its body pretty-printed
    and whether ``user`` may delete it."""
    examples = list(endpoint.examples.select_related("created_by"))
    for x in examples:
        x.pretty = json.dumps(x.body, indent=2, ensure_ascii=False)
        x.deletable = x.source == ExampleInput.Source.USER and (x.created_by_id == user.pk or user.is_staff)
    return {
        "endpoint": endpoint,
        "examples": examples,
        "examples_data": [{"id": x.pk, "name": x.name, "body": x.body} for x in examples],
    }


@login_required
@require_GET
def endpoint_detail(request: HttpRequest, name: str) -> HttpResponse:
    _sync_registry()
    endpoint = ServingEndpoint.objects.prefetch_related("entities").filter(name=name).first()
    if endpoint is None:
        return render(request, "pages/endpoint_missing.html", {"section": "endpoints", "name": name}, status=404)
    entities = []
    for entity in endpoint.entities.all():
        spec = EntitySpec(name=entity.name, provider=entity.provider, model=entity.model,
                          task=endpoint.task, config=entity.config)
        metadata, problem = entity_metadata(spec)
        entities.append({"entity": entity, "config": config_rows(entity.config), "metadata": metadata, "problem": problem})
    context = {
        "section": "endpoints",
        "entities": entities,
        "snippets": SNIPPETS,
        "default_body": json.dumps(sample_body(endpoint.task), indent=2),
        **_examples_context(endpoint, request.user),
        **snippet_context(request, endpoint),
    }
    return render(request, "pages/endpoint_detail.html", context)


async def query(request: HttpRequest, name: str) -> HttpResponseBase:
    """``POST /endpoints/<name>/query``: the Query dialog's Send Request, session-authenticated and
    CSRF-protected (by the middleware), answered by the API's own query path: JSON, or server-sent
    events when the body asks for ``"stream": true``; errors in the API's error shape."""
    try:
        user = await request.auser()
        if not user.is_authenticated:
            # fetch() would follow a redirect to the sign-in page and show HTML: say it plainly.
            raise ServingError("Your session has ended: sign in again, then resend.", "UNAUTHENTICATED")
        if request.method != "POST":
            raise ServingError(f"{request.method} is not allowed here; use POST.", "BAD_REQUEST", status=405)
        prepared = await service.prepare(name, api.read_json(request))
        return await api.respond(prepared)
    except ServingError as exc:
        return api.error_response(exc)
    except Exception:  # noqa: BLE001 - the dialog shows a reference, never a traceback
        return api.internal_error(request)


def endpoint_loading(endpoint: ServingEndpoint) -> bool:
    """Whether a request to ``endpoint`` would wait for an embedded model's weights to load: one of
    its served entities is a local model with no instance loaded yet (at start-up, before the
    warm-up of endpoints/warmup.py has finished, or with FONDASI_WARMUP off). Never loads anything."""
    for entity in endpoint.entities.all():
        spec = EntitySpec(name=entity.name, provider=entity.provider, model=entity.model,
                          task=endpoint.task, config=entity.config)
        try:
            provider = get_provider(spec)
        except ServingError:
            continue
        if isinstance(provider, LocalProvider) and not provider.describe().get("loaded"):
            return True
    return False


@login_required
@require_GET
@never_cache
def model_state(request: HttpRequest, name: str) -> JsonResponse:
    """``GET /endpoints/<name>/model-state``: ``{"loading": true}`` while the endpoint's embedded
    model is not loaded yet, so the Query dialog and the playground can say so instead of only waiting."""
    endpoint = ServingEndpoint.objects.prefetch_related("entities").filter(name=name).first()
    if endpoint is None:
        return JsonResponse({"error_code": "RESOURCE_DOES_NOT_EXIST",
                             "message": f"Endpoint '{name}' does not exist."}, status=404)
    return JsonResponse({"loading": endpoint_loading(endpoint)})


class ExampleForm(forms.Form):
    name = forms.CharField(max_length=100, strip=True, error_messages={"required": "Name the example."})
    body = forms.CharField(strip=False, error_messages={"required": "The request is empty."})

    def clean_body(self) -> dict[str, Any]:
        try:
            value = json.loads(self.cleaned_data["body"])
        except ValueError as exc:
            raise forms.ValidationError(f"The request is not valid JSON: {exc}.") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("An example must be a JSON object, like the requests the endpoint takes.")
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
        limit = settings.EXAMPLE_MAX_BYTES
        if size > limit:
            raise forms.ValidationError(
                f"The request is {_kib(size)}; an example may be at most {_kib(limit)} "
                "(FONDASI_EXAMPLE_MAX_BYTES). Save a shorter one."
            )
        return value


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 1024 * 1024 else f"{n / (1024 * 1024):,.1f} MiB"


@login_required
@require_POST
def save_example(request: HttpRequest, name: str) -> HttpResponse:
    """Store the dialog's JSON as an example of endpoint ``name``.

    Answers the examples partial (and, out of band, the dialog's example picker); a body that is
    not a JSON object is a 422 with the problem, retargeted at the dialog's message slot.
    """
    endpoint = get_object_or_404(ServingEndpoint, name=name)
    form = ExampleForm(request.POST)
    problem = next(iter(form.errors.values()))[0] if not form.is_valid() else ""
    limit = settings.EXAMPLES_PER_ENDPOINT
    if not problem and endpoint.examples.count() >= limit:
        problem = (f"This endpoint already has {limit} examples, the most it keeps (FONDASI_EXAMPLES_PER_ENDPOINT): "
                   "delete one before saving another.")
    if problem:
        response = render(request, "pages/_example_error.html", {"problem": problem}, status=422)
        return reswap(retarget(response, "#save-example-status"), "innerHTML")
    example = ExampleInput.objects.create(
        endpoint=endpoint, name=form.cleaned_data["name"], body=form.cleaned_data["body"],
        source=ExampleInput.Source.USER, created_by=request.user,
    )
    context = {**_examples_context(endpoint, request.user), "saved": example, "oob": True}
    return render(request, "pages/_examples.html", context)


@login_required
@require_POST
def delete_example(request: HttpRequest, name: str, example_id: int) -> HttpResponse:
    """Delete an example someone saved (the file's examples belong to the file). Only its author
    or a staff member may."""
    endpoint = get_object_or_404(ServingEndpoint, name=name)
    example = get_object_or_404(ExampleInput, pk=example_id, endpoint=endpoint, source=ExampleInput.Source.USER)
    if example.created_by_id != request.user.pk and not request.user.is_staff:
        return HttpResponse("Only the person who saved this example can delete it.", status=403)
    example.delete()
    if request.htmx:
        return render(request, "pages/_examples.html", {**_examples_context(endpoint, request.user), "oob": True})
    return redirect("pages:endpoint", name=name)
