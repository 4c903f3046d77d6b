"""Tools and structured output: request validation for every provider, constrained decoding for the local one.

Two halves:

* **Validation** (provider-agnostic). :func:`parse_tools` and :func:`parse_response_format` turn the
  raw ``tools`` / ``tool_choice`` / ``parallel_tool_calls`` / ``response_format`` of a chat request
  into a :class:`ToolPlan` and an :class:`OutputFormat`, or raise a 400 (:func:`~endpoints.errors.invalid`)
  whose message points at the offending field, e.g. ``tools[1].function.parameters is not a valid
  JSON Schema: 'objectt' is not valid under any of the given schemas (at type).``

* **Constrained decoding for the local model** (llama.cpp GBNF grammars). :func:`response_grammar`
  and :func:`tool_grammar` return grammar text for ``llama_cpp.LlamaGrammar.from_string``;
  :func:`tool_prompt` / :func:`response_prompt` describe the tools or the schema in the system prompt
  (SmolLM2's chat template knows no tools); :func:`render_tool_turns` turns assistant ``tool_calls``
  and ``tool`` results of earlier turns into plain text turns; :func:`parse_tool_output` and
  :func:`validate_output` read and check what the model wrote.

The local tool-call format (one line per call; several lines only when ``parallel_tool_calls``)::

    <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>

Under ``tool_choice`` ``"auto"`` the answer is either such calls or free text, and free text never
begins with whitespace or with ``<tool_call>``: a streaming caller can send text as soon as it
stops being a prefix of ``<tool_call>`` (at most 11 characters in).

Token limits and stop sequences. The grammar constrains every sampled token and only lets the model
end (sample its end-of-generation token) once the grammar's root is complete, but it cannot make
the model finish within ``max_tokens``. So the caller validates only output that ended with the
model's end token. When generation ended by the token limit (``finish_reason`` ``"length"``) or by a
client stop sequence, the caller returns the text as it is, with that finish reason, and does not
call :func:`validate_output`. For tools it calls ``parse_tool_output(text, plan, truncated=True)``,
which returns the calls that were complete and leaves the cut-off rest as text. Output that ended
properly but is JSON breaking the schema means the schema uses a keyword the grammar does not
enforce (see :func:`response_grammar`): the request asked for what this endpoint could not honour,
a 400 (``INVALID_PARAMETER_VALUE``) naming the schema's field and the path in the answer. Output the
grammar itself rules out (not JSON, a malformed call block) is a 500 (``INTERNAL_ERROR``).
Schemas are read as JSON Schema 2020-12.

User schemas are bounded before anything reads them (``endpoints.schema_limits``: sizes, nesting,
``$ref`` cycles, patterns on RE2), grammars by ``MAX_GRAMMAR_BYTES``, and checks of answers run in
bounded time (RE2 patterns, a step budget). The grammar builders are safe to call from a thread.

llama-cpp-python 0.3.36 notes, which shaped this module:

* ``LlamaGrammar.from_string`` does not parse the grammar: it only stores the text. The grammar is
  parsed when a sampler is built at generation time, and a grammar llama.cpp rejects makes
  ``llama_sampler_init_grammar`` return NULL, which the library adds to its sampler chain anyway:
  the process segfaults. Every grammar made here is therefore checked with
  :func:`grammar_is_valid` (which asks llama.cpp itself, no model needed) before it is returned.
* ``json_schema_to_gbnf`` (its ``SchemaConverter``) lets JSON strings contain raw control
  characters (newlines, tabs), which ``json.loads`` rejects; does not escape backslashes in
  literals, so an ``enum``/``const`` string holding a quote or backslash breaks the grammar; turns
  ``{}`` ("any value") into "any object"; fails (assertion) on a subschema without a ``type`` such as
  ``{"description": "..."}``; crashes with ``KeyError`` on ``"items": {}``; in 2020-12 terms
  misreads ``items`` next to ``prefixItems``; names ``$ref`` rules by their last path segment only,
  so two different ``#/$defs/.../x`` targets collide; and translates ``pattern`` regexes only
  partially (``\\d`` becomes an invalid GBNF escape). The converter is used here through a subclass
  that fixes or avoids each of these.
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any, Iterable


from .errors import ServingError, invalid
from .schema_limits import CheckTooCostly, answer_depth_exceeds, check_limits, check_schema, first_error, new_totals

log = logging.getLogger(__name__)

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_CHOICES = ("auto", "none", "required")
# OpenAI's rule for function names (and json_schema names).
NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
DEFAULT_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
# OpenAI's limit on the number of tools of one request.
MAX_TOOLS = 128
# The grammar allows at most this many calls in one parallel block: a tiny model that starts
# repeating a call would otherwise repeat it until max_tokens and leave a truncated block.
MAX_PARALLEL_CALLS = 8
# Bounded repetitions (maxLength, maxItems) become nested optional rules in GBNF, one level per
# allowed extra item; beyond these spans the bound is dropped from the grammar (validation still
# checks it).
MAX_STRING_SPAN = 256
MAX_ARRAY_SPAN = 64
# An integer with minimum and maximum this close becomes an alternation of its values.
MAX_INTEGER_CHOICES = 64


@dataclass(frozen=True)
class Tool:
    """One function tool. ``parameters`` is a JSON Schema whose top-level type is ``object``."""

    name: str
    description: str
    parameters: dict
    strict: bool


@dataclass(frozen=True)
class ToolPlan:
    """The tools of a request and how they may be called.

    ``choice`` is ``"auto"`` (text or calls), ``"none"`` (text only; tools are not offered),
    ``"required"`` (at least one call) or ``"function"`` (calls of ``function`` only).
    ``parallel`` allows more than one call in an answer.
    """

    tools: tuple[Tool, ...]
    choice: str
    function: str | None
    parallel: bool

    def tool(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)

    @property
    def callable_tools(self) -> tuple[Tool, ...]:
        """The tools the model may call under ``choice``."""
        if self.choice == "none":
            return ()
        if self.choice == "function":
            return tuple(t for t in self.tools if t.name == self.function)
        return self.tools


@dataclass(frozen=True)
class OutputFormat:
    """``response_format``: ``kind`` is ``"text"``, ``"json_object"`` or ``"json_schema"``."""

    kind: str
    schema: dict | None
    name: str | None
    strict: bool


@dataclass(frozen=True)
class ToolCall:
    """A call the model made: ``arguments`` is compact JSON text, as in OpenAI's ``tool_calls``."""

    id: str
    name: str
    arguments: str


