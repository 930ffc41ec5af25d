"""`responsa serve --workers N`: N server processes on one port, under one supervisor.

One Python process uses one core. A worker is a whole server (its own event loop, database
connections and instance id for leases), forked by the supervisor before anything is opened,
listening on a socket of its own bound to the same port with SO_REUSEPORT: the kernel spreads
new connections over the workers, and a connection stays with the worker that accepted it.
(One shared listening socket would not do: the first worker to wake up accepts every
connection that is waiting, and keep-alive clients stay where they landed.) Workers share
nothing but the database, exactly as replicas do, so background runs, stream resumption and
cancellation work across them the way they work across machines (docs/deployment.md).

The supervisor starts worker 0 first and the others once it is ready (it has migrated the
database and recovered what a previous server left), restarts a worker that dies after it
was ready, stops everything if one cannot start, and on SIGTERM or SIGINT stops the workers
gracefully and waits for them; a second signal makes them stop at once.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from .config import ConfigError, Settings
from .store.sqlite import lock_data_dir

log = logging.getLogger("responsa.workers")

STARTUP_FAILURE = 3  # exit status of a worker (and then of the supervisor) that could not start
RESTART_DELAY = 1.0  # seconds before a worker that died is started again
BACKLOG = 2048
FORCE_AFTER = 0.5  # a SIGINT this long after the first stop request forces the stop


# Runs one worker in the child process: (settings, its socket, its index, the callback that tells the
# supervisor it serves, whether it is the first process on the database); returns its exit status.
ServeWorker = Callable[[Settings, socket.socket, int, Callable[[], None], bool], int]


@dataclass
class _Worker:
    index: int
    ready_fd: int  # the worker writes one byte to it once it serves
    ready: bool = False


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port that other sockets of this user may bind too (SO_REUSEPORT)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, settings: Settings, serve: ServeWorker) -> None:
        self.settings = settings
        self.serve = serve
        self.port = settings.port
        self.workers: dict[int, _Worker] = {}  # by pid
        self.stopping = False
        self.signals = 0
        self._lock: Any = None

    def run(self) -> int:
        """Serve until stopped; the exit status for the command."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if not self.settings.database_url:
            try:  # held here, and by the workers (they inherit it), until the last of them has exited
                os.makedirs(self.settings.data_dir, exist_ok=True)
                self._lock = lock_data_dir(os.path.join(self.settings.data_dir, "responsa.db"))
            except (RuntimeError, OSError) as e:
                print(f"responsa: {e}", file=sys.stderr)
                return 1
        gc.collect()  # what is alive now is shared with the workers, copy-on-write
        gc.freeze()
        try:
            first = self._spawn(0, alone=True)
        except OSError as e:
            print(f"responsa: cannot listen on {self.settings.host}:{self.settings.port}: {e.strerror}",
                  file=sys.stderr)
            return 1
        if not self._wait_ready(first):
            return self._finish(0)  # its exit tells whether it failed, or whether it was asked to stop
        try:
            for index in range(1, self.settings.workers):
                if not self.stopping:
                    self._spawn(index)
        except OSError as e:
            log.error("cannot start worker: %s", e)
            self._stop_all(signal.SIGTERM)
            return self._finish(1)
        log.info("%d workers serving http://%s:%d", self.settings.workers, self.settings.host, self.port)
        return self._finish(0)

    # ---- processes ---------------------------------------------------------------------------

    def _spawn(self, index: int, alone: bool = False) -> int:
        sock = bind(self.settings.host, self.port)
        self.port = sock.getsockname()[1]  # --port 0: the other workers take the port the first got
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read_fd)
            for other in self.workers.values():
                os.close(other.ready_fd)
            self._run_child(sock, index, write_fd, alone)
        os.close(write_fd)
        sock.close()  # the worker's now: a copy kept here would queue connections nobody accepts
        self.workers[pid] = _Worker(index, read_fd)
        log.info("worker %d started (pid %d)", index, pid)
        return pid

    def _run_child(self, sock: socket.socket, index: int, ready_fd: int, alone: bool) -> None:
        status = 1
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            status = self.serve(self.settings, sock, index, lambda: _write_ready(ready_fd), alone)
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)

    def _wait_ready(self, pid: int) -> bool:
        """Wait until worker `pid` serves; False if it exited first or a stop was asked for."""
        fd = self.workers[pid].ready_fd
        while not self.stopping:
            readable, _, _ = select.select([fd], [], [], 0.1)
            if readable:
                # Nothing to read: it exited (its end of the pipe closed) without being ready.
                self.workers[pid].ready = bool(os.read(fd, 1))
                return self.workers[pid].ready
        return False

    def _finish(self, status: int) -> int:
        """Watch the workers until every one has exited; `status`, or a worse one, is the result."""
        while self.workers:
            try:
                pid, code = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            ready = worker.ready or _was_ready(worker.ready_fd)
            os.close(worker.ready_fd)
            exit_status = os.waitstatus_to_exitcode(code)
            if self.stopping:
                continue
            if not ready:
                log.error("worker %d (pid %d) could not start (exit status %s); stopping", worker.index, pid,
                          exit_status)
                status = exit_status if exit_status > 0 else STARTUP_FAILURE
                self._stop_all(signal.SIGTERM)
                continue
            log.error("worker %d (pid %d) died (exit status %s); starting it again", worker.index, pid,
                      exit_status)
            time.sleep(RESTART_DELAY)
            if not self.stopping:
                try:
                    self._spawn(worker.index)
                except OSError as e:
                    log.error("cannot start worker %d again: %s; stopping", worker.index, e)
                    status = 1
                    self._stop_all(signal.SIGTERM)
        return status

    def _stop_all(self, sig: int) -> None:
        self.stopping = True
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        # A terminal's Ctrl+C reaches the workers too (they share its process group); they tell
        # that copy from ours by time (see Server.handle_exit), so it does not force them.
        self._stop_all(signal.SIGTERM if self.signals == 1 else signal.SIGINT)


def _write_ready(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, b"r")
        os.close(fd)


def _was_ready(fd: int) -> bool:
    readable, _, _ = select.select([fd], [], [], 0)
    if not readable:
        return False
    try:
        return bool(os.read(fd, 1))
    except OSError:
        return False


def serve_worker(settings: Settings, sock: socket.socket, index: int, ready: Callable[[], None], alone: bool) -> int:
    """One worker: the app on `sock`, until SIGTERM; the process's exit status."""
    from .app import create_app
    from .cli import DrainingServer, uvicorn_config

    class Server(DrainingServer):
        stop_asked = 0.0

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                ready()

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Graceful on the first signal and on copies of it (a terminal's Ctrl+C reaches both the
            # supervisor, which passes it on, and this worker); forced on a later SIGINT.
            now = time.monotonic()
            if self.should_exit and sig == signal.SIGINT and now - self.stop_asked > FORCE_AFTER:
                self.force_exit = True
            elif not self.should_exit:
                self.stop_asked = now
                self.should_exit = True

    try:
        app: Any = create_app(settings, worker=index, alone=alone)
    except ConfigError as e:  # e.g. a backend whose engine is not installed
        print(f"responsa: {e}", file=sys.stderr)
        return 2
    server = Server(uvicorn_config(app, settings, backlog=BACKLOG), app.drain, settings.drain_timeout)
    server.run(sockets=[sock])
    return 0 if server.started else STARTUP_FAILURE
