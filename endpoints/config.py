"""Endpoint declarations: the YAML file format, its validation and its application to the registry.

The same declaration model serves the YAML file and the management API's create/update bodies
(:mod:`endpoints.management_api`).

Who saves a config is checked too (:func:`check_entity`): each ``{{secrets/scope/key}}`` needs
``READ`` on its scope, and only a superuser may point at non-public upstream addresses
(:mod:`endpoints.upstream_policy`). The endpoints file is applied as its owner
(:func:`file_owner`): the user ``ENDPOINTS_FILE_OWNER`` names, or by default the server's operator
(:data:`endpoints.secrets.OPERATOR`, with every permission) — whoever can write the file on the
server can read the secrets key and the database beside it anyway.
The file is bounded as the other surfaces are: its text nests at most :data:`MAX_FILE_DEPTH`
levels, provider configs, tags and descriptions are checked by :mod:`endpoints.json_limits` as the
management API and the admin check them, and examples as the pages check saved ones
(``EXAMPLES_PER_ENDPOINT``, ``EXAMPLE_MAX_BYTES``) — before anything walks them recursively.
:func:`load_file` raises :class:`ConfigError` naming the file, the line and the problem; nothing
is changed in the registry then, so the last good configuration keeps serving.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.db import transaction
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

from .errors import ServingError
from .json_limits import MAX_CONFIG_DEPTH, MAX_DEPTH, MAX_DESCRIPTION_CHARS, check_json, check_text, measure
from .models import NAME_PATTERN, NAME_RULE, ExampleInput, ServedEntity, ServingEndpoint
from .schemas import TASKS, parse


class ConfigError(Exception):
    def __init__(self, path: str, line: int | None, problem: str) -> None:
        self.path, self.line, self.problem = path, line, problem
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {problem}")


def endpoint_name(value: str) -> str:
    """``value`` if it is a valid endpoint name; ValueError saying the rule otherwise (validators)."""
    if not re.match(NAME_PATTERN, value):
        raise ValueError(f"endpoint name '{value}' is not valid: names are {NAME_RULE}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FoundationModelDecl(_Strict):
    name: str


class ExternalModelDecl(BaseModel):
    # Provider configuration arrives under one `<provider>_config` key (Databricks' format).
    model_config = ConfigDict(extra="allow")

    name: str
    provider: str
    task: str | None = None

    @model_validator(mode="after")
    def _one_config(self) -> "ExternalModelDecl":
        extra = dict(self.model_extra or {})
        bad = [key for key in extra if not key.endswith("_config")]
        if bad:
            raise ValueError(f"unknown field '{bad[0]}' (provider settings go under '<provider>_config')")
        if len(extra) > 1:
            raise ValueError(f"give one provider configuration, not {', '.join(sorted(extra))}")
        for key, value in extra.items():
            if not isinstance(value, dict):
                raise ValueError(f"'{key}' must be a mapping")
        return self

    @property
    def provider_config(self) -> dict[str, Any]:
        return dict(next(iter((self.model_extra or {}).values()), {}))


class EntityDecl(_Strict):
    name: str | None = None
    foundation_model: FoundationModelDecl | None = None
    external_model: ExternalModelDecl | None = None
    #: whether the model sees images; unset: as the provider knows (:attr:`Provider.vision`)
    vision: StrictBool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "EntityDecl":
        if (self.foundation_model is None) == (self.external_model is None):
            raise ValueError("a served entity needs exactly one of 'foundation_model' or 'external_model'")
        return self

    def row(self) -> dict[str, Any]:
        """The ServedEntity fields this declares."""
        if self.foundation_model is not None:
            model, provider, config = self.foundation_model.name, "local", {}
        else:
            ext = self.external_model
            model, provider, config = ext.name, ext.provider, ext.provider_config
        name = self.name or re.sub(r"[^A-Za-z0-9_-]+", "-", model).strip("-")[:63] or "entity"
        return {"name": name, "provider": provider, "model": model, "config": config, "vision": self.vision}


class ExampleDecl(_Strict):
    """An example input shown by the Query dialog's **Show Example**: a request body for the task."""

    name: str = Field(min_length=1, max_length=100)
    # Made plain JSON by parse_text (:func:`_bound_examples`), once its depth and size are known to
    # be within bounds: YAML aliases can make a short file hold a value far deeper or larger than its text.
    body: dict[str, Any]


