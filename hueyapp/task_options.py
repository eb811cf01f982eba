"""Which task options hueyapp accepts, so that none is accepted and then silently ignored.

Huey's ``task()`` turns any unknown keyword into an attribute of the task class, and Celery
users pass Celery's options (``bind=True``, ``max_retries=3``, ``rate_limit='10/s'``…) out
of habit: Huey would take them and do nothing. Both decorators refuse those at declaration
with a ``TypeError`` that names the option and, where there is one, what to use instead.
``@app.task`` (the Celery-shaped decorator) accepts only the options listed here;
``@huey.task`` keeps Huey's documented pass-through of other keywords.
"""
from __future__ import annotations

TYPE_CHECKING = False  # as typing.TYPE_CHECKING; typing itself would cost every worker 0.5 MB
if TYPE_CHECKING:
    from typing import Any

# Huey's own task() options, plus the queue a task's calls go to by default.
SUPPORTED = frozenset({'queue', 'name', 'retries', 'retry_delay', 'retry_backoff', 'priority',
                       'context', 'expires', 'timeout'})

# Celery's options that hueyapp does not implement (yet), each with what to use instead.
NOT_IMPLEMENTED: dict[str, str] = {
    'bind': 'use context=True: the task instance arrives as the keyword argument `task` '
            '(task.id, task.retries)',
    'max_retries': 'use retries=',
    'default_retry_delay': 'use retry_delay= (seconds)',
    'time_limit': "use timeout= (Huey's: seconds; the task fails with TaskTimeout)",
    'soft_time_limit': "use timeout= (Huey's: seconds; the task fails with TaskTimeout)",
    'autoretry_for': 'use retries= (every exception is retried) or raise huey.exceptions.RetryTask',
    'dont_autoretry_for': '',
    'retry_kwargs': 'use retries= and retry_delay=',
    'retry_backoff_max': '',
    'retry_jitter': '',
    'rate_limit': '',
    'ignore_result': '',
    'track_started': '',
    'store_errors_even_if_ignored': '',
    'throws': '',
    'typing': '',
    'serializer': 'set HUEYAPP_SERIALIZER for the whole app',
    'base': '',
    'acks_late': 'every task is acknowledged late already: a task whose worker dies runs again',
    'acks_on_failure_or_timeout': '',
    'reject_on_worker_lost': '',
    'trail': '',
    'send_events': '',
    'shared': '',
    'lazy': '',
    'routing_key': 'use queue=',
    'exchange': 'use queue=',
    'compression': '',
    'backend': 'results live in the app\'s database',
    'store_eager_result': '',
    'pydantic': '',
}


# Celery's calling options (apply_async, signature, set) that hueyapp does not implement.
CALL_NOT_IMPLEMENTED: dict[str, str] = {
    'link': 'chain the tasks instead: chain(a.s(), b.s()) or a.s() | b.s()',
    'link_error': '',
    'retry': 'a locked database is waited for up to HUEYAPP_BUSY_TIMEOUT',
    'retry_policy': 'a locked database is waited for up to HUEYAPP_BUSY_TIMEOUT',
    'max_retries': 'use retries=',
    'serializer': 'set HUEYAPP_SERIALIZER for the whole app',
    'compression': '',
    'exchange': 'use queue=',
    'routing_key': 'use queue=',
    'headers': '',
    'shadow': '',
    'ignore_result': '',
    'time_limit': '',
    'soft_time_limit': '',
    'add_to_parent': '',
    'reply_to': '',
    'connection': '',
    'producer': '',
    'publisher': '',
}


def _refusal(option: str, where: str, hints: dict[str, str]) -> str:
    hint = hints[option]
    text = f"{where} does not support Celery's option {option}= (not implemented in hueyapp yet)"
    return f'{text}; {hint}' if hint else text


def check_call_options(options: dict[str, Any], supported: frozenset[str]) -> None:
    """Raise ``TypeError`` for a calling option outside ``supported``, naming what to use."""
    for option in options:
        if option in CALL_NOT_IMPLEMENTED:
            raise TypeError(_refusal(option, 'apply_async()', CALL_NOT_IMPLEMENTED))
        if option not in supported:
            raise TypeError(f'apply_async() got an unknown option {option}=; supported: '
                            f'{", ".join(sorted(supported))}')


def check_task_options(options: dict[str, Any], *, strict: bool, decorator: str) -> None:
    """Raise ``TypeError`` for an option that would be accepted and do nothing.

    ``strict`` (``@app.task``) also refuses keywords hueyapp does not know at all; without it
    (``@huey.task``) they become task class attributes, as Huey documents.
    """
    for option in options:
        if option in NOT_IMPLEMENTED:
            raise TypeError(_refusal(option, decorator, NOT_IMPLEMENTED))
        if strict and option not in SUPPORTED:
            raise TypeError(f'{decorator} got an unknown option {option}=; supported: '
                            f'{", ".join(sorted(SUPPORTED))}')
    if isinstance(options.get('retry_backoff'), bool):
        # Celery's retry_backoff=True means exponential delays; Huey's is a multiplier, and
        # True would multiply by 1: constant delays, silently.
        raise TypeError(f"{decorator}: retry_backoff is Huey's delay multiplier (e.g. 2), not "
                        f"Celery's True/False switch")
