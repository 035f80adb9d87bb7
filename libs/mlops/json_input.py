"""JSON from callers, read with bounds: nesting no deeper than :data:`MAX_DEPTH`, integers no longer than
Python converts (4,300 digits), and every refusal an :class:`InvalidArgument` (400), never the
``RecursionError`` or ``ValueError`` that ``json.loads`` raises for them (a 500 before this module).

The depth is bounded, not just survived: a document 900 levels deep parses, and then fails in whatever
recursive code reads it next (validation, serialisation, a consumer), far from the caller who sent it."""

from __future__ import annotations

import json
from typing import Any

from mlops.errors import InvalidArgument

#: The deepest nesting of arrays and objects any caller may send; platform bodies nest a few levels.
MAX_DEPTH = 64


class NotJson(InvalidArgument):
    """The text is not JSON at all (a syntax error), as opposed to JSON past a bound."""


def nested_deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether the arrays and objects of a parsed document nest more than ``limit`` levels deep: a walk
    level by level, iterative (no recursion for a deep document to exhaust), over containers only."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        nested = []
        for container in level:
            for item in container.values() if type(container) is dict else container:
                if type(item) is dict or type(item) is list:
                    nested.append(item)
        level = nested
    return False


def too_deep(max_depth: int, field: str) -> InvalidArgument:
    return InvalidArgument(f"JSON nested deeper than {max_depth} levels", field=field)


def loads(data: bytes | str, *, field: str = "body", max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` for caller input: malformed JSON, nesting past ``max_depth`` and integers too long to
    convert are :class:`InvalidArgument` on ``field``."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise too_deep(max_depth, field) from None
    except UnicodeDecodeError:
        raise NotJson("the JSON is not UTF-8", field=field) from None
    except json.JSONDecodeError as exc:
        raise NotJson(f"not valid JSON: {exc.msg} at position {exc.pos}", field=field) from None
    except ValueError as exc:  # an integer past Python's digit limit for int <-> str conversion
        raise InvalidArgument(f"a number in the JSON is too long: {exc}", field=field) from None
    # At most as deep as it has brackets: most bodies are let through on a count at C speed.
    brackets = data.count("[") + data.count("{") if isinstance(data, str) else data.count(b"[") + data.count(b"{")
    if brackets > max_depth and nested_deeper_than(value, max_depth):
        raise too_deep(max_depth, field)
    return value
