"""Huey's consumer, with the sweep that removes expired results and locks.

Extends :class:`huey.consumer.Scheduler`: after each of Huey's scheduler loops (which move
due tasks onto the queue and fire periodic tasks), the storage's expired keys are deleted
at most every ``sweep_interval`` seconds.
"""
from __future__ import annotations

import time

from huey.consumer import Consumer as HueyConsumer
from huey.consumer import Scheduler as HueyScheduler


class Scheduler(HueyScheduler):
    sweep_interval = 60.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        expires = getattr(self.huey.storage, 'result_expires', self.sweep_interval)
        self.sweep_interval = min(self.sweep_interval, expires)
        self._next_sweep = time.monotonic()

    def loop(self, now=None) -> None:
        super().loop(now)
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.sweep_interval
            try:
                swept = self.huey.storage.purge_expired()
            except Exception:
                self._logger.exception('Error sweeping expired results.')
            else:
                if swept:
                    self._logger.info('Swept %d expired results and locks.', swept)


class Consumer(HueyConsumer):
    scheduler_class = Scheduler
