"""The HTTP APIs: Databricks-style invocations, the OpenAI-compatible routes, the start-up probe.

Views are thin: :func:`api` authenticates and translates domain errors into the error shape of
``spec/WIRE.md``; each view parses JSON, calls the query service and shapes the answer.
"""
from __future__ import annotations

import functools
import logging
import uuid
from typing import Any, Awaitable, Callable

import orjson
from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from . import registry, service, wire
from .auth import authenticate
from .errors import ServingError, invalid, not_found
from .logtext import escape
from .schemas import CHAT, COMPLETIONS, EMBEDDINGS

log = logging.getLogger(__name__)

JSON = "application/json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(orjson.dumps(body), content_type=JSON, status=status, headers=headers)
    response["X-Content-Type-Options"] = "nosniff"  # the API runs without SecurityMiddleware
    return response


def error_response(exc: ServingError) -> HttpResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after and exc.status in (429, 503) else None
    return json_response(wire.error_body(exc), status=exc.status, headers=headers)


def internal_error(request: HttpRequest) -> HttpResponse:
    ref = uuid.uuid4().hex[:12]
    log.exception("Internal error %s on %s %s", ref, escape(request.method), escape(request.path))
    return error_response(ServingError(f"Internal error (reference {ref}); the server log has the details.", "INTERNAL_ERROR"))


View = Callable[..., Awaitable[HttpResponse]]


def api(*methods: str, auth: bool = True) -> Callable[[View], View]:
    """Decorate an async API view: method check, token auth, domain errors to JSON, no 500 pages."""

    def decorate(view: View) -> View:
        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                if auth:
                    request.principal = await authenticate(request.headers.get("Authorization", ""))
                if request.method not in methods:
                    raise ServingError(
                        f"{request.method} is not allowed on {request.path}; use {' or '.join(methods)}.",
                        "BAD_REQUEST",
                        status=405,
                    )
                return await view(request, *args, **kwargs)
            except ServingError as exc:
                return error_response(exc)
            except Exception:  # noqa: BLE001 - the edge never shows a traceback
                return internal_error(request)

        return wrapper

    return decorate


def too_large_message(limit: int) -> str:
    size = next((f" ({limit / scale:.3g} {unit})" for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))
                 if limit >= scale), "")
    return f"The request body is larger than the limit of {limit} bytes{size}."


def too_large(limit: int) -> ServingError:
    """413: the server edge (playground/edge.py) refuses such bodies before reading them; this is
    the same answer for a body that reached a view some other way."""
    return ServingError(too_large_message(limit), "BAD_REQUEST", status=413)


def read_json(request: HttpRequest) -> Any:
    limit = settings.MAX_REQUEST_BYTES
    too_big = too_large(limit)
    try:
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit:
            raise too_big
        raw = request.body
    except RequestDataTooBig:
        raise too_big from None
    except ValueError:
        raise invalid("The Content-Length header is not a number.") from None
    if not raw:
        raise invalid("The request body is empty; send a JSON object.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"The request body is not valid JSON: {exc}.") from None


async def respond(query: service.Query) -> HttpResponse:
    """Run a prepared query and shape its answer (JSON or SSE)."""
    headers = {"served-model-name": query.entity.name}
    if query.task == EMBEDDINGS:
        out = await query.embed()
        return json_response(wire.embeddings_response(query, out, query.request.encoding_format), headers=headers)
    if not query.streaming:
        return json_response(wire.answer(query, await query.result()), headers=headers)
    stream = await query.stream()  # errors before the first token still get a proper status
    response = StreamingHttpResponse(sse_body(query, stream), content_type="text/event-stream", headers=headers)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def sse_body(query: service.Query, stream: service.EventStream):
    writer = wire.ChunkWriter(query)
    try:
        async for event in wire.with_keepalive(stream, settings.STREAM_KEEPALIVE_SECONDS):
            if event is None:
                yield wire.KEEPALIVE
                continue
            data = writer.encode(event)
            if data is not None:
                yield data
    except ServingError as exc:
        query.log(0, 0, error=exc.code)
        yield wire.sse_error(exc)
    except Exception:  # noqa: BLE001 - reported in the stream, never as a traceback
        ref = uuid.uuid4().hex[:12]
        log.exception("Internal error %s while streaming %s", ref, query.endpoint.name)
        yield wire.sse_error(ServingError(f"Internal error (reference {ref}) while streaming.", "INTERNAL_ERROR"))
    finally:
        # Runs on normal end, on error and when the client goes away (Django cancels the task):
        # closing the stream stops generation upstream.
        await stream.aclose()
    yield wire.DONE


@api("POST")
async def invocations(request: HttpRequest, name: str) -> HttpResponse:
    """``POST /serving-endpoints/{name}/invocations`` — any task, Databricks query format."""
    query = await service.prepare(name, read_json(request))
    return await respond(query)


def _openai_route(task: str) -> View:
    @api("POST")
    async def view(request: HttpRequest) -> HttpResponse:
        body = read_json(request)
        name = body.get("model") if isinstance(body, dict) else None
        if not name or not isinstance(name, str):
            raise invalid("Missing 'model': set it to the name of a serving endpoint.")
        query = await service.prepare(name, body, expect_task=task, route=request.path)
        return await respond(query)

    view.__name__ = view.__qualname__ = f"openai_{task.rsplit('/', 1)[-1]}"
    return view


chat_completions = _openai_route(CHAT)
completions = _openai_route(COMPLETIONS)
embeddings = _openai_route(EMBEDDINGS)


def _model_object(endpoint: registry.Endpoint) -> dict[str, Any]:
    return {
        "id": endpoint.name,
        "object": "model",
        "created": int(endpoint.created_at.timestamp()),
        "owned_by": "fondasi",
        "task": endpoint.task,
    }


@api("GET")
async def models_list(request: HttpRequest) -> HttpResponse:
    endpoints = (await registry.asnapshot()).values()
    return json_response({"object": "list", "data": [_model_object(e) for e in endpoints]})


@api("GET")
async def model_detail(request: HttpRequest, model_id: str) -> HttpResponse:
    return json_response(_model_object(await registry.get(model_id)))


@api("GET", auth=False)
async def databricks_config(request: HttpRequest) -> HttpResponse:
    """The start-up probe every Databricks client makes: fast, unauthenticated, always 200.

    ``oidc_endpoint`` (where OAuth M2M clients find the token endpoint, see :mod:`endpoints.oauth`)
    is built from the request, and left out for a host not in ALLOWED_HOSTS: token clients still work.
    """
    body = {"workspace_id": settings.WORKSPACE_ID, "cloud": "aws"}
    try:
        body["oidc_endpoint"] = request.build_absolute_uri("/oidc")
    except DisallowedHost:
        pass
    return json_response(body)


@api("GET", auth=False)
async def healthz(request: HttpRequest) -> HttpResponse:
    endpoints = await registry.asnapshot()
    return json_response({"status": "ok", "endpoints": len(endpoints)})


# Paths served by the token-authenticated APIs (see playground/asgi.py): JSON errors, no pages.
API_PREFIXES = ("/serving-endpoints", "/api/", "/.well-known/", "/oidc", "/healthz")


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIXES)


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return error_response(not_found(f"No API route matches {request.method} {request.path}."))
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return error_response(ServingError("Internal error; the server log has the details.", "INTERNAL_ERROR"))
    from django.views.defaults import server_error

    return server_error(request)
