"""Bounds on user JSON Schemas, and a schema check that runs in bounded time.

A request's ``response_format`` schema and its ``tools[].function.parameters`` come from the
user, and three things downstream of them cost time or memory that the schema alone decides:

* the llama.cpp grammar of the local model (``minItems`` repeats the item rule that many times;
  every property, enum value and alternative adds rules),
* everything recursive that reads a schema (``jsonschema``, the grammar converter, ``deepcopy``),
  which a schema nested a few hundred levels deep, or a ``$ref`` cycle, drives past Python's
  recursion limit,
* ``pattern`` and ``patternProperties``, which ``jsonschema`` runs on Python's backtracking
  ``re``: ``"^(.+)+X$"`` against 29 characters holds the GIL for ~20 s.

:func:`check_limits` runs when a request is validated, for every provider, before anything
recursive reads the schema: iterative walks, linear in the size of the schema, that answer a 400
naming the JSON path, the keyword, the value and the limit. :func:`check_schema` then checks the
schema against the 2020-12 metaschema with RE2 as the ``regex`` format. :func:`first_error`
checks an instance (a model's answer) with a validator whose patterns run on RE2 (linear time,
no backtracking: google-re2, Google's own binding) and whose work is capped at
``MAX_CHECK_STEPS`` keyword evaluations.

The limits are module constants: each is far above what a schema a model can answer within its
context needs (OpenAI's structured outputs stop at 5000 properties and 10 levels of nesting).
"""
from __future__ import annotations

import contextvars
import functools
import json
import re
from typing import Any, Iterator

from .errors import invalid

# JSON nesting of one schema document (objects and arrays, data in enum/const included). An object
# nested in an object's properties is two levels ({"properties": {"x": {...}}}), so this allows
# about 30 levels of objects. Also the limit once $refs are followed (see _expanded_depth).
MAX_SCHEMA_DEPTH = 64
# JSON values (objects, arrays, strings, numbers, ...) in one schema document. Checking a schema
# against the metaschema (jsonschema) costs ~50 us a value, on the event loop.
MAX_SCHEMA_NODES = 10_000
# Count keywords, at most: minItems drives the grammar (the item rule is written out that many
# times); the others never need to be larger for an answer that fits a context window.
MAX_COUNTS = {
    "minItems": 1000,
    "maxItems": 1_000_000,
    "minLength": 100_000,
    "maxLength": 1_000_000,
    "minProperties": 1000,
    "maxProperties": 1_000_000,
    "minContains": 1000,
    "maxContains": 1_000_000,
}
# Subschemas (objects where a schema is expected) in one schema: checking one against the
# 2020-12 metaschema costs jsonschema ~0.3 ms, on the event loop.
MAX_SUBSCHEMAS = 2000
# Properties of one object (llama-cpp-python's converter recurses once per optional property),
# and of the whole schema.
MAX_PROPERTIES = 256
MAX_TOTAL_PROPERTIES = 2000
# Values of one enum; characters of all enum and const values of a schema (as JSON).
MAX_ENUM_VALUES = 1000
MAX_ENUM_CHARS = 100_000
# Subschemas of one anyOf / oneOf / allOf.
MAX_ALTERNATIVES = 256
# Characters of a pattern (pattern, patternProperties keys).
MAX_PATTERN_CHARS = 1000
# Keyword evaluations of one check of an answer against a schema (see first_error): ~10 us each.
MAX_CHECK_STEPS = 50_000
# Nesting of an answer (objects and arrays) that is checked against a schema.
MAX_ANSWER_DEPTH = 128

# Keywords whose value is one subschema / an object of subschemas / a list of subschemas. "in
# place": applied to the same value (a cycle of these never ends); the others descend into it.
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LIST = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAP = ("dependentSchemas",)
_DESCEND_ONE = ("additionalProperties", "items", "contains", "propertyNames", "unevaluatedItems",
                "unevaluatedProperties", "additionalItems")
_DESCEND_LIST = ("prefixItems", "items")
_DESCEND_MAP = ("properties", "patternProperties")
_DEFINITIONS = ("$defs", "definitions")


class _Path:
    """A JSON path kept as a linked list (built into text only for a message)."""

    __slots__ = ("parent", "key")

    def __init__(self, parent: "_Path | None", key: Any) -> None:
        self.parent, self.key = parent, key

    def text(self, where: str) -> str:
        keys = []
        node: _Path | None = self
        while node is not None:
            keys.append(node.key)
            node = node.parent
        out = where
        for key in reversed(keys):
            if key is None:
                continue
            if isinstance(key, int):
                out += f"[{key}]"
            elif re.fullmatch(r"[A-Za-z0-9_$\-]{1,64}", key):
                out += f".{key}"
            else:
                shown = key if len(key) <= 64 else key[:61] + "..."
                out += f"[{json.dumps(shown)}]"
        return out


