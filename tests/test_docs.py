"""The docs describe what exists: every option, endpoint and linked page."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from responsa.config import OPTIONS

ROOT = Path(__file__).resolve().parents[1]


def test_every_option_is_in_the_configuration_docs_and_the_help() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text()
    help_text = subprocess.run([sys.executable, "-m", "responsa", "serve", "--help"], capture_output=True,
                               text=True, check=True).stdout
    for opt in OPTIONS:
        assert f"`{opt.flag}" in docs, f"{opt.flag} is not in docs/configuration.md"
        assert f"`{opt.env}`" in docs, f"{opt.env} is not in docs/configuration.md"
        assert opt.flag in help_text and opt.env in help_text, f"{opt.flag} is not in serve --help"


def test_every_endpoint_is_in_the_api_docs() -> None:
    from responsa.conversation_endpoints import ConversationEndpoints
    from responsa.endpoints import Endpoints
    from responsa.files import FilesEndpoints
    from responsa.websocket import ResponsesSocket

    docs = re.sub(r"\{[^}]+\}", "{}", (ROOT / "docs" / "api.md").read_text())
    routes = [*Endpoints.__new__(Endpoints).routes(), *FilesEndpoints.__new__(FilesEndpoints).routes(),
              *ResponsesSocket.__new__(ResponsesSocket).routes(),
              *ConversationEndpoints.__new__(ConversationEndpoints).routes()]
    for route in routes:
        path = re.sub(r"\{[^}]+\}", "{}", route.path)
        methods = getattr(route, "methods", None) or {"WebSocket"}  # a WebSocket route has none
        for method in sorted(methods - {"HEAD"}):
            documented = re.search(rf"{method} {re.escape(path)}[`?\[ ,]", docs)
            assert documented, f"{method} {route.path} is not in docs/api.md"


def test_relative_links_resolve() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def test_changelog_has_an_unreleased_section() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text and "### Added" in text
