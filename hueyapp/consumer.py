"""Huey's consumer, with the storage sweep and the release of unfinished tasks at shutdown.

Extends :class:`huey.consumer.Scheduler`: after each of Huey's scheduler loops (which move
due tasks onto the queue and fire periodic tasks), expired results and locks are deleted and
the file is compacted, at most every ``sweep_interval`` seconds. Extends
:class:`huey.consumer.Consumer`: when it stops (SIGINT, SIGTERM), tasks its worker threads
still hold go back on the queue at once instead of waiting for their lease to lapse.
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
                self.huey.storage.compact()
            except Exception:
                self._logger.exception('Error sweeping expired results.')
            else:
                if swept:
                    self._logger.info('Swept %d expired results and locks.', swept)


class Consumer(HueyConsumer):
    scheduler_class = Scheduler

    def run(self) -> None:
        try:
            super().run()
        finally:
            released = self.huey.storage.leases.release_all()
            if released:
                self._logger.info('Put %d unfinished task(s) back on the queue.', released)
