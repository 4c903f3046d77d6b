"""Shown code (Get code): Python literals laid out as a person would write them.

``pprint`` indents nested values by one space and packs short dicts on one line, which reads
badly in a code sample; :func:`python_literal` puts one item a line, four spaces a level, and
keeps short lists of scalars on one line. Scalars are written as ``repr`` writes them.
"""
from __future__ import annotations

from typing import Any

# What Get code writes where the prompt box is empty: a visible placeholder to replace, never an
# invented prompt.
PROMPT_PLACEHOLDER = "<your prompt>"

INDENT = "    "


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def python_literal(value: Any, level: int = 0) -> str:
    """``value`` (JSON-like: dicts, lists, strings, numbers, booleans, None) as a Python literal
    whose continuation lines are indented from ``level`` (the level of the line it starts on)."""
    pad, inner = INDENT * level, INDENT * (level + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = "".join(f"{inner}{key!r}: {python_literal(item, level + 1)},\n" for key, item in value.items())
        return "{\n" + items + pad + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        one_line = "[" + ", ".join(python_literal(item) for item in value) + "]"
        if all(_scalar(item) for item in value) and len(one_line) <= 80:
            return one_line
        items = "".join(f"{inner}{python_literal(item, level + 1)},\n" for item in value)
        return "[\n" + items + pad + "]"
    return repr(value)
