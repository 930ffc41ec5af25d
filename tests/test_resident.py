"""What a started server keeps resident: optional parts are loaded by their first use only.

A started server (the app built and its start-up run, on SQLite, with an upstream engine)
must not have imported the libraries of parts most requests never use: the embedded engine,
MCP, PDF text, images, the download client, the AES library, schema validation.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

OPTIONAL = {
    "llama_cpp": "the embedded engine", "numpy": "the embedded engine", "jinja2": "GGUF chat templates",
    "mcp": "MCP tools", "httpx2": "MCP tools", "pypdf": "PDF text", "PIL": "images",
    "aiohttp": "server-side downloads and the Images API", "cryptography": "encrypted reasoning",
    "jsonschema": "strict function arguments", "pydantic": "nothing of ours",
}

STARTED = """
import asyncio, sys, tempfile
from responsa.config import load_settings
from responsa.app import create_app

settings = load_settings({"upstream_base_url": "http://127.0.0.1:9/v1", "data_dir": tempfile.mkdtemp(),
                          "api_key": ("k",)})
app = create_app(settings).app

async def main():
    async with app.router.lifespan_context(app):
        print(" ".join(sorted({m.split(".")[0] for m in sys.modules})))

asyncio.run(main())
"""


def test_a_started_server_has_not_loaded_the_optional_parts() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPONSA_")}
    done = subprocess.run([sys.executable, "-c", STARTED], capture_output=True, text=True, cwd=SRC, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "responsa" in loaded and "sqlite3" in loaded  # it did start
    eager = {name: why for name, why in OPTIONAL.items() if name in loaded}
    assert not eager, f"loaded at start-up: {eager}"


def test_the_reasoning_key_derivation_is_hkdf_sha256() -> None:
    """derive_key uses the standard library; the keys are those the AES library's HKDF gives."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from responsa.reasoning import derive_key

    for secret in ("a configured key of at least 32 characters", b"", os.urandom(32), b"x" * 200):
        raw = secret.encode() if isinstance(secret, str) else secret
        expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"responsa reasoning key").derive(raw)
        assert derive_key(secret) == expected