class EndpointDecl(_Strict):
    name: str
    task: str
    description: str = ""
    tags: list[dict[str, str]] | dict[str, str] = Field(default_factory=list)
    served_entities: list[EntityDecl] = Field(min_length=1)
    examples: list[ExampleDecl] = Field(default_factory=list)

    _name = field_validator("name")(staticmethod(endpoint_name))

    @field_validator("task")
    @classmethod
    def _task(cls, value: str) -> str:
        if value not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got '{value}'")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[dict[str, str]] | dict[str, str]) -> list[dict[str, str]]:
        if isinstance(value, dict):
            return [{"key": k, "value": str(v)} for k, v in value.items()]
        for tag in value:
            if set(tag) - {"key", "value"} or "key" not in tag:
                raise ValueError('each tag is {"key": …, "value": …}')
        return value

    @model_validator(mode="after")
    def _entities(self) -> "EndpointDecl":
        rows = [e.row() for e in self.served_entities]
        names = [r["name"] for r in rows]
        if len(set(names)) != len(names):
            raise ValueError("served entity names must be unique within an endpoint")
        for entity in self.served_entities:
            ext = entity.external_model
            if ext is not None and ext.task and ext.task != self.task:
                raise ValueError(f"external model task '{ext.task}' differs from the endpoint's task '{self.task}'")
        example_names = [x.name for x in self.examples]
        if len(set(example_names)) != len(example_names):
            raise ValueError("example names must be unique within an endpoint")
        return self

    def desired(self) -> dict[str, Any]:
        """A comparable picture of what the registry should hold for this endpoint."""
        return {
            "task": self.task,
            "description": self.description,
            "tags": self.tags,
            "entities": [e.row() for e in self.served_entities],
            "examples": [{"name": x.name, "body": x.body} for x in self.examples],
        }


class FileDecl(_Strict):
    endpoints: list[EndpointDecl] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> "FileDecl":
        seen: set[str] = set()
        for ep in self.endpoints:
            if ep.name in seen:
                raise ValueError(f"endpoint '{ep.name}' is declared twice")
            seen.add(ep.name)
        return self


# --- YAML with line numbers ----------------------------------------------------------------------


class _LineDict(dict):
    """A mapping that remembers where it and each of its keys stand in the file."""

    line: int = 0
    key_lines: dict


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_line_dict(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    mapping = _LineDict(loader.construct_mapping(node, deep=True))
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if hasattr(k, "value")}
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_line_dict)


def _line_of(data: Any, loc: tuple) -> int | None:
    """The line of the deepest node of ``loc`` that the file has."""
    line = getattr(data, "line", None)
    node = data
    for part in loc:
        if isinstance(node, _LineDict) and isinstance(part, str):
            if part in node.key_lines:
                line = node.key_lines[part]
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            line = getattr(node, "line", line)
        else:
            break
    return line


def field_problem(err: dict) -> str:
    """One line naming the field a pydantic error is about (dotted path) and what is wrong with it."""
    loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and ("[" in p or "(" in p)))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"unknown field '{err['loc'][-1]}' at {loc}"
    if err["type"] == "missing":
        return f"missing required field {loc}"
    return f"{loc}: {msg}" if loc else msg


def file_owner(path: str = "<endpoints>") -> Any:
    """Who the endpoints file is applied as: the active user ``ENDPOINTS_FILE_OWNER`` names, or
    :data:`endpoints.secrets.OPERATOR` when it names none. ConfigError when that user does not exist."""
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from . import secrets

    name = getattr(settings, "ENDPOINTS_FILE_OWNER", "")
    if not name:
        return secrets.OPERATOR
    owner = get_user_model().objects.filter(username=name, is_active=True).first()
    if owner is None:
        raise ConfigError(
            path, None, f"FONDASI_ENDPOINTS_FILE_OWNER names user '{name}', who does not exist or is not active: "
            "the file is applied as that user. Create the user, or unset the setting to apply it as the operator."
        )
    return owner


