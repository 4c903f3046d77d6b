"""The Databricks serving-endpoints management API: ``/api/2.0/serving-endpoints``.

Routes (both forms of the collection answer directly: mlflow adds the slash, the SDK does not):

- ``GET /api/2.0/serving-endpoints[/]``: ``{"endpoints": [...]}``, even when empty;
- ``POST /api/2.0/serving-endpoints[/]``: create; answers the endpoint object;
- ``GET`` / ``DELETE …/{name}``: the endpoint object / ``{}``;
- ``PUT …/{name}/config``: replace the served entities; answers the endpoint object;
- ``PATCH …/{name}/tags``: ``{"add_tags", "delete_tags"}``; answers ``{"tags": [...]}``;
- ``PUT …/{name}/rate-limits`` and ``PUT …/{name}/ai-gateway``: stored and answered as given
  (enforced by the query path, not here).

Bodies follow Databricks' shapes (https://docs.databricks.com/api/workspace/servingendpoints) and
become :class:`~endpoints.config.EndpointDecl` declarations, validated as the endpoints file is
(``check_entity``). Databricks has no task on create: it comes from the external models'
``task``, the local model's tasks (a chat model that also completes gets ``llm/v1/chat``), or
the top-level ``task`` older mlflow clients send. A change applies at once (``READY`` /
``NOT_UPDATING``) and the registry is invalidated so the next query sees it.

Who may do what: anyone with a token may list and get; ``permission_level`` is ``CAN_MANAGE`` for
staff users and for the endpoint's creator, else ``CAN_QUERY``; creating needs a staff account,
changing or deleting needs ``CAN_MANAGE``. The endpoints file owns the endpoints it names: their
config, tags and existence change only there (an API change would be undone when the file is
next applied); their rate limits and AI gateway, which the file does not declare, may be set here.

Credentials: provider config fields are stored as given, as ``{{secrets/scope/key}}`` references
or ``*_plaintext`` values; answers show references as they are and mask every other credential,
every ``*_plaintext`` value and the credentials inside URLs and header values
(:func:`endpoints.masking.masked`, as the pages and the admin do). A masked value sent back is refused.

Limits: every stored JSON (provider configs, tags, rate limits, AI gateway) is bounded in depth
and size before anything is saved (:mod:`endpoints.json_limits`), a 400 naming the field and the
limit; a stored row that still cannot be rendered is listed without its config, never a 500.
"""
from __future__ import annotations

import functools
import logging
import re
import uuid
from datetime import datetime
from typing import Any, Callable, Literal, TypeVar

import orjson
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as ModelValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

from . import registry
from .auth import Principal
from .config import (
    EndpointDecl, EntityDecl, ExternalModelDecl, FoundationModelDecl, check_entity, endpoint_name, field_problem,
    save_endpoint,
)
from .errors import ServingError, invalid, not_found
from .json_limits import MAX_CONFIG_DEPTH, MAX_DEPTH, MAX_DESCRIPTION_CHARS, check_json, check_text
from .masking import find_mask, masked
from .models import NAME_PATTERN, NAME_RULE, ServedEntity, ServingEndpoint
from .providers.local import LOCAL_MODELS
from .schemas import TASKS
from .views import api, json_response, read_json

CAN_MANAGE, CAN_QUERY = "CAN_MANAGE", "CAN_QUERY"
log = logging.getLogger("fondasi.management")

# --- request bodies (Databricks' shapes) ----------------------------------------------------------


class _Body(BaseModel):
    # Wrong types are errors, not coerced: "5" is not a number of calls.
    model_config = ConfigDict(extra="forbid", strict=True)


def _entity_name(value: str | None) -> str | None:
    if value is not None and not re.match(NAME_PATTERN, value):
        raise ValueError(f"served entity name '{value}' is not valid: names are {NAME_RULE}")
    return value


