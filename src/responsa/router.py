"""Which backend serves a model name, and under which name the engine knows it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .backends import Backend
from .config import BackendConfig, ConfigError, Route, Settings
from .errors import NotFound

log = logging.getLogger("responsa.router")


@dataclass(frozen=True)
class Target:
    backend: Backend
    model: str  # the engine's own name


def build_backend(config: BackendConfig) -> Backend:
    if config.kind == "chat_completions":
        from .backends.chat_completions import ChatCompletionsBackend

        return ChatCompletionsBackend(config)
    if config.kind == "embedded":
        try:
            from .backends.embedded import EmbeddedBackend
        except ImportError as e:
            raise ConfigError(
                f"backend {config.name}: the embedded engine needs llama-cpp-python "
                f"(pip install 'responsa[embedded]'): {e}") from e
        return EmbeddedBackend(config)
    if config.kind == "scripted":
        from .backends.scripted import ScriptedBackend

        return ScriptedBackend(config)
    raise ConfigError(f"backend {config.name}: unknown kind {config.kind}")


class Router:
    """Model names clients use -> (backend, engine model name)."""

    def __init__(self, settings: Settings, wrap: Callable[[Backend], Backend] | None = None) -> None:
        self.backends: dict[str, Backend] = {}
        configs = list(settings.backends)
        self.routes = dict(settings.routes)
        self.default_route = settings.default_route
        if self.default_route is None:
            # No engine configured: every name goes to the embedded default model.
            from .backends.embedded import DEFAULT_MODEL_NAME, default_backend_config

            config = default_backend_config(settings)
            configs.append(config)
            self.default_route = Route(backend=config.name, model=DEFAULT_MODEL_NAME)
            self.routes.setdefault(DEFAULT_MODEL_NAME, self.default_route)
        for config in configs:
            backend = build_backend(config)
            self.backends[config.name] = wrap(backend) if wrap is not None else backend

    def resolve(self, model: str) -> Target:
        route = self.routes.get(model) or self.default_route
        if route is None:
            raise NotFound(f"The model '{model}' does not exist or is not served here.", param="model",
                           code="model_not_found")
        return Target(self.backends[route.backend], route.model or model)

    async def models(self) -> list[str]:
        """What `GET /models` lists: configured names, then what pass-through engines report."""
        names = list(self.routes)
        if self.default_route is not None and self.default_route.model is None:
            backend = self.backends[self.default_route.backend]
            for name in await backend.models():
                if name not in names:
                    names.append(name)
        return names

    async def ready(self) -> bool:
        for backend in self.backends.values():
            if not await backend.ready():
                return False
        return True

    async def start(self) -> None:
        for backend in self.backends.values():
            await backend.start()

    async def aclose(self) -> None:
        for backend in self.backends.values():
            await backend.aclose()
