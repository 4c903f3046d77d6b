"""OpenAI's Responses API on the one query path: ``POST /serving-endpoints/responses``.

What ``client.responses.create(model=ENDPOINT, …)`` of the OpenAI client (``base_url=HOST +
"/serving-endpoints"``) and LangChain's ``ChatDatabricks(..., use_responses_api=True)`` send. The
view translates the Responses request into our chat request body, calls
:func:`endpoints.service.prepare` and ``Query.result()`` / ``Query.stream()`` as the
chat-completions view does, and translates the joined answer or the event stream back into a
Response object or Response events. Pure translators first, then the view.

References: https://platform.openai.com/docs/api-reference/responses/create,
https://platform.openai.com/docs/api-reference/responses-streaming; field by field against the
``openai`` package's ``openai/types/responses`` (3.54).

Request → chat body:

* ``input``: a string (one user message) or a list of items. Messages (``role`` user, assistant,
  system or developer; ``content`` a string or ``input_text`` / ``output_text`` / ``input_image``
  parts) become chat messages. Consecutive ``reasoning``, assistant ``message`` and
  ``function_call`` items (what an earlier response's ``output`` holds) become one assistant turn:
  reasoning blocks (``encrypted_content`` is the block's signature), text, ``tool_calls``. A
  ``function_call_output`` becomes a ``tool`` message. ``instructions`` is a first system message.
* ``max_output_tokens`` → ``max_tokens``; ``temperature``, ``top_p``, ``stream``, ``user``,
  ``parallel_tool_calls`` and Fondasi's ``extra_params`` as they are.
* ``tools``: function tools in the flat shape ``{"type": "function", "name", "description",
  "parameters", "strict"}`` become chat completions' ``{"type": "function", "function": {…}}``
  (``strict`` only when given: the chat default, not strict). ``tool_choice`` ``{"type":
  "function", "name"}`` likewise (chat completions' own shape, which ``ChatDatabricks.bind_tools``
  sends, is taken too).
* ``text.format`` → ``response_format`` (``json_schema`` with its flat ``name`` / ``schema`` /
  ``strict`` / ``description``, ``json_object``; ``text`` needs none).
* ``reasoning.effort`` ``low`` / ``medium`` / ``high`` → ``reasoning_effort``, ``none`` →
  ``thinking: {"type": "disabled"}``. ``reasoning.summary`` is accepted: the whole reasoning is
  always returned as the summary.

Fondasi keeps no state and runs no tools, so ``previous_response_id``, ``conversation``,
``prompt``, ``store: true``, ``background: true``, ``truncation: "auto"``, built-in tools (web
search, file search…) and files are a 400 naming the parameter, as is any parameter not listed
here. ``metadata``, ``stream_options.include_obfuscation`` and ``include:
["reasoning.encrypted_content"]`` are accepted (reasoning always carries its signature, so that
``input += response.output`` works in the next turn).

Answer → Response: ``{"id": "resp_…", "object": "response", "created_at", "status", "model",
"output": [reasoning?, message?, function_call…], "usage": {"input_tokens", "output_tokens",
"total_tokens", "input_tokens_details", "output_tokens_details": {"reasoning_tokens"}}, …}`` with
the request's settings repeated. ``status`` is ``completed``, or ``incomplete`` with
``incomplete_details.reason`` ``max_output_tokens`` (or ``content_filter``). The client computes
``output_text``.

Streaming: each event is ``event: <type>``, ``data: <json with type and sequence_number>`` and a
blank line, as OpenAI sends them, in OpenAI's order (``response.created``,
``response.in_progress``, per output item ``output_item.added`` … ``output_item.done``, then
``response.completed`` or ``response.incomplete``); no ``data: [DONE]``. WIRE.md's "no ``event:``
lines" rule is for mlflow's ``predict_stream``, which never calls this route; the OpenAI client
reads ``data`` either way, and the names keep clients that dispatch on them working. Errors before
the first event get WIRE.md's error body and status; a failure after that is an ``error`` event
(``code``, ``message``: LangChain raises on it) then ``response.failed`` (the terminal event, with
``response.error``).
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from . import service, wire
from .errors import ServingError, invalid
from .events import Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from .schemas import CHAT
from .views import api, json_response, read_json

log = logging.getLogger(__name__)

ROUTE = "/serving-endpoints/responses"

# Request parameters handled here; any other is a 400 naming it.
PARAMETERS = frozenset({
    "model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "stream", "tools",
    "tool_choice", "parallel_tool_calls", "text", "reasoning", "metadata", "user", "include",
    "stream_options", "extra_params", "store", "background", "truncation",
})
# Accepted only with the value that asks for nothing Fondasi lacks.
HARMLESS = {"store": False, "background": False, "truncation": "disabled"}
WHY_NOT = {
    "previous_response_id": "Fondasi keeps no responses; send the whole conversation in 'input' "
                            "(the earlier input items, then the previous response's output items).",
    "conversation": "Fondasi keeps no conversations; send the whole conversation in 'input'.",
    "prompt": "Fondasi has no stored prompts; send the prompt in 'instructions' and 'input'.",
    "store": "Fondasi keeps no responses; leave it out or set it to false.",
    "background": "Fondasi answers in the foreground only; leave it out or set it to false.",
    "truncation": "Fondasi never drops input to make it fit; leave it out or set it to 'disabled'.",
}
ROLES = ("user", "assistant", "system", "developer")
FUNCTION_TOOL = '{"type": "function", "name": ..., "parameters": {...}}'
TOOL_KEYS = ("name", "description", "parameters", "strict")
SCHEMA_KEYS = ("name", "schema", "description", "strict")
EFFORTS = ("low", "medium", "high")
SUMMARIES = ("auto", "concise", "detailed")
INCLUDABLE = ("reasoning.encrypted_content",)
MAX_METADATA = 16


# ---------------------------------------------------------------------------------------------
# Request: Responses → our chat request body


@dataclass(frozen=True)
class ResponsesRequest:
    """A checked Responses request: ``chat`` is our chat request body (for ``service.prepare``);
    ``echo`` holds the settings every Response object repeats."""

    model: str
    chat: dict[str, Any]
    echo: dict[str, Any]


def parse_request(body: Any) -> ResponsesRequest:
    """Translate a Responses request body; raise a 400 naming the first parameter Fondasi cannot honour.

    Sample (https://platform.openai.com/docs/api-reference/responses/create)::

        {"model": "local-smollm2-chat", "instructions": "Answer in one word.",
         "input": [{"role": "user", "content": [{"type": "input_text", "text": "Capital of France?"}]}],
         "max_output_tokens": 16, "reasoning": {"effort": "low"}, "stream": true}

    becomes ``{"messages": [{"role": "system", "content": "Answer in one word."}, {"role": "user",
    "content": [{"type": "text", "text": "Capital of France?"}]}], "max_tokens": 16,
    "reasoning_effort": "low", "stream": true}``. A ``null`` parameter counts as absent.
    """
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    body = {key: value for key, value in body.items() if value is not None}
    for key, value in body.items():
        if key in HARMLESS and value == HARMLESS[key]:
            continue
        if key not in PARAMETERS or key in HARMLESS:
            why = WHY_NOT.get(key, "remove it")
            raise invalid(f"Parameter '{key}' is not supported on {ROUTE}: {why}.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("Missing 'model': set it to the name of a serving endpoint.")
    if "input" not in body:
        raise invalid("Missing required parameter 'input': give the prompt as a string or a list of input items.")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid("'instructions' must be a string.")
    chat: dict[str, Any] = {"messages": chat_messages(body["input"], instructions)}
    for name in ("temperature", "top_p", "stream", "user", "parallel_tool_calls", "extra_params"):
        if name in body:
            chat[name] = body[name]
    if "max_output_tokens" in body:
        chat["max_tokens"] = _positive_int(body["max_output_tokens"], "max_output_tokens")
    if body.get("tools"):  # an empty list: no tools
        chat["tools"] = chat_tools(body["tools"])
    if "tool_choice" in body:
        chat["tool_choice"] = chat_tool_choice(body["tool_choice"])
    if "text" in body:
        response_format = chat_response_format(body["text"])
        if response_format is not None:
            chat["response_format"] = response_format
    if "reasoning" in body:
        chat.update(chat_reasoning(body["reasoning"]))
    _check_metadata(body.get("metadata"))
    _check_include(body.get("include"))
    _check_stream_options(body.get("stream_options"))
    return ResponsesRequest(model, chat, echo(body))


def chat_messages(value: Any, instructions: str | None) -> list[dict[str, Any]]:
    """Our chat ``messages`` for ``input`` (a string or a list of items) after ``instructions``.

    Sample input items (an earlier answer sent back with a tool result)::

        [{"role": "user", "content": "Weather in Paris?"},
         {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Use the tool."}],
          "encrypted_content": "fondasi.v1.…"},
         {"type": "function_call", "id": "fc_1", "call_id": "call_0", "name": "get_weather",
          "arguments": "{\\"city\\": \\"Paris\\"}"},
         {"type": "function_call_output", "call_id": "call_0", "output": "18°C, sunny"}]

    become a user message, one assistant message (a reasoning block with its signature, and
    ``tool_calls``) and a ``tool`` message.
    """
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    if isinstance(value, str):
        return [*messages, {"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise invalid("'input' must be a string or a non-empty list of input items.")
    turn: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None  # an assistant turn's content, tool calls
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid(f"{where} must be an object: a message, function_call, function_call_output or reasoning item.")
        kind = item.get("type", "message")
        if kind not in ("message", "reasoning", "function_call", "function_call_output"):
            raise invalid(
                f"{where}.type {kind!r} is not supported; use 'message', 'function_call', "
                f"'function_call_output' or 'reasoning' (Fondasi runs no built-in tools)."
            )
        if kind == "message" and item.get("role") not in ROLES:
            raise invalid(f"{where}.role must be 'user', 'assistant', 'system' or 'developer'; got {item.get('role')!r}.")
        if kind == "function_call_output" or (kind == "message" and item["role"] != "assistant"):
            if turn is not None:
                messages.append(_assistant(*turn))
                turn = None
            messages.append(_tool_result(item, where) if kind == "function_call_output" else _message(item, where))
            continue
        if turn is None:
            turn = ([], [])
        content, calls = turn
        if kind == "message":
            text = item.get("content")
            content.extend([{"type": "text", "text": text}] if isinstance(text, str) else _parts(text, f"{where}.content"))
        elif kind == "reasoning":
            content.extend(_reasoning_block(item, where))
        else:
            calls.append(_tool_call(item, where))
    if turn is not None:
        messages.append(_assistant(*turn))
    return messages


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    content = item.get("content")
    if isinstance(content, str):
        return {"role": item["role"], "content": content}
    return {"role": item["role"], "content": _parts(content, f"{where}.content")}


def _parts(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        raise invalid(f"{where} must be a string or a list of content parts.")
    return [_part(part, f"{where}[{j}]") for j, part in enumerate(content)]


def _part(part: Any, where: str) -> dict[str, Any]:
    """A content part in our chat shape: ``input_text`` / ``output_text`` → ``text``,
    ``input_image`` ``{"image_url": "data:…" | "https://…", "detail"?}`` → ``image_url``."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text"):
        if not isinstance(part.get("text"), str):
            raise invalid(f"{where}.text must be a string.")
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        if part.get("file_id") is not None:
            raise invalid(f"{where}.file_id is not supported: Fondasi stores no files; send the image as 'image_url'.")
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise invalid(f"{where}.image_url is missing: give a data URL (data:image/png;base64,…) or an http(s) URL.")
        image: dict[str, Any] = {"url": url}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        raise invalid(f"{where}.type 'input_file' is not supported: Fondasi reads no files; put the text in 'input_text'.")
    raise invalid(f"{where}.type must be 'input_text', 'output_text' or 'input_image'; got {kind!r}.")


