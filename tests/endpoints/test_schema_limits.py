"""User JSON Schemas (response_format, tools[].function.parameters) cannot take the server down
(issue 10, items 1, 2 and 10): every size a schema can ask for is bounded with a 400 naming the
field and the limit, for the local model and for external providers alike; nesting is refused
before anything recursive reads it; patterns run on a linear-time engine; an answer that breaks
its schema is a 400 naming the path, never a 500."""
from __future__ import annotations

import json
import time

import pytest
import pytest_asyncio

from endpoints.config import apply, parse_text
from endpoints.errors import ServingError
from endpoints.providers import http
from endpoints.structured import parse_response_format, parse_tools, validate_output
from tests.conftest import ROOT, api_client
from tests.endpoints.test_invocations import post
from tests.fakes.openai_upstream import openai_upstream  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

LOCAL = "/serving-endpoints/local-smollm2-chat/invocations"
EXTERNAL = "/serving-endpoints/vendor-chat/invocations"
# Appended to the shipped endpoints.yaml: the local endpoints and one on a fake OpenAI-compatible vendor.
VENDOR = """
  - name: vendor-chat
    task: llm/v1/chat
    served_entities:
      - name: vendor-entity
        external_model:
          name: a-chat-model
          provider: openai-compatible
          openai_config: {{openai_api_base: "{base}"}}
"""
ASK = [{"role": "user", "content": "Answer in JSON."}]
SCHEMA_FIELD = "response_format.json_schema.schema"


@pytest.fixture
def vendor(openai_upstream, db):  # noqa: F811
    apply(parse_text((ROOT / "endpoints.yaml").read_text() + VENDOR.format(base=openai_upstream.base_url)))
    return openai_upstream


@pytest_asyncio.fixture(autouse=True)
async def pool():
    yield
    await http.aclose_client()


@pytest.fixture
def client(vendor, auth_headers):
    return api_client(auth_headers)


def response_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def with_schema(schema: dict) -> dict:
    return {"messages": ASK, "max_tokens": 16, "temperature": 0, "response_format": response_format(schema)}


def with_tool(parameters: dict) -> dict:
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    return {"messages": ASK, "max_tokens": 16, "temperature": 0, "tools": [tool], "tool_choice": "required"}


def nested(depth: int, leaf: dict | None = None) -> dict:
    schema = leaf or {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}, "required": ["x"]}
    return schema


async def refused(client, vendor, body: dict) -> list[str]:
    """Send ``body`` to the local and the external endpoint; both answer a 400 and the vendor is
    never called. Returns the two messages."""
    messages = []
    for url in (LOCAL, EXTERNAL):
        response = await post(client, url, body)
        assert response.status_code == 400, (url, response.status_code, response.content[:500])
        error = response.json()
        assert set(error) == {"error_code", "message"} and error["error_code"] == "INVALID_PARAMETER_VALUE"
        messages.append(error["message"])
    assert vendor.requests == []
    assert messages[0] == messages[1]  # one check, at validation, for every provider
    return messages


# --- sizes a schema can ask for -------------------------------------------------------------------


async def test_a_huge_min_items_is_refused_naming_the_field_and_the_limit(client, vendor):
    # 10⁹ made the llama.cpp grammar grow ~16 bytes per item until the server was killed.
    schema = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "integer"}, "minItems": 1_000_000_000}}}
    message = (await refused(client, vendor, with_schema(schema)))[0]
    assert message == f"Invalid '{SCHEMA_FIELD}.properties.items.minItems': at most 1000 (got 1000000000)."


async def test_huge_min_length_and_min_properties_are_refused(client, vendor):
    schema = {"type": "object", "properties": {"s": {"type": "string", "minLength": 10**7}}}
    assert (await refused(client, vendor, with_schema(schema)))[0] == (
        f"Invalid '{SCHEMA_FIELD}.properties.s.minLength': at most 100000 (got 10000000)."
    )
    schema = {"type": "object", "minProperties": 10**6}
    assert (await refused(client, vendor, with_schema(schema)))[0] == (
        f"Invalid '{SCHEMA_FIELD}.minProperties': at most 1000 (got 1000000)."
    )


async def test_a_tool_schema_is_bounded_the_same_way(client, vendor):
    parameters = {"type": "object", "properties": {"ids": {"type": "array", "minItems": 10**7}}}
    message = (await refused(client, vendor, with_tool(parameters)))[0]
    assert message == "Invalid 'tools[0].function.parameters.properties.ids.minItems': at most 1000 (got 10000000)."


