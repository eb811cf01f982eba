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

# A directory's mtime comes from the kernel's coarse clock (one tick, up to 10 ms): a list of
# waiters read less than this long after the mtime it saw may miss a socket bound in that
# same tick, so it is read again until the mtime is older than this.
MTIME_GRAIN_NS = 50_000_000


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
        self._directory_fd: int | None = None
        self._waiters: dict[str, tuple[int | None, list[str]]] = {}  # topic: (mtime, paths)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._paths: list[str] = []  # the sockets this process bound, removed at exit
        atexit.register(self.close)

    # -- waiting ----------------------------------------------------------------------
    def wait(self, topic: str, timeout: float) -> bool:
        """Block until a writer notifies ``topic`` or ``timeout`` passes; True if notified."""
        listener = self._listener(topic)
        readable, _, _ = select.select([listener], [], [], max(timeout, 0))
        if not readable:
            return False
        while True:  # one wake-up for however many bytes arrived
            try:
                listener.recv(64)
            except BlockingIOError:
                return True

    def arm(self, topic: str) -> None:
        """Start listening before checking the database, so no notification is missed."""
        self._listener(topic)

    def _listener(self, topic: str) -> socket.socket:
        listeners = getattr(self._local, 'listeners', None)
        if listeners is None:
            listeners = self._local.listeners = {}
        listener = listeners.get(topic)
        if listener is None:
            path = self.directory / f'{topic}.{os.getpid()}.{uuid.uuid4().hex[:12]}'
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.directory.mkdir(mode=0o700, exist_ok=True)  # another process may have tidied it
            listener.bind(str(path))
            listener.setblocking(False)
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
        """The sockets of ``topic``'s waiters, read again whenever the directory changed.

        A waiter binds its socket before it looks at the database, and binding changes the
        directory's mtime: so a writer that stats the directory after its commit knows of
        every waiter that could have missed the commit (one ``fstat``, under a microsecond).
        A list trusted for a fixed time (it was half a second) missed the waiters bound
        meanwhile: a thread's first ``get()`` slept until its fallback look (251 ms)."""
        changed_ns = self._directory_mtime_ns()
        if changed_ns is None:  # the last waiter's process removed the directory at its exit
            return []
        known = self._waiters.get(topic)
        if known is not None and known[0] == changed_ns:
            return known[1]
        read_ns = time.time_ns()  # before reading: a later change gets a later mtime
        prefix = f'{topic}.'
        try:
            paths = [entry.path for entry in os.scandir(self.directory)
                     if entry.name.startswith(prefix)]
        except OSError:
            paths = []
        settled = read_ns - changed_ns >= MTIME_GRAIN_NS  # else read it again next time
        self._waiters[topic] = (changed_ns if settled else None, paths)
        return paths

    def _directory_mtime_ns(self) -> int | None:
        """The directory's mtime, through a descriptor kept open (``fstat`` costs half of a
        ``stat`` by path); None if the directory is gone."""
        try:
            status = os.stat(self._directory_fd)  # TypeError: none open yet
            if status.st_nlink:
                return status.st_mtime_ns
        except (OSError, TypeError):
            pass
        return self._reopen_directory()

    def _reopen_directory(self) -> int | None:
        """Open the directory now at its path (it was removed, and a new waiter may have made
        it again): its mtime, or None if there is none."""
        with self._lock:
            self._close_directory_fd()
            try:
                self._directory_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
                return os.stat(self._directory_fd).st_mtime_ns
            except OSError:
                self._close_directory_fd()
                return None

    def _close_directory_fd(self) -> None:
        fd, self._directory_fd = self._directory_fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _forget_waiter(self, topic: str, path: str) -> None:
        try:
            os.unlink(path)  # changes the directory: the next notify reads it again
        except OSError:
            pass
        changed_ns, paths = self._waiters.get(topic, (None, []))
        self._waiters[topic] = (changed_ns, [p for p in paths if p != path])

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
        self._close_directory_fd()
        for path in self._paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        try:
            self.directory.rmdir()  # only if no other process waits here any more
        except OSError:
            pass
