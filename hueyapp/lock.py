"""Expiring, owner-checked locks in the app's database, and single-run tasks.

The Celery user guide's "only one at a time" recipe, without Django's cache: ``lock()``
never blocks, says whether it got the lock, and releases only a lock it still owns and only
before that lock's expiry. A lock left by a killed process is free again once it expires,
and at once for the redelivery of the task that held it.

Built on the storage's expiring keys (``put_if_empty(key, value, ttl)``), the same ones
that make Huey's own ``huey.lock_task(name, ttl=...)`` work on hueyapp's SQLite storage.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

TYPE_CHECKING = False  # as typing.TYPE_CHECKING; typing itself would cost every worker 0.5 MB
if TYPE_CHECKING:
    from typing import Any
    from hueyapp.app import App

logger = logging.getLogger('hueyapp.lock')


class Lock:
    """One attempt at holding ``name`` for at most ``expire`` seconds."""

    def __init__(self, name: str, expire: float = 600, app: 'App | None' = None) -> None:
        if not expire > 0:
            raise ValueError(f'lock {name!r}: expire must be a positive number of seconds')
        if app is None:
            from hueyapp.app import current_app
            app = current_app()
        self.name = name
        self.expire = expire
        self.key = f'hueyapp.lock:{name}'
        self.owner, self.family = _owner()
        self._storage = app.default.storage
        self._deadline: float | None = None

    def acquire(self) -> bool:
        """Take the lock if it is free or expired; never waits."""
        if self._storage.take_lock(self.key, self.owner, self.expire, self.family):
            self._deadline = time.monotonic() + self.expire
            return True
        return False

    def release(self) -> bool:
        """Release if still ours and not expired (after expiry someone else may hold it)."""
        if self._deadline is None:
            return False
        expired = time.monotonic() >= self._deadline
        self._deadline = None
        if expired:
            logger.warning('lock %r outlived its %ss expiry; not releasing it', self.name, self.expire)
            return False
        return self._storage.delete_if_value(self.key, self.owner)

    def locked(self) -> bool:
        """Whether anyone holds the lock now."""
        return self._storage.has_data_for_key(self.key)


def _owner() -> tuple[bytes, bytes | None]:
    """Who holds a lock: inside a consumer, the running task (its id and delivery number).

    A task redelivered after its worker died then takes back the lock its first run left
    (same task id, another hand-out) instead of being skipped until the lock expires; anyone
    else, and the same run asking twice, still finds it held. Elsewhere, a fresh random owner.
    """
    from hueyapp.delivery import current_task
    task = current_task.get()
    delivery = getattr(task, 'delivery', None)
    if delivery is None:
        return uuid.uuid4().hex.encode(), None
    family = f'task:{task.id}:'.encode()
    return family + delivery.owner.encode(), family


@contextmanager
def lock(name: str, expire: float = 600, app: 'App | None' = None) -> Iterator[bool]:
    """``with lock(name, expire=600) as acquired:`` – never blocks; yields whether acquired."""
    held = Lock(name, expire, app)
    acquired = held.acquire()
    try:
        yield acquired
    finally:
        if acquired:
            held.release()


def single_run(key: Callable[..., Any] | None = None, expire: float = 600) -> Callable:
    """Run the decorated function at most once at a time per ``key(*args, **kwargs)``.

    A call that finds the lock held is skipped: it is logged and returns ``None``. Put it
    under the task decorator: ``@huey.task()`` then ``@single_run(key=lambda url: url)``.
    """
    def decorator(func: Callable) -> Callable:
        @functools.wraps(func)
        def run_once(*args: Any, **kwargs: Any) -> Any:
            digest = hashlib.md5(repr(key(*args, **kwargs) if key else '').encode()).hexdigest()
            lock_name = f'{func.__module__}.{func.__qualname__}-lock-{digest}'
            with lock(lock_name, expire) as acquired:
                if acquired:
                    return func(*args, **kwargs)
            logger.info('%s%r skipped: already running elsewhere (lock %s)',
                        func.__qualname__, args, lock_name)
            return None
        return run_once
    return decorator