async def test_a_wide_enum_is_refused(client, vendor):
    schema = {"type": "object", "properties": {"colour": {"enum": [f"c{i}" for i in range(5000)]}}}
    message = (await refused(client, vendor, with_schema(schema)))[0]
    assert message == f"Invalid '{SCHEMA_FIELD}.properties.colour.enum': at most 1000 values (got 5000)."


async def test_too_many_alternatives_or_properties_are_refused(client, vendor):
    schema = {"type": "object", "properties": {"v": {"anyOf": [{"const": i} for i in range(300)]}}}
    assert (await refused(client, vendor, with_schema(schema)))[0] == (
        f"Invalid '{SCHEMA_FIELD}.properties.v.anyOf': at most 256 subschemas (got 300)."
    )
    schema = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(300)}}
    assert (await refused(client, vendor, with_schema(schema)))[0] == (
        f"Invalid '{SCHEMA_FIELD}.properties': at most 256 properties in one object (got 300)."
    )


# --- nesting and $ref ------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [150, 300])
async def test_deep_nesting_is_a_400_not_a_recursion_error(client, vendor, depth):
    message = (await refused(client, vendor, with_schema(nested(depth))))[0]
    assert message.startswith(f"Invalid '{SCHEMA_FIELD}.properties.x.properties.x")
    assert message.endswith("': the schema nests deeper than 64 levels of JSON objects and arrays.")
    message = (await refused(client, vendor, with_tool(nested(depth))))[0]
    assert message.startswith("Invalid 'tools[0].function.parameters.properties.x")


async def test_nesting_through_a_chain_of_refs_is_bounded(client, vendor):
    # Flat in the JSON, 200 levels deep once the $refs are followed.
    defs = {f"d{i}": {"type": "object", "properties": {"x": {"$ref": f"#/$defs/d{i + 1}"}}} for i in range(200)}
    defs["d200"] = {"type": "string"}
    message = (await refused(client, vendor, with_schema({"$defs": defs, "$ref": "#/$defs/d0"})))[0]
    assert message.endswith("': subschemas nest deeper than 64 levels here once $refs are followed.")


async def test_a_ref_cycle_that_never_descends_is_refused_and_one_that_descends_is_not(client, vendor):
    # Checking any value against this schema never ends (a RecursionError, then a 500, before).
    schema = {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}
    message = (await refused(client, vendor, with_schema(schema)))[0]
    assert message == (
        f"Invalid '{SCHEMA_FIELD}.$defs.a': this subschema refers back to itself through $ref/allOf/anyOf/oneOf "
        "without descending into a property or item, so checking a value against it never ends."
    )
    # A tree recurses through its items: bounded by the value, so it is fine.
    tree = {"$defs": {"node": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}}}},
            "$ref": "#/$defs/node"}
    vendor.pieces = ['{"children": []}']
    response = await post(client, EXTERNAL, with_schema(tree))
    assert response.status_code == 200, response.content


# --- patterns --------------------------------------------------------------------------------------


async def test_a_pattern_re2_cannot_run_is_refused_saying_why(client, vendor):
    schema = {"type": "object", "properties": {"word": {"type": "string", "pattern": r"^(a+)\1$"}}}
    message = (await refused(client, vendor, with_schema(schema)))[0]
    assert message.startswith(f"Invalid '{SCHEMA_FIELD}.properties.word.pattern': the pattern '^(a+)\\\\1$' is not supported")
    assert "patterns run on RE2, a linear-time engine with no lookahead, lookbehind or backreferences" in message


def redos_format():
    # Python's re takes ~20 s on 29 characters (each 2 more: x4); RE2 is linear.
    return parse_response_format(response_format({
        "type": "object", "properties": {"code": {"type": "string", "pattern": "^(.+)+X$", "minLength": 29, "maxLength": 29}},
        "required": ["code"],
    }))


async def test_the_redos_pattern_is_checked_in_linear_time_with_the_right_verdict():
    fmt = redos_format()
    started = time.monotonic()
    with pytest.raises(ServingError) as info:
        validate_output(json.dumps({"code": "a" * 29}), fmt)
    validate_output(json.dumps({"code": "a" * 28 + "X"}), fmt)
    with pytest.raises(ServingError):
        validate_output(json.dumps({"code": "a" * 4000}), fmt)
    assert time.monotonic() - started < 1.0  # a guard: the backtracking check took ~20 s
    assert info.value.status == 400
    assert "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaa' does not match '^(.+)+X$' (at code)" in info.value.message


