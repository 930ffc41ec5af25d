"""The dependency rules of the design notes, checked by parsing every import in src/responsa.

Dependencies point one way: cli -> app -> endpoints -> service -> jobs -> run -> loop -> events -> protocol.
`loop` sees only the Backend and Tool protocols, never the store, MCP client or HTTP.
Third-party libraries stay in their room: Starlette in app/endpoints/files/websocket, the MCP SDK
in mcp.py, database drivers in store/*, the HTTP client in backends/* (and fetcher/images_api
where they fetch). A new module must be given a layer here, and a new library a room.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "responsa"

# Top to bottom. A module may import its own layer and the layers below it, never one above.
# Names are module paths inside the package ("" is the package itself); a subpackage's name
# covers its modules.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    # httpserver, transport: the HTTP protocol uvicorn runs; workers: the supervisor of `serve --workers N`
    ("cli", frozenset({"__main__", "cli", "httpserver", "workers", "transport"})),
    ("app", frozenset({"app"})),  # the composition root names every concrete part
    # Operations around the edge: metrics wrap what the root builds, the drain stops the process.
    ("operations", frozenset({"metrics", "observed", "drain", "tracing"})),
    # HTTP/WebSocket glue, the keys it checks; the Conversations API's routes; the admin endpoints;
    # the web console (a client of the same service calls); the Vector Stores API's routes
    # (vectors.api) and what composes them (vectors.service).
    ("endpoints", frozenset({"endpoints", "files", "keys", "websocket", "conversation_endpoints", "admin",
                             "console", "vectors.api", "vectors.service"})),
    # The use cases: consume runs plainly, as streams or as jobs (service); compact a context or
    # count its tokens without a response (context).
    # Usage and the limits of keys, counted around each response (quotas, usage).
    ("service", frozenset({"service", "context", "usage", "quotas"})),
    ("jobs", frozenset({"jobs"})),  # background runs: queued, leased, followed, recovered
    # One response's life (run), how it is prepared (prepare) and routed (router), the earlier
    # responses only a WebSocket connection holds (chaincache), and conversations: their API's use
    # cases and a conversation as a response's context (prepare reads it).
    ("run", frozenset({"run", "prepare", "router", "chaincache", "conversations"})),
    # The loop, and the tool kinds it runs through the Tool protocol (app.py registers them
    # with tools.py, so nothing below imports one).
    # Compaction and token counts run in a loop (through RunSpec's hook) and beside it.
    ("loop", frozenset({"loop", "mcp", "images", "computer", "namespaces", "toolsearch", "compaction", "tokens",
                        "websearch", "hosted_calls", "vectors.tool"})),
    ("events", frozenset({"events", "feed"})),  # what a response emits, and how it travels to an edge
    ("protocol", frozenset({"protocol", "items", "tools", "toolwrap", "steering"})),  # the request's vocabulary
    # ... and file_search's vector stores: ingestion, embedders, hybrid search (vectors/*).
    ("fetching", frozenset({"media", "images_api", "reasoning", "fetcher", "searchproviders", "webpages",
                            "vectors"})),
    ("engines and storage", frozenset({"backends", "store"})),
    ("basics", frozenset({"", "arguments", "chat", "checks", "config", "errors", "ids", "idlewait", "imagebytes",
                          "logs", "netguard", "replay", "shapes", "tracecontext"})),
)

# What `loop` may import: the Backend protocol (the package, not an engine), the Tool protocol,
# the events it emits, and the basics.
LOOP_MAY_IMPORT = frozenset({"arguments", "backends", "tools", "events", "errors", "ids", "shapes"})

# Third-party (and database driver) top-level modules -> the modules allowed to import them.
ROOMS: dict[str, frozenset[str]] = {
    "starlette": frozenset({"app", "endpoints", "files", "websocket", "conversation_endpoints", "admin",
                            "console", "vectors.api", "vectors.service"}),
    "uvicorn": frozenset({"cli", "httpserver", "workers", "transport"}),  # runs the app
    "mcp": frozenset({"mcp"}),
    "httpx2": frozenset({"mcp"}),  # the MCP SDK's own HTTP client: its transports are built on it
    "asyncpg": frozenset({"store"}),
    "sqlite3": frozenset({"store"}),
    "aiohttp": frozenset({"backends", "fetcher", "images_api", "searchproviders", "vectors.embed"}),
    "httptools": frozenset({"backends"}),  # backends/http.py: the engines' lean HTTP/1.1 client
    "llama_cpp": frozenset({"backends.embedded", "backends.gguf"}),
    "numpy": frozenset({"backends.embedded", "vectors"}),  # vectors: chunk vectors, the embedded embedder
    "tokenizers": frozenset({"vectors.minilm"}),
    "safetensors": frozenset({"vectors.minilm"}),
    "jinja2": frozenset({"backends.gguf", "console.render"}),  # chat templates of GGUF files; console pages
    "pypdf": frozenset({"media"}),
    "cryptography": frozenset({"reasoning", "console.session"}),  # encrypted reasoning; console sign-in cookies
    "jsonschema": frozenset({"arguments"}),  # strict functions' arguments checked against their schema
    "prometheus_client": frozenset({"metrics"}),
    "lxml": frozenset({"webpages"}),  # the text of the pages the web_search tool opens
    "opentelemetry": frozenset({"tracing"}),
}
EVERYWHERE = frozenset({"orjson"})  # a JSON codec is no room's business

# Where the code departs from a rule on purpose: (module, library) -> why. Each must still be
# needed (test_exceptions_are_still_needed), so the list cannot outlive its reasons.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("backends.scripted", "starlette"):
        "the scripted engine ships with the package for tests and demos and can serve itself over HTTP as "
        "a Chat Completions engine; imported inside scripted_upstream_app() only, so the scripted backend "
        "itself never loads Starlette",
    ("backends.scripted", "uvicorn"):
        "`python -m responsa.backends.scripted` serves that engine; imported inside main() only",
}
LAZY_ONLY = {("backends.scripted", "starlette"), ("backends.scripted", "uvicorn")}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, inside the package ("loop", "backends.embedded")
    target: str  # dotted name imported; inside the package without the "responsa." prefix
    internal: bool
    line: int
    lazy: bool  # inside a function: loaded only when it runs
    type_only: bool  # under `if TYPE_CHECKING:`: never loaded at run time


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = PACKAGE.joinpath(*name.split(".")) if name else PACKAGE
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[Import] = []
        self._depth = 0
        self._type_only = 0

    def _add(self, target: str, line: int) -> None:
        internal = target == "responsa" or target.startswith("responsa.")
        if internal:
            target = target.removeprefix("responsa").removeprefix(".")
        self.found.append(Import(self.module, target, internal, line, self._depth > 0, self._type_only > 0))

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            self._type_only += 1
            for child in node.body:
                self.visit(child)
            self._type_only -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module == "__future__":
            return
        if node.level == 0:
            base = node.module or ""
        else:
            parts = self.package.split(".") if self.package else []
            if node.level > 1:
                parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(["responsa", *parts, *([node.module] if node.module else [])])
        for alias in node.names:
            # `from . import checks` imports a module; `from .backends import TurnEvent` a name
            inner = f"{base}.{alias.name}".removeprefix("responsa").removeprefix(".")
            if base.startswith("responsa") and _is_module(inner):
                self._add(f"{base}.{alias.name}", node.lineno)
            else:
                self._add(base, node.lineno)


@cache
def imports() -> tuple[Import, ...]:
    found: list[Import] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        collector = _Collector(_module_name(path), path.name == "__init__.py")
        collector.visit(ast.parse(path.read_text(), str(path)))
        found.extend(collector.found)
    return tuple(found)


def modules() -> list[str]:
    return sorted(_module_name(p) for p in PACKAGE.rglob("*.py"))


def covers(names: frozenset[str], module: str) -> bool:
    """Whether `module` is one of `names` or inside one of them (a subpackage)."""
    return any(module == n or (n and module.startswith(n + ".")) for n in names)


def layer_of(module: str) -> int:
    """Index in LAYERS (0 is the top); the most specific name wins."""
    best, best_len = -1, -1
    for i, (_, names) in enumerate(LAYERS):
        for n in names:
            if (module == n or (n and module.startswith(n + "."))) and len(n) > best_len:
                best, best_len = i, len(n)
    assert best >= 0, f"module {module!r} has no layer: add it to LAYERS in tests/test_layering.py"
    return best


def where(imp: Import) -> str:
    return f"src/responsa/{imp.module.replace('.', '/') or '__init__'}.py:{imp.line}"


def external(imp: Import) -> str | None:
    """The top-level library an import names, if it is third-party or a database driver."""
    if imp.internal:
        return None
    top = imp.target.split(".")[0]
    if top in ROOMS or top not in sys.stdlib_module_names:
        return top
    return None


# ---- the tests ---------------------------------------------------------------------------------

def test_the_parser_sees_the_imports_we_know() -> None:
    """Guards the checks below against passing on an empty or misread import list."""
    edges = {(i.module, i.target) for i in imports() if i.internal}
    assert ("run", "loop") in edges
    assert ("loop", "events") in edges
    assert ("endpoints", "service") in edges
    assert ("tools", "checks") in edges  # `from . import checks as c`
    assert ("backends.embedded", "backends") in edges  # `from . import TextDelta, ...`
    assert ("store.postgres", "store.pgpool") in edges
    lazy = {(i.module, i.target) for i in imports() if i.lazy}
    assert ("store", "store.sqlite") in lazy
    assert ("tools", "events") in {(i.module, i.target) for i in imports() if i.type_only}


def test_every_module_has_a_layer() -> None:
    for module in modules():
        layer_of(module)


def test_dependencies_point_down() -> None:
    """cli -> app -> endpoints -> service -> jobs -> run -> loop -> events -> protocol -> the basics."""
    upward = []
    for imp in imports():
        # Annotations only: they load nothing at run time (tools.ToolContext names ResponseEvents).
        if not imp.internal or imp.type_only:
            continue
        src, dst = layer_of(imp.module), layer_of(imp.target)
        if dst < src:
            upward.append(f"{where(imp)}: {imp.module} ({LAYERS[src][0]}) imports {imp.target} "
                          f"({LAYERS[dst][0]})")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_engines_and_storage_do_not_know_each_other() -> None:
    crossing = [f"{where(i)}: {i.module} imports {i.target}" for i in imports() if i.internal
                and ((covers(frozenset({"backends"}), i.module) and covers(frozenset({"store"}), i.target))
                     or (covers(frozenset({"store"}), i.module) and covers(frozenset({"backends"}), i.target)))]
    assert not crossing, "\n".join(crossing)


def test_the_loop_sees_only_the_backend_and_tool_protocols() -> None:
    seen = [i for i in imports() if i.module == "loop"]
    wrong = [f"{where(i)}: {i.target}" for i in seen
             if (i.internal and i.target not in LOOP_MAY_IMPORT) or external(i)]
    assert not wrong, "the loop imports more than the Backend and Tool protocols:\n" + "\n".join(wrong)


def test_importing_the_loop_loads_no_store_mcp_http_or_engine() -> None:
    """The same rule at run time, through everything the loop's imports import in turn."""
    code = ("import sys, responsa.loop; print('\\n'.join(sorted(sys.modules)))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=SRC)  # from src/: this tree, installed or not
    assert run.returncode == 0, run.stderr
    out = run.stdout.split()
    internal = {m.removeprefix("responsa.") for m in out if m.startswith("responsa.")}
    allowed = LOOP_MAY_IMPORT | {"loop", "checks"}  # tools validates entries with checks
    assert internal <= allowed, f"importing responsa.loop loads {sorted(internal - allowed)}"
    libraries = {m.split(".")[0] for m in out} - set(sys.stdlib_module_names) - {"responsa"}
    assert not (libraries & (set(ROOMS) | EVERYWHERE | {"httpx", "pydantic"})), sorted(libraries)


def test_libraries_stay_in_their_rooms() -> None:
    outside = []
    for imp in imports():
        lib = external(imp)
        if lib is None or lib in EVERYWHERE or (imp.module, lib) in EXCEPTIONS:
            continue
        if lib not in ROOMS:
            outside.append(f"{where(imp)}: {lib} has no room: add it to ROOMS in tests/test_layering.py")
        elif not covers(ROOMS[lib], imp.module):
            outside.append(f"{where(imp)}: {imp.module} imports {lib} (its room: {sorted(ROOMS[lib])})")
    assert not outside, "\n".join(outside)


def test_exceptions_are_still_needed_and_stay_lazy() -> None:
    used: dict[tuple[str, str], list[Import]] = {}
    for imp in imports():
        lib = external(imp)
        if lib is not None and (imp.module, lib) in EXCEPTIONS:
            used.setdefault((imp.module, lib), []).append(imp)
    assert set(used) == set(EXCEPTIONS), f"no longer needed: {sorted(set(EXCEPTIONS) - set(used))}"
    for key in LAZY_ONLY:
        eager = [where(i) for i in used[key] if not i.lazy]
        assert not eager, f"{key[1]} must be imported inside a function in {key[0]}: {eager}"


def test_tools_never_imports_the_kinds_it_loads_by_name() -> None:
    """tools.py finds mcp, images and computer by name at run time; importing one would pull the
    MCP SDK or the image client into everything that parses a request."""
    kinds = {"mcp", "images", "computer"}
    wrong = [where(i) for i in imports() if i.module == "tools" and i.internal and i.target in kinds]
    assert not wrong, wrong
