"""Small validators for JSON request values, with the hosted API's error wording and `param` paths."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, overload

from .errors import InvalidRequest

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
           allow_empty: bool = True) -> str | None:
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
    if max_len is not None and len(value) > max_len:
        raise InvalidRequest(
            f"Invalid '{param}': string too long. Expected a string with maximum length {max_len}, "
            f"but got a string with length {len(value)} instead.",
            param=param, code="string_above_max_length")
    return value


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


def integer(obj: dict, key: str, param: str, lo: int | None = None, hi: int | None = None) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(param, "an integer", value)
    if lo is not None and value < lo:
        raise InvalidRequest(f"Invalid '{param}': integer below minimum value. Expected a value >= {lo}, "
                             f"but got {value} instead.", param=param, code="integer_below_min_value")
    if hi is not None and value > hi:
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
