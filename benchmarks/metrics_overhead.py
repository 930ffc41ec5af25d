"""What metrics add to a request, measured on the wrapped parts themselves (in process, no I/O).

The gateway benchmark (`../shared/bench`) measures the whole server, but on a shared 2-core
host its runs differ by more than what metrics cost; this prints the cost of each thing the
metrics add: one request counted at the edge, one store operation timed, one engine turn of
22 events timed and counted (and, without metrics, what `--log-format json` alone adds to a
turn). Usage: python benchmarks/metrics_overhead.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import timeit
from collections.abc import AsyncIterator
from typing import Any

from responsa.backends import TextDelta, TurnEnd, TurnEvent, TurnRequest, TurnStart, Usage
from responsa.metrics import Metrics
from responsa.observed import ObservedBackend


class Store:
    async def get_record(self, rid: str, owner: str) -> None:
        return None


class Engine:
    name = "bench"

    async def turn(self, request: TurnRequest) -> AsyncIterator[TurnEvent]:
        yield TurnStart()
        for _ in range(20):
            yield TextDelta("x")
        yield TurnEnd("stop", Usage(10, 20))


async def _store_ops(store: Any, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await store.get_record("r", "o")
    return time.perf_counter() - started


async def _turns(backend: Any, n: int) -> float:
    request = TurnRequest(model="bench-model", items=[])
    started = time.perf_counter()
    for _ in range(n):
        async for _ev in backend.turn(request):
            pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="repeat each measurement, keep the median")
    args = parser.parse_args()
    metrics = Metrics()
    n = 100_000

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    edge = median([timeit.timeit(lambda: metrics.request("/responses", "POST", 200, "bench-model", 0.001),
                                 number=n) / n for _ in range(args.rounds)])
    plain_store, timed_store = Store(), metrics.store(Store())  # type: ignore[arg-type]
    store = median([(asyncio.run(_store_ops(timed_store, n)) - asyncio.run(_store_ops(plain_store, n))) / n
                    for _ in range(args.rounds)])
    engine, k = Engine(), 20_000
    metered, logged = metrics.backend(engine), ObservedBackend(engine, None)  # type: ignore[arg-type]
    base = median([asyncio.run(_turns(engine, k)) / k for _ in range(args.rounds)])
    turn = median([asyncio.run(_turns(metered, k)) / k for _ in range(args.rounds)]) - base
    logs = median([asyncio.run(_turns(logged, k)) / k for _ in range(args.rounds)]) - base
    print(f"request counted at the edge:        {edge * 1e6:6.2f} us")
    print(f"store operation timed:              {store * 1e6:6.2f} us")
    print(f"engine turn (22 events) metered:    {turn * 1e6:6.2f} us (the bare turn: {base * 1e6:.1f} us)")
    print(f"engine turn, JSON access logs only: {logs * 1e6:6.2f} us")


if __name__ == "__main__":
    main()
