"""What a search request says, checked, and what it finds: filters on file attributes,
ranking options, query terms, and a result (no numpy here: the tool kind and the API load it
at start-up, search.py on the first search)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .. import checks as c
from ..errors import InvalidRequest

MAX_TERMS = 32
COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
WORD = re.compile(r"\w+")
STOPWORDS = frozenset(
    "a an and are as at be by do does for from how i in is it of on or that the this to was what when where "
    "which who why with you".split())


@dataclass
class Hit:
    vector_store_id: str
    file_id: str
    filename: str
    attributes: dict[str, Any]
    score: float
    text: str

    def wire(self) -> dict:
        return {"file_id": self.file_id, "filename": self.filename, "score": round(self.score, 6),
                "attributes": self.attributes, "content": [{"type": "text", "text": self.text}]}


def check_filter(value: Any, param: str, depth: int = 0) -> dict:
    if not isinstance(value, dict):
        raise c.wrong_type(param, "an object", value)
    kind = value.get("type")
    if kind in ("and", "or"):
        if depth > 8:
            raise InvalidRequest(f"Invalid '{param}': filters nest too deeply.", param=param, code="invalid_value")
        filters = c.array(value, "filters", f"{param}.filters", required=True) or []
        return {"type": kind, "filters": [check_filter(f, f"{param}.filters[{i}]", depth + 1)
                                          for i, f in enumerate(filters)]}
    if kind not in COMPARISONS:
        raise c.bad_value(f"{param}.type", kind, (*COMPARISONS, "and", "or"))
    key = c.string(value, "key", f"{param}.key", required=True, allow_empty=False)
    if "value" not in value:
        raise c.missing(f"{param}.value")
    target = value["value"]
    if kind in ("in", "nin"):
        if not isinstance(target, list) or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                                   for v in target):
            raise c.wrong_type(f"{param}.value", "an array of strings or numbers", target)
    elif not isinstance(target, (str, int, float, bool)):
        raise c.wrong_type(f"{param}.value", "a string, number or boolean", target)
    return {"type": kind, "key": key, "value": target}


def matches(f: dict, attributes: dict[str, Any]) -> bool:
    kind = f["type"]
    if kind == "and":
        return all(matches(g, attributes) for g in f["filters"])
    if kind == "or":
        return any(matches(g, attributes) for g in f["filters"])
    value, target = attributes.get(f["key"]), f["value"]
    if kind == "in":
        return value in target
    if kind == "nin":
        return value not in target
    if kind == "eq":
        return value == target and isinstance(value, bool) == isinstance(target, bool)
    if kind == "ne":
        return not (value == target and isinstance(value, bool) == isinstance(target, bool))
    if isinstance(value, bool) or isinstance(target, bool):
        return False
    a: Any = value
    b: Any = target
    if isinstance(a, str) != isinstance(b, str) or not isinstance(a, (int, float, str)):
        return False
    return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[kind]


def check_ranking(value: Any, param: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise c.wrong_type(param, "an object", value)
    out: dict[str, Any] = {}
    ranker = c.choice(value, "ranker", f"{param}.ranker", ("none", "auto", "default-2024-11-15"))
    if ranker:
        out["ranker"] = ranker
    threshold = c.number(value, "score_threshold", f"{param}.score_threshold", 0, 1)
    if threshold is not None:
        out["score_threshold"] = threshold
    hybrid = c.mapping(value, "hybrid_search", f"{param}.hybrid_search")
    if hybrid is not None:
        out["hybrid_search"] = {
            "embedding_weight": c.number(hybrid, "embedding_weight", f"{param}.hybrid_search.embedding_weight",
                                         0, 1e6) if "embedding_weight" in hybrid else 1.0,
            "text_weight": c.number(hybrid, "text_weight", f"{param}.hybrid_search.text_weight", 0, 1e6)
            if "text_weight" in hybrid else 1.0}
    return out


def terms(query: str) -> list[str]:
    words = [w.lower() for w in WORD.findall(query)]
    kept = [w for w in words if w not in STOPWORDS] or words
    return list(dict.fromkeys(kept))[:MAX_TERMS]
