"""The AI Playground's pages: the page itself, its panes, conversations, image uploads and Get code.

Streaming happens over the WebSocket (``playground/consumers.py``); these views serve the page
and the htmx/fetch partials around it. Every view is for a signed-in user and only ever sees that
user's conversations and images (anyone else's are a 404).
"""
from __future__ import annotations

import base64
import json
import uuid
from typing import Annotated, Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models.functions import Length
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.utils.html import format_html
from django.views.decorators.http import require_GET, require_POST
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from endpoints import images as pipeline
from endpoints import registry
from endpoints.errors import ServingError
from endpoints.schemas import CHAT

from .codegen import PROMPT_PLACEHOLDER, python_literal
from .consumers import MAX_IMAGES, can_see_images, request_body, user_content
from .models import Conversation, PlaygroundImage

SAMPLE_PROMPTS = [
    ("Explain", "Explain what a mixture of experts model is, in three sentences."),
    ("Code", "Write a Python function that checks whether a string is a palindrome, with a docstring."),
    ("Compare", "List three differences between TCP and UDP as a Markdown table."),
    ("Reason", "A bat and a ball cost $1.10 in total. The bat costs $1.00 more than the ball. How much does the ball cost?"),
    ("Describe image", "Describe this image in one paragraph."),
]
DEFAULT_PARAMS = {"temperature": 0.7, "max_tokens": 256, "top_p": "", "stop": "", "thinking": False, "budget_tokens": 64}
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # one file; the pipeline then scales it down
#: Longest example prompt offered as a one-click prompt (the page carries each one whole).
MAX_EXAMPLE_PROMPT_CHARS = 4000


def example_prompts(limit: int = 12) -> list[tuple[str, str, str]]:
    """The chat endpoints' example inputs as one-click prompts: (name, endpoint, last user message).

    Only short text prompts are offered (every page carries them): an example whose last user
    turn holds images or parts, or is longer than MAX_EXAMPLE_PROMPT_CHARS, stays in the
    endpoint's Query dialog; bodies larger than EXAMPLE_MAX_BYTES are not even read.
    """
    from django.db.models import TextField
    from django.db.models.functions import Cast

    from endpoints.models import ExampleInput

    prompts = []
    examples = (ExampleInput.objects.filter(endpoint__task=CHAT).select_related("endpoint")
                .alias(size=Length(Cast("body", TextField()))).filter(size__lte=settings.EXAMPLE_MAX_BYTES))
    for example in examples[:100]:
        messages = example.body.get("messages") if isinstance(example.body, dict) else None
        users = [m for m in messages or () if isinstance(m, dict) and m.get("role") == "user"]
        content = users[-1].get("content") if users else None
        if isinstance(content, str) and content.strip() and len(content) <= MAX_EXAMPLE_PROMPT_CHARS:
            prompts.append((example.name, example.endpoint.name, users[-1]["content"]))
        if len(prompts) == limit:
            break
    return prompts


def chat_endpoints() -> list[dict[str, Any]]:
    """Every chat endpoint, by name, with whether its model can see images."""
    return [
        {"name": name, "vision": can_see_images(endpoint)}
        for name, endpoint in sorted(registry.snapshot().items())
        if endpoint.task == CHAT
    ]


def stop_text(stop: Any) -> str:
    """A list of stop sequences as the Stop field shows it: one per line, a newline inside one
    written ``\\n``, a tab ``\\t`` and a backslash ``\\\\`` (static/js/playground.js reads it back)."""
    if isinstance(stop, str):  # kept by an older page: one sequence per line already
        return stop
    escape = {"\\": "\\\\", "\n": "\\n", "\t": "\\t"}
    return "\n".join("".join(escape.get(c, c) for c in s) for s in stop or [] if isinstance(s, str))


def shown_params(params: dict) -> dict:
    """A pane's saved parameters as its fields show them: what the page sends back is what was saved."""
    merged = DEFAULT_PARAMS | params
    shown = {name: "" if merged.get(name) is None else str(merged[name])
             for name in ("temperature", "max_tokens", "top_p", "budget_tokens")}
    return shown | {"stop": stop_text(merged.get("stop")), "thinking": bool(merged.get("thinking"))}


