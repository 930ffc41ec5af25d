"""SIGTERM under load, two replicas on one PostgreSQL: 50 live streams and 20 background runs.

Replica A serves 50 streams and 20 background runs (10 running, at most --max-background-runs,
10 queued) when it gets SIGTERM. The engine holds every answer (a gate) until A is draining, so
all of them are live at the signal, whatever the machine's speed. Within its drain deadline
every stream must reach its own end (none cut), the queued runs must be handed to replica B and
run there, and nothing may be left queued or in progress in the database. Skips when
PostgreSQL is unreachable (CI makes that a failure).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pg
from harness import ScriptedEngine, check_events, wait_for
from test_graceful_stop import Reader, database, replica, sdk, stopped_cleanly, unfinished, words

__all__ = ["database"]  # the fixture, used by name

STREAMS, RUNS, SLOTS = 50, 20, 10
CHUNKS = 40


def test_sigterm_during_50_streams_and_20_background_runs(database: str, engine: ScriptedEngine, script,
                                                          tmp_path: Path) -> None:
    a = replica(tmp_path, "a", database, engine, "--max-background-runs", str(SLOTS), "--drain-timeout", "60")
    b = replica(tmp_path, "b", database, engine)
    a.start()
    b.start()
    try:
        held = {"gate": "go", "delay": 0.02}
        script.add(*({"match": "load stream", "content": words("s", CHUNKS), **held} for _ in range(STREAMS)),
                   *({"match": "load run", "content": words("r", CHUNKS), **held} for _ in range(RUNS)))
        streams = [Reader(lambda: sdk(a).responses.create(model="m", input="load stream", stream=True))
                   for _ in range(STREAMS)]
        for s in streams:
            s.start()
        client = sdk(a)
        runs = [client.responses.create(model="m", input="load run", background=True).id for _ in range(RUNS)]
        # Every stream and A's 10 runs are at the engine, waiting; the other 10 runs are queued on A.
        wait_for(lambda: len(engine.requests) == STREAMS + SLOTS, timeout=60)
        assert pg.admin_on(database, "SELECT count(*) FROM responses WHERE status = 'queued'")[0][0] == RUNS - SLOTS
        assert not any(s.events and s.events[-1]["type"] == "response.completed" for s in streams)

        assert a.proc is not None
        a.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "draining: waiting for" in a.log(), timeout=30)
        script.release("go")
        for s in streams:
            s.join(timeout=90)
        # No stream was cut: each reached its own end, every chunk sent.
        for s in streams:
            assert s.error is None, s.error
            check_events(s.events)
            assert s.events[-1]["type"] == "response.completed" and s.deltas() == CHUNKS
        assert stopped_cleanly(a)
        # No run lost: every one completed, on A or, handed over at the drain, on B.
        other = sdk(b)
        for rid in runs:
            done = wait_for(lambda rid=rid: (r := other.responses.retrieve(rid)).status in ("completed", "failed")
                            and r, timeout=60)
            assert done.status == "completed" and done.output_text == words("r", CHUNKS), rid
        assert unfinished(database) == []  # nothing left queued or in progress
        assert "taking over runs another replica released" in b.log()
        assert "Traceback" not in a.log() and "Traceback" not in b.log()
    finally:
        a.stop()
        b.stop()

