"""Small validators for JSON request values, with the hosted API's error wording and `param` paths.

Also the bounds every request value is held to, so that nothing accepted here fails later in a
serialiser, a store or a URL parser: integers within what JSON readers hold exactly, nesting
the serialiser writes, strings within the hosted API's lengths, no U+0000 where a database
text column would hold it, and URLs that parse.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, overload
from urllib.parse import urlsplit

from .errors import InvalidRequest

# The largest integer a request may carry (2**53 - 1): every JSON reader, JavaScript's included,
# holds it exactly, and the serialiser writes it (orjson stops at 64 bits).
MAX_INTEGER = 2**53 - 1
# The stores' 32-bit integer columns (event sequence numbers): the bound of integer query parameters.
MAX_STORED_INT = 2**31 - 1
# How deep request values may nest. orjson writes at most 254 levels; stored and streamed
# values sit a few levels inside their envelopes (event -> response -> tools[i] -> parameters).
MAX_DEPTH = 100
# The hosted API's string lengths (characters): text, tool outputs, image URLs, inline files.
MAX_TEXT = 10 * 1024 * 1024
MAX_IMAGE_URL = 20 * 1024 * 1024
MAX_FILE_DATA = 32 * 1024 * 1024

_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a decimal", dict: "an object",
          list: "an array"}


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for t, name in _NAMES.items():
        if isinstance(value, t):
            return name
    return type(value).__name__


def wrong_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param=param,
                          code="missing_required_parameter")


def bad_value(param: str, value: Any, allowed: Iterable[str]) -> InvalidRequest:
    allowed = list(allowed)
    if len(allowed) > 1:
        options = ", ".join(f"'{a}'" for a in allowed[:-1]) + f", and '{allowed[-1]}'"
    else:
        options = f"'{allowed[0]}'"
    return InvalidRequest(f"Invalid value: '{value}'. Supported values are: {options}.", param=param,
                          code="invalid_value")


def string(obj: dict, key: str, param: str, *, required: bool = False, max_len: int | None = None,
           allow_empty: bool = True, stored: bool = False) -> str | None:
    """`obj[key]` as a string. `stored`: it goes into a database text column (an id), which
    cannot hold U+0000."""
    value = obj.get(key)
    if value is None:
        if required:
            raise missing(param)
        return None
    if not isinstance(value, str):
        raise wrong_type(param, "a string", value)
    if not allow_empty and not value:
        raise InvalidRequest(f"Invalid '{param}': empty string. Expected a non-empty string.", param=param,
                             code="empty_string")
    if max_len is not None:
        length(value, param, max_len)
    if stored:
        storable(value, param)
    return value


def length(value: str, param: str, max_len: int) -> str:
    if len(value) > max_len:
        raise InvalidRequest(
            f"Invalid '{param}': string too long. Expected a string with maximum length {max_len}, "
            f"but got a string with length {len(value)} instead.",
            param=param, code="string_above_max_length")
    return value


def max_items(values: list, param: str, limit: int) -> list:
    if len(values) > limit:
        raise InvalidRequest(
            f"Invalid '{param}': array too long. Expected an array with maximum length {limit}, but got an array "
            f"with length {len(values)} instead.", param=param, code="array_above_max_length")
    return values


def storable(value: str, param: str) -> str:
    """A string bound for a database text column (ids, file names, media types): PostgreSQL
    text cannot hold U+0000, so neither store accepts it."""
    if "\x00" in value:
        raise InvalidRequest(f"Invalid '{param}': the string contains U+0000 (NUL), which cannot be stored.",
                             param=param, code="invalid_value")
    return value


def may_exist(ident: str) -> bool:
    """Whether a stored row could have this id (or cursor): none holds U+0000 (see `storable`),
    so a lookup of such an id is a miss without asking the database."""
    return "\x00" not in ident


def boolean(obj: dict, key: str, param: str, default: bool | None = None) -> bool | None:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise wrong_type(param, "a boolean", value)
    return value


def number(obj: dict, key: str, param: str, lo: float, hi: float) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong_type(param, "a decimal", value)
    if value < lo:
        raise InvalidRequest(f"Invalid '{param}': decimal below minimum value. Expected a value >= {lo:g}, "
                             f"but got {value:g} instead.", param=param, code="decimal_below_min_value")
    if value > hi:
        raise InvalidRequest(f"Invalid '{param}': decimal above maximum value. Expected a value <= {hi:g}, "
                             f"but got {value:g} instead.", param=param, code="decimal_above_max_value")
    return float(value)


def integer(obj: dict, key: str, param: str, lo: int = -MAX_INTEGER, hi: int = MAX_INTEGER) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(param, "an integer", value)
    if value < lo:
        raise InvalidRequest(f"Invalid '{param}': integer below minimum value. Expected a value >= {lo}, "
                             f"but got {value} instead.", param=param, code="integer_below_min_value")
    if value > hi:
        raise InvalidRequest(f"Invalid '{param}': integer above maximum value. Expected a value <= {hi}, "
                             f"but got {value} instead.", param=param, code="integer_above_max_value")
    return value


@overload
def choice(obj: dict, key: str, param: str, allowed: tuple[str, ...], *, required: Literal[True]) -> str: ...
@overload
def choice(obj: dict, key: str, param: str, allowed: tuple[str, ...], *, required: bool = False) -> str | None: ...
def choice(obj: dict, key: str, param: str, allowed: tuple[str, ...], *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise missing(param)
        return None
    if not isinstance(value, str):
        raise wrong_type(param, "a string", value)
    if value not in allowed:
        raise bad_value(param, value, allowed)
    return value


def _of_type(obj: dict, key: str, param: str, kind: type, name: str, required: bool) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise missing(param)
        return None
    if not isinstance(value, kind):
        raise wrong_type(param, name, value)
    return value


def mapping(obj: dict, key: str, param: str, *, required: bool = False) -> dict | None:
    return _of_type(obj, key, param, dict, "an object", required)


def array(obj: dict, key: str, param: str, *, required: bool = False) -> list | None:
    return _of_type(obj, key, param, list, "an array", required)


def string_list(obj: dict, key: str, param: str) -> list[str] | None:
    values = array(obj, key, param)
    if values is None:
        return None
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise wrong_type(f"{param}[{i}]", "a string", v)
    return values


def url(value: str, param: str, schemes: tuple[str, ...] = ("http", "https"), *,
        code: str = "invalid_url") -> str:
    """A URL with one of `schemes` that parses whole: with a host for http(s), and a port, if
    any, that is a number up to 65535 (`urlsplit` checks those only when asked, by raising).
    A `data:` URL (when allowed) is left to the code that decodes it."""
    if "data" in schemes and value[:5].lower() == "data:":
        return value
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    scheme = parts.scheme.lower() if parts is not None else ""
    if parts is None or scheme not in schemes or (scheme in ("http", "https") and not parts.hostname):
        names = (["http(s)"] if "http" in schemes else []) + [f"{s}:" for s in schemes if s not in ("http", "https")]
        expected = " or ".join(names)
        raise InvalidRequest(f"Invalid '{param}': expected a valid {expected} URL.", param=param, code=code)
    return value


def nesting(value: Any, param: str) -> None:
    """Refuse values nested deeper than MAX_DEPTH (the value itself is level 1), naming the path
    to the first one found too deep."""
    path = _too_deep(value, 1)
    if path is not None:
        where = param + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)
        raise InvalidRequest(f"Invalid '{where}': JSON values may be nested at most {MAX_DEPTH} levels deep.",
                             param=where, code="invalid_value")


def _too_deep(value: Any, depth: int) -> list | None:
    """The path (keys and indexes) to a container nested past MAX_DEPTH, or None. Recursion is
    bounded by MAX_DEPTH itself; only containers are descended into."""
    if depth > MAX_DEPTH:
        return []
    children: Iterable[tuple[Any, Any]]
    if type(value) is dict:
        children = value.items()
    elif type(value) is list:
        children = enumerate(value)
    else:
        return None
    for key, child in children:
        if type(child) is dict or type(child) is list:
            path = _too_deep(child, depth + 1)
            if path is not None:
                path.insert(0, key)
                return path
    return None