def pane_context(index: int, pane: dict, endpoints: list[dict]) -> dict:
    vision = next((e["vision"] for e in endpoints if e["name"] == pane.get("endpoint")), False)
    return {"index": index, "pane": pane, "params": shown_params(pane.get("params") or {}), "vision": vision,
            "known": any(e["name"] == pane.get("endpoint") for e in endpoints), "endpoints": endpoints}


def default_pane(endpoints: list[dict]) -> list[dict]:
    first = next((e["name"] for e in endpoints if e["name"] == "local-smollm2-chat"), endpoints[0]["name"] if endpoints else "")
    return [{"endpoint": first, "system": "", "params": {}, "turns": []}] if first else []


@login_required
@require_GET
def playground(request: HttpRequest) -> HttpResponse:
    """The page: a saved conversation (``?c=``) with the panes it was left with, or a new one, empty
    or laid out like a saved one (``?layout=``: its panes' endpoints and settings, empty threads)."""
    endpoints = chat_endpoints()
    conversation = layout = None
    try:
        if request.GET.get("c"):
            conversation = get_object_or_404(Conversation, pk=int(request.GET["c"]), user=request.user)
        elif request.GET.get("layout"):
            layout = Conversation.objects.filter(pk=int(request.GET["layout"]), user=request.user).first()
    except ValueError:
        raise Http404("No such conversation.") from None
    if conversation is not None:
        # A removed pane keeps its number (it names its thread), so the next one added gets a new one.
        shown = [(i, p) for i, p in enumerate(conversation.panes) if not p.get("removed")]
        next_pane = len(conversation.panes)
        if not shown:
            shown = [(next_pane, p) for p in default_pane(endpoints)]
    else:  # a new conversation; laid out like ``layout`` with the same pane numbers, as the page left it
        source = list(enumerate(layout.panes)) if layout is not None else []
        shown = [(i, {"endpoint": p.get("endpoint", ""), "system": p.get("system", ""), "params": p.get("params") or {},
                      "turns": []}) for i, p in source if not p.get("removed")]
        shown = shown or list(enumerate(default_pane(endpoints)))
        next_pane = len(source)
    return render(request, "playground/index.html", {
        "section": "playground",
        "endpoints": endpoints,
        "panes": [pane_context(i, pane, endpoints) for i, pane in shown],
        # "Attach image" and "Describe image" only when some pane's endpoint can see images
        "sees_images": any(pane_context(i, pane, endpoints)["vision"] for i, pane in shown),
        "next_pane": max([next_pane] + [i + 1 for i, _ in shown]),
        "conversation": conversation,
        "conversations": request.user.conversations.all()[:100],
        "samples": SAMPLE_PROMPTS,
        "examples": example_prompts(),
    })


@login_required
@require_GET
def pane(request: HttpRequest) -> HttpResponse:
    """A new, empty pane for ``endpoint`` numbered ``pane``."""
    endpoints = chat_endpoints()
    name = request.GET.get("endpoint", "")
    if not any(e["name"] == name for e in endpoints):
        return HttpResponseBadRequest(f"'{name}' is not a chat endpoint.", content_type="text/plain")
    try:
        index = int(request.GET.get("pane", "0"))
    except ValueError:
        return HttpResponseBadRequest("'pane' must be a number.", content_type="text/plain")
    ctx = pane_context(index, {"endpoint": name, "system": "", "params": {}, "turns": []}, endpoints)
    return render(request, "playground/_pane.html", ctx)


# --- conversations ----------------------------------------------------------------------------

def conversation_list(request: HttpRequest, current: int | None = None) -> HttpResponse:
    return render(request, "playground/_conversations.html", {
        "conversations": request.user.conversations.all()[:100], "current": current,
    })


@login_required
@require_GET
def conversations(request: HttpRequest) -> HttpResponse:
    current = request.GET.get("current")
    return conversation_list(request, int(current) if current and current.isdigit() else None)


