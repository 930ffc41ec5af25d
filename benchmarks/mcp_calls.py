"""What one MCP listing and one MCP call cost Responsa, against a real MCP server on loopback.

Each listing and each call opens its own session (see docs/mcp.md); this prints how long that
takes for a Streamable HTTP server and for an SSE-only one (which is first tried over
Streamable HTTP, then over SSE), plus the one-time SDK import. The server runs in a thread of
this process, so the numbers include its work too.

    python benchmarks/mcp_calls.py [rounds]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from responsa.mcp import Connection, _load_sdk
from responsa.netguard import Guard


async def measure(url: str, rounds: int) -> tuple[list[float], list[float]]:
    conn = Connection(url, {}, timeout=30, max_output=256 * 1024, guard=Guard(allow_private=True))
    listing, calls = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        await conn.list_tools()
        listing.append(time.perf_counter() - t)
        t = time.perf_counter()
        await conn.call_tool("add", {"a": 1, "b": 2})
        calls.append(time.perf_counter() - t)
    return listing, calls


def ms(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[max(0, int(len(values) * 0.95) - 1)]
    return f"median {statistics.median(values) * 1000:6.1f} ms  p95 {p95 * 1000:6.1f} ms"


async def main(rounds: int) -> None:
    t = time.perf_counter()
    await _load_sdk()
    print(f"SDK import (once per process, off the event loop): {(time.perf_counter() - t) * 1000:.0f} ms")
    from mcp_servers import MCPTestServer

    for transport in ("streamable", "sse"):
        server = MCPTestServer("bench", transport=transport).start()
        try:
            await measure(server.mcp_url, 2)  # warm up
            listing, calls = await measure(server.mcp_url, rounds)
        finally:
            server.stop()
        print(f"{transport:10}  list_tools: {ms(listing)}   call_tool: {ms(calls)}   ({rounds} rounds)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 30))