#: Levels of mappings and lists the file's text may nest: an example body (32 levels, the most
#: any field may hold) sits 5 levels down. Deeper text would exhaust PyYAML's recursive composer
#: (about 300 levels) before any field could be checked.
MAX_FILE_DEPTH = MAX_DEPTH + 16


def _check_nesting(text: str, path: str) -> None:
    """ConfigError at the line where the text nests past :data:`MAX_FILE_DEPTH`, naming the field.

    Walks PyYAML's event stream, which its parser makes without recursion."""
    # Per open collection: [is a mapping, next node is a key, its key (or index), its name]
    stack: list[list[Any]] = []
    for event in yaml.parse(text, Loader=_LineLoader):
        if isinstance(event, yaml.CollectionEndEvent):
            stack.pop()
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue
        name = ""
        if stack:
            top = stack[-1]
            if top[0] and top[1]:  # a key
                top[1], top[2] = False, event.value if isinstance(event, yaml.ScalarEvent) else "?"
                if not isinstance(event, yaml.CollectionStartEvent):
                    continue
            elif top[0]:  # a value
                top[1] = True
                name = str(top[2])
            else:
                name, top[2] = str(top[2]), top[2] + 1
        if isinstance(event, yaml.CollectionStartEvent):
            parent = stack[-1][3] if stack else ""
            stack.append([isinstance(event, yaml.MappingStartEvent), True, 0, f"{parent}.{name}".strip(".")])
            if len(stack) > MAX_FILE_DEPTH:
                field = ".".join(stack[-1][3].split(".")[:8])
                raise ConfigError(
                    path, event.start_mark.line + 1,
                    f"'{field}' is nested more than {MAX_FILE_DEPTH} levels deep in the file; a provider config "
                    f"may hold at most {MAX_CONFIG_DEPTH} levels, an example body {MAX_DEPTH}",
                )


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 1024 * 1024 else f"{n / (1024 * 1024):,.1f} MiB"


def _bound(ep: EndpointDecl, index: int, data: Any, path: str) -> None:
    """ConfigError naming the endpoint and the field when ``ep``'s description, tags or a provider
    config is past the limits the management API and the admin enforce (:mod:`endpoints.json_limits`)."""
    # (where in the file, the value, its name in messages as the management API names it, its depth limit)
    fields: list[tuple[tuple, Any, str, int]] = [(("tags",), ep.tags, "tags", MAX_DEPTH)]
    for e_index, entity in enumerate(ep.served_entities):
        if entity.external_model is not None:
            key = next(iter(entity.external_model.model_extra or {}), "config")
            fields.append((("served_entities", e_index, "external_model", key), entity.external_model.provider_config,
                           f"served_entities.{e_index}.external_model.{key}", MAX_CONFIG_DEPTH))
    loc: tuple = ("description",)
    try:
        check_text(ep.description, "description", MAX_DESCRIPTION_CHARS)
        for loc, value, field, max_depth in fields:
            check_json(value, field, max_depth=max_depth)
    except ServingError as exc:
        raise ConfigError(path, _line_of(data, ("endpoints", index, *loc)), f"endpoint '{ep.name}': {exc.message}") from None


