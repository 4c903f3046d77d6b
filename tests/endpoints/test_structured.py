"""Tools and structured output: request validation, grammars, and the real SmolLM2 under those grammars."""
from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest

from endpoints.errors import ServingError
from endpoints.providers.local import LOCAL_MODELS, SMOLLM2
from endpoints.structured import (
    MAX_PARALLEL_CALLS,
    OutputFormat,
    Tool,
    ToolCall,
    ToolPlan,
    grammar_is_valid,
    parse_response_format,
    parse_tool_output,
    parse_tools,
    render_tool_turns,
    response_grammar,
    response_prompt,
    schema_gaps,
    tool_grammar,
    tool_prompt,
    validate_output,
)

S = "string"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": S, "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a timezone.",
        "parameters": {"type": "object", "properties": {"timezone": {"type": S, "maxLength": 30}}, "required": ["timezone"]},
    },
}
TOOLS = [WEATHER, TIME]
FORCE_TIME = {"type": "function", "function": {"name": "get_time"}}

# The schemas the real model must always satisfy: (name, user prompt, schema). Every string has a
# maxLength and every array a maxItems, so each answer completes well within the token cap.
CASES: list[tuple[str, str, dict]] = [
    ("person", "Describe Ann, a 31 year old engineer.", {
        "type": "object",
        "properties": {"name": {"type": S, "maxLength": 20}, "age": {"type": "integer"}, "job": {"type": S, "maxLength": 20}},
        "required": ["name", "age"],
    }),
    ("nested", "Where is the Eiffel Tower?", {
        "type": "object",
        "properties": {
            "landmark": {"type": S, "maxLength": 24},
            "location": {
                "type": "object",
                "properties": {"city": {"type": S, "maxLength": 20}, "country": {"type": S, "maxLength": 20}},
                "required": ["city", "country"],
            },
        },
        "required": ["landmark", "location"],
    }),
    ("colors", "Name some colors of a rainbow.", {
        "type": "object",
        "properties": {"colors": {
            "type": "array", "items": {"enum": ["red", "orange", "yellow", "green", "blue", "violet"]},
            "minItems": 2, "maxItems": 4,
        }},
        "required": ["colors"],
    }),
    ("sentiment", "Classify the review: 'I loved this film!'", {
        "type": "object",
        "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]}, "confident": {"type": "boolean"}},
        "required": ["sentiment", "confident"],
    }),
    ("weather", "Report the weather: 21.5 degrees and humid.", {
        "type": "object",
        "properties": {"temperature_c": {"type": "number"}, "humid": {"type": "boolean"}, "note": {"type": S, "maxLength": 30}},
        "required": ["temperature_c", "humid"],
    }),
    ("answer", "How many legs does a spider have?", {
        "type": "object",
        "properties": {
            "answer": {"anyOf": [{"type": "integer"}, {"type": S, "maxLength": 12}]},
            "unsure": {"type": ["boolean", "null"]},
        },
        "required": ["answer"],
    }),
    ("shape", "Describe a circle of radius 2.", {
        "type": "object",
        "properties": {"shape": {"oneOf": [
            {"type": "object", "properties": {"kind": {"const": "circle"}, "radius": {"type": "number", "minimum": 0}},
             "required": ["kind", "radius"], "additionalProperties": False},
            {"type": "object", "properties": {"kind": {"const": "square"}, "side": {"type": "number", "minimum": 0}},
             "required": ["kind", "side"], "additionalProperties": False},
        ]}},
        "required": ["shape"],
    }),
    ("order", "I want 2 apples and 3 pears.", {
        "type": "object",
        "properties": {"items": {
            "type": "array", "minItems": 1, "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"fruit": {"type": S, "maxLength": 12}, "qty": {"type": "integer", "minimum": 1, "maximum": 9}},
                "required": ["fruit", "qty"],
            },
        }},
        "required": ["items"],
    }),
    ("segment", "A line from (0, 0) to (3, 4).", {
        "$defs": {"point": {
            "type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"],
        }},
        "type": "object",
        "properties": {"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}},
        "required": ["start", "end"],
    }),
    ("event", "The concert is on 2024-05-17 in Oslo.", {
        "type": "object",
        "properties": {
            "event": {"type": S, "maxLength": 20},
            "date": {"type": S, "format": "date"},
            "city": {"type": S, "minLength": 2, "maxLength": 16},
        },
        "required": ["event", "date", "city"],
    }),
    # Where llama-cpp-python's own grammar lets a raw newline into the string (invalid JSON).
    ("poem", "Write a short poem about the sea, three lines.", {
        "type": "object", "properties": {"poem": {"type": S, "maxLength": 60}}, "required": ["poem"],
    }),
]


