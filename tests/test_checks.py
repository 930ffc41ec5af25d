"""The request-value checks: the bounds that keep what is accepted serialisable, storable and parseable."""

from __future__ import annotations

import orjson
import pytest

from responsa import checks as c
from responsa.errors import InvalidRequest


def refused(fn: object, *args: object, **kwargs: object) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as e:
        fn(*args, **kwargs)  # type: ignore[operator]
    assert e.value.status == 400
    return e.value


@pytest.mark.parametrize("value", [2**53, 2**64, 1e20, -(2**53), -1e300])
def test_integers_stay_within_what_json_readers_hold(value: float) -> None:
    err = refused(c.integer, {"n": value}, "n", "n")
    assert err.param == "n"
    assert err.code in ("integer_above_max_value", "integer_below_min_value")


def test_integers_at_the_bound_are_accepted_and_serialisable() -> None:
    assert c.integer({"n": c.MAX_INTEGER}, "n", "n") == c.MAX_INTEGER
    assert c.integer({"n": float(2**52)}, "n", "n") == 2**52
    orjson.dumps(c.MAX_INTEGER)


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_nesting_up_to_the_limit_is_accepted() -> None:
    c.nesting(nested(c.MAX_DEPTH), "p")
    c.nesting([[[1, 2], {"x": "y"}]], "p")


def test_nesting_past_the_limit_names_the_path() -> None:
    value = {"ok": [1, 2], "deep": [{"x": nested(c.MAX_DEPTH)}]}
    err = refused(c.nesting, value, "tools[0].parameters")
    assert err.param == "tools[0].parameters.deep[0].x" + ".a" * (c.MAX_DEPTH - 3)
    assert str(c.MAX_DEPTH) in err.message


def test_what_nesting_accepts_the_serialiser_writes_inside_envelopes() -> None:
    value = nested(c.MAX_DEPTH)
    c.nesting(value, "p")
    envelope: object = value
    for _ in range(10):  # event -> response -> tools -> [i] -> parameters, with room to spare
        envelope = {"e": envelope}
    orjson.dumps(envelope)


@pytest.mark.parametrize("url", [
    "http://[::1", "http://h:99999/", "http://h:abc/", "http://h:-1/", "http://h:\uff18\uff10/", "http:///path",
    "ftp://h/", "h/x", "", "javascript:alert(1)",
])
def test_malformed_urls_are_400s(url: str) -> None:
    err = refused(c.url, url, "tools[0].server_url")
    assert err.param == "tools[0].server_url" and err.code == "invalid_url"


@pytest.mark.parametrize("url", ["http://h/", "https://h:8443/x?q=1", "http://[::1]:80/", "HTTPS://H.example"])
def test_wellformed_urls_pass(url: str) -> None:
    assert c.url(url, "p") == url


def test_data_urls_only_where_allowed() -> None:
    assert c.url("data:image/png;base64,AAAA", "p", ("http", "https", "data")) == "data:image/png;base64,AAAA"
    refused(c.url, "data:image/png;base64,AAAA", "p")


def test_stored_strings_hold_no_nul() -> None:
    err = refused(c.string, {"id": "msg_\x00"}, "id", "input[0].id", stored=True)
    assert err.param == "input[0].id"
    assert c.string({"id": "msg_\x00"}, "id", "p") == "msg_\x00"  # text that is not an id may hold one
    assert not c.may_exist("resp_\x00") and c.may_exist("resp_1")


def test_array_and_string_lengths() -> None:
    err = refused(c.max_items, [0] * 4, "tools", 3)
    assert (err.param, err.code) == ("tools", "array_above_max_length")
    assert "maximum length 3" in err.message and "length 4" in err.message
    err = refused(c.length, "x" * 5, "input", 4)
    assert (err.param, err.code) == ("input", "string_above_max_length")