_ROOT = _Path(None, None)


def _too(where: str, path: _Path, what: str) -> Exception:
    return invalid(f"Invalid '{path.text(where)}': {what}.")


def new_totals() -> dict[str, int]:
    """Counts that :func:`check_limits` adds up over the schemas of one request (all its tools)."""
    return {"values": 0, "subschemas": 0, "properties": 0, "enum": 0}


def check_limits(schema: Any, where: str, totals: dict[str, int] | None = None) -> None:
    """Raise a 400 if ``schema`` (the user's, as parsed from JSON) exceeds a limit of this module.

    ``where`` names the schema in messages (``response_format.json_schema.schema``). The limits on
    whole-schema counts apply to ``totals`` (from :func:`new_totals`) when given: the schemas of
    one request's tools share them. Nothing here recurses: every walk keeps its own stack, and
    each is linear in the size of the schema.
    """
    totals = new_totals() if totals is None else totals
    _check_shape(schema, where, totals)
    nodes, edges = _check_keywords(schema, where, totals)
    _check_in_place_cycles(nodes, edges, where)
    _check_expanded_depth(schema, nodes, edges, where)


def _check_shape(schema: Any, where: str, totals: dict[str, int]) -> None:
    """Depth and number of JSON values, before anything else reads the document."""
    stack: list[tuple[Any, int, _Path]] = [(schema, 1, _ROOT)]
    while stack:
        node, depth, path = stack.pop()
        totals["values"] += 1
        if totals["values"] > MAX_SCHEMA_NODES:
            raise invalid(f"Invalid '{where}': at most {MAX_SCHEMA_NODES} JSON values in the schemas of a request; simplify it.")
        if isinstance(node, dict):
            if depth > MAX_SCHEMA_DEPTH:
                raise _too(where, path, f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels of JSON objects and arrays")
            stack.extend((v, depth + 1, _Path(path, k)) for k, v in node.items())
        elif isinstance(node, list):
            if depth > MAX_SCHEMA_DEPTH:
                raise _too(where, path, f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels of JSON objects and arrays")
            stack.extend((v, depth + 1, _Path(path, i)) for i, v in enumerate(node))


def _check_keywords(schema: Any, where: str, totals: dict[str, int]) -> tuple[dict[int, tuple[dict, _Path]], dict[int, list[tuple[int, bool]]]]:
    """Check each subschema's keywords; return the subschemas (by id) and the edges between them.

    An edge (child id, in place) goes to each applied subschema and to each ``$ref`` target.
    """
    anchors: dict[str, dict] = {}
    # Anchors first: a $ref may name one that appears later in the document.
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in ("$anchor", "$dynamicAnchor"):
                if isinstance(node.get(key), str):
                    anchors.setdefault(node[key], node)
            stack.extend(v for k, v in node.items() if k not in ("enum", "const", "default", "examples"))
        elif isinstance(node, list):
            stack.extend(node)

    nodes: dict[int, tuple[dict, _Path]] = {}
    edges: dict[int, list[tuple[int, bool]]] = {}
    todo: list[tuple[Any, _Path]] = [(schema, _ROOT)]
    while todo:
        node, path = todo.pop()
        if not isinstance(node, dict) or id(node) in nodes:
            continue
        nodes[id(node)] = (node, path)
        totals["subschemas"] += 1
        if totals["subschemas"] > MAX_SUBSCHEMAS:
            raise invalid(f"Invalid '{where}': at most {MAX_SUBSCHEMAS} subschemas in the schemas of a request; simplify it.")
        out = edges.setdefault(id(node), [])

        def child(value: Any, key_path: _Path, in_place: bool) -> None:
            if isinstance(value, dict):
                out.append((id(value), in_place))
                todo.append((value, key_path))

        _check_node(node, path, where, totals)
        for key, value in node.items():
            kpath = _Path(path, key)
            if key in _IN_PLACE_ONE or (key in _DESCEND_ONE and not isinstance(value, list)):
                child(value, kpath, key in _IN_PLACE_ONE)
            elif key in _IN_PLACE_LIST or (key in _DESCEND_LIST and isinstance(value, list)):
                if isinstance(value, list):
                    for i, sub in enumerate(value):
                        child(sub, _Path(kpath, i), key in _IN_PLACE_LIST)
            elif key in _IN_PLACE_MAP or key in _DESCEND_MAP or key in _DEFINITIONS:
                if isinstance(value, dict):
                    for name, sub in value.items():
                        if key in _DEFINITIONS:  # not applied, but a $ref may reach it
                            if isinstance(sub, dict):
                                todo.append((sub, _Path(kpath, name)))
                        else:
                            child(sub, _Path(kpath, name), key in _IN_PLACE_MAP)
            elif key in ("$ref", "$dynamicRef") and isinstance(value, str):
                target, target_path = _resolve(schema, value, anchors)
                if isinstance(target, dict):
                    out.append((id(target), True))
                    todo.append((target, target_path))
    return nodes, edges


def _resolve(schema: Any, ref: str, anchors: dict[str, dict]) -> tuple[Any, _Path]:
    """The target of a local ``$ref`` (``None`` when it is not one: structured.py reports those)."""
    from urllib.parse import unquote

    if ref == "#":
        return schema, _ROOT
    if ref.startswith("#/"):
        node, path = schema, _ROOT
        for part in ref[2:].split("/"):
            part = unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node, path = node[part], _Path(path, part)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node, path = node[int(part)], _Path(path, int(part))
            else:
                return None, _ROOT
        return node, path
    if ref.startswith("#") and ref[1:] in anchors:
        return anchors[ref[1:]], _ROOT
    return None, _ROOT


def _check_node(node: dict, path: _Path, where: str, totals: dict[str, int]) -> None:
    for key, limit in MAX_COUNTS.items():
        value = node.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > limit:
            shown = value if isinstance(value, int) and len(str(value)) < 40 else f"{value:.3g}" if isinstance(value, float) else "a larger number"
            raise _too(where, _Path(path, key), f"at most {limit} (got {shown})")
    props = node.get("properties")
    if isinstance(props, dict):
        if len(props) > MAX_PROPERTIES:
            raise _too(where, _Path(path, "properties"), f"at most {MAX_PROPERTIES} properties in one object (got {len(props)})")
        totals["properties"] += len(props)
        if totals["properties"] > MAX_TOTAL_PROPERTIES:
            raise _too(where, _Path(path, "properties"), f"at most {MAX_TOTAL_PROPERTIES} properties in the schemas of a request")
    enum = node.get("enum")
    if isinstance(enum, list):
        if len(enum) > MAX_ENUM_VALUES:
            raise _too(where, _Path(path, "enum"), f"at most {MAX_ENUM_VALUES} values (got {len(enum)})")
        totals["enum"] += len(json.dumps(enum))
    if "const" in node:
        totals["enum"] += len(json.dumps(node["const"]))
    if totals["enum"] > MAX_ENUM_CHARS:
        key = "enum" if "enum" in node else "const"
        raise _too(where, _Path(path, key), f"at most {MAX_ENUM_CHARS} characters of enum and const values in the schemas of a request")
    for key in _IN_PLACE_LIST:
        value = node.get(key)
        if isinstance(value, list) and len(value) > MAX_ALTERNATIVES:
            raise _too(where, _Path(path, key), f"at most {MAX_ALTERNATIVES} subschemas (got {len(value)})")
    if isinstance(node.get("pattern"), str):
        _check_pattern(node["pattern"], _Path(path, "pattern"), where)
    if isinstance(node.get("patternProperties"), dict):
        for pattern in node["patternProperties"]:
            _check_pattern(pattern, _Path(_Path(path, "patternProperties"), pattern), where)


def _check_pattern(pattern: str, path: _Path, where: str) -> None:
    shown = pattern if len(pattern) <= 80 else pattern[:77] + "..."
    if len(pattern) > MAX_PATTERN_CHARS:
        raise _too(where, path, f"a pattern may have at most {MAX_PATTERN_CHARS} characters (got {len(pattern)})")
    try:
        compile_pattern(pattern)
    except Exception as exc:  # re2.error: the message is RE2's own (bytes)
        why = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise _too(
            where, path,
            f"the pattern {shown!r} is not supported ({why}): patterns run on RE2, a linear-time engine "
            "with no lookahead, lookbehind or backreferences",
        ) from None


def _check_in_place_cycles(nodes: dict, edges: dict, where: str) -> None:
    """A cycle of $refs and allOf/anyOf/oneOf/not/if/... that never descends into the value
    (``{"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}}``) makes any check run forever."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(nodes, WHITE)
    for start in nodes:
        if color[start] != WHITE:
            continue
        color[start] = GREY
        stack = [(start, iter(edges.get(start, ())))]
        while stack:
            node, it = stack[-1]
            for nxt, in_place in it:
                if not in_place or nxt not in color:
                    continue
                if color[nxt] == GREY:
                    raise _too(
                        where, nodes[nxt][1],
                        "this subschema refers back to itself through $ref/allOf/anyOf/oneOf without "
                        "descending into a property or item, so checking a value against it never ends",
                    )
                if color[nxt] == WHITE:
                    color[nxt] = GREY
                    stack.append((nxt, iter(edges.get(nxt, ()))))
                    break
            else:
                color[node] = BLACK
                stack.pop()


def _check_expanded_depth(schema: Any, nodes: dict, edges: dict, where: str) -> None:
    """Nesting of subschemas once $refs are followed (a recursive $ref counts once): a chain of
    $defs each referring to the next nests without nesting in the JSON."""
    if not isinstance(schema, dict):
        return
    depth: dict[int, int] = {}
    on_stack: set[int] = set()
    root = id(schema)
    stack = [(root, iter(edges.get(root, ())))]
    on_stack.add(root)
    best = {root: 0}
    while stack:
        node, it = stack[-1]
        for nxt, _ in it:
            if nxt in on_stack:
                continue  # recursion: the grammar refers to the rule, the check stops with the value
            if nxt in depth:
                best[node] = max(best[node], depth[nxt] + 1)
                continue
            on_stack.add(nxt)
            best[nxt] = 0
            stack.append((nxt, iter(edges.get(nxt, ()))))
            break
        else:
            stack.pop()
            on_stack.discard(node)
            depth[node] = best[node]
            if depth[node] > MAX_SCHEMA_DEPTH:
                raise _too(
                    where, nodes[node][1],
                    f"subschemas nest deeper than {MAX_SCHEMA_DEPTH} levels here once $refs are followed",
                )
            if stack:
                parent = stack[-1][0]
                best[parent] = max(best[parent], depth[node] + 1)


# ---------------------------------------------------------------------------------------------
# RE2 for patterns, and the bounded check


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (raises ``re2.error`` when RE2 cannot compile it)."""
    import re2

    options = re2.Options()
    options.log_errors = False  # RE2 would print every rejected pattern on stderr
    return re2.compile(pattern, options)


def _search(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).search(text) is not None


def check_schema(schema: dict) -> None:
    """``Draft202012Validator.check_schema`` with RE2 as the ``regex`` format (raises ``SchemaError``).

    Schemas that passed are remembered (by their JSON text): clients send the same tools and
    response format with every request, and the check costs up to ~0.5 s at the limits above.
    """
    text = json.dumps(schema, sort_keys=True)
    if text not in _checked:
        from jsonschema import Draft202012Validator

        Draft202012Validator.check_schema(schema, format_checker=_format_checker())
        _checked[text] = True
        if len(_checked) > 256:
            _checked.pop(next(iter(_checked)))


_checked: dict[str, bool] = {}


@functools.cache
def _format_checker() -> Any:
    from jsonschema import Draft202012Validator

    checker = Draft202012Validator.FORMAT_CHECKER
    checker = type(checker)(checker.checkers)  # a copy: the class's checker is shared
    import re2

    @checker.checks("regex", raises=re2.error)
    def is_regex(instance: object) -> bool:
        return not isinstance(instance, str) or compile_pattern(instance) is not None

    return checker


class CheckTooCostly(Exception):
    """The check of an answer took more than ``MAX_CHECK_STEPS`` keyword evaluations."""


_steps: contextvars.ContextVar[list[int]] = contextvars.ContextVar("schema_check_steps")


def first_error(instance: Any, schema: dict) -> Any:
    """The most relevant ``ValidationError`` of ``instance`` against ``schema``, or ``None``.

    Patterns run on RE2, formats are not asserted (as jsonschema's default), and the check stops
    with :class:`CheckTooCostly` after ``MAX_CHECK_STEPS`` keyword evaluations.
    """
    from jsonschema.exceptions import best_match

    token = _steps.set([MAX_CHECK_STEPS])
    try:
        return best_match(_validator_type()(schema).iter_errors(instance))
    finally:
        _steps.reset(token)


def answer_depth_exceeds(value: Any, limit: int = MAX_ANSWER_DEPTH) -> bool:
    """Whether ``value`` (decoded JSON) nests deeper than ``limit`` (iteratively)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return False


@functools.cache
def _validator_type() -> type:
    from jsonschema import Draft202012Validator, validators
    from jsonschema._utils import extras_msg
    from jsonschema.exceptions import ValidationError

    def pattern(validator, patrn, instance, schema):
        if validator.is_type(instance, "string") and not _search(patrn, instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    def pattern_properties(validator, patterns, instance, schema):
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in patterns.items():
            for k, v in instance.items():
                if _search(patrn, k):
                    yield from validator.descend(v, subschema, path=k, schema_path=patrn)

    def additional_properties(validator, aP, instance, schema):
        if not validator.is_type(instance, "object"):
            return
        extras = sorted(set(_additional(instance, schema)), key=str)
        if validator.is_type(aP, "object"):
            for extra in extras:
                yield from validator.descend(instance[extra], aP, path=extra)
        elif not aP and extras:
            if "patternProperties" in schema:
                verb = "does" if len(extras) == 1 else "do"
                joined = ", ".join(repr(each) for each in extras)
                patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
                yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
            else:
                yield ValidationError("Additional properties are not allowed (%s %s unexpected)" % extras_msg(extras))

    def unevaluated_properties(validator, uP, instance, schema):
        if not validator.is_type(instance, "object"):
            return
        evaluated = _evaluated_keys(validator, instance, schema)
        bad = [k for k in instance if k not in evaluated and next(validator.descend(instance[k], uP, path=k, schema_path=k), None) is not None]
        if bad:
            if uP is False:
                yield ValidationError("Unevaluated properties are not allowed (%s %s unexpected)" % extras_msg(sorted(bad, key=str)))
            else:
                yield ValidationError(
                    "Unevaluated properties are not valid under the given schema (%s %s unevaluated and invalid)" % extras_msg(bad)
                )

    def unique_items(validator, uI, instance, schema):
        if uI and validator.is_type(instance, "array"):
            seen = set()
            for item in instance:
                key = _canonical(item)
                if key in seen:
                    yield ValidationError(f"{instance!r} has non-unique elements")
                    return
                seen.add(key)

    own = {
        "uniqueItems": unique_items,
        "pattern": pattern,
        "patternProperties": pattern_properties,
        "additionalProperties": additional_properties,
        "unevaluatedProperties": unevaluated_properties,
    }
    keywords = {**Draft202012Validator.VALIDATORS, **own}
    return validators.extend(Draft202012Validator, {k: _counted(f) for k, f in keywords.items()})


def _counted(keyword: Any) -> Any:
    def counted(validator, value, instance, schema):
        left = _steps.get(None)
        if left is not None:
            left[0] -= 1
            if left[0] < 0:
                raise CheckTooCostly(f"more than {MAX_CHECK_STEPS} steps")
        return keyword(validator, value, instance, schema)

    return counted


def _canonical(value: Any) -> Any:
    """A hashable key equal for JSON-equal values (1 and 1.0 alike, true and 1 not): jsonschema's
    own uniqueItems compares unhashable items pairwise, quadratic in the length of the array."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list):
        return ("a", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("o", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("?", id(value))


def _additional(instance: dict, schema: dict) -> Iterator[str]:
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    for key in instance:
        if key not in properties and not any(_search(p, key) for p in patterns):
            yield key


def _evaluated_keys(validator: Any, instance: dict, schema: Any) -> set:
    """jsonschema's ``find_evaluated_property_keys_by_schema`` with patterns on RE2."""
    if validator.is_type(schema, "boolean"):
        return set()
    keys: set = set()
    for ref_key in ("$ref", "$dynamicRef"):
        ref = schema.get(ref_key)
        if ref is not None:
            resolved = validator._resolver.lookup(ref)
            keys |= _evaluated_keys(
                validator.evolve(schema=resolved.contents, _resolver=resolved.resolver), instance, resolved.contents
            )
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        keys |= properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        sub = schema.get(keyword)
        if sub is not None:
            keys |= {k for k, v in instance.items() if next(validator.descend(v, sub), None) is None}
    for patrn in schema.get("patternProperties", {}):
        keys |= {k for k in instance if _search(patrn, k)}
    for prop, sub in schema.get("dependentSchemas", {}).items():
        if prop in instance:
            keys |= _evaluated_keys(validator, instance, sub)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for sub in schema.get(keyword, []):
            if next(validator.descend(instance, sub), None) is None:
                keys |= _evaluated_keys(validator, instance, sub)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys |= _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                keys |= _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            keys |= _evaluated_keys(validator, instance, schema["else"])
    return keys