def obj(required: list[str] | None = None, **properties: Any) -> dict:
    """An object schema with these properties."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


NUMBERS = obj(
    pct={"type": "integer", "minimum": 0, "maximum": 100},
    pos={"type": "integer", "exclusiveMinimum": 0},
    even={"type": "integer", "minimum": 0, "maximum": 10, "multipleOf": 2},
    price={"type": "number", "minimum": 0},
    temp={"type": "number", "minimum": -40, "maximum": 50},
)
# A reference to an anchor: the library's converter cannot follow it.
ANCHOR_REF = {"type": "object", "properties": {"x": {"$ref": "#anchor"}},
              "$defs": {"a": {"$anchor": "anchor", "type": "integer"}}}
TREE = {"type": "object", "properties": {"node": {"$ref": "#/$defs/node"}}, "$defs": {"node": obj(
    ["v"], v={"type": "integer"}, kids={"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2})}}

# Schemas that stress the converter (escaping, names, recursion, keywords it handles badly on its own).
TRICKY_SCHEMAS: list[dict] = [
    obj(q={"enum": ['a"b', "c\\d", "é", "line\nbreak"]}, k={"const": {"x": [1, "\\"]}}),
    obj(**{'we"ird key': {"type": S}, "sp ace": {"type": "integer"}, "ünï": {"type": "boolean"}}),
    obj(root={"type": S}, space={"type": S, "maxLength": 3}, char={"type": "number"}, value={"type": "integer"},
        string={"type": "null"}),
    TREE,
    {**obj(a={"$ref": "#/$defs/a/properties/x"}, b={"$ref": "#/$defs/b/properties/x"}),
     "$defs": {"a": obj(x={"type": "integer"}), "b": obj(x={"type": S})}},
    obj(anything={"description": "no type at all"}, any={}, t=True),
    obj(tags={"type": "array", "items": {}}, pair={"prefixItems": [{"type": S}, {"type": "integer"}], "items": False}),
    obj(code={"type": S, "pattern": "^\\d{3}-[A-Z]+$"}, long={"type": S, "maxLength": 5000}),
    {"type": "object", "allOf": [obj(["a"], a={"type": "boolean"}), obj(b={"type": "null"})]},
    {**obj(n={"type": ["integer", "string", "null"], "maxLength": 4}), "additionalProperties": {"type": "number"}},
    NUMBERS,
    {"type": "object", "required": ["undeclared"], "additionalProperties": False},
    obj(when={"type": S, "format": "date-time"}, id={"type": S, "format": "uuid"}, mail={"type": S, "format": "email"}),
    {"type": "array", "items": {"type": "integer"}, "minItems": 1},
    {"type": "string", "maxLength": 10},
    {"$ref": "#/$defs/x", "$defs": {"x": obj(y={"type": "integer"})}},
    ANCHOR_REF,
]

PLANS = [(choice, parallel) for choice in ("auto", "required", FORCE_TIME) for parallel in (False, True)]


def error_of(fn, *args) -> ServingError:
    with pytest.raises(ServingError) as info:
        fn(*args)
    assert info.value.status == 400 and info.value.code == "INVALID_PARAMETER_VALUE"
    return info.value


def internal_error_of(fn, *args, **kwargs) -> ServingError:
    with pytest.raises(ServingError) as info:
        fn(*args, **kwargs)
    assert info.value.status == 500 and info.value.code == "INTERNAL_ERROR"
    return info.value


def tool(name: str = "f", parameters: Any = None, **function: Any) -> dict:
    fn: dict[str, Any] = {"name": name, **function}
    if parameters is not None:
        fn["parameters"] = parameters
    return {"type": "function", "function": fn}


def schema_format(schema: dict, name: str = "answer") -> OutputFormat:
    fmt = parse_response_format({"type": "json_schema", "json_schema": {"name": name, "schema": schema}})
    assert fmt is not None
    return fmt


def loads_in_llama_cpp(grammar: str) -> bool:
    """The grammar loads the way generation loads it, and llama.cpp itself parses it."""
    from llama_cpp import LlamaGrammar

    LlamaGrammar.from_string(grammar, verbose=False)  # in 0.3.36 this stores the text and checks nothing
    return grammar_is_valid(grammar)


# --- parse_tools: what a valid request becomes ----------------------------------------------------


def test_it_reads_no_tools_as_no_plan():
    assert parse_tools(None, None, None) is None
    assert parse_tools(None, None, False) is None  # parallel_tool_calls alone changes nothing


def test_it_parses_tools_with_openai_defaults():
    plan = parse_tools([WEATHER, tool("ping")], None, None)
    assert plan == ToolPlan(
        tools=(
            Tool("get_weather", "Get the weather for a city.", WEATHER["function"]["parameters"], False),
            Tool("ping", "", {"type": "object", "properties": {}}, False),
        ),
        choice="auto", function=None, parallel=True,
    )


def test_it_parses_each_tool_choice_and_parallel_calls():
    assert parse_tools(TOOLS, "none", False).choice == "none"
    assert parse_tools(TOOLS, "required", None).choice == "required"
    plan = parse_tools(TOOLS, FORCE_TIME, False)
    assert (plan.choice, plan.function, plan.parallel) == ("function", "get_time", False)
    assert [t.name for t in plan.callable_tools] == ["get_time"]
    assert parse_tools(TOOLS, "none", None).callable_tools == ()


def test_it_keeps_strict_and_copies_the_parameters():
    params = {"type": "object", "properties": {"x": {"type": "integer"}}}
    plan = parse_tools([tool("f", params, strict=True)], "auto", True)
    assert plan.tools[0].strict is True
    params["properties"]["x"]["type"] = "string"
    assert plan.tools[0].parameters["properties"]["x"]["type"] == "integer"


# --- parse_tools: every 400 ----------------------------------------------------------------------


def test_it_rejects_tool_choice_without_tools():
    assert "'tool_choice' was given without 'tools'" in error_of(parse_tools, None, "auto", None).message


def test_it_rejects_tools_that_are_not_a_list():
    assert "'tools' must be a list" in error_of(parse_tools, {"type": "function"}, None, None).message


def test_it_rejects_an_empty_tools_list():
    assert "'tools' must not be empty" in error_of(parse_tools, [], None, None).message


def test_it_rejects_a_tool_that_is_not_an_object():
    assert error_of(parse_tools, [WEATHER, "get_time"], None, None).message.startswith("tools[1] must be an object")


def test_it_rejects_a_tool_that_is_not_a_function():
    err = error_of(parse_tools, [{"type": "retrieval", "function": {"name": "f"}}], None, None)
    assert "tools[0].type must be 'function'" in err.message and "'retrieval'" in err.message
    assert "missing" in error_of(parse_tools, [{"function": {"name": "f"}}], None, None).message


def test_it_rejects_a_tool_without_a_function_object():
    assert "tools[0].function must be an object" in error_of(parse_tools, [{"type": "function"}], None, None).message


def test_it_rejects_unknown_keys_in_a_tool():
    err = error_of(parse_tools, [{"type": "function", "function": {"name": "f", "parameter": {}}}], None, None)
    assert "tools[0].function has unknown key 'parameter'" in err.message
    assert "tools[0] has unknown key 'extra'" in error_of(parse_tools, [{**tool(), "extra": 1}], None, None).message


def test_it_rejects_a_missing_tool_name():
    err = error_of(parse_tools, [WEATHER, {"type": "function", "function": {"description": "x"}}], None, None)
    assert err.message == "tools[1].function.name is missing."


@pytest.mark.parametrize("name", ["get weather", "", "x" * 65, "naïve", 42])
def test_it_rejects_a_tool_name_outside_openais_rule(name):
    err = error_of(parse_tools, [tool(name)], None, None)
    assert f"tools[0].function.name {name!r} is invalid" in err.message and "1 to 64 letters" in err.message


def test_it_rejects_duplicate_tool_names():
    err = error_of(parse_tools, [tool("a"), tool("b"), tool("a")], None, None)
    assert "tools[2].function.name 'a' is already the name of tools[0]" in err.message


def test_it_rejects_parameters_that_are_not_a_valid_json_schema():
    err = error_of(parse_tools, [WEATHER, tool("f", {"type": "objectt"})], None, None)
    assert err.message == (
        "tools[1].function.parameters is not a valid JSON Schema: "
        "'objectt' is not valid under any of the given schemas (at type)."
    )


def test_it_points_at_the_invalid_part_of_a_nested_schema():
    params = {"type": "object", "properties": {"city": {"type": "string", "maxLength": -1}}}
    err = error_of(parse_tools, [tool("f", params)], None, None)
    assert err.message.startswith("tools[0].function.parameters is not a valid JSON Schema: ")
    assert "(at properties.city.maxLength)" in err.message


def test_it_rejects_parameters_that_do_not_describe_an_object():
    err = error_of(parse_tools, [tool("f", {"type": "array"})], None, None)
    assert "tools[0].function.parameters must describe an object" in err.message and "'array'" in err.message
    assert "'type' must be 'object'" in error_of(parse_tools, [tool("f", {})], None, None).message
    assert "must be a JSON Schema object" in error_of(parse_tools, [tool("f", ["object"])], None, None).message


def test_it_rejects_references_outside_the_schema():
    params = {"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}}
    err = error_of(parse_tools, [tool("f", params)], None, None)
    assert "tools[0].function.parameters has $ref 'https://example.com/a.json' (at properties.a)" in err.message
    params = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}
    assert "points at nothing" in error_of(parse_tools, [tool("f", params)], None, None).message


def test_it_rejects_a_description_or_strict_of_the_wrong_type():
    err = error_of(parse_tools, [tool("f", description=3)], None, None)
    assert "tools[0].function.description must be a string" in err.message
    err = error_of(parse_tools, [tool("f", strict="yes")], None, None)
    assert "tools[0].function.strict must be true or false" in err.message


@pytest.mark.parametrize("choice", ["always", "function", "get_weather"])
def test_it_rejects_an_unknown_tool_choice(choice):
    err = error_of(parse_tools, TOOLS, choice, None)
    assert "'tool_choice' must be 'auto', 'none', 'required' or" in err.message and repr(choice) in err.message


def test_it_rejects_a_tool_choice_naming_an_unknown_function():
    err = error_of(parse_tools, TOOLS, {"type": "function", "function": {"name": "get_news"}}, None)
    assert "tool_choice.function.name 'get_news' is not one of the tools" in err.message
    assert "'get_weather', 'get_time'" in err.message


def test_it_rejects_a_malformed_forced_tool_choice():
    err = error_of(parse_tools, TOOLS, {"type": "tool", "function": {"name": "get_time"}}, None)
    assert "tool_choice.type must be 'function'" in err.message
    assert "tool_choice.function.name is missing" in error_of(parse_tools, TOOLS, {"type": "function"}, None).message
    assert "'tool_choice' must be" in error_of(parse_tools, TOOLS, 3, None).message


def test_it_rejects_parallel_tool_calls_that_is_not_a_boolean():
    assert "'parallel_tool_calls' must be true or false" in error_of(parse_tools, TOOLS, None, "yes").message


# --- parse_response_format -----------------------------------------------------------------------


def test_it_parses_each_response_format():
    assert parse_response_format(None) is None
    assert parse_response_format({"type": "text"}) == OutputFormat("text", None, None, False)
    assert parse_response_format({"type": "json_object"}) == OutputFormat("json_object", None, None, False)
    fmt = parse_response_format({"type": "json_schema", "json_schema": {
        "name": "person", "description": "A person.", "strict": True, "schema": CASES[0][2]}})
    assert fmt == OutputFormat("json_schema", CASES[0][2], "person", True)


def test_it_rejects_a_response_format_that_is_not_an_object():
    assert "'response_format' must be an object" in error_of(parse_response_format, "json").message


def test_it_rejects_a_response_format_without_a_type():
    err = error_of(parse_response_format, {})
    assert err.message == "response_format.type is missing: use 'text', 'json_object' or 'json_schema'."


def test_it_rejects_an_unknown_response_format_type():
    err = error_of(parse_response_format, {"type": "xml"})
    assert "response_format.type must be 'text', 'json_object' or 'json_schema'; got 'xml'" in err.message


def test_it_rejects_unknown_keys_in_a_response_format():
    err = error_of(parse_response_format, {"type": "json_object", "schema": {}})
    assert "response_format has unknown key 'schema'" in err.message
    spec = {"name": "a", "schema": {}, "strict_mode": True}
    err = error_of(parse_response_format, {"type": "json_schema", "json_schema": spec})
    assert "response_format.json_schema has unknown key 'strict_mode'" in err.message


def test_it_rejects_a_json_schema_format_without_its_json_schema():
    assert "response_format.json_schema is missing" in error_of(parse_response_format, {"type": "json_schema"}).message
    err = error_of(parse_response_format, {"type": "json_schema", "json_schema": "x"})
    assert "response_format.json_schema is not an object" in err.message


def test_it_rejects_a_json_schema_format_without_a_valid_name():
    err = error_of(parse_response_format, {"type": "json_schema", "json_schema": {"schema": {}}})
    assert err.message == "response_format.json_schema.name is missing."
    err = error_of(parse_response_format, {"type": "json_schema", "json_schema": {"name": "my schema", "schema": {}}})
    assert "response_format.json_schema.name 'my schema' is invalid" in err.message


def test_it_rejects_a_json_schema_format_without_a_schema():
    err = error_of(parse_response_format, {"type": "json_schema", "json_schema": {"name": "a"}})
    assert err.message.startswith("response_format.json_schema.schema is missing")


def test_it_rejects_a_response_schema_that_is_not_valid_json_schema():
    bad = {"type": "object", "properties": {"n": {"type": "integer", "minimum": "zero"}}}
    err = error_of(parse_response_format, {"type": "json_schema", "json_schema": {"name": "a", "schema": bad}})
    assert err.message == (
        "response_format.json_schema.schema is not a valid JSON Schema: 'zero' is not of type 'number' "
        "(at properties.n.minimum)."
    )


def test_it_rejects_a_non_boolean_strict_in_a_response_format():
    err = error_of(parse_response_format, {"type": "json_schema", "json_schema": {"name": "a", "schema": {}, "strict": 1}})
    assert "response_format.json_schema.strict must be true or false" in err.message


# --- grammars: every one loads in llama.cpp -------------------------------------------------------


def test_it_makes_no_grammar_for_text_or_for_tool_choice_none():
    assert response_grammar(OutputFormat("text", None, None, False)) is None
    assert tool_grammar(parse_tools(TOOLS, "none", True)) is None


def test_the_grammar_check_asks_llama_cpp_itself():
    assert grammar_is_valid('root ::= "a" | "b"')
    assert not grammar_is_valid('root ::= "a" | undefined-rule')
    assert not grammar_is_valid('root ::= "\\d"')  # what the library's regex translation can produce


@pytest.mark.parametrize("name, schema", [(name, schema) for name, _, schema in CASES])
def test_it_makes_a_grammar_llama_cpp_loads_for_each_test_schema(name, schema):
    grammar = response_grammar(schema_format(schema, name))
    assert loads_in_llama_cpp(grammar)


def test_it_makes_a_grammar_llama_cpp_loads_for_json_object():
    grammar = response_grammar(OutputFormat("json_object", None, None, False))
    assert loads_in_llama_cpp(grammar) and grammar.startswith("array ::=") and "root ::= object" in grammar


@pytest.mark.parametrize("schema", TRICKY_SCHEMAS, ids=lambda s: json.dumps(s)[:60])
def test_it_makes_a_grammar_llama_cpp_loads_for_schemas_the_library_mishandles(schema):
    assert loads_in_llama_cpp(response_grammar(schema_format(schema)))
    if schema.get("type") == "object":
        params = schema
    else:  # wrapped as an argument; its $defs stay at the top, where its "#/$defs/..." refs point
        inner = {k: v for k, v in schema.items() if k != "$defs"}
        params = {"type": "object", "properties": {"x": inner}, **({"$defs": schema["$defs"]} if "$defs" in schema else {})}
    assert loads_in_llama_cpp(tool_grammar(parse_tools([tool("f", params)], "required", True)))


@pytest.mark.parametrize("choice, parallel", PLANS)
def test_it_makes_a_tool_grammar_llama_cpp_loads_for_each_choice(choice, parallel):
    grammar = tool_grammar(parse_tools(TOOLS, choice, parallel))
    assert loads_in_llama_cpp(grammar)
    assert ("free-text" in grammar) == (choice == "auto")
    assert ("get-weather-call" in grammar) == (choice != FORCE_TIME)


def test_it_keeps_tools_whose_rule_names_collide_apart():
    tools = [tool("a_b", {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}),
             tool("a-b", {"type": "object", "properties": {"x": {"type": "boolean"}}, "required": ["x"]}),
             tool("root"), tool("string", {"type": "object", "properties": {"space": {"type": "string"}}})]
    grammar = tool_grammar(parse_tools(tools, "auto", True))
    assert loads_in_llama_cpp(grammar)
    assert "integer" in grammar and "boolean" in grammar


def test_it_reports_the_keywords_its_grammar_does_not_enforce():
    assert schema_gaps(CASES[0][2]) == []
    gaps = schema_gaps({"type": "object", "properties": {
        "code": {"type": "string", "pattern": "^[a-z]+$"}, "n": {"type": "integer", "minimum": -5, "maximum": 1000},
        "tags": {"type": "array", "uniqueItems": True, "items": {"type": "string"}}}})
    assert gaps == ["maximum", "minimum", "pattern", "uniqueItems"]


def test_it_enumerates_a_small_integer_range_and_drops_the_sign_from_non_negative_numbers():
    grammar = response_grammar(schema_format(NUMBERS))
    assert re.search(r'^even ::= "0" \| "2" \| "4" \| "6" \| "8" \| "10"$', grammar, re.M)
    assert re.search(r"^pos ::= \[1-9\]", grammar, re.M)
    assert re.search(r'^price ::= integral-part \("\." decimal-part\)\?', grammar, re.M)
    assert '("-"? integral-part)' in grammar  # temp (minimum -40) keeps its sign


def test_it_falls_back_to_a_looser_grammar_for_a_schema_the_converter_cannot_express():
    # $ref to an anchor: the library cannot follow it; any JSON object is the closest valid shape.
    fallback = response_grammar(OutputFormat("json_object", None, None, False))
    assert response_grammar(schema_format(ANCHOR_REF)) == fallback


# --- prompts and turns ---------------------------------------------------------------------------


def test_the_tool_prompt_lists_the_callable_tools_and_the_exact_call_format():
    prompt = tool_prompt(parse_tools(TOOLS, "auto", True))
    assert json.dumps(WEATHER["function"]["parameters"], separators=(",", ":")) in prompt and "Get the current time" in prompt
    assert '<tool_call>{"name": "TOOL_NAME", "arguments": {"ARGUMENT": "VALUE"}}</tool_call>' in prompt
    assert "several tools" in prompt and "plain text" in prompt
    forced = tool_prompt(parse_tools(TOOLS, FORCE_TIME, False))
    assert "get_weather" not in forced and "You must call the tool 'get_time' now." in forced
    assert "several" not in forced
    assert tool_prompt(parse_tools(TOOLS, "none", True)) == ""


def test_the_response_prompt_shows_the_schema():
    assert response_prompt(OutputFormat("text", None, None, False)) is None
    assert "JSON object" in response_prompt(OutputFormat("json_object", None, None, False))
    assert json.dumps(CASES[0][2], separators=(",", ":")) in response_prompt(schema_format(CASES[0][2]))


def test_it_renders_tool_calls_and_results_as_plain_turns():
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris "}, {"type": "text", "text": "and Oslo?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "9C"},
        {"role": "assistant", "content": "Paris 18C, Oslo 9C."},
        {"role": "tool", "tool_call_id": "call_9", "content": "late"},
    ]
    assert render_tool_turns(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content":
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'},
        {"role": "user", "content": "Tool result for get_weather (call_1): 18C\n\nTool result for get_weather (call_2): 9C"},
        {"role": "assistant", "content": "Paris 18C, Oslo 9C."},
        {"role": "user", "content": "Tool result (call_9): late"},
    ]


def test_it_rejects_rendering_tool_call_arguments_that_are_not_json():
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{city: Paris}"}}]}]
    err = error_of(render_tool_turns, messages)
    assert err.message.startswith("messages[1].tool_calls[0].function.arguments is not valid JSON")


# --- reading the model's output ------------------------------------------------------------------


def call_line(name: str, arguments: Any) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def test_it_parses_one_call_into_an_openai_style_tool_call():
    output = call_line("get_weather", {"city": "Paris", "unit": "celsius"})
    text, calls = parse_tool_output(output, parse_tools(TOOLS, "required", False))
    assert text == "" and len(calls) == 1
    assert isinstance(calls[0], ToolCall) and re.fullmatch(r"call_[0-9a-f]{24}", calls[0].id)
    assert (calls[0].name, calls[0].arguments) == ("get_weather", '{"city":"Paris","unit":"celsius"}')


def test_it_parses_parallel_calls_separated_by_whitespace_with_distinct_ids():
    output = "\n".join([call_line("get_weather", {"city": "Paris"}), "  " + call_line("get_time", {"timezone": "</tool_call>"})])
    text, calls = parse_tool_output(output + "\n", parse_tools(TOOLS, "auto", True))
    assert text == "" and [c.name for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[1].arguments) == {"timezone": "</tool_call>"}
    assert calls[0].id != calls[1].id


def test_it_returns_plain_text_as_text_under_auto_and_none():
    assert parse_tool_output("Hello there.", parse_tools(TOOLS, "auto", True)) == ("Hello there.", [])
    anything = "<tool_call>not json"
    assert parse_tool_output(anything, parse_tools(TOOLS, "none", True)) == (anything, [])


def test_it_fails_when_a_required_call_is_plain_text():
    err = internal_error_of(parse_tool_output, "Sure!", parse_tools(TOOLS, "required", True))
    assert "tool_choice 'required' requires a tool call" in err.message


def test_it_fails_on_a_call_to_a_tool_the_model_may_not_call():
    err = internal_error_of(parse_tool_output, call_line("get_weather", {"city": "Rome"}), parse_tools(TOOLS, FORCE_TIME, True))
    assert "'get_weather', which is not a tool it may call here ('get_time')" in err.message


def test_arguments_that_break_the_tools_schema_are_a_400_naming_the_tool_field():
    output = call_line("get_weather", {"city": "Rome", "unit": "kelvin"})
    err = error_of(lambda: parse_tool_output(output, parse_tools(TOOLS, "auto", True)))
    assert "arguments for 'get_weather' do not match tools[0].function.parameters: 'kelvin' is not one of" in err.message
    assert "(at unit)" in err.message


def test_it_fails_on_a_malformed_block_or_several_calls_when_parallel_is_off():
    plan = parse_tools(TOOLS, "auto", False)
    assert "malformed" in internal_error_of(parse_tool_output, '<tool_call>{"name": "get_time"', plan).message
    unclosed = call_line("get_time", {"timezone": "UTC"})[:-1]
    assert "expected </tool_call>" in internal_error_of(parse_tool_output, unclosed, plan).message
    two = call_line("get_time", {"timezone": "UTC"}) + "\n" + call_line("get_time", {"timezone": "CET"})
    assert "parallel_tool_calls is false" in internal_error_of(parse_tool_output, two, plan).message
    no_arguments = '<tool_call>{"name": "get_time"}</tool_call>'
    assert "'name' and 'arguments'" in internal_error_of(parse_tool_output, no_arguments, plan).message


def test_it_keeps_the_complete_calls_and_the_cut_off_rest_of_a_truncated_output():
    plan = parse_tools(TOOLS, "required", True)
    first = call_line("get_time", {"timezone": "UTC"})
    text, calls = parse_tool_output(f'{first}\n<tool_call>{{"name": "get_ti', plan, truncated=True)
    assert [c.name for c in calls] == ["get_time"] and text == '<tool_call>{"name": "get_ti'
    assert parse_tool_output("Sure, let me", plan, truncated=True) == ("Sure, let me", [])


def test_it_validates_json_output_and_explains_failures():
    validate_output("anything at all", OutputFormat("text", None, None, False))
    validate_output('{"a": [1]}', OutputFormat("json_object", None, None, False))
    json_object = OutputFormat("json_object", None, None, False)
    assert "not valid JSON" in internal_error_of(validate_output, '{"a": ', json_object).message
    assert "not an object (list)" in internal_error_of(validate_output, "[1]", json_object).message
    fmt = schema_format(CASES[1][2], "place")
    validate_output('{"landmark": "Louvre", "location": {"city": "Paris", "country": "France"}}', fmt)
    # Valid JSON that breaks the schema: the request asked for what the endpoint could not honour (400).
    err = error_of(validate_output, '{"landmark": "Louvre", "location": {"city": "Paris"}}', fmt)
    assert err.message == (
        "The model's answer does not match response_format.json_schema.schema ('place'): "
        "'country' is a required property (at location)."
    )


# --- the real model under these grammars ---------------------------------------------------------

MAX_TOKENS = 120
SAMPLINGS = [(0.0, 0), (0.8, 7)]  # greedy, and sampled with a fixed seed


@pytest.fixture(scope="module")
def llm():
    from llama_cpp import Llama

    return Llama(model_path=str(LOCAL_MODELS[SMOLLM2].weights_path()), n_ctx=2048, verbose=False)


def generate(llm, messages: list[dict], grammar: str | None, temperature: float, seed: int,
             max_tokens: int = MAX_TOKENS) -> tuple[str, str]:
    """The model's answer and finish reason, rendered with its own chat template."""
    from llama_cpp import LlamaGrammar

    result = llm.create_chat_completion(
        messages=messages, temperature=temperature, seed=seed, max_tokens=max_tokens,
        grammar=LlamaGrammar.from_string(grammar, verbose=False) if grammar else None,
    )
    choice = result["choices"][0]
    return choice["message"]["content"], choice["finish_reason"]


