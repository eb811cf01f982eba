"""Storage backends: where queues, schedules, results and locks live.

Only SQLite today (:mod:`hueyapp.storage.sqlite`); a Redis backend will sit beside it, and
nothing above this package knows which one runs.
"""
from hueyapp.storage.sqlite import SqliteStorage

__all__ = ['SqliteStorage']
