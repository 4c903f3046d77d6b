"""Typed requests for the three tasks, validated once for every surface.

:func:`parse` turns a JSON body into one of the request models or raises a
:class:`~endpoints.errors.ServingError` whose message names the first problem in words a person
can act on. Unknown parameters are rejected rather than silently ignored.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import ServingError, invalid
from .json_limits import check_json

CHAT = "llm/v1/chat"
COMPLETIONS = "llm/v1/completions"
EMBEDDINGS = "llm/v1/embeddings"
TASKS = (CHAT, COMPLETIONS, EMBEDDINGS)

ROLES = ("system", "user", "assistant", "tool", "developer")
MAX_N = 8
MAX_STOP = 8


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageUrl(_Strict):
    url: str
    detail: str | None = None


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


class SummaryText(_Strict):
    type: Literal["summary_text"]
    text: str
    signature: str | None = None


class ReasoningPart(_Strict):
    """A reasoning block of an earlier assistant answer, sent back by the client."""

    type: Literal["reasoning"]
    summary: list[SummaryText]


ContentPart = Annotated[Union[TextPart, ImagePart, ReasoningPart], Field(discriminator="type")]


class ChatMessage(BaseModel):
    # Assistant turns sent back by clients can carry fields we do not use (refusal, audio…);
    # they do not change the output, so they are tolerated here.
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @field_validator("role")
    @classmethod
    def _known_role(cls, value: str) -> str:
        if value not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}; got '{value}'")
        return value

    @model_validator(mode="after")
    def _has_content(self) -> "ChatMessage":
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a '{self.role}' message needs 'content'")
        if self.role != "assistant" and self.reasoning_parts():
            raise ValueError(f"reasoning blocks belong in assistant messages, not in a '{self.role}' message")
        return self

    def reasoning_parts(self) -> list[tuple[int, ReasoningPart]]:
        """The reasoning blocks of this message with their positions in ``content``."""
        if not isinstance(self.content, list):
            return []
        return [(i, part) for i, part in enumerate(self.content) if isinstance(part, ReasoningPart)]

    def reasoning_text(self) -> str:
        return "".join(s.text for _, part in self.reasoning_parts() for s in part.summary)

    def without_reasoning(self) -> "ChatMessage":
        """A copy without reasoning blocks (what the model sees of an earlier turn)."""
        if not self.reasoning_parts():
            return self
        kept = [part for part in self.content if not isinstance(part, ReasoningPart)]
        return self.model_copy(update={"content": kept if kept else ""})

    def text(self) -> str:
        """The message's text, joining text parts."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    def has_images(self) -> bool:
        return isinstance(self.content, list) and any(isinstance(p, ImagePart) for p in self.content)

    def images(self) -> list[ImagePart]:
        if not isinstance(self.content, list):
            return []
        return [p for p in self.content if isinstance(p, ImagePart)]


class StreamOptions(_Strict):
    include_usage: bool = False


class _Generation(_Strict):
    """Parameters shared by chat and completions requests."""

    model: str | None = None  # the endpoint name on the OpenAI-compatible routes
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    # vLLM's min_tokens: end-of-generation is impossible before this many tokens.
    min_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    extra_params: dict[str, Any] = Field(default_factory=dict)
    # Recorded, never change the output.
    user: str | None = None
    client_request_id: str | None = None
    usage_context: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed; got {len(stops)}")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty strings")
        return stops

    @model_validator(mode="after")
    def _fold_aliases(self) -> "_Generation":
        if self.max_tokens is None and self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        self.max_completion_tokens = None
        if self.min_tokens is not None and self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(
                f"Invalid 'min_tokens': must be at most max_tokens ({self.max_tokens}) (got {self.min_tokens})"
            )
        return self

    @property
    def stop_list(self) -> list[str]:
        return list(self.stop or [])  # normalised to a list by the validator

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def generation_params(self) -> dict[str, Any]:
        """The optional parameters the client set that change the output, by name."""
        names = (
            "max_tokens", "min_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty",
        )
        params = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        if self.n != 1:
            params["n"] = self.n
        return params