def with_system(text: str, messages: list[dict]) -> list[dict]:
    return [{"role": "system", "content": text}, *messages]


@pytest.mark.parametrize("temperature, seed", SAMPLINGS)
@pytest.mark.parametrize("name, prompt, schema", CASES, ids=[c[0] for c in CASES])
def test_the_model_always_answers_json_matching_the_schema(llm, name, prompt, schema, temperature, seed):
    fmt = schema_format(schema, name)
    text, finish = generate(llm, with_system(response_prompt(fmt), [{"role": "user", "content": prompt}]),
                            response_grammar(fmt), temperature, seed)
    assert finish == "stop", text  # the grammar completed: the model may only end once the JSON is whole
    jsonschema.validate(json.loads(text), schema)
    validate_output(text, fmt)


@pytest.mark.parametrize("temperature, seed", SAMPLINGS)
def test_the_model_always_answers_a_json_object_for_json_object(llm, temperature, seed):
    fmt = OutputFormat("json_object", None, None, False)
    text, finish = generate(llm, with_system(response_prompt(fmt), [{"role": "user", "content": "Describe a cat."}]),
                            response_grammar(fmt), temperature, seed)
    assert finish == "stop", text
    assert isinstance(json.loads(text), dict)
    validate_output(text, fmt)


def test_the_grammar_forces_json_even_when_the_prompt_asks_for_prose(llm):
    fmt = schema_format(CASES[0][2])
    text, finish = generate(llm, [{"role": "user", "content": "Write a haiku about autumn."}], response_grammar(fmt), 0.8, 3)
    assert finish == "stop", text
    validate_output(text, fmt)


