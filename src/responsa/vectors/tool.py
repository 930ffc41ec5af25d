"""The file_search tool: the model searches the request's vector stores, and cites what it used.

The model sees one function, `file_search(queries)`. A call runs here: a `file_search_call`
item goes `in_progress` -> `searching` -> `completed` (each with its stream event), and its
`results` are filled when the request includes `file_search_call.results`. The model reads
the results as the function's output (a model-only note, see hosted_calls.py), numbered; a
`[n]` it writes in its answer becomes a `file_citation` annotation at that place of the text
(the marker stays in the text, which has already been streamed).
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

from .. import checks as c
from ..errors import InvalidRequest, not_found
from ..hosted_calls import HostedCall
from ..ids import new_id
from ..tools import Outcome, Tool, ToolCall, ToolContext, ToolKind
from .filters import Hit, check_filter, check_ranking

if TYPE_CHECKING:
    from .service import VectorStores

FUNCTION_NAME = "file_search"
MAX_STORES = 2  # the hosted API's bound
MAX_QUERIES = 5
RESULT_CHARS = 4000  # of each result's text shown to the model
KNOWN = frozenset({"type", "vector_store_ids", "max_num_results", "filters", "ranking_options"})
CITATION = re.compile(r"\[(\d{1,3})\]")


class FileSearchKind(ToolKind):
    types = ("file_search",)

    def __init__(self, vectors: VectorStores) -> None:
        self.vectors = vectors

    def check(self, entry: dict, param: str) -> dict:
        unknown = sorted(k for k in entry if k not in KNOWN)
        if unknown:
            raise InvalidRequest(f"Unknown parameter: '{param}.{unknown[0]}'.", param=f"{param}.{unknown[0]}",
                                 code="unknown_parameter")
        ids = c.string_list(entry, "vector_store_ids", f"{param}.vector_store_ids")
        if not ids:
            raise InvalidRequest(f"Invalid '{param}.vector_store_ids': give at least one vector store id.",
                                 param=f"{param}.vector_store_ids", code="empty_array")
        c.max_items(ids, f"{param}.vector_store_ids", MAX_STORES)
        out: dict[str, Any] = {"type": "file_search", "vector_store_ids": list(dict.fromkeys(ids))}
        limit = c.integer(entry, "max_num_results", f"{param}.max_num_results", 1, 50)
        if limit is not None:
            out["max_num_results"] = limit
        if entry.get("filters") is not None:
            out["filters"] = check_filter(entry["filters"], f"{param}.filters")
        if entry.get("ranking_options") is not None:
            out["ranking_options"] = check_ranking(entry["ranking_options"], f"{param}.ranking_options")
        return out

    def build(self, entry: dict, ctx: ToolContext) -> FileSearchTool:
        return FileSearchTool(entry, self.vectors)


class FileSearchTool(Tool):
    def __init__(self, entry: dict, vectors: VectorStores) -> None:
        self.entry = entry
        self.vectors = vectors
        self.sources: list[Hit] = []  # every result shown to the model in this run, numbered from 1
        self._annotating = False

    async def validate(self, ctx: ToolContext) -> None:
        for store_id in self.entry["vector_store_ids"]:
            if not c.may_exist(store_id) or await self.vectors.index.get_vector_store(store_id, ctx.owner) is None:
                raise not_found("Vector store", store_id, param="tools")

    def functions(self) -> list[dict]:
        return [{"type": "function", "function": {
            "name": FUNCTION_NAME,
            "description": "Search the user's uploaded files for passages relevant to the question. Use it "
                           "whenever the answer may be in the files.",
            "parameters": {"type": "object", "properties": {"queries": {
                "type": "array", "items": {"type": "string"},
                "description": "One to five search queries, each a self-contained question or keywords."}},
                "required": ["queries"], "additionalProperties": False},
        }}]

    async def invoke(self, call: ToolCall, ctx: ToolContext) -> Outcome:
        queries = _queries(call.arguments)
        hosted = await HostedCall.start(ctx.events, {"id": new_id("fs"), "type": "file_search_call",
                                                     "queries": queries, "results": None})
        store_ids = self.entry["vector_store_ids"]
        try:
            hits = await self.vectors.searcher.search(
                ctx.owner, store_ids, queries, max_results=self.entry.get("max_num_results") or 10,
                filters=self.entry.get("filters"), ranking=self.entry.get("ranking_options"))
        except BaseException:
            hosted.failed()  # the response fails with the error; the item does not stay `searching`
            raise
        await self.vectors.index.touch_vector_stores(store_ids, ctx.owner, int(time.time()))
        first = len(self.sources) + 1
        self.sources.extend(hits)
        if "file_search_call.results" in ctx.include:
            hosted.completed(results=[{"file_id": h.file_id, "filename": h.filename, "score": round(h.score, 6),
                                       "text": h.text, "attributes": h.attributes} for h in hits])
        else:
            hosted.completed()
        if not self._annotating:
            ctx.events.annotators.append(self._citations)
            self._annotating = True
        hosted.tell_model(ctx, _for_model(hits, first))
        return Outcome.CONTINUE

    def _citations(self, text: str) -> list[dict]:
        out = []
        for m in CITATION.finditer(text):
            n = int(m.group(1))
            if 1 <= n <= len(self.sources):
                hit = self.sources[n - 1]
                out.append({"type": "file_citation", "file_id": hit.file_id, "filename": hit.filename,
                            "index": m.start()})
        return out


def _queries(arguments: str) -> list[str]:
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return [arguments.strip()] if arguments.strip() else []
    if isinstance(parsed, dict):
        value = parsed.get("queries", parsed.get("query"))
    else:
        value = parsed
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [q.strip() for q in value if isinstance(q, str) and q.strip()][:MAX_QUERIES]


def _for_model(hits: list[Hit], first: int) -> str:
    if not hits:
        return "No results were found in the files."
    parts = [f"[{first + n}] {h.filename} (file {h.file_id}, score {h.score:.2f}):\n{h.text[:RESULT_CHARS]}"
             for n, h in enumerate(hits)]
    return ("Results from the user's files. When you use one, cite it by writing its number in square "
            "brackets, like [1], right after the sentence.\n\n" + "\n\n".join(parts))