# OpenAI's reasoning_effort as a thinking budget, in tokens (capped to half of max_tokens).
REASONING_EFFORT_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384}


class Thinking(_Strict):
    type: Literal["enabled", "disabled"]
    budget_tokens: int | None = Field(default=None, ge=1)


class ChatRequest(_Generation):
    task: Literal["llm/v1/chat"] = Field(default=CHAT, exclude=True)
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    thinking: Thinking | None = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    # Tools and response_format, checked and parsed once for every provider (endpoints.structured).
    _tool_plan: Any = PrivateAttr(default=None)
    _output_format: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _structured(self) -> "ChatRequest":
        from .structured import parse_response_format, parse_tools

        # These raise ServingError (400) naming the field, which pydantic lets through as is.
        self._tool_plan = parse_tools(self.tools, self.tool_choice, self.parallel_tool_calls)
        self._output_format = parse_response_format(self.response_format)
        return self

    @property
    def tool_plan(self):
        """The parsed ``tools``/``tool_choice``/``parallel_tool_calls`` (a ``structured.ToolPlan``), or None."""
        return self._tool_plan

    @property
    def output_format(self):
        """The parsed ``response_format`` (a ``structured.OutputFormat``), or None."""
        return self._output_format

    @model_validator(mode="after")
    def _reasoning(self) -> "ChatRequest":
        if self.thinking is not None and self.reasoning_effort is not None:
            raise ValueError("give either 'thinking' or 'reasoning_effort', not both")
        thinking = self.thinking
        if thinking is not None and thinking.type == "enabled":
            budget = thinking.budget_tokens
            if budget is None:
                raise ValueError("thinking.budget_tokens is required when thinking is enabled")
            if self.max_tokens is not None and budget >= self.max_tokens:
                raise ValueError(
                    f"thinking.budget_tokens ({budget}) must be less than max_tokens ({self.max_tokens}): "
                    "the answer comes out of max_tokens too"
                )
        if self.reasoning_effort is not None and self.max_tokens is not None and self.max_tokens < 2:
            raise ValueError(f"max_tokens ({self.max_tokens}) leaves no room for reasoning")
        # Only the latest assistant turn's reasoning reaches the model (and counts as input), and
        # that of every tool-calling turn since the last user message: vendors (Anthropic, Gemini)
        # require the signed reasoning of each step of an ongoing tool loop.
        last = max((i for i, m in enumerate(self.messages) if m.role == "assistant"), default=-1)
        last_user = max((i for i, m in enumerate(self.messages) if m.role == "user"), default=-1)
        self.messages = [
            m if i == last or (i > last_user and m.tool_calls) else m.without_reasoning()
            for i, m in enumerate(self.messages)
        ]
        return self

    @property
    def thinking_budget(self) -> int | None:
        """Tokens the model may spend reasoning before it answers; None when it should not think."""
        if self.thinking is not None:
            return self.thinking.budget_tokens if self.thinking.type == "enabled" else None
        if self.reasoning_effort is not None:
            budget = REASONING_EFFORT_BUDGETS[self.reasoning_effort]
            return min(budget, self.max_tokens // 2) if self.max_tokens is not None else budget
        return None

    def generation_params(self) -> dict[str, Any]:
        params = super().generation_params()
        for name in ("tools", "tool_choice", "parallel_tool_calls", "response_format", "thinking", "reasoning_effort"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        return params


class CompletionRequest(_Generation):
    task: Literal["llm/v1/completions"] = Field(default=COMPLETIONS, exclude=True)
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be an empty list")
        if isinstance(value, list) and len(value) > 16:
            raise ValueError(f"at most 16 prompts per request; got {len(value)}")
        return value

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class EmbeddingsRequest(_Strict):
    task: Literal["llm/v1/embeddings"] = Field(default=EMBEDDINGS, exclude=True)
    model: str | None = None
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    extra_params: dict[str, Any] = Field(default_factory=dict)
    user: str | None = None
    client_request_id: str | None = None
    usage_context: dict[str, Any] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("input must not be an empty list")
            if any(isinstance(v, (int, list)) for v in value):
                raise ValueError("input must be text; token-id inputs are not supported")
            if len(value) > 2048:
                raise ValueError(f"at most 2048 inputs per request; got {len(value)}")
        if value == "" or (isinstance(value, list) and any(v == "" for v in value)):
            raise ValueError("input texts must not be empty")
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def generation_params(self) -> dict[str, Any]:
        return {}


Request = ChatRequest | CompletionRequest | EmbeddingsRequest
_MODELS: dict[str, type[_Strict]] = {CHAT: ChatRequest, COMPLETIONS: CompletionRequest, EMBEDDINGS: EmbeddingsRequest}
_KEY_FIELD = {CHAT: "messages", COMPLETIONS: "prompt", EMBEDDINGS: "input"}
# Keys of the custom-model (dataframe) formats Databricks accepts on other endpoint types.
_DATAFRAME_KEYS = ("dataframe_records", "dataframe_split", "instances", "inputs")
#: JSON Schemas have bounds of their own, with messages naming the schema path (schema_limits).
_SCHEMA_FIELDS = ("response_format", "tools")
#: Levels of nesting anywhere else in a request (a chat with image parts uses 5).
MAX_BODY_DEPTH = 64


def parse(task: str, body: Any, endpoint: str = "") -> Request:
    """Validate ``body`` as a request for ``task``; raise ServingError naming the first problem."""
    where = f"Endpoint '{endpoint}'" if endpoint else "This endpoint"
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    for key in _DATAFRAME_KEYS:
        if key in body:
            raise invalid(
                f"'{key}' is an input format for custom-model endpoints; {where} serves a foundation "
                f"model ({task}) and expects '{_KEY_FIELD[task]}'."
            )
    wanted = _KEY_FIELD[task]
    if wanted not in body:
        for other_task, key in _KEY_FIELD.items():
            if key in body and other_task != task:
                raise invalid(
                    f"{where} serves {task} and expects '{wanted}'; this request has '{key}', "
                    f"which is a {other_task} request."
                )
        raise invalid(f"{where} serves {task}; the request must include '{wanted}'.")
    for key, value in body.items():
        if key not in _SCHEMA_FIELDS:
            # Free-form values (extra_params, usage_context, tool_calls, tool_choice, fields an
            # assistant turn may carry) reach a vendor re-encoded, and orjson refuses > 254 levels.
            # Depth only: the edge already bounds the body's size (playground/edge.py).
            check_json(value, key, max_depth=MAX_BODY_DEPTH, max_bytes=None)
    try:
        return _MODELS[task].model_validate(body)
    except ValidationError as exc:
        raise invalid(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    # For a union (content: str | list of parts) pydantic reports every branch; the deepest
    # error is the one about what the client actually sent (the part inside the list).
    err = max(errors, key=lambda e: len(e.get("loc", ())))
    loc = _loc(err.get("loc", ()))
    kind = err.get("type", "")
    msg = err.get("msg", "is invalid")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind == "extra_forbidden":
        return f"Unknown parameter '{loc}'. Remove it, or pass provider-specific options in 'extra_params'."
    if kind == "missing":
        return f"Missing required parameter '{loc}'."
    if kind == "too_short" and loc in ("messages", "input"):
        return f"'{loc}' must not be empty."
    if kind == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        return f"Invalid '{loc}': unknown type '{ctx.get('tag')}'; expected one of {ctx.get('expected_tags')}."
    given = err.get("input")
    shown = "" if isinstance(given, (dict, list)) or given is None else f" (got {given!r})"
    if not loc:  # a rule across several fields
        return f"{msg}."
    return f"Invalid '{loc}': {msg[0].lower() + msg[1:]}{shown}."


def _loc(parts: tuple) -> str:
    out = ""
    skip_tag = False  # a tagged union puts the tag after the list index: content[0].text.text
    after_union = False
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
            skip_tag, after_union = after_union, False
        elif skip_tag:
            skip_tag = False
        elif part in ("str", "list[...]", "function-after[_stop_list(), union[str,list[str]]]"):
            continue  # union branch names pydantic adds to the location
        elif "[" in str(part) or "(" in str(part):
            after_union = "tagged-union" in str(part)
        else:
            out += ("." if out else "") + str(part)
    return out