@login_required
@require_POST
def rename(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = get_object_or_404(Conversation, pk=pk, user=request.user)
    title = " ".join(request.POST.get("title", "").split())[:200]
    if title:
        conversation.title = title
        conversation.save(update_fields=["title", "updated_at"])
    return conversation_list(request, pk)


@login_required
@require_POST
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = get_object_or_404(Conversation, pk=pk, user=request.user)
    conversation.delete()
    return conversation_list(request)


# --- images -----------------------------------------------------------------------------------

@login_required
@require_POST
def upload_images(request: HttpRequest) -> HttpResponse:
    """Run each uploaded file through the API's image pipeline; thumbnails with what will be sent.

    Answers 400 (with the same readable partial) when no file came or one is not an image; the
    files that did pass are kept and shown.
    """
    files = request.FILES.getlist("images")
    uploaded, errors, notices = [], [], []
    quota_bytes = settings.PLAYGROUND_IMAGE_QUOTA_BYTES
    if not files:
        errors.append("Choose an image file (JPEG, PNG, GIF or WebP).")
    for number, upload in enumerate(files[:MAX_IMAGES]):
        name = upload.name or f"image {number + 1}"
        if upload.size > MAX_UPLOAD_BYTES:
            errors.append(f"{name}: the file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB.")
            continue
        try:
            prepared = pipeline.prepare_image(upload.read(), number)
        except ServingError as exc:
            errors.append(pipeline.for_person(exc, name))  # "photo.png is not a supported image …"
            continue
        if len(prepared.data_url) > quota_bytes:
            errors.append(f"{name}: even scaled down it is {_mib(len(prepared.data_url))}, more than the "
                          f"{_mib(quota_bytes)} a person may keep uploaded (FONDASI_PLAYGROUND_IMAGE_QUOTA_BYTES).")
            continue
        report = prepared.report()
        image = PlaygroundImage.objects.create(user=request.user, name=name[:255], data_url=prepared.data_url, report=report)
        uploaded.append({"id": str(image.id), "name": image.name, **report,
                         "warnings": [pipeline.for_person(w, image.name) for w in report.get("warnings", ())]})
    if len(files) > MAX_IMAGES:
        errors.append(f"At most {MAX_IMAGES} images per message; the rest were not attached.")
    removed = keep_within_quota(request.user, {im["id"] for im in uploaded})
    if removed:
        notices.append(
            f"Your {removed} oldest uploaded image{'s' * (removed != 1)} {'were' if removed != 1 else 'was'} removed: "
            f"a person keeps at most {settings.PLAYGROUND_IMAGE_QUOTA} images and {_mib(quota_bytes)} uploaded "
            "(FONDASI_PLAYGROUND_IMAGE_QUOTA, FONDASI_PLAYGROUND_IMAGE_QUOTA_BYTES). Attach an image again to send it."
        )
    return render(request, "playground/_thumbs.html", {"images": uploaded, "errors": errors, "notices": notices},
                  status=400 if errors and not uploaded else 200)


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 1024 * 1024 else f"{n / 1024:.1f} KiB"


def keep_within_quota(user: Any, new: set[str]) -> int:
    """Delete ``user``'s oldest uploads beyond the quota (count and bytes), never one of ``new``
    (this request's); how many were deleted."""
    count, size = settings.PLAYGROUND_IMAGE_QUOTA, settings.PLAYGROUND_IMAGE_QUOTA_BYTES
    mine = PlaygroundImage.objects.filter(user=user).annotate(size=Length("data_url"))
    rows = [(str(pk), n) for pk, n in mine.order_by("-created_at").values_list("pk", "size")]
    rows.sort(key=lambda row: row[0] not in new)  # this request's first (stable: then newest first)
    kept = used = 0
    doomed = []
    for pk, n in rows:
        if pk in new or (kept < count and used + n <= size):
            kept, used = kept + 1, used + n
        else:
            doomed.append(pk)
    if doomed:
        PlaygroundImage.objects.filter(user=user, pk__in=doomed).delete()
    return len(doomed)


@login_required
@require_GET
def image(request: HttpRequest, pk) -> HttpResponse:
    """The image as it is sent to the model (the thumbnails show exactly that)."""
    found = get_object_or_404(PlaygroundImage, pk=pk, user=request.user)
    header, _, payload = found.data_url.partition(",")
    media_type = header[5:].split(";")[0] or "application/octet-stream"
    response = HttpResponse(base64.b64decode(payload), content_type=media_type)
    response["Cache-Control"] = "private, max-age=86400"
    return response


# --- Get code ---------------------------------------------------------------------------------

# A number from the pane's settings: finite (JSON's 1e400 parses as infinity), an int kept an int.
Number = Annotated[int, Field(strict=True)] | Annotated[float, Field(strict=True, allow_inf_nan=False)]


class CodeParams(BaseModel):
    """A pane's settings as the page sends them (``paneSettings`` in static/js/playground.js)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    temperature: Number | None = None
    max_tokens: Number | None = None
    top_p: Number | None = None
    stop: list[str] | str | None = None
    thinking: bool = False
    budget_tokens: Number | None = None


class CodeRequest(BaseModel):
    """The body of ``POST /playground/code``: every field typed, nothing else accepted."""

    model_config = ConfigDict(extra="forbid", strict=True)
    pane: int = Field(0, ge=0)
    endpoint: str = Field(min_length=1)
    system: str | None = None
    params: CodeParams | None = None
    conversation: int | None = Field(None, ge=1, lt=2**63)  # a database id
    prompt: str | None = None
    images: list[uuid.UUID] | None = Field(None, max_length=MAX_IMAGES)


def _code_problem(exc: ValidationError) -> str:
    """The first problem of a Get code body, as a sentence (never the input itself)."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "json_invalid":
        return "Malformed request for Get code: the body is not valid JSON."
    if not where:
        return "Malformed request for Get code: the body must be a JSON object."
    return f"Malformed request for Get code: '{where}': {error['msg']}."


@login_required
@require_POST
def code(request: HttpRequest) -> HttpResponse:
    """The current pane's request as OpenAI-Python and curl: its system prompt, its own thread, the prompt.

    A body of the wrong shape is a 400 naming the field (a fragment the page shows where the code goes).
    """
    try:
        data = CodeRequest.model_validate_json(request.body)
    except ValidationError as exc:
        return HttpResponseBadRequest(format_html('<p class="error-text" role="alert">{}</p>', _code_problem(exc)))
    params = data.params.model_dump(exclude_none=True) if data.params else {}
    spec = {"endpoint": data.endpoint, "system": data.system or "", "params": params}
    history: list = []
    if data.conversation is not None:
        conversation = Conversation.objects.filter(pk=data.conversation, user=request.user).first()
        if conversation is not None and data.pane < len(conversation.panes):
            history = conversation.panes[data.pane].get("messages", [])
    images = PlaygroundImage.objects.filter(pk__in=data.images, user=request.user) if data.images else []
    # An empty prompt box is a placeholder to replace, never an invented prompt (none with images only).
    prompt = data.prompt or ("" if images else PROMPT_PLACEHOLDER)
    body = request_body({**spec, "messages": history},
                        {"role": "user", "content": user_content(prompt, [{"data_url": i.data_url} for i in images])})
    body = shorten_images(body)
    for name in ("stream", "stream_options"):  # the shown code asks for the whole answer
        body.pop(name, None)
    messages = body.pop("messages")
    extra = {k: body.pop(k) for k in ("thinking",) if k in body}
    return render(request, "playground/_code.html", {
        "endpoint": spec["endpoint"],
        "host": request.build_absolute_uri("/").rstrip("/"),
        "messages": python_literal(messages, level=1),
        "kwargs": [(k, python_literal(v, level=1)) for k, v in body.items()],
        "extra_body": python_literal(extra, level=1) if extra else "",
        "curl_body": json.dumps({"messages": messages, **body, **extra}, indent=2, ensure_ascii=False),
    })


def shorten_images(value: Any) -> Any:
    """Data URLs cut to a readable stub in shown code (the real request carries the whole image)."""
    if isinstance(value, dict):
        return {k: shorten_images(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shorten_images(v) for v in value]
    if isinstance(value, str) and value.startswith("data:") and len(value) > 80:
        return value[:48] + "…"
    return value
