"""hueyapp: Celery's everyday API, embedded on Huey and one SQLite file.

Where things live:

* :mod:`hueyapp.config`   settings (``HUEYAPP_*``) and the factory of per-queue Hueys
* :mod:`hueyapp.app`      the app: settings, declared queues, ``task`` decorator
* :mod:`hueyapp.tasks`    the default app's ``huey`` instance, queues and example tasks
* :mod:`hueyapp.task`     a declared task: ``delay``, ``apply_async``, ``s``, ``si``
* :mod:`hueyapp.task_options` which task options are accepted (none that would do nothing)
* :mod:`hueyapp.canvas`   signatures, ``chain``, ``group``, ``chord``
* :mod:`hueyapp.result`   ``AsyncResult``, ``GroupResult``
* :mod:`hueyapp.outcome`  what a finished task leaves in the result store
* :mod:`hueyapp.engine`   the per-queue Huey: routing, bulk enqueue, chord semantics
* :mod:`hueyapp.registry` the task message (Huey's, plus queue and immutability)
* :mod:`hueyapp.storage`  SQLite storage: shared keys, expiring keys, blocking dequeue
* :mod:`hueyapp.delivery` at-least-once: leases, outcome and ack in one transaction
* :mod:`hueyapp.serializer` the serializer a setting names, signed (``HUEYAPP_SECRET_KEY``)
* :mod:`hueyapp.json_serializer` tagged JSON instead of pickle (``HUEYAPP_SERIALIZER=json``)
* :mod:`hueyapp.consumer` Huey's consumer plus the storage sweep, prefetch and shutdown release
* :mod:`hueyapp.deadletters` list, inspect, replay, purge what could not run
* :mod:`hueyapp.cli`      the ``hueyapp`` operator command
* :mod:`hueyapp.lock`     expiring, owner-checked locks and ``single_run``
* :mod:`hueyapp.feeds`    feed download and parsing (``import_feed``)
* :mod:`hueyapp.feed_store` the feeds and their entries in the app's file
* :mod:`hueyapp.testing`  immediate mode for users' tests, and a real consumer runner
"""
from hueyapp.canvas import chain, chord, group, signature
from hueyapp.errors import (ChordError, CorruptResultError, HueyappError, PayloadTooLarge,
                            ResultNotLoadable, SerializationError, StorageBusyError,
                            StorageFullError, TaskError,
                            TaskRevokedError, TimeoutError)
from hueyapp.result import AsyncResult, GroupResult

__all__ = [
    'AsyncResult', 'GroupResult', 'chain', 'chord', 'group', 'signature',
    'ChordError', 'CorruptResultError', 'HueyappError', 'PayloadTooLarge', 'ResultNotLoadable',
    'SerializationError', 'StorageBusyError', 'StorageFullError', 'TaskError', 'TaskRevokedError',
    'TimeoutError',
]
