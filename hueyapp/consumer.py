"""Huey's consumer, with the storage sweep, prefetching, and the release of unfinished tasks.

Extends :class:`huey.consumer.Scheduler`: after each of Huey's scheduler loops (which move
due tasks onto the queue and fire periodic tasks), expired results and locks are deleted and
the file is compacted, at most every ``sweep_interval`` seconds. Extends
:class:`huey.consumer.Consumer`: each worker process leases ``HUEYAPP_PREFETCH_MULTIPLIER``
tasks per worker thread at a time (one statement instead of one each); when it stops
(SIGINT, SIGTERM, or a worker recycled), tasks it still holds go back on the queue at once
instead of waiting for their lease to lapse. WAL checkpoints run in a thread of their own
(:mod:`hueyapp.storage.checkpointer`). Extends :class:`huey.consumer.ProcessEnvironment`: the
interrupt that stops a process worker's running task is a ``WorkerInterrupted``, so that it
puts the task back, while a ``KeyboardInterrupt`` the task's code raises is its failure.
"""
from __future__ import annotations

import signal
import time

from huey.consumer import Consumer as HueyConsumer
from huey.consumer import ProcessEnvironment as HueyProcessEnvironment
from huey.consumer import Scheduler as HueyScheduler
from huey.consumer import Worker as HueyWorker

from hueyapp.delivery import WorkerInterrupted
from hueyapp.errors import StorageFullError


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
            except StorageFullError:
                pass  # the storage logs a full disk once per episode; the next sweep tries again
            except Exception:
                self._logger.exception('Error sweeping expired results.')
            else:
                if swept:
                    self._logger.info('Swept %d expired results and locks.', swept)


class Worker(HueyWorker):
    def shutdown(self) -> None:
        # Extends Worker.shutdown (runs as each worker thread or process stops): tasks this
        # process reserved and no worker started go back on the queue.
        try:
            self.huey.storage.leases.release_reserved()
        except Exception:
            self._logger.exception('Could not put reserved tasks back on the queue.')
        super().shutdown()


class ProcessEnvironment(HueyProcessEnvironment):
    def init_child(self, process) -> None:
        # Extends ProcessEnvironment.init_child (in each forked worker), whose handler of the
        # interrupt signal (SIGTERM) raises KeyboardInterrupt in a running task: it raises
        # WorkerInterrupted instead, which the task's code cannot be mistaken for.
        super().init_child(process)
        raise_interrupt = signal.getsignal(self.interrupt)

        def interrupt(signum, frame) -> None:
            try:
                raise_interrupt(signum, frame)
            except KeyboardInterrupt:
                raise WorkerInterrupted from None

        signal.signal(self.interrupt, interrupt)


class Consumer(HueyConsumer):
    scheduler_class = Scheduler
    worker_class = Worker

    def __init__(self, huey, workers: int = 1, worker_type: str = 'thread', **options) -> None:
        super().__init__(huey, workers=workers, worker_type=worker_type, **options)
        # Each forked worker process is one worker; threads and greenlets share a process.
        per_process = 1 if worker_type == 'process' else workers
        huey.storage.prefetch = huey.app.settings.prefetch_multiplier * per_process
        database = getattr(huey.storage, 'database', None)  # hueyapp's SQLite storage
        if database is not None:
            database.checkpoint_in_background()

    def get_environment(self, worker_type: str):
        environment = super().get_environment(worker_type)
        if type(environment) is HueyProcessEnvironment:
            return ProcessEnvironment(environment.graceful, environment.interrupt)
        return environment

    def run(self) -> None:
        try:
            super().run()
        finally:
            released = self.huey.storage.leases.release_all()
            if released:
                self._logger.info('Put %d unfinished task(s) back on the queue.', released)
