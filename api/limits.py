"""Bounds on what a customer's JSON may be: ``metadata`` size and depth, and JSON PostgreSQL can store.

The same bounds are enforced by ``create_conversion()`` (SQLSTATE SA030/SA031), so a plain-SQL
producer cannot store what the API refuses; checking here first answers with a precise problem
before any database work.
"""

from __future__ import annotations

import json
import math
from typing import Any

from api.problems import Problem


def depth_of(value: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0, ``{}`` and ``[]`` are 1), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level + 1)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level + 1)
            stack.extend((v, level + 1) for v in item)
    return deepest


def check_metadata(metadata: Any, *, max_bytes: int, max_depth: int) -> None:
    """Refuse ``metadata`` that is not an object, nests deeper than ``max_depth`` or is larger than ``max_bytes``."""
    if not isinstance(metadata, dict):
        raise Problem("validation_error", "metadata must be a JSON object")
    depth = depth_of(metadata)
    if depth > max_depth:
        raise Problem("metadata_too_deep", f"metadata nests {depth} levels; at most {max_depth} are allowed")
    size = len(json.dumps(metadata, ensure_ascii=False).encode())  # spaced like jsonb::text, which SQL counts
    if size > max_bytes:
        raise Problem("metadata_too_large", f"metadata is {size:,} bytes serialized; at most {max_bytes:,} are allowed")


class InvalidJsonError(ValueError):
    """A JSON document PostgreSQL's jsonb cannot hold (or that is not JSON at all)."""


def _refuse_constant(name: str) -> Any:
    raise InvalidJsonError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJsonError(f"the number {text[:40]} is out of range")
    return value


def parse_strict(raw: bytes) -> Any:
    """Parse ``raw`` as JSON that jsonb can store: no NaN or infinities (also by overflow, ``1e400``), no NUL
    character and no lone surrogate in any string or key. Raises :class:`InvalidJsonError`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJsonError("the body is not UTF-8") from exc
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        raise InvalidJsonError("the document nests too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidJsonError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # an integer with more digits than Python converts
        raise InvalidJsonError(str(exc).split(";")[0][:120]) from None
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise InvalidJsonError("a string holds a NUL character (\\u0000)")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidJsonError("a string holds a lone surrogate") from None
    return value
