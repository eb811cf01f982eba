"""Dead letters for operators: list, inspect, replay and purge (the ``hueyapp`` CLI wraps these).

A message lands here when no worker can run it: it cannot be read (corrupt, forged or
unsigned, an unknown task), or its runs kept killing their worker. Nothing is dropped; an
operator looks at the reason, fixes the cause, and replays or purges.
"""
from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Iterable

from hueyapp.storage.sqlite import DeadLetter

if TYPE_CHECKING:
    from hueyapp.app import App


def _app(app: 'App | None') -> 'App':
    if app is None:
        from hueyapp.app import current_app
        app = current_app()
    return app


def list_dead_letters(app: 'App | None' = None, limit: int = 100) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters (without their message bodies)."""
    return _app(app).default.storage.dead_letters(limit)


def inspect(letter_id: int, app: 'App | None' = None) -> dict | None:
    """One dead letter, with its task decoded when that is possible."""
    app = _app(app)
    letter = app.default.storage.dead_letter(letter_id)
    if letter is None:
        return None
    details = {
        'id': letter.id, 'queue': letter.queue, 'reason': letter.reason,
        'deliveries': letter.deliveries, 'size': letter.size,
        'buried_at': datetime.datetime.fromtimestamp(letter.buried_at, datetime.timezone.utc).isoformat(),
    }
    try:
        task = app.default.deserialize_task(letter.data)
    except Exception as exc:
        details['task'] = f'(cannot be read: {exc!r})'
    else:
        details.update(task=app.default._registry.task_to_string(type(task)), task_id=task.id,
                       args=repr(task.args), kwargs=repr(task.kwargs))
    return details


def replay(letter_ids: Iterable[int], app: 'App | None' = None) -> int:
    """Put dead letters back on their queues; returns how many went back.

    A readable message is enqueued anew (re-signed, its delivery count reset); one that still
    cannot be read goes back as it is, for a worker that now knows its task.
    """
    app = _app(app)
    storage = app.default.storage
    replayed = 0
    for letter_id in letter_ids:
        letter = storage.dead_letter(letter_id)
        if letter is None:
            continue
        try:
            task = app.default.deserialize_task(letter.data)
        except Exception:
            replayed += storage.replay_dead_letter(letter_id)
            continue
        with storage.database.unit_of_work():
            app.default.enqueue_many([task])
            storage.purge_dead_letters([letter_id])
        replayed += 1
    return replayed


def replay_all(app: 'App | None' = None) -> int:
    app = _app(app)
    return replay([letter.id for letter in app.default.storage.dead_letters(limit=1_000_000)], app)


def purge(letter_ids: Iterable[int] | None = None, app: 'App | None' = None) -> int:
    """Delete the given dead letters, or all of them with ``None``; returns how many."""
    return _app(app).default.storage.purge_dead_letters(None if letter_ids is None else list(letter_ids))
