"""The benchmark's tasks, declared on a plain Huey: every peer runs the same functions as hueyapp."""
from __future__ import annotations

from huey import Huey
from huey.api import TaskWrapper


def declare_tasks(huey: Huey) -> tuple[TaskWrapper, TaskWrapper]:
    """``add`` (every scenario) and ``xsum`` (the chord's body), as in ``hueyapp.tasks``."""

    @huey.task()
    def add(x, y):
        return x + y

    @huey.task()
    def xsum(numbers):
        return sum(numbers)

    return add, xsum