def _bound_examples(ep: EndpointDecl, index: int, data: Any, path: str) -> None:
    """Bound ``ep``'s examples as the pages bound saved ones (``EXAMPLES_PER_ENDPOINT``,
    ``EXAMPLE_MAX_BYTES`` of compact JSON, :data:`~endpoints.json_limits.MAX_DEPTH` levels) and make
    each body plain JSON; ConfigError naming the endpoint, the example and the limit."""
    from django.conf import settings

    count, limit = settings.EXAMPLES_PER_ENDPOINT, settings.EXAMPLE_MAX_BYTES
    if len(ep.examples) > count:
        extra = ep.examples[count]
        raise ConfigError(
            path, _line_of(data, ("endpoints", index, "examples", count)),
            f"endpoint '{ep.name}', example '{extra.name}': an endpoint keeps at most {count} examples "
            f"(FONDASI_EXAMPLES_PER_ENDPOINT); the file declares {len(ep.examples)}",
        )
    for x_index, example in enumerate(ep.examples):
        where = f"endpoint '{ep.name}', example '{example.name}'"
        line = _line_of(data, ("endpoints", index, "examples", x_index, "body"))
        # Iteratively, and only so far: an aliased body may be far deeper or larger than its text.
        depth, approximate = measure(example.body, stop_depth=MAX_DEPTH, stop_bytes=4 * limit)
        if depth > MAX_DEPTH:
            raise ConfigError(
                path, line, f"{where}: Invalid 'examples.{x_index}.body': it is nested more than {MAX_DEPTH} "
                f"levels deep; at most {MAX_DEPTH} levels are allowed.",
            )
        size = None  # far past the limit (the approximate size errs by a byte per true or null): not serialized
        if approximate <= 4 * limit:
            # YAML has values JSON lacks (dates, sets…); the body is stored as JSON, so it must be JSON.
            # The round trip also turns the loader's line-tracking mappings into plain dicts.
            try:
                compact = json.dumps(example.body, ensure_ascii=False, separators=(",", ":"))
                size = len(compact.encode("utf-8"))
                example.body = json.loads(compact)
            except (TypeError, ValueError) as exc:
                raise ConfigError(path, line, f"{where}: an example body must be plain JSON ({exc})") from None
        if size is None or size > limit:
            shown = f"more than {_kib(4 * limit)}" if size is None else _kib(size)
            raise ConfigError(
                path, line, f"{where}: its body is {shown} of JSON; an example may be at most {_kib(limit)} "
                "(FONDASI_EXAMPLE_MAX_BYTES)",
            )


def parse_text(text: str, path: str = "<endpoints>", owner: Any = None) -> list[EndpointDecl]:
    """Parse and validate a YAML document; ConfigError on the first problem.

    Configs are checked as ``owner`` would save them (default: :func:`file_owner`).
    """
    try:
        _check_nesting(text, path)
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ConfigError(path, mark.line + 1 if mark else None, f"{exc.problem or exc.context} (YAML syntax)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, str(exc)) from None
    if data is None:
        data = {"endpoints": []}
    if not isinstance(data, dict):
        raise ConfigError(path, 1, "the file must be a mapping with an 'endpoints' list")
    try:
        decl = FileDecl.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise ConfigError(path, _line_of(data, err["loc"]), field_problem(err)) from None
    # Depth and size first: the checks below walk the configs and bodies recursively.
    for index, ep in enumerate(decl.endpoints):
        _bound(ep, index, data, path)
        _bound_examples(ep, index, data, path)
    if owner is None and any(e.external_model for ep in decl.endpoints for e in ep.served_entities):
        owner = file_owner(path)
    for index, ep in enumerate(decl.endpoints):
        for e_index, entity in enumerate(ep.served_entities):
            try:
                problem = check_entity(ep.task, entity.row(), user=owner)
            except ServingError as exc:  # a permission the file's owner lacks
                problem = exc.message
            if problem:
                line = _line_of(data, ("endpoints", index, "served_entities", e_index))
                raise ConfigError(path, line, f"endpoint '{ep.name}': {problem}")
        for x_index, example in enumerate(ep.examples):
            # An example that the endpoint would refuse is a mistake in the file: say so now,
            # not when someone presses Show Example and then Send Request.
            try:
                parse(ep.task, example.body, endpoint=ep.name)
            except ServingError as exc:
                line = _line_of(data, ("endpoints", index, "examples", x_index, "body"))
                raise ConfigError(path, line, f"endpoint '{ep.name}', example '{example.name}': {exc.message}") from None
    return decl.endpoints


def check_entity(task: str, row: dict[str, Any], *, user: Any) -> str | None:
    """Why a served entity cannot serve ``task``, or None when it can — saved by ``user`` (a Django
    user, or :data:`endpoints.secrets.OPERATOR`).

    ``user`` needs ``READ`` on the scope of every secret the config refers to, and may point only
    where :mod:`endpoints.upstream_policy` lets them: else :class:`ServingError` is raised (403
    ``PERMISSION_DENIED`` naming the scope or the field; 400 for a host that cannot be resolved).
    The provider checks the config as it will receive it: secret references resolved and
    ``<field>_plaintext`` renamed (:func:`endpoints.secrets.declared`). A secret that does not
    exist yet is allowed, with a warning in the log: queries fail until it is put.
    """
    from . import secrets, upstream_policy
    from .providers import provider_class
    from .providers.base import EntitySpec

    where = f"served entity '{row['name']}'"
    written = row.get("config") or {}
    try:
        # Before any secret is read: no one learns whether a secret exists without READ.
        secrets.require_references(written, user, where)
    except secrets.PermissionDenied as exc:
        raise ServingError(exc.message, "PERMISSION_DENIED") from None
    try:
        config = secrets.declared(written, where)
    except secrets.SecretsError as exc:
        return exc.message
    if row.get("provider") != "local":
        upstream_policy.check(config, user, written)
    try:
        provider = provider_class(row["provider"])(EntitySpec(task=task, **{**row, "config": config}))
        tasks = provider.tasks
    except (ServingError, secrets.SecretsError) as exc:
        return exc.message
    if task not in tasks:
        return f"model '{row['model']}' of provider '{row['provider']}' cannot serve {task}"
    return None


def load_file(path: Path | str) -> list[EndpointDecl]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), None, f"cannot read the file: {exc}") from None
    return parse_text(text, str(path))


