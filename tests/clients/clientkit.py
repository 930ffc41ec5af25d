"""Runners for the clients that live outside the test process: the Node scripts in
tests/clients/node and the older openai-python majors in their own small venvs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from harness import KEY_A
from recorder import RecordingProxy

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
VENVS = HERE / ".venvs"  # openai-python 1.x and 2.x, made by scripts/test (gitignored)
OLD_SDKS = {"1": "openai==1.109.1", "2": "openai==2.54.0"}


# ---- Node clients --------------------------------------------------------------------------

def node_ready() -> None:
    """Skip unless Node, npm and the pinned packages (`npm ci` in tests/clients/node) are there."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are needed for the Node clients")
    if not (NODE_DIR / "node_modules" / ".package-lock.json").exists():
        pytest.skip("the Node clients are not installed: run `npm ci` in tests/clients/node "
                    "(./scripts/test does)")


def run_node(script: str, scenario: str, proxy: RecordingProxy, *, timeout: float = 120,
             env: dict[str, str] | None = None) -> Any:
    """Run tests/clients/node/<script> <scenario> against the proxy; its last stdout line is JSON."""
    node_ready()
    full_env = {**os.environ, "RESPONSA_BASE_URL": proxy.base_url, "RESPONSA_API_KEY": KEY_A, **(env or {})}
    done = subprocess.run(["node", script, scenario], cwd=NODE_DIR, env=full_env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert done.returncode == 0, \
        f"{script} {scenario} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines, f"{script} {scenario} printed nothing:\n{done.stderr}"
    return json.loads(lines[-1])


# ---- openai-python 1.x / 2.x ---------------------------------------------------------------

def old_sdk_python(major: str) -> Path:
    """The python of the small venv holding openai-python `major`.x, or skip."""
    python = VENVS / f"openai-{major}" / "bin" / "python"
    if not python.exists():
        pytest.skip(f"openai-python {major}.x is not installed: ./scripts/test makes {python.parent.parent} "
                    f"(python -m venv, then pip install '{OLD_SDKS[major]}')")
    return python