def _reasoning_block(item: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """A reasoning item as a reasoning block (none when it has no summary text: nothing to show)."""
    summary = item.get("summary")
    if not isinstance(summary, list) or not all(isinstance(s, dict) and isinstance(s.get("text"), str) for s in summary):
        raise invalid(f"{where}.summary must be a list of {{\"type\": \"summary_text\", \"text\": ...}}.")
    text = "".join(s["text"] for s in summary)
    signature = item.get("encrypted_content")
    if not text and signature is None:
        return []
    return [{"type": "reasoning", "summary": [{"type": "summary_text", "text": text, "signature": signature}]}]


def _tool_call(item: dict[str, Any], where: str) -> dict[str, Any]:
    for name in ("call_id", "name", "arguments"):
        if not isinstance(item.get(name), str):
            raise invalid(f"{where}.{name} must be a string.")
    return {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": item["arguments"]}}


def _tool_result(item: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(item.get("call_id"), str):
        raise invalid(f"{where}.call_id must be a string: the call_id of the function_call this answers.")
    output = item.get("output")
    if not isinstance(output, str):
        parts = _parts(output, f"{where}.output")
        if any(part["type"] != "text" for part in parts):
            raise invalid(f"{where}.output may hold text only ('input_text' parts).")
        output = "".join(part["text"] for part in parts)
    return {"role": "tool", "tool_call_id": item["call_id"], "content": output}


def _assistant(content: list[dict[str, Any]], calls: list[dict[str, Any]]) -> dict[str, Any]:
    joined: Any = content
    if all(part["type"] == "text" for part in content):
        joined = "".join(part["text"] for part in content)
    message: dict[str, Any] = {"role": "assistant", "content": joined if joined or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def chat_tools(tools: Any) -> list[dict[str, Any]]:
    """Flat function tools as chat completions' tools; the tools themselves are checked by
    :func:`endpoints.structured.parse_tools` (names, JSON Schemas)."""
    if not isinstance(tools, list):
        raise invalid(f"'tools' must be a list of function tools like {FUNCTION_TOOL}.")
    out = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise invalid(f"{where} must be an object like {FUNCTION_TOOL}.")
        if tool.get("type") != "function":
            raise invalid(
                f"{where}.type {tool.get('type')!r} is not supported: Fondasi runs no built-in tools "
                f"(web search, file search, code interpreter…); give function tools like {FUNCTION_TOOL} "
                f"and run them yourself."
            )
        unknown = sorted(set(tool) - {"type", *TOOL_KEYS})
        if unknown:
            raise invalid(f"{where} has unknown key {unknown[0]!r}; allowed keys: type, {', '.join(TOOL_KEYS)}.")
        out.append({"type": "function", "function": {key: tool[key] for key in TOOL_KEYS if key in tool}})
    return out


def chat_tool_choice(value: Any) -> Any:
    """``"auto"`` / ``"none"`` / ``"required"`` as they are; ``{"type": "function", "name"}`` in
    chat completions' shape."""
    if isinstance(value, dict) and value.get("type") == "function":
        if "function" in value:  # chat completions' shape, as ChatDatabricks.bind_tools sends it
            return value
        unknown = sorted(set(value) - {"type", "name"})
        if unknown:
            raise invalid(f"tool_choice has unknown key {unknown[0]!r}; use {{\"type\": \"function\", \"name\": ...}}.")
        return {"type": "function", "function": {"name": value.get("name")}}
    if isinstance(value, dict):
        raise invalid(
            f"tool_choice.type {value.get('type')!r} is not supported: use 'auto', 'none', 'required' "
            f"or {{\"type\": \"function\", \"name\": ...}} (Fondasi runs no built-in tools)."
        )
    return value  # a string: checked with the tools


def chat_response_format(text: Any) -> dict[str, Any] | None:
    """``text: {"format": {...}}`` as ``response_format``; None for plain text.

    Sample: ``{"format": {"type": "json_schema", "name": "city", "schema": {...}, "strict": true}}``
    → ``{"type": "json_schema", "json_schema": {"name": "city", "schema": {...}, "strict": true}}``.
    """
    if not isinstance(text, dict):
        raise invalid("'text' must be an object like {\"format\": {\"type\": \"json_schema\", ...}}.")
    for key in text:
        if key != "format":
            raise invalid(f"Parameter 'text.{key}' is not supported on {ROUTE}: remove it.")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise invalid(f"text.format.type must be 'text', 'json_object' or 'json_schema'; got {kind!r}.")
    allowed = ("type", *SCHEMA_KEYS) if kind == "json_schema" else ("type",)
    unknown = sorted(set(fmt) - set(allowed))
    if unknown:
        raise invalid(f"text.format has unknown key {unknown[0]!r}; allowed keys for '{kind}': {', '.join(allowed)}.")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {key: fmt[key] for key in SCHEMA_KEYS if key in fmt}}


def chat_reasoning(reasoning: Any) -> dict[str, Any]:
    """``reasoning: {"effort", "summary"}`` as our ``reasoning_effort`` or ``thinking``."""
    if not isinstance(reasoning, dict):
        raise invalid("'reasoning' must be an object like {\"effort\": \"low\"}.")
    unknown = sorted(set(reasoning) - {"effort", "summary", "generate_summary"})
    if unknown:
        raise invalid(f"Parameter 'reasoning.{unknown[0]}' is not supported on {ROUTE}: remove it.")
    for key in ("summary", "generate_summary"):
        if reasoning.get(key) is not None and reasoning[key] not in SUMMARIES:
            raise invalid(f"reasoning.{key} must be 'auto', 'concise' or 'detailed'; got {reasoning[key]!r}.")
    effort = reasoning.get("effort")
    if effort is None:
        return {}
    if effort == "none":
        return {"thinking": {"type": "disabled"}}
    if effort not in EFFORTS:
        raise invalid(f"reasoning.effort must be 'none', 'low', 'medium' or 'high'; got {effort!r}.")
    return {"reasoning_effort": effort}


def echo(body: dict[str, Any]) -> dict[str, Any]:
    """The request's settings, as every Response object repeats them (defaults filled in)."""
    reasoning = body.get("reasoning") or {}
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "metadata": body.get("metadata", {}),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": False,
        "temperature": body.get("temperature"),
        "text": {"format": (body.get("text") or {}).get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p"),
        "truncation": "disabled",
        "user": body.get("user"),
    }


def _positive_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise invalid(f"'{name}' must be a whole number of tokens, at least 1; got {value!r}.")
    return value


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if (
        not isinstance(metadata, dict)
        or len(metadata) > MAX_METADATA
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise invalid(f"'metadata' must be an object of at most {MAX_METADATA} string values.")


def _check_include(include: Any) -> None:
    if include is None:
        return
    if not isinstance(include, list):
        raise invalid("'include' must be a list.")
    for value in include:
        if value not in INCLUDABLE:
            raise invalid(
                f"include {value!r} is not supported: Fondasi can include only 'reasoning.encrypted_content' "
                f"(and always does)."
            )


def _check_stream_options(options: Any) -> None:
    # include_obfuscation pads deltas against a side channel; Fondasi sends none, so any value is honoured.
    if options is None:
        return
    if not isinstance(options, dict) or not all(key == "include_obfuscation" for key in options):
        raise invalid("'stream_options' may hold only 'include_obfuscation'.")


# ---------------------------------------------------------------------------------------------
# Answer: our result or events → Response object and events


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def response_id(query: service.Query) -> str:
    """``resp_`` and the hex of the query's own id."""
    return "resp_" + query.id.rpartition("-")[2]


def outcome(finish_reason: str | None) -> tuple[str, dict[str, str] | None]:
    """The Response ``status`` and ``incomplete_details`` for a finish reason."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def reasoning_item(item_id: str, text: str | None, signature: str | None = None) -> dict[str, Any]:
    """A reasoning output item; ``text`` None: not written yet (an empty summary)."""
    item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": [] if text is None else [summary_part(text)]}
    if signature is not None:
        item["encrypted_content"] = signature
    return item


def summary_part(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    """An assistant message output item; ``text`` None: not written yet (no content part)."""
    content = [] if text is None else [text_part(text)]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id, "type": "function_call", "status": status, "call_id": call_id, "name": name, "arguments": arguments,
    }


def response_object(
    query: service.Query,
    echoed: dict[str, Any],
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    *,
    incomplete: dict[str, str] | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Response object. Sample (trimmed)::

        {"id": "resp_67cc…", "object": "response", "created_at": 1741476542, "status": "completed",
         "error": null, "incomplete_details": null, "model": "smollm2-135m-instruct",
         "output": [{"id": "msg_67cc…", "type": "message", "status": "completed", "role": "assistant",
                     "content": [{"type": "output_text", "text": "Paris.", "annotations": [], "logprobs": []}]}],
         "usage": {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3,
                   "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 39}, ...}
    """
    return {
        "id": response_id(query),
        "object": "response",
        "created_at": query.created,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": incomplete,
        **echoed,
        "model": query.model,
        "output": output,
        "usage": usage_dict(usage) if usage is not None else None,
    }


def response_body(query: service.Query, echoed: dict[str, Any], result: service.Result) -> dict[str, Any]:
    """The Response object of a joined answer: reasoning, then the message (when there is text,
    or nothing else), then the function calls."""
    choice = result.choices[0] if result.choices else service.Choice(0)
    status, incomplete = outcome(choice.finish_reason)
    item_status = "completed" if status == "completed" else "incomplete"
    output = []
    if choice.reasoning is not None:
        output.append(reasoning_item(new_id("rs"), choice.reasoning, choice.signature))
    if choice.text or not (output or choice.tool_calls):
        output.append(message_item(new_id("msg"), choice.text, item_status))
    for call in choice.tool_calls:
        output.append(function_call_item(new_id("fc"), call.id, call.name, call.arguments, item_status))
    return response_object(query, echoed, status, output, result.usage, incomplete=incomplete)


@dataclass
class _Item:
    """An output item being streamed."""

    index: int
    id: str
    kind: str  # "reasoning", "message" or "function_call"
    pieces: list[str] = field(default_factory=list)
    signature: str | None = None
    call_id: str = ""
    name: str = ""

    def snapshot(self, status: str) -> dict[str, Any]:
        text = "".join(self.pieces)
        if self.kind == "reasoning":
            return reasoning_item(self.id, text, self.signature)
        if self.kind == "message":
            return message_item(self.id, text, status)
        return function_call_item(self.id, self.call_id, self.name, text, status)


class EventWriter:
    """Turns one query's events into the Responses API's SSE events, in OpenAI's order.

    Reasoning and text each stream into one open item (reasoning summary deltas, output text
    deltas); each tool call is an item of its own. A new kind of item closes the open ones (their
    ``…done`` events), and so does ``Finish``. Sample stream of a short answer (one ``event:`` and
    one ``data:`` line each, ``type`` and ``sequence_number`` left out here)::

        response.created            {"response": {"id": "resp_…", "status": "in_progress", "output": [], …}}
        response.in_progress        {"response": {…}}
        response.output_item.added  {"output_index": 0, "item": {"id": "msg_…", "type": "message",
                                     "status": "in_progress", "role": "assistant", "content": []}}
        response.content_part.added {"item_id": "msg_…", "output_index": 0, "content_index": 0,
                                     "part": {"type": "output_text", "text": "", …}}
        response.output_text.delta  {"item_id": "msg_…", "output_index": 0, "content_index": 0, "delta": "Paris", …}
        response.output_text.done   {… "text": "Paris."}
        response.content_part.done  {… "part": {"type": "output_text", "text": "Paris.", …}}
        response.output_item.done   {"output_index": 0, "item": {… "status": "completed", "content": [{…}]}}
        response.completed          {"response": {… "status": "completed", "output": [{…}], "usage": {…}}}
    """

    def __init__(self, query: service.Query, echoed: dict[str, Any]) -> None:
        self.query = query
        self.echoed = echoed
        self.sequence = 0
        self.opened = 0  # output items so far: the next one's output_index
        self.open: dict[Any, _Item] = {}  # "reasoning", "message" or ("call", number) -> item
        self.done: dict[int, dict[str, Any]] = {}  # output_index -> finished item
        self.reason: str | None = None
        self.usage = Usage(0, 0)

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = orjson.dumps({"type": kind, "sequence_number": self.sequence, **fields})
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(self.query, self.echoed, status, **extra)

    def start(self) -> bytes:
        """``response.created`` and ``response.in_progress``."""
        snapshot = self._response("in_progress", output=[], usage=None)
        return self._event("response.created", response=snapshot) + self._event("response.in_progress", response=snapshot)

    def encode(self, event: Event) -> bytes:
        """The SSE events for one of our events (none for some)."""
        kind = type(event)
        if kind is TextDelta:
            if not event.text:  # opens no message: an answer of tool calls only has none
                return b""
            out, item = self._item("message")
            item.pieces.append(event.text)
            return out + self._event(
                "response.output_text.delta", item_id=item.id, output_index=item.index, content_index=0,
                delta=event.text, logprobs=[],
            )
        if kind is ReasoningDelta:
            out, item = self._item("reasoning")
            if event.signature is not None:
                item.signature = event.signature
            if event.text:
                item.pieces.append(event.text)
                out += self._event(
                    "response.reasoning_summary_text.delta", item_id=item.id, output_index=item.index,
                    summary_index=0, delta=event.text,
                )
            return out
        if kind is ToolCallDelta:
            out, item = self._item(("call", event.call), event)
            if event.arguments:
                item.pieces.append(event.arguments)
                out += self._event(
                    "response.function_call_arguments.delta", item_id=item.id, output_index=item.index,
                    delta=event.arguments,
                )
            return out
        if kind is Finish:
            self.reason = event.reason
            return self._close(list(self.open))
        if kind is Usage:
            self.usage = event
        return b""

    def end(self) -> bytes:
        """Close what is open, then ``response.completed`` (or ``response.incomplete``)."""
        out = self._close(list(self.open))
        if not self.opened:  # an empty answer is still an (empty) message
            opening, _ = self._item("message")
            out += opening + self._close(["message"])
        status, incomplete = outcome(self.reason)
        response = self._response(status, output=self._output(), usage=self.usage, incomplete=incomplete)
        return out + self._event(f"response.{status}", response=response)

    def fail(self, exc: ServingError) -> bytes:
        """An ``error`` event, then ``response.failed`` with the output so far."""
        if exc.status == 429:
            code = "rate_limit_exceeded"
        else:
            code = "invalid_prompt" if exc.status < 500 else "server_error"
        items = {**self.done, **{item.index: item.snapshot("incomplete") for item in self.open.values()}}
        output = [items[index] for index in sorted(items)]
        response = self._response("failed", output=output, usage=None, error={"code": code, "message": exc.message})
        return (self._event("error", code=exc.code, message=exc.message, param=None)
                + self._event("response.failed", response=response))

    def _output(self) -> list[dict[str, Any]]:
        return [self.done[index] for index in sorted(self.done)]

    def _item(self, key: Any, call: ToolCallDelta | None = None) -> tuple[bytes, _Item]:
        """The open item for ``key``, opening it (and closing the others it follows) if needed."""
        if key in self.open:
            return b"", self.open[key]
        # Text and reasoning close everything open; a tool call closes the text and reasoning only.
        out = self._close([k for k in self.open if call is None or not isinstance(k, tuple)])
        if call is not None:
            call_id = call.id or new_id("call")
            item = _Item(self.opened, new_id("fc"), "function_call", call_id=call_id, name=call.name or "")
        else:
            item = _Item(self.opened, new_id("rs" if key == "reasoning" else "msg"), key)
        self.opened += 1
        self.open[key] = item
        out += self._event("response.output_item.added", output_index=item.index, item=self._added(item))
        if item.kind == "message":
            out += self._event(
                "response.content_part.added", item_id=item.id, output_index=item.index, content_index=0,
                part=text_part(""),
            )
        elif item.kind == "reasoning":
            out += self._event(
                "response.reasoning_summary_part.added", item_id=item.id, output_index=item.index, summary_index=0,
                part=summary_part(""),
            )
        return out, item

    @staticmethod
    def _added(item: _Item) -> dict[str, Any]:
        if item.kind == "reasoning":
            return reasoning_item(item.id, None)
        if item.kind == "message":
            return message_item(item.id, None, "in_progress")
        return function_call_item(item.id, item.call_id, item.name, "", "in_progress")

    def _close(self, keys: list[Any]) -> bytes:
        out = b""
        status = "completed" if outcome(self.reason)[0] == "completed" else "incomplete"
        for key in keys:
            item = self.open.pop(key)
            text = "".join(item.pieces)
            where = {"item_id": item.id, "output_index": item.index}
            if item.kind == "message":
                out += self._event("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
                out += self._event("response.content_part.done", **where, content_index=0, part=text_part(text))
            elif item.kind == "reasoning":
                out += self._event("response.reasoning_summary_text.done", **where, summary_index=0, text=text)
                out += self._event(
                    "response.reasoning_summary_part.done", **where, summary_index=0, part=summary_part(text),
                )
            else:
                out += self._event("response.function_call_arguments.done", **where, arguments=text)
            self.done[item.index] = item.snapshot(status)
            out += self._event("response.output_item.done", output_index=item.index, item=self.done[item.index])
        return out


async def sse_body(writer: EventWriter, stream: service.EventStream) -> AsyncIterator[bytes]:
    query = writer.query
    try:
        yield writer.start()
        async for event in wire.with_keepalive(stream, settings.STREAM_KEEPALIVE_SECONDS):
            if event is None:
                yield wire.KEEPALIVE
                continue
            data = writer.encode(event)
            if data:
                yield data
        yield writer.end()
    except ServingError as exc:
        query.log(0, 0, error=exc.code)
        yield writer.fail(exc)
    except Exception:  # noqa: BLE001 - reported in the stream, never as a traceback
        ref = uuid.uuid4().hex[:12]
        log.exception("Internal error %s while streaming %s", ref, query.endpoint.name)
        yield writer.fail(ServingError(f"Internal error (reference {ref}) while streaming.", "INTERNAL_ERROR"))
    finally:
        # Runs on normal end, on error and when the client goes away: closing stops generation upstream.
        await stream.aclose()


# ---------------------------------------------------------------------------------------------
# The view


@api("POST")
async def responses(request: HttpRequest) -> HttpResponse:
    """``POST /serving-endpoints/responses`` — OpenAI's Responses API, on chat endpoints."""
    parsed = parse_request(read_json(request))
    query = await service.prepare(parsed.model, parsed.chat, expect_task=CHAT, route=request.path)
    headers = {"served-model-name": query.entity.name}
    if not query.streaming:
        return json_response(response_body(query, parsed.echo, await query.result()), headers=headers)
    stream = await query.stream()  # errors before the first event still get a proper status
    response = StreamingHttpResponse(
        sse_body(EventWriter(query, parsed.echo), stream), content_type="text/event-stream", headers=headers,
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