# --- Applying declarations to the registry ------------------------------------------------------


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{label}: {', '.join(names) if names else '-'}" for label, names in
               (("added", self.added), ("changed", self.changed), ("removed", self.removed))]
        out.append(f"unchanged: {len(self.unchanged)}")
        return out


def current(endpoint: ServingEndpoint) -> dict[str, Any]:
    """What the registry holds for ``endpoint``, shaped like :meth:`EndpointDecl.desired`.

    Only the file's examples count: examples people saved are theirs and never make a change.
    """
    return {
        "task": endpoint.task,
        "description": endpoint.description,
        "tags": endpoint.tags,
        "entities": [
            {"name": e.name, "provider": e.provider, "model": e.model, "config": e.config, "vision": e.vision}
            for e in endpoint.entities.all()
        ],
        "examples": [
            {"name": x.name, "body": x.body}
            for x in endpoint.examples.all()
            if x.source == ExampleInput.Source.YAML
        ],
    }


def save_endpoint(decl: EndpointDecl, source: str, creator: str = "", endpoint: ServingEndpoint | None = None) -> ServingEndpoint:
    """Create or replace one endpoint, its entities and its declared examples from a declaration.

    Examples saved by people (``source="user"``) are kept.
    """
    want = decl.desired()
    if endpoint is None:
        endpoint = ServingEndpoint(name=decl.name, creator=creator)
    endpoint.task, endpoint.description, endpoint.tags = want["task"], want["description"], want["tags"]
    endpoint.source = source
    endpoint.full_clean()
    endpoint.save()
    endpoint.entities.all().delete()
    ServedEntity.objects.bulk_create(
        ServedEntity(endpoint=endpoint, position=i, **row) for i, row in enumerate(want["entities"])
    )
    endpoint.examples.filter(source=ExampleInput.Source.YAML).delete()
    ExampleInput.objects.bulk_create(
        ExampleInput(endpoint=endpoint, source=ExampleInput.Source.YAML, position=i, **example)
        for i, example in enumerate(want["examples"])
    )
    return endpoint


@transaction.atomic
def apply(decls: list[EndpointDecl], source: str = ServingEndpoint.Source.YAML) -> Changes:
    """Make the registry hold ``decls``; remove endpoints of ``source`` the declarations no longer name.

    Idempotent. The file wins over other sources for the endpoints it names: an endpoint of the
    same name made in the admin or through the management API is overwritten and becomes the
    file's (its rate limits and AI gateway, which the file does not declare, are kept).
    """
    changes = Changes()
    existing = {e.name: e for e in ServingEndpoint.objects.prefetch_related("entities", "examples")}
    for decl in decls:
        endpoint = existing.get(decl.name)
        if endpoint is None:
            save_endpoint(decl, source, creator=f"{source}")
            changes.added.append(decl.name)
        elif current(endpoint) != decl.desired() or endpoint.source != source:
            save_endpoint(decl, source, endpoint=endpoint)
            changes.changed.append(decl.name)
        else:
            changes.unchanged.append(decl.name)
    named = {d.name for d in decls}
    for name, endpoint in existing.items():
        if endpoint.source == source and name not in named:
            endpoint.delete()
            changes.removed.append(name)
    return changes