def assert_valid_calls(calls: list[ToolCall], plan: ToolPlan) -> None:
    assert calls
    for call in calls:
        tool_ = plan.tool(call.name)
        assert tool_ is not None and tool_ in plan.callable_tools
        jsonschema.validate(json.loads(call.arguments), tool_.parameters)


@pytest.mark.parametrize("temperature, seed", SAMPLINGS)
@pytest.mark.parametrize("choice, prompt", [
    ("required", "What's the weather in Paris?"),
    ("required", "Tell me a joke."),  # no tool fits: a call is made anyway
    (FORCE_TIME, "What's the weather in Paris?"),  # another tool fits: the forced one is called
], ids=["required", "required-no-fit", "function"])
def test_the_model_always_makes_valid_calls_when_a_call_is_required(llm, choice, prompt, temperature, seed):
    plan = parse_tools(TOOLS, choice, False)
    text, finish = generate(llm, with_system(tool_prompt(plan), [{"role": "user", "content": prompt}]),
                            tool_grammar(plan), temperature, seed)
    assert finish == "stop", text
    content, calls = parse_tool_output(text, plan)
    assert content == "" and len(calls) == 1
    assert_valid_calls(calls, plan)
    if choice == FORCE_TIME:
        assert calls[0].name == "get_time"


