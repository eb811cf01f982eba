"""The task message: Huey's, plus what Celery's canvas needs to travel with a task.

Extends :class:`huey.registry.Registry`. A task's queue and its immutability (``.si()``)
must survive serialization, because the consumer, not the caller, enqueues the next step of
a chain or a chord's body.
"""
from __future__ import annotations

from collections import namedtuple

from huey.api import Task
from huey.registry import Message, Registry

RoutedMessage = namedtuple('RoutedMessage', Message._fields + ('queue', 'immutable'))
RoutedMessage.__new__.__defaults__ = (None,) * len(RoutedMessage._fields)


class RoutingRegistry(Registry):
    """One registry shared by every queue of an app, so any consumer can run any task."""

    def create_message(self, task: Task) -> RoutedMessage:
        message = super().create_message(task)
        return RoutedMessage(*message, queue=getattr(task, 'queue', None),
                             immutable=getattr(task, 'immutable', False))

    def create_task(self, message: RoutedMessage) -> Task:
        task = super().create_task(message)
        if getattr(message, 'queue', None):
            task.queue = message.queue
        task.immutable = bool(getattr(message, 'immutable', False))
        return task
