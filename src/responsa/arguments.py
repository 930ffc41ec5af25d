"""A function call's arguments: mended where that is lossless, checked before the client gets them.

Engines, small ones especially, slip in two ways that lose nothing when mended: a raw control
character inside a JSON string (a newline the model meant as `\\n`), and text after one
complete JSON object or array. `ArgumentsRepair` mends both as the arguments stream in; each
piece it returns extends the last, so what was streamed stays a prefix of the final arguments.
What cannot be mended into JSON, or into JSON that matches a `strict` function's schema, is
refused by `check_arguments` with an error naming the function (the response fails).
"""

from __future__ import annotations

import json
from typing import Any

from .errors import UpstreamError

# How a raw control character inside a string is written in JSON.
_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


class InvalidArguments(UpstreamError):
    """The model's arguments for a function call are not JSON, or not what its strict schema allows."""


class ArgumentsRepair:
    """Lossless repair of one call's arguments, fed the engine's pieces as they arrive."""

    def __init__(self) -> None:
        self._depth = 0  # open objects and arrays, outside strings
        self._in_string = False
        self._escaped = False  # the previous character was a backslash inside a string
        self._ended = False  # one top-level object or array is complete; the rest is dropped

    def feed(self, piece: str) -> str:
        """The repaired text for this piece of the engine's arguments."""
        if self._ended:
            return ""
        out: list[str] = []
        start = 0
        for i, ch in enumerate(piece):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
                elif ch < " ":
                    out.append(piece[start:i])
                    out.append(_ESCAPES.get(ch) or f"\\u{ord(ch):04x}")
                    start = i + 1
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]" and self._depth > 0:
                self._depth -= 1
                if self._depth == 0:
                    self._ended = True
                    out.append(piece[start:i + 1])
                    return "".join(out)
        out.append(piece[start:])
        return "".join(out)


def repair_arguments(text: str) -> str:
    """The whole arguments text repaired at once (what feeding it piece by piece gives)."""
    return ArgumentsRepair().feed(text)


def closing(arguments: str) -> str:
    """What completes a call's arguments: `{}` for a call that came with none, as hosted models send."""
    return "{}" if not arguments.strip() else ""


def check_arguments(name: str, arguments: str, schema: dict | None = None) -> None:
    """Raise `InvalidArguments` unless `arguments` is JSON, and valid against `schema` when one is given."""
    try:
        value = json.loads(arguments, parse_constant=_not_json)
    except ValueError as e:
        raise InvalidArguments(f"The model's arguments for function '{name}' are not valid JSON ({e}).") from e
    if schema is None:
        return
    problem = schema_problem(value, schema)
    if problem is not None:
        raise InvalidArguments(f"The model's arguments for function '{name}' do not match its strict "
                               f"schema: {problem}.")


def schema_problem(value: Any, schema: dict) -> str | None:
    """Why `value` does not match the JSON Schema `schema`, or None when it does."""
    # Imported here: only strict functions need it, and it costs start-up time.
    import jsonschema

    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        error = jsonschema.exceptions.best_match(cls(schema).iter_errors(value))
    except Exception as e:  # the client's schema itself is unusable: a bad pattern, a dangling $ref
        return f"the schema cannot be checked ({type(e).__name__}: {e})"
    if error is None:
        return None
    return f"{error.message} (at {error.json_path})"


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")
