"""Settings read from ``HUEYAPP_*`` environment variables, and the factory of per-queue Hueys.

Every setting has a documented default; a value that cannot be parsed fails at import
with a :class:`ConfigError` naming the variable, so a typo never starts a silent worker.

===============================  =================  ================================================
variable                         default            meaning
===============================  =================  ================================================
``HUEYAPP_DB``                   ``hueyapp.db``     the SQLite file (relative to the working dir)
``HUEYAPP_IMMEDIATE``            ``0``              ``1``: run tasks in-process (users' unit tests)
``HUEYAPP_QUEUES``               ``default,hipri``  declared queues; the first is the default queue
``HUEYAPP_RESULT_EXPIRES``       ``86400``          seconds a result is kept, then swept by consumers
``HUEYAPP_IMPORTS``              (empty)            modules a consumer imports to know more tasks
``HUEYAPP_FEED_TIMEOUT``         ``10``             seconds ``import_feed`` waits for a feed server
``HUEYAPP_LEASE_SECONDS``        ``30``             a running task's lease; a dead worker's task
                                                    runs again this long after it stopped renewing
``HUEYAPP_MAX_DELIVERIES``       ``5``              hand-outs before a task is dead-lettered
``HUEYAPP_MAX_PAYLOAD``          ``10000000``       largest task message, in bytes
``HUEYAPP_BUSY_TIMEOUT``         ``60``             seconds to wait for another process's write lock
``HUEYAPP_SERIALIZER``           ``pickle``         ``pickle`` or ``json`` (no code in the database)
``HUEYAPP_SECRET_KEY``           (empty)            sign every message and result with this key
``HUEYAPP_PREFETCH_MULTIPLIER``  ``4``              a worker process leases up to this many tasks per
                                                    worker thread in one statement, as Celery's
                                                    ``worker_prefetch_multiplier``; ``1`` for long
                                                    tasks, so none waits behind a busy worker
``HUEYAPP_SYNCHRONOUS``          ``normal``         SQLite's ``synchronous`` (WAL): ``normal`` survives
                                                    kill -9 but may lose the last commits on power
                                                    loss; ``full`` fsyncs every commit
===============================  =================  ================================================
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from huey.registry import Registry

TYPE_CHECKING = False  # as typing.TYPE_CHECKING; typing itself would cost every worker 0.5 MB
if TYPE_CHECKING:
    from hueyapp.app import App
    from hueyapp.engine import RoutedHuey


class ConfigError(ValueError):
    """A ``HUEYAPP_*`` setting has a value hueyapp cannot use."""


def _positive_seconds(variable: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f'{variable} must be a positive number of seconds, got {raw!r}')
    return value


def _flag(variable: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ('1', 'true', 'yes', 'on'):
        return True
    if lowered in ('', '0', 'false', 'no', 'off'):
        return False
    raise ConfigError(f'{variable} must be 1 or 0 (true/false), got {raw!r}')


def _positive_int(variable: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f'{variable} must be a positive whole number, got {raw!r}')
    return value


def _choice(variable: str, raw: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise ConfigError(f'{variable} must be one of {", ".join(choices)}, got {raw!r}')
    return raw


def _names(variable: str, raw: str, *, dotted: bool = False, required: bool = True) -> tuple[str, ...]:
    names = tuple(part.strip() for part in raw.split(',') if part.strip())
    if required and not names:
        raise ConfigError(f'{variable} must name at least one queue, got {raw!r}')
    for name in names:
        if not all(piece.isidentifier() for piece in (name.split('.') if dotted else [name])):
            raise ConfigError(f'{variable}: {name!r} is not a valid {"module" if dotted else "queue"} name')
    if len(set(names)) != len(names):
        raise ConfigError(f'{variable} names a queue twice: {raw!r}')
    return names


@dataclass(frozen=True)
class Settings:
    """Everything hueyapp can be configured with; build it with :meth:`from_env`."""

    db: str = 'hueyapp.db'
    immediate: bool = False
    queues: tuple[str, ...] = ('default', 'hipri')
    result_expires: float = 86400.0
    imports: tuple[str, ...] = ()
    feed_timeout: float = 10.0
    lease_seconds: float = 30.0
    max_deliveries: int = 5
    max_payload: int = 10_000_000
    busy_timeout: float = 60.0
    serializer: str = 'pickle'
    secret_key: str | None = None
    synchronous: str = 'normal'
    prefetch_multiplier: int = 4

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> 'Settings':
        """Read the ``HUEYAPP_*`` variables; unset ones take the defaults above."""
        def get(variable: str, default: str) -> str:
            return environ.get(variable, default)

        return cls(
            db=get('HUEYAPP_DB', cls.db) or cls.db,
            immediate=_flag('HUEYAPP_IMMEDIATE', get('HUEYAPP_IMMEDIATE', '0')),
            queues=_names('HUEYAPP_QUEUES', get('HUEYAPP_QUEUES', ','.join(cls.queues))),
            result_expires=_positive_seconds(
                'HUEYAPP_RESULT_EXPIRES', get('HUEYAPP_RESULT_EXPIRES', str(cls.result_expires))),
            imports=_names('HUEYAPP_IMPORTS', get('HUEYAPP_IMPORTS', ''), dotted=True, required=False),
            feed_timeout=_positive_seconds(
                'HUEYAPP_FEED_TIMEOUT', get('HUEYAPP_FEED_TIMEOUT', str(cls.feed_timeout))),
            lease_seconds=_positive_seconds(
                'HUEYAPP_LEASE_SECONDS', get('HUEYAPP_LEASE_SECONDS', str(cls.lease_seconds))),
            max_deliveries=_positive_int(
                'HUEYAPP_MAX_DELIVERIES', get('HUEYAPP_MAX_DELIVERIES', str(cls.max_deliveries))),
            max_payload=_positive_int(
                'HUEYAPP_MAX_PAYLOAD', get('HUEYAPP_MAX_PAYLOAD', str(cls.max_payload))),
            busy_timeout=_positive_seconds(
                'HUEYAPP_BUSY_TIMEOUT', get('HUEYAPP_BUSY_TIMEOUT', str(cls.busy_timeout))),
            serializer=_choice('HUEYAPP_SERIALIZER', get('HUEYAPP_SERIALIZER', cls.serializer),
                               ('pickle', 'json')),
            secret_key=get('HUEYAPP_SECRET_KEY', '') or None,
            synchronous=_choice('HUEYAPP_SYNCHRONOUS', get('HUEYAPP_SYNCHRONOUS', cls.synchronous),
                                ('full', 'normal')),
            prefetch_multiplier=_positive_int('HUEYAPP_PREFETCH_MULTIPLIER', get(
                'HUEYAPP_PREFETCH_MULTIPLIER', str(cls.prefetch_multiplier))),
        )

    @property
    def default_queue(self) -> str:
        return self.queues[0]


@dataclass(frozen=True)
class Database:
    """Where the queues' SQLite lives: the file, or a shared in-memory database in immediate mode."""

    target: str
    uri: bool

    @classmethod
    def for_settings(cls, settings: Settings) -> 'Database':
        if settings.immediate:
            # One fresh in-memory database per app, shared by every connection of this process.
            return cls(f'file:hueyapp-{uuid.uuid4().hex}?mode=memory&cache=shared', uri=True)
        return cls(settings.db, uri=False)


def storage_options(settings: Settings, database: Database) -> dict:
    """Keyword arguments for :class:`hueyapp.storage.SqliteStorage`."""
    return {'filename': database.target, 'uri': database.uri,
            'result_expires': settings.result_expires, 'lease_seconds': settings.lease_seconds,
            'busy_timeout': settings.busy_timeout, 'synchronous': settings.synchronous}


def create_queues(settings: Settings, database: Database, app: 'App') -> dict[str, 'RoutedHuey']:
    """One Huey per declared queue, all on one SQLite database and one shared task registry.

    The dict is shared by the Hueys themselves: each routes a task to the queue the task names.
    """
    from hueyapp.engine import RoutedHuey
    from hueyapp.registry import RoutingRegistry
    from hueyapp.serializer import create_serializer

    registry: Registry = RoutingRegistry()
    queues: dict[str, RoutedHuey] = {}
    serializer = create_serializer(settings.serializer, settings.secret_key)
    for name in settings.queues:
        queues[name] = RoutedHuey(name, queues=queues, registry=registry, app=app,
                                  immediate=settings.immediate, serializer=serializer,
                                  **storage_options(settings, database))
    return queues