@pytest.mark.parametrize("temperature, seed", SAMPLINGS)
def test_parallel_calls_are_valid_and_a_cut_off_block_keeps_its_complete_calls(llm, temperature, seed):
    # A 135M model tends to repeat a call: the block may end by the grammar's cap of
    # MAX_PARALLEL_CALLS or by the token limit, where the truncated contract applies.
    plan = parse_tools(TOOLS, FORCE_TIME, True)
    text, finish = generate(llm, with_system(tool_prompt(plan), [{"role": "user", "content": "What time is it in Paris?"}]),
                            tool_grammar(plan), temperature, seed)
    content, calls = parse_tool_output(text, plan, truncated=finish == "length")
    assert 1 <= len(calls) <= MAX_PARALLEL_CALLS
    assert_valid_calls(calls, plan)
    assert content == "" if finish == "stop" else content.startswith("<tool_call>") or content == ""


# An earlier exchange shows the model the call format in use: with it, even this small model
# calls a tool under "auto" when the question fits one, and answers in text when not.
HISTORY = [
    {"role": "user", "content": "What's the weather in London?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "London"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 12, "sky": "rain"}'},
    {"role": "assistant", "content": "It is 12°C and raining in London."},
]


@pytest.mark.parametrize("temperature, seed", SAMPLINGS)
@pytest.mark.parametrize("prompt, expect_call", [("What's the weather in Paris?", True), ("Thanks!", False)])
def test_under_auto_the_model_answers_plain_text_or_valid_calls(llm, prompt, expect_call, temperature, seed):
    plan = parse_tools(TOOLS, "auto", False)
    messages = render_tool_turns(with_system(tool_prompt(plan), [*HISTORY, {"role": "user", "content": prompt}]))
    text, finish = generate(llm, messages, tool_grammar(plan), temperature, seed, max_tokens=60)
    content, calls = parse_tool_output(text, plan, truncated=finish == "length")
    if calls:
        assert content == "" and finish == "stop"
        assert_valid_calls(calls, plan)
    else:
        assert content == text and not text.lstrip().startswith("<tool_call>")
    # What this model does with these prompts, so both branches of the grammar run:
    assert bool(calls) == expect_call, text