# ---------------------------------------------------------------------------------------------
# Validation (every provider)


def parse_tools(tools: list | None, tool_choice: Any, parallel_tool_calls: bool | None) -> ToolPlan | None:
    """Validate the tool fields of a chat request; ``None`` when it has no tools.

    ``tools`` is OpenAI's list of ``{"type": "function", "function": {"name", "description"?,
    "parameters"?, "strict"?}}``; ``tool_choice`` is ``"auto"`` (the default), ``"none"``,
    ``"required"`` or ``{"type": "function", "function": {"name": ...}}``; ``parallel_tool_calls``
    defaults to true. Raises a 400 naming the first problem.
    """
    if tools is None:
        if tool_choice is not None:
            raise invalid("'tool_choice' was given without 'tools': add the tools the model may call, or remove it.")
        return None
    if not isinstance(tools, list):
        raise invalid("'tools' must be a list of {\"type\": \"function\", \"function\": {...}} objects.")
    if not tools:
        raise invalid("'tools' must not be empty: leave it out when the model may call no tools.")
    if len(tools) > MAX_TOOLS:
        raise invalid(f"Invalid 'tools': at most {MAX_TOOLS} tools (got {len(tools)}).")
    parsed: list[Tool] = []
    index_of: dict[str, int] = {}
    totals = new_totals()
    for i, entry in enumerate(tools):
        tool = _parse_tool(entry, f"tools[{i}]", totals)
        if tool.name in index_of:
            raise invalid(
                f"tools[{i}].function.name '{tool.name}' is already the name of tools[{index_of[tool.name]}]; "
                f"tool names must be unique."
            )
        index_of[tool.name] = i
        parsed.append(tool)
    choice, function = _parse_tool_choice(tool_choice, [t.name for t in parsed])
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise invalid(f"'parallel_tool_calls' must be true or false; got {parallel_tool_calls!r}.")
    return ToolPlan(tuple(parsed), choice, function, True if parallel_tool_calls is None else parallel_tool_calls)


def parse_response_format(response_format: dict | None) -> OutputFormat | None:
    """Validate ``response_format``; ``None`` when absent.

    Accepts ``{"type": "text"}``, ``{"type": "json_object"}`` and ``{"type": "json_schema",
    "json_schema": {"name", "schema", "strict"?, "description"?}}``. Raises a 400 naming the first
    problem (unknown type or key, missing name or schema, a schema that is not valid JSON Schema).
    """
    if response_format is None:
        return None
    where = "response_format"
    if not isinstance(response_format, dict):
        raise invalid(f"'{where}' must be an object such as {{\"type\": \"json_object\"}}.")
    kind = response_format.get("type")
    kinds = "'text', 'json_object' or 'json_schema'"
    if kind is None:
        raise invalid(f"{where}.type is missing: use {kinds}.")
    if kind not in ("text", "json_object", "json_schema"):
        raise invalid(f"{where}.type must be {kinds}; got {kind!r}.")
    if kind != "json_schema":
        _no_unknown_keys(response_format, {"type"}, where)
        return OutputFormat(kind, None, None, False)
    _no_unknown_keys(response_format, {"type", "json_schema"}, where)
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise invalid(
            f"{where}.json_schema is {'missing' if spec is None else 'not an object'}: a 'json_schema' "
            f"response format needs {{\"name\": ..., \"schema\": {{...}}}}."
        )
    where = f"{where}.json_schema"
    _no_unknown_keys(spec, {"name", "schema", "strict", "description"}, where)
    name = spec.get("name")
    if name is None:
        raise invalid(f"{where}.name is missing.")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise invalid(f"{where}.name {name!r} is invalid: use 1 to 64 letters, digits, underscores or dashes.")
    if spec.get("description") is not None and not isinstance(spec["description"], str):
        raise invalid(f"{where}.description must be a string.")
    if "schema" not in spec or spec["schema"] is None:
        raise invalid(f"{where}.schema is missing: give the JSON Schema the answer must match.")
    schema = _check_schema(spec["schema"], f"{where}.schema")
    return OutputFormat("json_schema", schema, name, _flag(spec.get("strict"), f"{where}.strict"))


def _parse_tool(entry: Any, where: str, totals: dict[str, int]) -> Tool:
    shape = "{\"type\": \"function\", \"function\": {\"name\": ...}}"
    if not isinstance(entry, dict):
        raise invalid(f"{where} must be an object like {shape}.")
    _no_unknown_keys(entry, {"type", "function"}, where)
    kind = entry.get("type")
    if kind != "function":
        got = "it is missing" if kind is None else f"got {kind!r}"
        raise invalid(f"{where}.type must be 'function' ({got}); only function tools are supported.")
    fn = entry.get("function")
    if not isinstance(fn, dict):
        raise invalid(f"{where}.function must be an object with at least a 'name'.")
    where = f"{where}.function"
    _no_unknown_keys(fn, {"name", "description", "parameters", "strict"}, where)
    name = fn.get("name")
    if name is None:
        raise invalid(f"{where}.name is missing.")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise invalid(f"{where}.name {name!r} is invalid: use 1 to 64 letters, digits, underscores or dashes.")
    description = fn.get("description")
    if description is not None and not isinstance(description, str):
        raise invalid(f"{where}.description must be a string.")
    parameters = fn.get("parameters")
    if parameters is None:
        parameters = copy.deepcopy(DEFAULT_PARAMETERS)
    else:
        parameters = _check_schema(parameters, f"{where}.parameters", totals)
        if parameters.get("type") != "object":
            raise invalid(
                f"{where}.parameters must describe an object of named arguments: its 'type' must be "
                f"'object' (got {parameters.get('type')!r})."
            )
    return Tool(name, description or "", parameters, _flag(fn.get("strict"), f"{where}.strict"))


def _parse_tool_choice(value: Any, names: list[str]) -> tuple[str, str | None]:
    forced = "{\"type\": \"function\", \"function\": {\"name\": ...}}"
    if value is None:
        return "auto", None
    if isinstance(value, str):
        if value in TOOL_CHOICES:
            return value, None
        raise invalid(f"'tool_choice' must be 'auto', 'none', 'required' or {forced}; got {value!r}.")
    if not isinstance(value, dict):
        raise invalid(f"'tool_choice' must be 'auto', 'none', 'required' or {forced}.")
    _no_unknown_keys(value, {"type", "function"}, "tool_choice")
    if value.get("type") != "function":
        raise invalid(f"tool_choice.type must be 'function'; got {value.get('type')!r}.")
    fn = value.get("function")
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise invalid(f"tool_choice.function.name is missing: use {forced}.")
    if name not in names:
        raise invalid(
            f"tool_choice.function.name '{name}' is not one of the tools; the tools are "
            f"{', '.join(repr(n) for n in names)}."
        )
    return "function", name


