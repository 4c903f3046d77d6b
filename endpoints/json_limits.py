"""Bounds on the JSON people may store: nesting depth and size, checked before anything is saved.

A stored value must stay renderable: the API answers with orjson, which refuses more than 254
levels, and every reader walks what is stored. :func:`check_json` walks a value iteratively (no
recursion, so no depth can exhaust the stack), stops at the first limit crossed and raises a 400
naming the field and the limit.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import invalid

#: Levels of objects and arrays inside one provider configuration (real ones use 2 or 3).
MAX_CONFIG_DEPTH = 16
#: Levels inside the other stored JSON (tags, rate limits, the AI gateway), and in a whole
#: management API body (a create body holds a provider configuration 5 levels down).
MAX_DEPTH = 32
#: Bytes of JSON one stored field may hold (a provider config, the tags, the rate limits, the AI gateway).
MAX_FIELD_BYTES = 64 * 1024
#: Characters of an endpoint's description.
MAX_DESCRIPTION_CHARS = 16 * 1024


def _scalar_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass")) + 2
    if value is None or isinstance(value, bool):
        return 5
    return len(repr(value))


def measure(
    value: Any, *, stop_depth: int | None = None, stop_bytes: int | None = None, sized: bool = True
) -> tuple[int, int]:
    """(nesting depth, approximate JSON bytes) of ``value``, walked iteratively; the walk stops as
    soon as the depth passes ``stop_depth`` or the size passes ``stop_bytes``. With ``sized``
    false only the depth is measured (the size returned is 0)."""
    depth = size = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (Mapping, list)):
            level += 1
            depth = max(depth, level)
            if isinstance(item, Mapping):
                if sized:
                    size += 2 + max(len(item) - 1, 0) + sum(_scalar_bytes(str(key)) + 1 for key in item)
                stack.extend((sub, level) for sub in item.values())
            else:
                if sized:
                    size += 2 + max(len(item) - 1, 0)  # brackets and commas
                stack.extend((sub, level) for sub in item)
        elif sized:
            size += _scalar_bytes(item)
        if (stop_depth is not None and depth > stop_depth) or (stop_bytes is not None and size > stop_bytes):
            break
    return depth, size


def check_json(value: Any, field: str, *, max_depth: int = MAX_DEPTH, max_bytes: int | None = MAX_FIELD_BYTES) -> None:
    """ServingError(400) naming ``field`` when ``value`` is nested deeper than ``max_depth`` levels
    or holds more than ``max_bytes`` bytes of JSON."""
    depth, size = measure(value, stop_depth=max_depth, stop_bytes=max_bytes, sized=max_bytes is not None)
    if depth > max_depth:
        raise invalid(
            f"Invalid '{field}': it is nested more than {max_depth} levels deep; at most {max_depth} levels are allowed."
        )
    if max_bytes is not None and size > max_bytes:
        raise invalid(
            f"Invalid '{field}': it holds more than {max_bytes} bytes of JSON; at most {max_bytes} bytes "
            f"({max_bytes // 1024} KiB) are allowed."
        )


def check_text(value: Any, field: str, max_chars: int) -> None:
    if isinstance(value, str) and len(value) > max_chars:
        raise invalid(f"Invalid '{field}': it is {len(value)} characters long; at most {max_chars} are allowed.")
