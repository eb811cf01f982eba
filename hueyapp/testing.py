"""Helpers for tests: immediate mode for users' unit tests, real consumers for integration.

In a user's ``conftest.py``::

    pytest_plugins = ['hueyapp.testing']

    def test_add(hueyapp_immediate):
        assert add.delay(2, 2).get() == 4

``hueyapp_immediate`` runs every task in-process on a fresh in-memory database, through
the same serializer, routing, canvas and locks as a consumer would (``HUEYAPP_IMMEDIATE=1``
does the same for a whole process).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

if TYPE_CHECKING:
    from hueyapp.app import App


@contextmanager
def immediate_mode(app: 'App | None' = None) -> Iterator['App']:
    """Run ``app``'s tasks in-process on a fresh in-memory database, then restore it."""
    if app is None:
        from hueyapp.app import current_app
        app = current_app()
    before = app.settings
    app.configure(immediate=True)
    try:
        yield app
    finally:
        app.configure(immediate=before.immediate, db=before.db)


try:
    import pytest
except ImportError:  # pytest is only needed by users who use the fixture.
    pytest = None

if pytest is not None:
    @pytest.fixture
    def hueyapp_immediate() -> Iterator['App']:
        """The current app in immediate mode for one test."""
        with immediate_mode() as app:
            yield app


def consumer_command(huey_path: str, *options: str) -> list[str]:
    """The real ``huey_consumer`` console script of this Python environment."""
    script = Path(sys.executable).with_name('huey_consumer')
    return [str(script), huey_path, *options]


class ConsumerProcess:
    """A real ``huey_consumer`` process on a given database, logging to a file."""

    def __init__(self, huey_path: str = 'hueyapp.tasks.huey', *, db: str | os.PathLike,
                 options: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 log_path: str | os.PathLike | None = None) -> None:
        self.huey_path = huey_path
        self.command = consumer_command(huey_path, *options)
        self.env = {**os.environ, 'HUEYAPP_DB': str(db), 'HUEYAPP_IMMEDIATE': '0', **(env or {})}
        self.log_path = Path(log_path or f'{db}.{huey_path.rsplit(".", 1)[-1]}.log')
        self.process: subprocess.Popen | None = None

    def start(self) -> 'ConsumerProcess':
        log = open(self.log_path, 'ab')
        self.process = subprocess.Popen(self.command, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, 'consumer not started'
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_started(self, timeout: float = 15.0) -> 'ConsumerProcess':
        """Wait until the consumer logged its start (its workers are running then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if 'Huey consumer started' in self.log():
                return self
            if not self.alive():
                raise RuntimeError(f'consumer {self.huey_path} exited:\n{self.log()}')
            time.sleep(0.05)
        raise TimeoutError(f'consumer {self.huey_path} did not start in {timeout}s:\n{self.log()}')

    def log(self) -> str:
        return self.log_path.read_text(errors='replace') if self.log_path.exists() else ''

    def stop(self, timeout: float = 10.0) -> int:
        """Graceful stop (SIGINT, as Ctrl-C); SIGKILL if it is still up after ``timeout``."""
        return self._signal_and_wait(signal.SIGINT, timeout)

    def kill(self) -> int:
        """SIGKILL: the worker dies mid-task, as in an OOM kill or power loss."""
        return self._signal_and_wait(signal.SIGKILL, 10.0)

    def _signal_and_wait(self, signum: int, timeout: float) -> int:
        if self.process is None:
            return 0
        if self.alive():
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10.0)

    def __enter__(self) -> 'ConsumerProcess':
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