def _check_schema(schema: Any, where: str, totals: dict[str, int] | None = None) -> dict:
    """Return ``schema`` (a deep copy) if it is a valid 2020-12 JSON Schema with resolvable local
    refs, within the limits of :mod:`endpoints.schema_limits` (``totals``: shared by a request's tools)."""
    if not isinstance(schema, dict):
        raise invalid(f"{where} must be a JSON Schema object; got {type(schema).__name__}.")
    # Sizes, depth, $ref cycles and patterns first: nothing below may recurse into an unchecked schema.
    check_limits(schema, where, totals)
    # jsonschema is imported with the first schema (~10 MiB a server that never sees one spares).
    from jsonschema.exceptions import SchemaError

    try:
        check_schema(schema)  # the 2020-12 metaschema, with RE2 as its "regex" format
    except SchemaError as exc:
        at = _path(exc.path)
        raise invalid(f"{where} is not a valid JSON Schema: {exc.message}{f' (at {at})' if at else ''}.") from None
    for ref, at in _find_refs(schema, ""):
        if not ref.startswith("#"):
            raise invalid(
                f"{where} has $ref {ref!r} (at {at or 'the top'}): only references inside the schema "
                f"('#/$defs/...') are supported."
            )
        if ref.startswith("#/") and _pointer(schema, ref[1:]) is _MISSING:
            raise invalid(f"{where} has $ref {ref!r} (at {at or 'the top'}), which points at nothing in the schema.")
    return copy.deepcopy(schema)


_MISSING = object()
# Keywords whose values are data, not schemas: a "$ref" key inside them is not a reference.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})