class ServedEntityIn(_Body):
    """One of ``config.served_entities``: an external model, or a local model by ``entity_name``."""

    name: str | None = None
    external_model: ExternalModelDecl | None = None
    entity_name: str | None = None
    foundation_model: FoundationModelDecl | None = None  # the endpoints file's spelling of entity_name
    #: whether the model sees images (Fondasi's own field); unset: as the provider knows
    vision: StrictBool | None = None
    # Databricks' compute sizing, sent by scripts written for Databricks; nothing to size here.
    entity_version: str | None = None
    workload_size: str | None = None
    workload_type: str | None = None
    scale_to_zero_enabled: bool | None = None

    _name = field_validator("name")(_entity_name)

    @model_validator(mode="after")
    def _one_model(self) -> "ServedEntityIn":
        given = [k for k in ("external_model", "entity_name", "foundation_model") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a served entity needs exactly one of 'external_model' or 'entity_name' (a local model)")
        return self

    def decl(self) -> EntityDecl:
        if self.external_model is not None:
            return EntityDecl(name=self.name, external_model=self.external_model, vision=self.vision)
        local = self.entity_name or self.foundation_model.name
        return EntityDecl(name=self.name, foundation_model=FoundationModelDecl(name=local), vision=self.vision)


class ServedModelIn(_Body):
    """One of the legacy ``config.served_models``: a local model by ``model_name``."""

    name: str | None = None
    model_name: str
    model_version: str | None = None
    workload_size: str | None = None
    workload_type: str | None = None
    scale_to_zero_enabled: bool | None = None

    _name = field_validator("name")(_entity_name)

    def decl(self) -> EntityDecl:
        return EntityDecl(name=self.name, foundation_model=FoundationModelDecl(name=self.model_name))


class Route(_Body):
    served_entity_name: str | None = None
    served_model_name: str | None = None
    traffic_percentage: int = Field(ge=0, le=100)

    @model_validator(mode="after")
    def _target(self) -> "Route":
        if not (self.served_entity_name or self.served_model_name):
            raise ValueError("a route needs 'served_entity_name' (or 'served_model_name')")
        return self


class TrafficConfig(_Body):
    routes: list[Route] = Field(min_length=1)


class CoreConfig(_Body):
    """``config`` of a create body, and the whole body of ``PUT …/config``."""

    name: str | None = None  # the endpoint's name again: the SDK's EndpointCoreConfigInput requires it
    served_entities: list[ServedEntityIn] | None = None
    served_models: list[ServedModelIn] | None = None
    traffic_config: TrafficConfig | None = None

    @model_validator(mode="after")
    def _one_list(self) -> "CoreConfig":
        if (self.served_entities is None) == (self.served_models is None):
            raise ValueError("give 'served_entities' (or the legacy 'served_models'), one of them")
        if not (self.served_entities or self.served_models):
            raise ValueError(f"'{self.field}' must not be empty")
        return self

    @property
    def field(self) -> str:
        return "served_entities" if self.served_entities is not None else "served_models"

    def entities(self) -> list[EntityDecl]:
        return [e.decl() for e in (self.served_entities or self.served_models or [])]


class Tag(_Body):
    key: str = Field(min_length=1)
    value: str | None = None


class RateLimit(_Body):
    calls: int = Field(ge=0)
    key: Literal["user", "endpoint"] | None = None
    renewal_period: Literal["minute"]


class _Enabled(_Body):
    enabled: bool | None = None


class InferenceTableConfig(_Body):
    catalog_name: str | None = None
    schema_name: str | None = None
    table_name_prefix: str | None = None
    enabled: bool | None = None


class PiiBehavior(_Body):
    behavior: Literal["NONE", "BLOCK", "MASK"] | None = None


class GuardrailParameters(_Body):
    invalid_keywords: list[str] | None = None
    pii: PiiBehavior | None = None
    safety: bool | None = None
    valid_topics: list[str] | None = None


class Guardrails(_Body):
    input: GuardrailParameters | None = None
    output: GuardrailParameters | None = None


class GatewayRateLimit(_Body):
    calls: int | None = Field(default=None, ge=0)
    tokens: int | None = Field(default=None, ge=0)
    key: Literal["user", "endpoint", "user_group", "service_principal"] | None = None
    principal: str | None = None
    renewal_period: Literal["minute"]


class AiGateway(_Body):
    usage_tracking_config: _Enabled | None = None
    inference_table_config: InferenceTableConfig | None = None
    guardrails: Guardrails | None = None
    rate_limits: list[GatewayRateLimit] | None = None
    fallback_config: _Enabled | None = None


class CreateBody(_Body):
    name: str
    config: CoreConfig
    task: str | None = None  # older mlflow clients move config["task"] here
    description: str | None = None
    tags: list[Tag] = Field(default_factory=list)
    rate_limits: list[RateLimit] = Field(default_factory=list)
    ai_gateway: AiGateway | None = None
    route_optimized: bool | None = None  # every endpoint is served the same way here

    _name = field_validator("name")(staticmethod(endpoint_name))

    @field_validator("task")
    @classmethod
    def _task(cls, value: str | None) -> str | None:
        if value is not None and value not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got '{value}'")
        return value


class TagsPatch(_Body):
    add_tags: list[Tag] = Field(default_factory=list)
    delete_tags: list[str] = Field(default_factory=list)


class RateLimitsBody(_Body):
    rate_limits: list[RateLimit] = Field(default_factory=list)


Body = TypeVar("Body", bound=BaseModel)


# The largest management API body: a few provider configurations and the endpoint's other fields.
MAX_BODY_BYTES = 512 * 1024


def _bound_core(config: Any, field: str) -> None:
    """Each provider configuration of a ``config`` body (raw JSON) within its depth and size."""
    if not isinstance(config, dict):
        return
    for kind in ("served_entities", "served_models"):
        entities = config.get(kind)
        for i, entity in enumerate(entities if isinstance(entities, list) else []):
            external = entity.get("external_model") if isinstance(entity, dict) else None
            for key, value in external.items() if isinstance(external, dict) else ():
                if isinstance(value, (dict, list)):
                    check_json(value, f"{field}{kind}.{i}.external_model.{key}", max_depth=MAX_CONFIG_DEPTH)


def bound(body: Any, fields: dict[str, str]) -> None:
    """ServingError(400) naming the field when raw ``body`` holds JSON nested or sized past the limits
    (:mod:`endpoints.json_limits`); ``fields`` maps the body's free-form fields to the names used in
    messages (``config``: the served entities' provider configurations). Runs before parsing."""
    if isinstance(body, dict):
        for key, name in fields.items():
            if key not in body:
                continue
            if key == "description":
                check_text(body[key], name, MAX_DESCRIPTION_CHARS)
            elif key == "config":
                _bound_core(body[key], name)
            else:
                check_json(body[key], name)
    check_json(body, "the request body", max_depth=MAX_DEPTH, max_bytes=MAX_BODY_BYTES)


def parse(model: type[Body], body: Any) -> Body:
    """``body`` as ``model``; ServingError(400) naming the first field that is wrong."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise invalid(field_problem(exc.errors(include_url=False)[0])) from None


# --- bodies to declarations ---------------------------------------------------------------------


def _tasks_of(entity: EntityDecl) -> frozenset[str] | None:
    """The tasks ``entity`` can serve as far as its declaration tells; None when it does not say."""
    if entity.external_model is not None:
        task = entity.external_model.task
        return frozenset({task}) if task else None
    model = LOCAL_MODELS.get(entity.foundation_model.name)
    # An unknown local model is reported by check_entity, with the catalog.
    return model.tasks if model else frozenset(TASKS)


def _endpoint_task(entities: list[EntityDecl], field: str, asked: str | None, current: str | None) -> str:
    """The one task ``entities`` serve together (and ``asked`` or ``current`` when given)."""
    possible = set(TASKS)
    for fixed in (asked, current):
        if fixed:
            possible &= {fixed}
    for i, entity in enumerate(entities):
        ext = entity.external_model
        if ext is not None and ext.task and ext.task not in TASKS:
            raise invalid(f"{field}.{i}.external_model.task must be one of {', '.join(TASKS)}; got '{ext.task}'.")
        tasks = _tasks_of(entity)
        if tasks is None:
            if asked is None and current is None:
                raise invalid(
                    f"{field}.{i}.external_model.task is missing: say which task the model serves ({', '.join(TASKS)})."
                )
            continue
        if not possible & tasks:
            if current:
                raise invalid(
                    f"{field}.{i} serves {', '.join(sorted(tasks))}, but the endpoint serves {current}; "
                    "an endpoint keeps its task: create another endpoint for another task."
                )
            raise invalid(
                f"{field}.{i} serves {', '.join(sorted(tasks))}, but the rest of the endpoint says "
                f"{', '.join(sorted(possible))}; an endpoint serves one task."
            )
        possible &= tasks
    return next(t for t in TASKS if t in possible)  # chat first, for a model that also completes


def _traffic_order(entities: list[EntityDecl], traffic: TrafficConfig | None, field: str) -> list[EntityDecl]:
    """``entities`` with the one routed all traffic first: queries go to an endpoint's first entity."""
    if traffic is None:
        return entities
    names = [e.row()["name"] for e in entities]
    share: dict[str, int] = {}
    for i, route in enumerate(traffic.routes):
        target = route.served_entity_name or route.served_model_name
        if target not in names:
            raise invalid(f"{field}traffic_config.routes.{i}: no served entity is named '{target}'.")
        share[target] = share.get(target, 0) + route.traffic_percentage
    total = sum(share.values())
    if total != 100:
        raise invalid(f"{field}traffic_config.routes: the traffic percentages add up to {total}, not 100.")
    taking = [name for name, percent in share.items() if percent]
    if len(taking) != 1:
        raise invalid(
            f"{field}traffic_config.routes: splitting traffic between served entities is not supported; "
            "route 100 to one of them."
        )
    first = names.index(taking[0])
    return [entities[first], *entities[:first], *entities[first + 1:]]


def declaration(
    name: str,
    config: CoreConfig,
    *,
    field: str,
    description: str = "",
    tags: list[dict[str, str]] | None = None,
    asked_task: str | None = None,
    current_task: str | None = None,
    user: Any,
) -> EndpointDecl:
    """The endpoint declaration a create or config-update body makes; ServingError(400) naming the field.

    ``field`` prefixes field names in messages (``"config."`` for a create body).
    """
    if config.name is not None and config.name != name:
        raise invalid(f"{field}name is '{config.name}', but the endpoint is '{name}'.")
    entities = _traffic_order(config.entities(), config.traffic_config, field)
    where = field + config.field
    task = _endpoint_task(entities, where, asked_task, current_task)
    for i, entity in enumerate(entities):
        row = entity.row()
        limit = ServedEntity._meta.get_field("model").max_length
        if len(row["model"]) > limit:
            raise invalid(f"{where}.{i}: the model name is longer than {limit} characters.")
        if entity.external_model is not None:
            key = next(iter(entity.external_model.model_extra or {}), "config")
            _refuse_masks(row["config"], f"{where}.{i}.external_model.{key}")
        problem = check_entity(task, row, user=user)  # 403 without READ on a secret's scope, or an upstream it may not use
        if problem:
            raise invalid(f"{where}.{i}: {problem}")
    try:
        return EndpointDecl(
            name=name, task=task, description=description, tags=tags or [], served_entities=entities
        )
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        message = field_problem(err)
        raise invalid(message if err["loc"] else f"{where}: {message}") from None


# --- credentials --------------------------------------------------------------------------------


def _refuse_masks(config: Any, where: str) -> None:
    """A masked value sent back (a GET answer reused as an update body) would replace the credential."""
    field = find_mask(config)
    if field is not None:
        raise invalid(
            f"{where}.{field} holds the masked value an answer shows, not a credential: send the "
            "credential itself or a {{secrets/scope/key}} reference."
        )


# --- the endpoint object ------------------------------------------------------------------------

# Output key of each provider's configuration where it is not "<provider with _>_config".
_CONFIG_KEYS = {"openai-compatible": "openai_config", "custom": "custom_provider_config"}
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://fondasi/serving-endpoints")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _entity_object(entity: ServedEntity, task: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": entity.name}
    if entity.provider == "local":
        out["entity_name"] = entity.model
        out["foundation_model"] = {"name": entity.model}
    else:
        key = _CONFIG_KEYS.get(entity.provider, entity.provider.replace("-", "_") + "_config")
        out["external_model"] = {
            "name": entity.model, "provider": entity.provider, "task": task, key: masked(entity.config),
        }
    if entity.vision is not None:  # set on the entity; unset, the provider's default applies
        out["vision"] = entity.vision
    out["state"] = {"deployment": "DEPLOYMENT_READY"}
    return out


def endpoint_object(endpoint: ServingEndpoint, permission_level: str) -> dict[str, Any]:
    """What Databricks answers for an endpoint (get, list, create, config update), credentials masked.

    Queries go to the first served entity: the traffic config says so.
    """
    entities = list(endpoint.entities.all())
    out: dict[str, Any] = {
        "name": endpoint.name,
        "id": uuid.uuid5(_ID_NAMESPACE, str(endpoint.pk)).hex,
        "task": endpoint.task,
        "creator": endpoint.creator,
        "creation_timestamp": _ms(endpoint.created_at),
        "last_updated_timestamp": _ms(endpoint.updated_at),
        "state": {"ready": endpoint.ready, "config_update": endpoint.config_update},
        "config": {
            "served_entities": [_entity_object(e, endpoint.task) for e in entities],
            "traffic_config": {"routes": [
                {"served_entity_name": e.name, "served_model_name": e.name, "traffic_percentage": 100 if i == 0 else 0}
                for i, e in enumerate(entities)
            ]},
        },
        "tags": endpoint.tags,
        "permission_level": permission_level,
    }
    if endpoint.description:
        out["description"] = endpoint.description
    if endpoint.ai_gateway:
        out["ai_gateway"] = endpoint.ai_gateway
    if endpoint.rate_limits:
        out["rate_limits"] = endpoint.rate_limits
    return out


def _unrenderable(endpoint: ServingEndpoint, permission_level: str) -> dict[str, Any]:
    """What is shown of a stored endpoint that cannot be rendered (stored before the limits, or
    edited in the database): enough to find, fix (PUT …/config) or delete it."""
    return {
        "name": endpoint.name,
        "id": uuid.uuid5(_ID_NAMESPACE, str(endpoint.pk)).hex,
        "task": endpoint.task,
        "creator": endpoint.creator,
        "state": {"ready": "NOT_READY", "config_update": "UPDATE_FAILED"},
        "permission_level": permission_level,
    }


def rendered(endpoint: ServingEndpoint, permission_level: str) -> dict[str, Any]:
    """:func:`endpoint_object`, or :func:`_unrenderable` when the row cannot be rendered as JSON:
    one bad row must not fail a whole list (defence in depth behind :func:`bound`)."""
    try:
        out = endpoint_object(endpoint, permission_level)
        orjson.dumps(out)  # what the answer will do (orjson refuses > 254 levels)
        return out
    except Exception:  # noqa: BLE001 - logged; the endpoint is listed as failed
        log.exception("endpoint %r cannot be rendered; listed without its configuration", endpoint.name)
        return _unrenderable(endpoint, permission_level)


# --- the database side (sync, in Django's sync thread) ------------------------------------------

Result = TypeVar("Result")


def _in_db(fn: Callable[..., Result]) -> Callable[..., Any]:
    """``fn`` made awaitable; it runs in Django's sync thread and releases its connection after
    (the API handler sends no request signals: see playground/asgi.py)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Result:
        try:
            return fn(*args, **kwargs)
        finally:
            registry.release_connections()

    return sync_to_async(run)


def _is_staff(principal: Principal) -> bool:
    users = get_user_model().objects.filter(pk=principal.user_id)
    return users.filter(Q(is_staff=True) | Q(is_superuser=True)).exists()


def _level(endpoint: ServingEndpoint, principal: Principal, staff: bool) -> str:
    # The file's endpoints have a source label as creator, never a person.
    own = endpoint.source != ServingEndpoint.Source.YAML and endpoint.creator == principal.username
    return CAN_MANAGE if staff or own else CAN_QUERY


def _missing(name: str) -> ServingError:
    return not_found(f"Endpoint '{name}' does not exist. List endpoints with GET /api/2.0/serving-endpoints.")


def _with_entities() -> QuerySet[ServingEndpoint]:
    return ServingEndpoint.objects.prefetch_related("entities")


def _managed(principal: Principal, name: str, *, file_declares: bool = True) -> ServingEndpoint:
    """Endpoint ``name``, locked for a change by ``principal``.

    404 when it does not exist, 403 without CAN_MANAGE, 400 when ``file_declares`` what is to
    change and the endpoints file owns the endpoint.
    """
    endpoint = ServingEndpoint.objects.select_for_update().filter(name=name).first()
    if endpoint is None:
        raise _missing(name)
    if _level(endpoint, principal, _is_staff(principal)) != CAN_MANAGE:
        raise ServingError(
            f"You may query endpoint '{name}' but not change it: that takes its creator or a staff user.",
            "PERMISSION_DENIED",
        )
    if file_declares and endpoint.source == ServingEndpoint.Source.YAML:
        raise ServingError(
            f"Endpoint '{name}' is declared in the endpoints file: change it there (a change made "
            "through the API would be undone the next time the file is applied).",
            "BAD_REQUEST",
        )
    return endpoint


def _changed(endpoint: ServingEndpoint) -> dict[str, Any]:
    """The endpoint object after a committed change, the registry invalidated.

    The models' signals invalidate too, but before the commit: a query in between would cache
    the old rows for ``REGISTRY_TTL_SECONDS``. Every change invalidates again once committed.
    """
    registry.invalidate()
    return endpoint_object(_with_entities().get(pk=endpoint.pk), CAN_MANAGE)


@_in_db
def list_endpoints(principal: Principal) -> list[dict[str, Any]]:
    staff = _is_staff(principal)
    return [rendered(e, _level(e, principal, staff)) for e in _with_entities()]


@_in_db
def get_endpoint(principal: Principal, name: str) -> dict[str, Any]:
    endpoint = _with_entities().filter(name=name).first()
    if endpoint is None:
        raise _missing(name)
    return rendered(endpoint, _level(endpoint, principal, _is_staff(principal)))


def _exists(name: str) -> ServingError:
    return ServingError(
        f"Endpoint '{name}' already exists: change it with PUT /api/2.0/serving-endpoints/{name}/config.",
        "RESOURCE_ALREADY_EXISTS",
    )


@_in_db
def create_endpoint(principal: Principal, body: Any) -> dict[str, Any]:
    if not _is_staff(principal):
        raise ServingError("Creating serving endpoints takes a staff user.", "PERMISSION_DENIED")
    bound(body, {"config": "config.", "tags": "tags", "rate_limits": "rate_limits", "ai_gateway": "ai_gateway",
                 "description": "description"})
    request = parse(CreateBody, body)
    decl = declaration(
        request.name, request.config, field="config.", description=request.description or "",
        tags=[t.model_dump(exclude_none=True) for t in request.tags], asked_task=request.task,
        user=get_user_model().objects.filter(pk=principal.user_id).first(),
    )
    endpoint = ServingEndpoint(
        name=decl.name,
        creator=principal.username,
        rate_limits=[r.model_dump(exclude_none=True) for r in request.rate_limits],
        ai_gateway=request.ai_gateway.model_dump(exclude_none=True) if request.ai_gateway else {},
    )
    try:
        with transaction.atomic():
            if ServingEndpoint.objects.filter(name=decl.name).exists():
                raise _exists(decl.name)
            save_endpoint(decl, ServingEndpoint.Source.API, endpoint=endpoint)
    except (IntegrityError, ModelValidationError):
        # Another request created it between the check and the insert.
        if ServingEndpoint.objects.filter(name=decl.name).exists():
            raise _exists(decl.name) from None
        raise
    return _changed(endpoint)


@_in_db
def delete_endpoint(principal: Principal, name: str) -> None:
    with transaction.atomic():
        _managed(principal, name).delete()
    registry.invalidate()


@_in_db
def update_config(principal: Principal, name: str, body: Any) -> dict[str, Any]:
    with transaction.atomic():
        endpoint = _managed(principal, name)
        bound({"config": body}, {"config": ""})
        decl = declaration(
            name, parse(CoreConfig, body), field="", description=endpoint.description, tags=endpoint.tags,
            current_task=endpoint.task, user=get_user_model().objects.filter(pk=principal.user_id).first(),
        )
        save_endpoint(decl, endpoint.source, endpoint=endpoint)
    return _changed(endpoint)


@_in_db
def patch_tags(principal: Principal, name: str, body: Any) -> dict[str, Any]:
    with transaction.atomic():
        endpoint = _managed(principal, name)
        bound(body, {"add_tags": "add_tags", "delete_tags": "delete_tags"})
        patch = parse(TagsPatch, body)
        added = [t.model_dump(exclude_none=True) for t in patch.add_tags]
        replaced = set(patch.delete_tags) | {t["key"] for t in added}
        endpoint.tags = [t for t in endpoint.tags if t.get("key") not in replaced] + added
        check_json(endpoint.tags, "tags")  # what the endpoint would hold after the patch
        endpoint.save(update_fields=["tags", "updated_at"])
    registry.invalidate()
    return {"tags": endpoint.tags}


@_in_db
def put_rate_limits(principal: Principal, name: str, body: Any) -> dict[str, Any]:
    with transaction.atomic():
        endpoint = _managed(principal, name, file_declares=False)
        bound(body, {"rate_limits": "rate_limits"})
        endpoint.rate_limits = [r.model_dump(exclude_none=True) for r in parse(RateLimitsBody, body).rate_limits]
        endpoint.save(update_fields=["rate_limits", "updated_at"])
    registry.invalidate()
    return {"rate_limits": endpoint.rate_limits}


@_in_db
def put_ai_gateway(principal: Principal, name: str, body: Any) -> dict[str, Any]:
    with transaction.atomic():
        endpoint = _managed(principal, name, file_declares=False)
        check_json(body, "ai_gateway")
        bound(body, {})
        endpoint.ai_gateway = parse(AiGateway, body).model_dump(exclude_none=True)
        endpoint.save(update_fields=["ai_gateway", "updated_at"])
    registry.invalidate()
    return endpoint.ai_gateway


# --- views --------------------------------------------------------------------------------------


@api("GET", "POST")
async def collection(request: HttpRequest) -> HttpResponse:
    """``/api/2.0/serving-endpoints`` (and with the slash): list, create."""
    if request.method == "POST":
        return json_response(await create_endpoint(request.principal, read_json(request)))
    return json_response({"endpoints": await list_endpoints(request.principal)})


@api("GET", "DELETE")
async def item(request: HttpRequest, name: str) -> HttpResponse:
    if request.method == "DELETE":
        await delete_endpoint(request.principal, name)
        return json_response({})
    return json_response(await get_endpoint(request.principal, name))


@api("PUT")
async def item_config(request: HttpRequest, name: str) -> HttpResponse:
    return json_response(await update_config(request.principal, name, read_json(request)))


@api("PATCH")
async def item_tags(request: HttpRequest, name: str) -> HttpResponse:
    return json_response(await patch_tags(request.principal, name, read_json(request)))


@api("PUT")
async def item_rate_limits(request: HttpRequest, name: str) -> HttpResponse:
    return json_response(await put_rate_limits(request.principal, name, read_json(request)))


@api("PUT")
async def item_ai_gateway(request: HttpRequest, name: str) -> HttpResponse:
    return json_response(await put_ai_gateway(request.principal, name, read_json(request)))
