"""Wake-ups between the processes sharing one SQLite file, instead of polling it.

SQLite cannot tell a waiting process that another one committed. Each waiter (a worker
waiting for tasks of a queue, a ``get()`` waiting for results) binds a Unix datagram socket
in a private directory beside the database; after a commit, the writer sends one byte to
every socket of that topic. A waiter blocks in ``select`` until a byte arrives, so it picks
work up in about a millisecond and costs no CPU while idle. A missed or stale wake-up only
costs latency: waiters still look at the database every ``fallback`` seconds.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import select
import socket
import threading
import time
import uuid
from pathlib import Path

# Seconds a writer trusts its list of waiters before reading the directory again (a few µs,
# so about 0.2% of a busy writer's time). A socket bound meanwhile misses the writer's
# notifications until then, so a new socket's first wait ends after this long (and a little
# more), and its caller looks at the database again: a thread's first get() can be late by
# this much, not by the fallback poll (it was 251 ms, with a list trusted for 0.5 s).
SCAN_EVERY = 0.005
NEW_SOCKET_DOUBT = SCAN_EVERY + 0.001


def channel_directory(database_path: str) -> Path:
    """A short private directory for one database file (socket paths are limited to 107 bytes)."""
    digest = hashlib.sha1(os.path.realpath(database_path).encode()).hexdigest()[:16]
    # $TMPDIR as tempfile.gettempdir() reads it, without loading tempfile (and random) into
    # every worker: half a megabyte of an idle consumer.
    directory = Path(os.environ.get('TMPDIR') or '/tmp') / f'hueyapp-{os.getuid()}-{digest}'
    directory.mkdir(mode=0o700, exist_ok=True)
    if directory.stat().st_uid != os.getuid():
        raise PermissionError(f'{directory} belongs to another user')
    return directory


class Wakeups:
    """The wake-up channel of one database file, as seen by one process."""

    def __init__(self, database_path: str) -> None:
        self.directory = channel_directory(database_path)
        self._local = threading.local()
        self._sender: socket.socket | None = None
        self._waiters: dict[str, tuple[float, list[str]]] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._paths: list[str] = []  # the sockets this process bound, removed at exit
        atexit.register(self.close)

    # -- waiting ----------------------------------------------------------------------
    def wait(self, topic: str, timeout: float) -> bool:
        """Block until a writer notifies ``topic`` or ``timeout`` passes; True if notified.
        Returns False early, once, just after the socket was bound (see ``SCAN_EVERY``)."""
        listener = self._listener(topic)
        doubt_until = self._local.doubt_until
        if topic in doubt_until:
            unseen = doubt_until[topic] - time.monotonic()
            if unseen > 0:
                timeout = min(timeout, unseen)
            else:
                del doubt_until[topic]
        readable, _, _ = select.select([listener], [], [], max(timeout, 0))
        if not readable:
            return False
        _discard_pending(listener)  # one wake-up for however many bytes arrived
        return True

    def arm(self, topic: str) -> None:
        """Start listening before checking the database, so no notification is missed, and
        drop the ones pending: the check that follows sees what they announced. Left there,
        a byte sent while its waiter was not waiting (a result there at the first look) woke
        the next wait at once for nothing: 27 of 150 round trips paid that extra wake-up."""
        _discard_pending(self._listener(topic))

    def _listener(self, topic: str) -> socket.socket:
        listeners = getattr(self._local, 'listeners', None)
        if listeners is None:
            listeners = self._local.listeners = {}
            self._local.doubt_until = {}  # topic: until when writers may not know its socket
        listener = listeners.get(topic)
        if listener is None:
            path = self.directory / f'{topic}.{os.getpid()}.{uuid.uuid4().hex[:12]}'
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.directory.mkdir(mode=0o700, exist_ok=True)  # another process may have tidied it
            listener.bind(str(path))
            listener.setblocking(False)
            self._local.doubt_until[topic] = time.monotonic() + NEW_SOCKET_DOUBT
            listeners[topic] = listener
            with self._lock:
                self._paths.append(str(path))
        return listener

    # -- notifying --------------------------------------------------------------------
    def notify(self, topic: str) -> None:
        """Wake every waiter of ``topic`` (after a commit that concerns it); never raises,
        because what it announces is committed already."""
        for path in self._waiters_of(topic):
            try:
                self._socket().sendto(b'!', path)
            except (BlockingIOError, InterruptedError):
                pass  # its buffer is full: it has wake-ups pending already
            except (ConnectionRefusedError, FileNotFoundError):
                self._forget_waiter(topic, path)  # its process is gone
            except OSError:
                pass

    def _waiters_of(self, topic: str) -> list[str]:
        scanned_at, paths = self._waiters.get(topic, (float('-inf'), []))
        now = time.monotonic()
        if now - scanned_at > SCAN_EVERY:
            scanned_at = now  # before reading: a socket bound during the read may be missed
            prefix = f'{topic}.'
            try:
                paths = [entry.path for entry in os.scandir(self.directory)
                         if entry.name.startswith(prefix)]
            except OSError:  # the last waiter's process removed the directory at its exit
                paths = []
            self._waiters[topic] = (scanned_at, paths)
        return paths

    def _forget_waiter(self, topic: str, path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass
        scanned_at, paths = self._waiters.get(topic, (0.0, []))
        self._waiters[topic] = (scanned_at, [p for p in paths if p != path])

    def _socket(self) -> socket.socket:
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        return self._sender

    # -- lifecycle --------------------------------------------------------------------
    def forget_after_fork(self) -> None:
        """In a forked child (a process worker): bind sockets of its own, keep none of the parent's.

        Called by :mod:`hueyapp.storage.sqlite_db`'s fork hook, so that no wake-up pays for
        an ``os.getpid()`` system call to find out."""
        self._pid, self._local, self._sender, self._paths = os.getpid(), threading.local(), None, []
        self._lock = threading.Lock()

    def close(self) -> None:
        """Remove this process's sockets (at exit)."""
        if self._pid != os.getpid():
            return
        for path in self._paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        try:
            self.directory.rmdir()  # only if no other process waits here any more
        except OSError:
            pass


def _discard_pending(listener: socket.socket) -> None:
    while True:  # bounded by the socket's buffer: a few hundred one-byte datagrams at most
        try:
            listener.recv(64)
        except BlockingIOError:
            return