def _find_refs(node: Any, at: str) -> Iterable[tuple[str, str]]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"], at
        for key, value in node.items():
            if key not in _DATA_KEYWORDS:
                yield from _find_refs(value, f"{at}.{key}" if at else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _find_refs(value, f"{at}[{i}]")


def _pointer(document: Any, pointer: str) -> Any:
    from urllib.parse import unquote

    node = document
    for part in pointer.split("/")[1:]:
        part = unquote(part).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _no_unknown_keys(obj: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise invalid(f"{where} has unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(allowed))}.")


def _flag(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(f"{where} must be true or false; got {value!r}.")
    return value


# ---------------------------------------------------------------------------------------------
# Checking output (local model; usable for any provider's output)


def _internal(message: str) -> ServingError:
    """A 500: the model's output is not what its grammar should have made."""
    return ServingError(message, "INTERNAL_ERROR")


def _unmet(message: str) -> ServingError:
    """A 400: the answer breaks the schema the request gave, in a way the grammar could not rule out.

    The request's schema asked for something this endpoint could not honour (a keyword its grammar
    does not enforce, such as ``pattern``), which the README's rule makes a 400 naming the
    parameter: the same request fails the same way at temperature 0, so it is no server fault.
    """
    return ServingError(message, "INVALID_PARAMETER_VALUE")


RESPONSE_SCHEMA_FIELD = "response_format.json_schema.schema"


def validate_output(text: str, fmt: OutputFormat) -> None:
    """Check that ``text`` is what ``fmt`` asks for; raise a :class:`ServingError` if not.

    An answer that is JSON but breaks the schema is a 400 (``INVALID_PARAMETER_VALUE``) naming
    the schema, the path in the answer and the keywords the grammar did not enforce; output that
    is not the JSON the grammar allows is a 500. Call it only for output that ended with the
    model's end token, never for ``finish_reason`` ``"length"`` or a stop-sequence hit (see the
    module docstring). ``"text"`` accepts anything.
    """
    if fmt.kind == "text":
        return
    value = _decode_answer(text, fmt.kind)
    if fmt.kind == "json_object":
        if not isinstance(value, dict):
            raise _internal(f"The model's answer is JSON but not an object ({type(value).__name__}).")
        return
    problem = _violation(value, fmt.schema or {})
    if problem:
        raise _unmet(
            f"The model's answer does not match {RESPONSE_SCHEMA_FIELD} ('{fmt.name}'): {problem}."
            f"{_gaps_note(fmt.schema or {})}"
        )


def _decode_answer(text: str, kind: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise _unmet(_too_deep(f"The model's answer to {kind}")) from None
    except ValueError as exc:
        raise _internal(f"The model's answer is not valid JSON ({exc}), although {kind} was requested.") from None


def _too_deep(what: str) -> str:
    from .schema_limits import MAX_ANSWER_DEPTH

    return (f"{what} nests deeper than {MAX_ANSWER_DEPTH} levels of objects and arrays and was not checked; "
            "bound the nesting of the schema (e.g. no open recursion through $ref or untyped values).")


def _gaps_note(schema: dict) -> str:
    """A sentence naming the keywords the local grammar left to the check after generation."""
    try:
        gaps = [g for g in schema_gaps(schema) if not g.startswith("(")]
    except Exception:  # noqa: BLE001 - only a hint; the error it decorates is what matters
        return ""
    if not gaps:
        return ""
    return (f" The local model's grammar does not enforce {', '.join(gaps)} (checked after generation): "
            "loosen those keywords or try again.")


def _violation(value: Any, schema: dict) -> str | None:
    """A sentence naming how ``value`` breaks ``schema``, or ``None`` when it is valid.

    The check runs in bounded time (RE2 patterns, a step budget: see ``endpoints.schema_limits``);
    when it cannot finish, the sentence says so (never the text of an internal exception).
    """
    from .schema_limits import MAX_ANSWER_DEPTH, MAX_CHECK_STEPS

    if answer_depth_exceeds(value):
        return f"the answer nests deeper than {MAX_ANSWER_DEPTH} levels of objects and arrays, too deep to check"
    try:
        error = first_error(value, schema)
    except CheckTooCostly:
        return f"the answer could not be checked within {MAX_CHECK_STEPS} steps of the schema; simplify the schema"
    except RecursionError:
        return "the answer could not be checked: the schema nests too deeply once applied to it"
    except Exception as exc:  # noqa: BLE001 - e.g. a reference jsonschema cannot resolve: never crash the worker
        log.warning("Checking an answer against its schema failed: %s: %s", type(exc).__name__, exc)
        return "the answer could not be checked against the schema"
    if error is None:
        return None
    at = _path(error.absolute_path)
    message = error.message if len(error.message) <= 300 else error.message[:297] + "..."
    return f"{message}{f' (at {at})' if at else ''}"


def parse_tool_output(text: str, plan: ToolPlan, *, truncated: bool = False) -> tuple[str, list[ToolCall]]:
    """Split generated ``text`` into (free text, tool calls), checking each call against its tool.

    Output that starts (after whitespace) with ``<tool_call>`` is a block of calls, one
    ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` after another (whitespace between
    them is allowed); its free text is ``""``. Anything else is free text with no calls, which is
    an error under ``choice`` ``"required"``/``"function"``. Under ``"none"`` the text is returned as is.

    A call naming a tool it may not call, arguments that are not an object or break the tool's
    schema, or text after the block raise ``ServingError(INTERNAL_ERROR)``: the grammar of
    :func:`tool_grammar` rules all of these out. With ``truncated`` (the generation hit
    ``max_tokens`` or a stop sequence) nothing is raised for the shape of the output: the calls
    complete before the cut are returned and the rest is returned as the free text.
    """
    if plan.choice == "none":
        return text, []
    start = len(text) - len(text.lstrip())
    if not text.startswith(TOOL_CALL_OPEN, start):
        if plan.choice in ("required", "function") and not truncated:
            raise _internal(f"The model answered with text although tool_choice '{plan.choice}' requires a tool call.")
        return text, []
    allowed = {t.name: t for t in plan.callable_tools}
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    pos = start
    while pos < len(text):
        block_start = pos
        try:
            if not text.startswith(TOOL_CALL_OPEN, pos):
                raise ValueError(f"expected {TOOL_CALL_OPEN} at character {pos}")
            pos = _skip_space(text, pos + len(TOOL_CALL_OPEN))
            call, pos = decoder.raw_decode(text, pos)
            pos = _skip_space(text, pos)
            if not text.startswith(TOOL_CALL_CLOSE, pos):
                raise ValueError(f"expected {TOOL_CALL_CLOSE} at character {pos}")
            pos = _skip_space(text, pos + len(TOOL_CALL_CLOSE))
        except RecursionError:
            if truncated:
                return text[block_start:], calls
            raise _unmet(_too_deep("The model's tool call")) from None
        except ValueError as exc:
            if truncated:
                return text[block_start:], calls
            raise _internal(f"The model's tool-call output is malformed: {exc}.") from None
        calls.append(_checked_call(call, allowed, plan))
        if len(calls) > 1 and not plan.parallel:
            raise _internal("The model made several tool calls although parallel_tool_calls is false.")
    return "", calls


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _tool_field(tool: Tool, plan: ToolPlan) -> str:
    """Where the request gave ``tool``'s schema: ``tools[i].function.parameters``."""
    index = next((i for i, t in enumerate(plan.tools) if t.name == tool.name), None)
    return f"tools[{index}].function.parameters" if index is not None else f"the parameters of '{tool.name}'"


def _checked_call(call: Any, allowed: dict[str, Tool], plan: ToolPlan) -> ToolCall:
    if not isinstance(call, dict) or set(call) != {"name", "arguments"}:
        got = json.dumps(call)[:200]
        raise _internal(f"The model's tool call must be an object with 'name' and 'arguments'; got {got}.")
    name, arguments = call["name"], call["arguments"]
    tool = allowed.get(name) if isinstance(name, str) else None
    if tool is None:
        may_call = ", ".join(map(repr, allowed))
        raise _internal(f"The model called {name!r}, which is not a tool it may call here ({may_call}).")
    if not isinstance(arguments, dict):
        raise _internal(f"The model's arguments for '{name}' are not a JSON object.")
    problem = _violation(arguments, tool.parameters)
    if problem:
        raise _unmet(
            f"The model's arguments for '{name}' do not match {_tool_field(tool, plan)}: {problem}."
            f"{_gaps_note(tool.parameters)}"
        )
    compact = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
    return ToolCall(id=f"call_{secrets.token_hex(12)}", name=name, arguments=compact)


# ---------------------------------------------------------------------------------------------
# Prompts for a model whose chat template knows no tools


def _call_text(name: str, arguments: Any) -> str:
    """One call in the local tool-call format (what the model is shown and what its grammar makes)."""
    return f"{TOOL_CALL_OPEN}{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}{TOOL_CALL_CLOSE}"


def tool_prompt(plan: ToolPlan) -> str:
    """System-prompt text describing the tools and the exact call format; ``""`` under ``"none"``.

    Only the tools the model may call are listed (with ``"function"``, just that one): a small model
    does better with fewer distractions, and the grammar would not let it call the others anyway.
    The caller appends this to the system message (or adds one).
    """
    tools = plan.callable_tools
    if not tools:
        return ""
    lines = ["You can call these tools:"]
    for tool in tools:
        entry = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
        if not tool.description:
            del entry["description"]
        # Compact JSON: every prompt token is evaluated on the CPU before the answer starts.
        lines.append(json.dumps(entry, ensure_ascii=False, separators=(",", ":")))
    example = _call_text("TOOL_NAME", {"ARGUMENT": "VALUE"})
    lines += ["", f"To call a tool, reply with exactly one line:\n{example}",
              "where \"arguments\" is a JSON object matching the tool's parameters."]
    if plan.parallel:
        lines.append("To call several tools, write one such line per call.")
    if plan.choice == "auto":
        lines.append("If no tool is needed, answer in plain text instead.")
    elif plan.choice == "required":
        lines.append("You must call a tool now.")
    else:
        lines.append(f"You must call the tool '{plan.function}' now.")
    return "\n".join(lines)


def response_prompt(fmt: OutputFormat) -> str | None:
    """System-prompt text asking for JSON (and showing the schema); ``None`` for ``"text"``.

    The grammar forces the shape either way; telling the model what is wanted makes the content
    sensible instead of merely valid.
    """
    if fmt.kind == "json_object":
        return "Answer with a single JSON object and nothing else."
    if fmt.kind == "json_schema":
        schema = json.dumps(fmt.schema, ensure_ascii=False, separators=(",", ":"))
        return f"Answer with a single JSON object and nothing else. It must match this JSON Schema:\n{schema}"
    return None


def render_tool_turns(messages: list[dict]) -> list[dict]:
    """Rewrite OpenAI-shaped messages for a chat template without tool roles.

    Returns ``[{"role": "system" | "user" | "assistant", "content": str}]``: ``developer`` becomes
    ``system``; an assistant turn's ``tool_calls`` are appended to its content in the local call
    format (one line each); ``tool`` results become a user turn ``Tool result for NAME (CALL_ID):
    CONTENT``, consecutive results joined into one turn. Content given as parts is joined from its
    text parts. Raises a 400 when a call's arguments are not JSON.
    """
    out: list[dict] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, from earlier assistant turns
    previous_was_tool = False
    for i, message in enumerate(messages):
        role = message.get("role")
        content = _text(message.get("content"))
        if role == "tool":
            call_id = message.get("tool_call_id")
            name = names.get(call_id or "") or message.get("name")
            label = " ".join(p for p in (f"for {name}" if name else "", f"({call_id})" if call_id else "") if p)
            turn = f"Tool result{' ' + label if label else ''}: {content}"
            if previous_was_tool:
                out[-1]["content"] += "\n\n" + turn
            else:
                out.append({"role": "user", "content": turn})
            previous_was_tool = True
            continue
        previous_was_tool = False
        if role == "assistant" and message.get("tool_calls"):
            lines = [content] if content else []
            for j, call in enumerate(message["tool_calls"]):
                where = f"messages[{i}].tool_calls[{j}]"
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    shape = '{"id": ..., "type": "function", "function": {"name": ..., "arguments": ...}}'
                    raise invalid(f"{where} must be {shape}.")
                arguments = fn.get("arguments", "{}")
                if isinstance(arguments, str):
                    try:
                        arguments = json.loads(arguments) if arguments.strip() else {}
                    except ValueError as exc:
                        raise invalid(f"{where}.function.arguments is not valid JSON: {exc}.") from None
                if call.get("id"):
                    names[call["id"]] = fn["name"]
                lines.append(_call_text(fn["name"], arguments))
            out.append({"role": "assistant", "content": "\n".join(lines)})
            continue
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return str(content)


# ---------------------------------------------------------------------------------------------
# Grammars (local model). llama_cpp is imported only here, when a grammar is made.


class _Unexpressible(Exception):
    """A schema the grammar cannot express even loosely (e.g. ``false``): use the fallback grammar."""


class _GrammarTooLarge(Exception):
    """The grammar would pass ``MAX_GRAMMAR_BYTES`` (or its converter the work that bytes allow)."""

    def __init__(self, size: int | None, tool: "Tool | None" = None) -> None:
        super().__init__(size)
        self.size, self.tool = size, tool


# The largest grammar made for one request (GBNF text). The schemas of the tests take 1-6 KB; a
# schema at every limit of endpoints.schema_limits at once could ask for more, and inlined $refs
# (allOf, anyOf beside other keywords) can multiply a schema: the converter stops when the rules
# it writes pass GRAMMAR_WORK_FACTOR times this or it adds MAX_RULE_CALLS rules (~1 s), so
# building is bounded too.
MAX_GRAMMAR_BYTES = 1024 * 1024
GRAMMAR_WORK_FACTOR = 4
MAX_RULE_CALLS = 500_000
# Rule names grow with the path of property names; longer ones are shortened with a hash, so that
# minItems (which repeats a rule name) costs the same whatever the names.
MAX_RULE_NAME = 64


def _too_large(field: str, size: int | None) -> ServingError:
    would = f"would be {size} bytes, more than" if size else "would pass"
    return invalid(
        f"Invalid '{field}': the local model's grammar for this schema {would} its limit of "
        f"{MAX_GRAMMAR_BYTES} bytes; use fewer properties, enum values or alternatives, or a smaller minItems."
    )


def grammar_is_valid(text: str) -> bool:
    """Whether llama.cpp accepts ``text`` as a grammar (it prints why not on stderr).

    Needs no model: the grammar is parsed against no vocabulary. Generating with a grammar that
    fails this check crashes the process in llama-cpp-python 0.3.36 (see the module docstring).
    """
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(None, text.encode("utf-8"), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def response_grammar(fmt: OutputFormat) -> str | None:
    """GBNF for ``fmt``: ``None`` for ``"text"``, any JSON object for ``"json_object"``, JSON
    matching the schema for ``"json_schema"``. Output never has newlines or runs of spaces.

    Enforced by the grammar: ``type`` (also as a list), ``properties``/``required`` (properties come
    in schema order; an object with ``properties`` and no ``additionalProperties`` gets no other
    keys), ``additionalProperties`` (false, true or a schema), ``items``, ``prefixItems``,
    ``minItems``/``maxItems`` (a span over 64 drops the maximum), ``enum``, ``const``, ``anyOf``,
    ``oneOf`` (as ``anyOf``), ``allOf`` (merged keyword by keyword), local ``$ref`` (recursion
    included), ``minLength``/``maxLength`` (a span over 256 drops the maximum), ``format`` date,
    time, date-time and uuid, integer ``minimum``/``maximum`` when at most 64 values lie between
    them, and ``minimum`` >= 0 (no sign) or >= 1 for integers (no zero).

    Not enforced (the grammar is looser there and :func:`validate_output` catches a violation,
    a 400): ``pattern``, other ``minimum``/``maximum``/``exclusive*``, ``multipleOf`` (except within
    a small integer range), ``uniqueItems``, ``contains``, ``not``, ``if``/``then``/``else``,
    ``min``/``maxProperties``, ``dependent*``, ``patternProperties``, ``propertyNames``,
    ``unevaluated*``, other formats. A schema the converter cannot handle at all (``false`` where a
    value is needed, ``$ref`` to an anchor) falls back to any JSON object (or any JSON value when
    the top-level type is not ``object``).
    """
    if fmt.kind == "text":
        return None
    if fmt.kind == "json_object":
        return _json_fallback({"type": "object"})
    try:
        return _schema_grammar(fmt.schema or {})
    except _GrammarTooLarge as exc:
        raise _too_large(RESPONSE_SCHEMA_FIELD, exc.size) from None


def schema_gaps(schema: dict) -> list[str]:
    """The keywords of ``schema`` that :func:`response_grammar` does not enforce, sorted (for logs)."""
    converter = _converter_type()()
    try:
        converter.convert(schema, "")
    except Exception:
        return ["(whole schema: fallback grammar)"]
    return sorted(converter.gaps)


def tool_grammar(plan: ToolPlan) -> str | None:
    """GBNF for the local model's answer under ``plan``; ``None`` under ``"none"`` (plain text).

    The answer is a block of tool calls, each ``<tool_call>{"name": N, "arguments": A}</tool_call>``
    where N is a tool the model may call and A matches *that* tool's ``parameters`` (an
    alternation over tools; what :func:`response_grammar` says about schema keywords holds for A).
    Without ``parallel`` the block is one call; with it, 1 to ``MAX_PARALLEL_CALLS`` calls joined by
    newlines. ``"required"``: the block. ``"function"``: the block, calling only that function.
    ``"auto"``: the block, or free text that neither starts with whitespace nor with
    ``<tool_call>`` (so text can never be mistaken for a call).
    """
    tools = plan.callable_tools
    if not tools:
        return None
    try:
        text = _tool_grammar(plan, tools, loose=False)
    except _GrammarTooLarge as exc:
        field = "tools" if exc.tool is None else _tool_field(exc.tool, plan)
        raise _too_large(field, exc.size) from None
    if grammar_is_valid(text):
        return text
    # Not expected; but a grammar llama.cpp rejects must never reach generation (it would crash).
    log.warning("The tool grammar for %s was rejected by llama.cpp; arguments fall back to any object.", plan)
    text = _tool_grammar(plan, tools, loose=True)
    if grammar_is_valid(text):
        return text
    raise _internal(f"Could not build a tool-call grammar for tools {[t.name for t in tools]}.")


def _tool_grammar(plan: ToolPlan, tools: tuple[Tool, ...], loose: bool) -> str:
    converter = _converter_type()()
    branches = []
    for i, tool in enumerate(tools):
        if loose:
            args = converter.any_object()
        else:
            before = converter.written
            try:
                args = converter.convert_or_any_object(tool.parameters, f"{tool.name}-arguments", f"tool{i}")
            except _GrammarTooLarge as exc:
                raise _GrammarTooLarge(exc.size, tool) from None
            if converter.written - before > MAX_GRAMMAR_BYTES:
                raise _GrammarTooLarge(None, tool)
        head = converter._format_literal(f'"{tool.name}"')
        key = converter._format_literal('"arguments"')
        rule = f'{head} space "," space {key} space ":" space {args}'
        branches.append(converter._add_rule(f"{tool.name}-call", rule))
    name_key = converter._format_literal('"name"')
    call = converter._add_rule(
        "tool-call",
        f'{converter._format_literal(TOOL_CALL_OPEN)} "{{" space {name_key} space ":" space '
        f'({" | ".join(branches)}) "}}" {converter._format_literal(TOOL_CALL_CLOSE)}',
    )
    more = _repeat_optional(f'"\\n" {call}', MAX_PARALLEL_CALLS - 1) if plan.parallel else ""
    block = converter._add_rule("tool-calls", f"{call} {more}".strip())
    if plan.choice == "auto":
        converter._rules["root"] = f"{block} | {converter._add_rule('free-text', _free_text_rule(TOOL_CALL_OPEN))}"
    else:
        converter._rules["root"] = block
    return _sized(converter.format_grammar(), None)


def _sized(text: str, tool: Tool | None = None) -> str:
    if len(text.encode("utf-8")) > MAX_GRAMMAR_BYTES:
        raise _GrammarTooLarge(len(text.encode("utf-8")), tool)
    return text


def _repeat_optional(item: str, times: int) -> str:
    """``(item (item (...)?)?)?``: zero to ``times`` repetitions of ``item``."""
    return "".join(f"({item} " for _ in range(times)).rstrip() + ")?" * times if times else ""


def _free_text_rule(avoid: str) -> str:
    """GBNF for text (possibly empty) that starts with neither whitespace nor ``avoid``.

    Text may stop partway into ``avoid`` ("<tool" is fine) but once it leaves the prefix it goes on
    freely. The first character also excludes whitespace: " <tool_call>..." would otherwise be
    free text that reads like a call.
    """
    anything = "[^\\x00]*"

    def after(i: int) -> str:  # text that has matched avoid[:i] and must not complete it
        c = avoid[i]
        diverge = f"[^{_class_char(c)}] {anything}"
        if i == len(avoid) - 1:
            return diverge
        return f"{diverge} | \"{_literal_char(c)}\" ({after(i + 1)})?"

    first = avoid[0]
    return f"([^{_class_char(first)} \\t\\n\\r] {anything} | \"{_literal_char(first)}\" ({after(1)})?)?"


def _class_char(c: str) -> str:
    return "\\" + c if c in "]^-\\" else c


def _literal_char(c: str) -> str:
    return "\\" + c if c in '"\\' else c


def _schema_grammar(schema: dict) -> str:
    converter = _converter_type()()
    try:
        converter.convert(schema, "")
        text = _sized(converter.format_grammar())
        if converter.gaps:
            log.debug("Response grammar does not enforce %s.", ", ".join(sorted(converter.gaps)))
        if grammar_is_valid(text):
            return text
        log.warning("The grammar made for a response schema was rejected by llama.cpp; using a looser one.")
    except _GrammarTooLarge:
        raise
    except Exception as exc:  # the converter asserts or raises on what it cannot express
        log.info("A response schema falls back to a looser grammar (%s: %s).", type(exc).__name__, exc)
    return _json_fallback(schema)


def _json_fallback(schema: dict) -> str:
    converter = _converter_type()()
    root = converter.any_object() if schema.get("type") == "object" else converter.any_value()
    converter._rules["root"] = root
    return converter.format_grammar()


# The JSON string character: no raw quote, backslash or control character (json.loads rejects
# control characters in strings, which the library's own "char" rule allows).
_JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
# Keywords that never shape output: dropped before conversion.
_ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly",
    "$schema", "$id", "$anchor", "$dynamicAnchor", "$vocabulary", "$defs", "definitions",
    "contentEncoding", "contentMediaType", "contentSchema",
})
# Keywords the grammar does not enforce: dropped before conversion and reported by schema_gaps.
_UNENFORCED = frozenset({
    "pattern", "uniqueItems", "contains", "minContains", "maxContains", "not", "if", "then",
    "else", "minProperties", "maxProperties", "dependentRequired", "dependentSchemas", "dependencies",
    "patternProperties", "propertyNames", "unevaluatedProperties", "unevaluatedItems", "$dynamicRef",
})
# Keywords that tell the converter what to produce; a schema with none of them allows any value.
_SHAPING = frozenset({
    "type", "properties", "additionalProperties", "required", "items", "prefixItems", "anyOf", "oneOf",
    "allOf", "enum", "const", "$ref",
})
_FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"})


@functools.cache
def _converter_type() -> type:
    """The converter class, built on first use so that importing this module does not load llama.cpp."""
    from llama_cpp.llama_grammar import (
        INVALID_RULE_CHARS_RE, PRIMITIVE_RULES, RESERVED_NAMES, BuiltinRule, SchemaConverter, _build_repetition,
    )

    json_char = BuiltinRule(_JSON_CHAR, [])

    class Converter(SchemaConverter):  # type: ignore[misc, valid-type]
        """llama-cpp-python's converter with the fixes listed in the module docstring."""

        def __init__(self) -> None:
            super().__init__(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
            self.gaps: set[str] = set()
            # The converter's work: bytes of the rules it wrote (a rule rewritten under another
            # name counts again) and rules it added (llama-cpp-python re-adds a rule per optional
            # property once per optional property before it: quadratic in their number).
            self.written = 0
            self.calls = 0

        def _add_rule(self, name: str, rule: str) -> str:
            name = INVALID_RULE_CHARS_RE.sub("-", _short_name(name))
            self.calls += 1
            if self._rules.get(name) != rule:  # a new rule (the library re-adds many unchanged)
                self.written += len(name) + len(rule)
            if self.written > MAX_GRAMMAR_BYTES * GRAMMAR_WORK_FACTOR or self.calls > MAX_RULE_CALLS:
                raise _GrammarTooLarge(None)
            return super()._add_rule(name, rule)

        def convert(self, schema: dict, name: str, url: str = "schema") -> str:
            """Add the rules for ``schema`` (not modified) and return its rule; ``""`` names it root."""
            schema = self.resolve_refs(copy.deepcopy(schema), url)
            rule = self.visit(schema, name)
            if not name and rule != "root":
                self._rules["root"] = rule
            return "root" if not name else rule

        def convert_or_any_object(self, schema: dict, name: str, url: str) -> str:
            """:meth:`convert`, or any JSON object when the schema cannot be expressed (rules left as they were)."""
            saved = dict(self._rules)
            try:
                return self.convert(schema, name, url)
            except _GrammarTooLarge:
                raise
            except Exception as exc:  # the converter asserts or raises on what it cannot express
                log.info("Arguments %s fall back to any JSON object (%s: %s).", name, type(exc).__name__, exc)
                # A failed conversion can leave rules that name rules never added: llama.cpp
                # rejects such a grammar even when nothing reaches them.
                self._rules = saved
                self._refs_being_resolved = set()
                self.gaps.add("(whole schema: any object)")
                return self.any_object()

        def any_value(self) -> str:
            return self._add_primitive("value", PRIMITIVE_RULES["value"])

        def any_object(self) -> str:
            return self._add_primitive("object", PRIMITIVE_RULES["object"])

        def _add_primitive(self, name: str, rule: Any) -> str:
            return super()._add_primitive(name, json_char if name == "char" else rule)

        def _format_literal(self, literal: str) -> str:
            # The library escapes quotes and newlines but not backslashes, so the JSON text of a
            # string holding a quote ("a\"b") broke the grammar.
            table = {"\\": "\\\\", '"': '\\"', "\r": "\\r", "\n": "\\n"}
            return '"' + re.sub(r'[\\"\r\n]', lambda m: table[m.group(0)], literal) + '"'

        def _resolve_ref(self, ref: str) -> str:
            # The library names a ref's rule by its last segment only; refs are full URLs here
            # ("tool0#/$defs/point"), so a name made from the whole ref is unique.
            ref_name = "ref-" + re.sub(r"[^a-zA-Z0-9-]+", "-", ref)
            if ref_name not in self._rules and ref not in self._refs_being_resolved:
                self._refs_being_resolved.add(ref)
                ref_name = self.visit(self._refs[ref], ref_name)
                self._refs_being_resolved.remove(ref)
            return ref_name

        def _named(self, name: str) -> str:
            return name + "-" if name in RESERVED_NAMES else name or "root"

        def visit(self, schema: Any, name: str) -> str:
            name = _short_name(name)
            if schema is True:
                schema = {}
            if not isinstance(schema, dict):
                raise _Unexpressible(f"the schema {schema!r} allows no value")
            self.gaps.update(k for k in schema if k in _UNENFORCED)
            s = {k: v for k, v in schema.items() if k not in _ANNOTATIONS and k not in _UNENFORCED}
            if "$ref" in s:
                if len(s.keys() & _SHAPING) > 1:
                    self.gaps.add("keywords beside $ref")
                return super().visit({"$ref": s["$ref"]}, name)
            if not (s.keys() & _SHAPING):
                return self.any_value()
            if "allOf" in s:
                merged = {k: v for k, v in s.items() if k != "allOf"}
                for part in s["allOf"]:
                    merged = _merge(merged, self._deref(part))
                return self.visit(merged, name)
            kind = s.get("type")
            if isinstance(kind, list) and "anyOf" not in s and "oneOf" not in s:
                rest = {k: v for k, v in s.items() if k != "type"}
                return self.visit({"anyOf": [{**rest, "type": t} for t in kind]}, name)
            for key in ("anyOf", "oneOf"):
                if key in s:
                    if key == "oneOf":
                        self.gaps.add("oneOf (exclusivity)")
                    base = {k: v for k, v in s.items() if k not in ("anyOf", "oneOf")}
                    alts = [_merge(base, self._deref(alt)) if base else alt for alt in s[key] if alt is not False]
                    if not alts:
                        raise _Unexpressible(f"no alternative of {key} allows a value")
                    return self._add_rule(self._named(name), self._generate_union_rule(name, alts))
            if "const" in s or "enum" in s:
                return super().visit(s, name)
            if kind == "object" or (kind is None and s.keys() & {"properties", "additionalProperties", "required"}):
                return self._object(s, name)
            if kind == "array" or (kind is None and s.keys() & {"items", "prefixItems"}):
                return self._array(s, name)
            if kind == "string":
                return self._string(s, name)
            if kind in ("integer", "number"):
                return self._number(s, name, kind)
            if kind in ("boolean", "null"):
                return super().visit({"type": kind}, name)
            return self.any_value()

        def _deref(self, part: Any) -> Any:
            if isinstance(part, dict) and "$ref" in part:
                if part["$ref"] not in self._refs:
                    raise _Unexpressible(f"cannot follow {part['$ref']}")
                return self._deref(self._refs[part["$ref"]])
            return part

        def _object(self, s: dict, name: str) -> str:
            props = {k: v for k, v in s.get("properties", {}).items() if v is not False}
            for key in s.get("required", []):
                if s.get("properties", {}).get(key) is False:
                    raise _Unexpressible(f"required property {key!r} is forbidden")
                props.setdefault(key, {})  # required but not described: any value
            s = {**s, "type": "object"}
            extra = s.get("additionalProperties")
            if extra == {}:
                s["additionalProperties"] = True
            if props or extra is not None:
                s["properties"] = props
            else:  # no properties and additionalProperties unset: any object
                return self._add_rule(self._named(name), self.any_object())
            return super().visit(s, name)

        def _array(self, s: dict, name: str) -> str:
            s = {**s, "type": "array"}
            if "prefixItems" in s:
                # 2020-12: "items" next to "prefixItems" describes extra items; the library would
                # read it as the item schema. Producing exactly the prefix is always valid.
                s.pop("items", None)
                if s.get("minItems", 0) > len(s["prefixItems"]):
                    self.gaps.add("minItems")
                return super().visit(s, name)
            items = s.get("items", True)
            if items is False:
                s["maxItems"] = 0
                items = True
            # "items": {} is falsy and crashes the library: True means the same and is truthy.
            s["items"] = True if items == {} else items
            low, high = s.get("minItems", 0), s.get("maxItems")
            if high is not None and high - low > MAX_ARRAY_SPAN:
                self.gaps.add("maxItems")
                del s["maxItems"]
            return super().visit(s, name)

        def _string(self, s: dict, name: str) -> str:
            fmt = s.get("format")
            if fmt is not None and fmt not in _FORMATS:
                self.gaps.add(f"format {fmt}")
                s = {k: v for k, v in s.items() if k != "format"}
            elif fmt is not None:
                return super().visit({"type": "string", "format": fmt}, name)
            low, high = s.get("minLength", 0), s.get("maxLength")
            if high is not None and high - low > MAX_STRING_SPAN:
                self.gaps.add("maxLength")
                s = {k: v for k, v in s.items() if k != "maxLength"}
            if low > MAX_STRING_SPAN:
                self.gaps.add("minLength")
                s = {k: v for k, v in s.items() if k != "minLength"}
            return super().visit({k: v for k, v in s.items() if k in ("type", "minLength", "maxLength")}, name)

        def _number(self, s: dict, name: str, kind: str) -> str:
            step = s.get("multipleOf")
            bounds = [k for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if s.get(k) is not None]
            if kind == "integer":
                low, high = _integer_bounds(s)
                if low is not None and high is not None and high - low < MAX_INTEGER_CHOICES:
                    values = [v for v in range(low, high + 1) if not step or (v / step).is_integer()]
                    if not values:
                        raise _Unexpressible("no integer lies within the bounds")
                    rule = " | ".join(self._generate_constant_rule(v) for v in values)
                    return self._add_rule(self._named(name), rule)
            else:
                low, high = _number_low(s), None
            if step is not None:
                self.gaps.add("multipleOf")
            if low is None or low < 0:  # the sign cannot be ruled out: plain number
                self.gaps.update(bounds)
                return super().visit({"type": kind}, name)
            # Non-negative: no minus sign. Integers from 1 up: no zero either. Other bounds are not enforced.
            self.gaps.update(k for k in bounds if k in ("maximum", "exclusiveMaximum"))
            if kind == "integer":
                if low > 1:
                    self.gaps.add("minimum")
                if low >= 1:
                    return self._add_rule(self._named(name), "[1-9] " + _build_repetition("[0-9]", 0, 15) + " space")
                self._add_primitive("integral-part", PRIMITIVE_RULES["integral-part"])
                return self._add_rule(self._named(name), "integral-part space")
            if low > 0 or s.get("exclusiveMinimum") is not None:
                self.gaps.add("minimum")
            self._add_primitive("integral-part", PRIMITIVE_RULES["integral-part"])
            self._add_primitive("decimal-part", PRIMITIVE_RULES["decimal-part"])
            body = 'integral-part ("." decimal-part)? ([eE] [-+]? integral-part)? space'
            return self._add_rule(self._named(name), body)

    return Converter


def _short_name(name: str) -> str:
    """``name``, or its start and a hash of it when longer than ``MAX_RULE_NAME``."""
    if len(name) <= MAX_RULE_NAME:
        return name
    import hashlib

    return name[: MAX_RULE_NAME - 13] + "-" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:12]


def _integer_bounds(s: dict) -> tuple[int | None, int | None]:
    """The lowest and highest integer that minimum/maximum/exclusive* allow (``None``: unbounded)."""
    lows, highs = [], []
    if s.get("minimum") is not None:
        lows.append(math.ceil(s["minimum"]))
    if s.get("exclusiveMinimum") is not None:
        lows.append(math.floor(s["exclusiveMinimum"]) + 1)
    if s.get("maximum") is not None:
        highs.append(math.floor(s["maximum"]))
    if s.get("exclusiveMaximum") is not None:
        highs.append(math.ceil(s["exclusiveMaximum"]) - 1)
    return (max(lows) if lows else None), (min(highs) if highs else None)


def _number_low(s: dict) -> float | None:
    """The lower bound of a number (inclusive or not), ``None`` when unbounded below."""
    bounds = [s[k] for k in ("minimum", "exclusiveMinimum") if s.get(k) is not None]
    return max(bounds) if bounds else None


def _merge(base: dict, extra: Any) -> dict:
    """``base`` and ``extra`` as one schema: properties and required combined, other keys from ``extra``."""
    if extra is True:
        return dict(base)
    if not isinstance(extra, dict):
        raise _Unexpressible(f"cannot combine with {extra!r}")
    merged = {**base, **extra}
    if "properties" in base and "properties" in extra:
        merged["properties"] = {**base["properties"], **extra["properties"]}
    if "required" in base and "required" in extra:
        merged["required"] = list(dict.fromkeys([*base["required"], *extra["required"]]))
    return merged
