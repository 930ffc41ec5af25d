"""What the worker processes serving one SQLite database share (`responsa serve --workers N`).

One process alone needs none of this: it makes every write, every delete and every run's
events itself. Several need three things, each kept off the hot path:

- `WriterLock`: one write transaction at a time. SQLite would serialise them too, but a
  writer that finds the database locked sleeps in steps of milliseconds (on the event loop);
  an flock waits in the kernel and wakes the moment the other writer commits.
- `DeleteCounter`: a counter in a shared memory page, raised after every committed delete,
  so that a process's cached chains are dropped before it could continue one through a
  response another process deleted (one 8-byte read per chain load).
- `Peers`: notifications between processes ("events" of a background run, "cancel"), as
  datagrams to abstract-namespace UNIX sockets; each peer is a file in a directory beside the
  database, named like its socket. A lost datagram costs latency only: followers
  and lease renewals read the database anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import secrets
import socket
import struct
import time
from collections.abc import Callable

log = logging.getLogger("responsa.store")

PEERS_REFRESH = 1.0  # seconds between readings of the peers directory when notifying
_COUNTER = struct.Struct("=Q")


class WriterLock:
    """An exclusive flock on a file beside the database, held around each write transaction."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def acquire(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


class DeleteCounter:
    """A counter every process maps; `changed()` tells whether it moved since this process last looked."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < _COUNTER.size:
                os.ftruncate(fd, _COUNTER.size)  # zeros; a second process doing the same changes nothing
            self._map = mmap.mmap(fd, _COUNTER.size)
        finally:
            os.close(fd)
        self._seen = self._read()

    def _read(self) -> int:
        return _COUNTER.unpack_from(self._map)[0]

    def bump(self) -> None:
        """After a delete has been committed (by the one writer: no two processes raise it at once)."""
        _COUNTER.pack_into(self._map, 0, (self._read() + 1) % 2**64)
        self._seen = self._read()

    def changed(self) -> bool:
        now = self._read()
        if now == self._seen:
            return False
        self._seen = now
        return True

    def close(self) -> None:
        self._map.close()


class Peers:
    """Notifications to and from the other processes of one database."""

    def __init__(self, directory: str, deliver: Callable[[str, str], None]) -> None:
        self.directory = directory
        self.deliver = deliver
        # Abstract socket names: no path-length limit, nothing left behind by a process that dies.
        self._prefix = b"\0responsa-" + hashlib.sha256(os.path.realpath(directory).encode()).hexdigest()[:16].encode()
        self._name = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._sock: socket.socket | None = None
        self._peers: list[str] = []
        self._read_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def _address(self, name: str) -> bytes:
        return self._prefix + b"-" + name.encode()

    def open(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(self._address(self._name))
        sock.setblocking(False)
        self._sock = sock
        with open(os.path.join(self.directory, self._name), "w"):
            pass
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._receive)

    def close(self) -> None:
        if self._sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.directory, self._name))

    def send(self, channel: str, response_id: str) -> None:
        """Tell every other process (never waits: a full queue drops the message)."""
        if self._sock is None:
            return
        now = time.monotonic()
        if now - self._read_at > PEERS_REFRESH:
            self._read_at = now
            self._peers = [name for name in os.listdir(self.directory) if name != self._name]
        message = f"{channel}\n{response_id}".encode()
        for name in list(self._peers):
            try:
                self._sock.sendto(message, self._address(name))
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno in (errno.ECONNREFUSED, errno.ENOENT):  # that process is gone
                    self._peers.remove(name)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.directory, name))
                else:
                    log.warning("cannot notify process %s: %s", name, e)

    def _receive(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            channel, _, response_id = data.decode(errors="replace").partition("\n")
            try:
                self.deliver(channel, response_id)
            except Exception:
                log.exception("notification callback failed")