async def test_pattern_properties_and_their_additional_properties_never_backtrack():
    fmt = parse_response_format(response_format({
        "type": "object", "patternProperties": {"^(.+)+X$": {"type": "integer"}},
        "additionalProperties": False, "unevaluatedProperties": False,
    }))
    started = time.monotonic()
    with pytest.raises(ServingError) as info:
        validate_output(json.dumps({"a" * 40: 1}), fmt)
    validate_output(json.dumps({"a" * 40 + "X": 1}), fmt)
    assert time.monotonic() - started < 1.0
    assert info.value.status == 400 and "does not match any of the regexes: '^(.+)+X$'" in info.value.message


async def test_an_answer_failing_its_pattern_is_a_400_through_the_api(client):
    # The grammar cannot enforce the pattern: SmolLM2 writes 29 characters that do not end in X.
    # Before, the check ran ~20 s on the backtracking engine and the answer was a 500.
    body = {"messages": [{"role": "user", "content": "Give me a code."}], "max_tokens": 100, "temperature": 0,
            "response_format": response_format(redos_format().schema)}
    started = time.monotonic()
    response = await post(client, LOCAL, body)
    assert time.monotonic() - started < 30  # generation included; the check itself is microseconds
    assert response.status_code == 400, response.content
    error = response.json()
    assert error["error_code"] == "INVALID_PARAMETER_VALUE"
    assert error["message"].startswith("The model's answer does not match response_format.json_schema.schema ('answer'): ")
    assert "does not match '^(.+)+X$' (at code)." in error["message"]
    assert "The local model's grammar does not enforce pattern (checked after generation)" in error["message"]


# --- answers that break the schema, and the cost of the check ---------------------------------------


async def test_an_answer_nested_too_deep_to_check_is_a_clear_400():
    fmt = parse_response_format(response_format({"type": "object"}))
    for text in ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", '{"a": ' + "[" * 200 + "]" * 200 + "}"):
        with pytest.raises(ServingError) as info:
            validate_output(text, fmt)
        assert info.value.status == 400
        assert "nests deeper than 128 levels of objects and arrays" in info.value.message
        assert "maximum recursion depth" not in info.value.message


async def test_tool_arguments_breaking_their_schema_are_a_400_naming_the_tool_field():
    plan = parse_tools([{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"code": {"type": "string", "pattern": "^[0-9]+$"}}}}}], "required", False)
    from endpoints.structured import parse_tool_output

    with pytest.raises(ServingError) as info:
        parse_tool_output('<tool_call>{"name": "f", "arguments": {"code": "abc"}}</tool_call>', plan)
    assert info.value.status == 400
    assert info.value.message.startswith(
        "The model's arguments for 'f' do not match tools[0].function.parameters: 'abc' does not match '^[0-9]+$' (at code)."
    )


async def test_a_check_that_would_take_too_long_stops_with_a_400():
    alternatives = [{"type": "string", "pattern": f"^{i}$"} for i in range(256)]
    fmt = parse_response_format(response_format({"type": "object", "properties": {"a": {"type": "array", "items": {"anyOf": alternatives}}}}))
    started = time.monotonic()
    with pytest.raises(ServingError) as info:
        validate_output(json.dumps({"a": ["x"] * 2000}), fmt)
    assert time.monotonic() - started < 5.0
    assert info.value.status == 400 and "could not be checked within 50000 steps of the schema" in info.value.message


# --- the local grammar ------------------------------------------------------------------------------


async def test_a_grammar_over_its_limit_is_a_400_on_the_local_model_only(client, vendor):
    # Each array holds 1000 items written out in the grammar: 60 of them pass 1 MiB.
    schema = {"type": "object", "properties": {f"p{i}": {"type": "array", "items": {"type": "integer"}, "minItems": 1000} for i in range(60)}}
    started = time.monotonic()
    response = await post(client, LOCAL, with_schema(schema))
    assert time.monotonic() - started < 10
    assert response.status_code == 400, response.content
    assert response.json()["message"].startswith(
        f"Invalid '{SCHEMA_FIELD}': the local model's grammar for this schema would be "
    )
    assert "bytes, more than its limit of 1048576 bytes" in response.json()["message"]
    vendor.pieces = ["{}"]
    assert (await post(client, EXTERNAL, with_schema(schema))).status_code == 200
