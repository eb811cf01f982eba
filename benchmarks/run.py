"""hueyapp against plain Huey (SQLite and Redis), Celery and RQ, on real worker processes.

    .venv/bin/python benchmarks/run.py [--quick] [--only hueyapp,huey] [--budget 240]

Every system runs with one worker process and one worker thread, on fresh state (a new
SQLite file in a temp dir, or a FLUSHDB-ed Redis DB of its own):

* hueyapp: ``huey_consumer hueyapp.tasks.huey -w 1`` on SQLite;
* huey: plain ``SqliteHuey`` (benchmarks/huey_sqlite.py), ``huey_consumer`` with its defaults;
* huey-redis: ``RedisHuey(notify_result=True)`` (benchmarks/huey_redis.py), same consumer;
* celery: ``celery -A benchmarks.celery_app worker -P solo -c 1 --without-gossip
  --without-mingle --without-heartbeat -Q <queue>``, Redis broker and result backend;
* rq: ``rq worker --results-ttl 600 <queue>`` (RQ's default forking worker).

Each round runs every scenario for every system, the systems' order rotating from round to
round (A B C …, then B C … A), until the time budget would be exceeded (at least one round):

* group enqueue (worker stopped): a group of G ``add.s(i, i)`` — hueyapp
  ``group(...).apply_async()``, Huey ``huey.enqueue(group([...]))``, Celery
  ``group(...).apply_async()``, RQ ``Queue.enqueue_many`` — enqueue time only, tasks/s;
* enqueue (worker stopped): N ``add.delay(i, i)`` from one producer, tasks/s;
* drain: the worker is started on those N tasks; the clock runs from process start to the
  last result present (tasks/s), and the worker's start-up (process start to its "ready"
  log line) is reported separately, with the rate after start-up. A drain that does not
  finish within the drain deadline reports the tasks done so far per second, marked ``*``;
* idle consumer: every worker idle at once; RSS (VmRSS of the worker and its children) at the
  end of the window and CPU % of one core over the window (utime + stime deltas);
* round trip: ``add(1, 1)`` then wait for its result (each library's own blocking get), after
  a random idle gap of 0.2-2 s before each call, one unmeasured warm-up call per block.
  p50 / p99 are over all calls of all rounds.

Prints medians over rounds (round trips: percentiles over all calls) and ratios
system / hueyapp.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent
REDIS_URL = 'redis://127.0.0.1:6379'
DB_HUEY_REDIS, DB_CELERY_BROKER, DB_CELERY_BACKEND, DB_RQ = 10, 11, 12, 13
REDIS_START = ['redis-server', '--daemonize', 'yes', '--bind', '127.0.0.1', '--port', '6379',
               '--save', '', '--appendonly', 'no', '--dir', '/var/lib/redis',
               '--logfile', '/var/log/redis/ci.log']
CLK_TCK = os.sysconf('SC_CLK_TCK')
WAIT = 15.0  # bound of every single wait for a result or a worker start


# -- processes ---------------------------------------------------------------------------
def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f'/proc/{entry}/stat').read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(')', 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    children, tree, todo = _children_map(), [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f'/proc/{pid}/status').read_text().splitlines():
                if line.startswith('VmRSS:'):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


class Worker:
    """A worker subprocess logging to a file, 'ready' once its log shows ``marker``."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path, marker: str) -> None:
        self.command, self.env, self.log_path, self.marker = command, env, log_path, marker
        self.process: subprocess.Popen | None = None

    def start(self) -> 'Worker':
        self.log_path.write_bytes(b'')
        with open(self.log_path, 'ab') as log:
            self.process = subprocess.Popen(self.command, env=self.env, cwd=ROOT, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors='replace') if self.log_path.exists() else ''

    def ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f'worker {self.command} is not running:\n{self.log()[-3000:]}')
        return self.marker in self.log()

    def wait_ready(self, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f'worker {self.command} not ready in {timeout}s:\n{self.log()[-3000:]}')
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            for pid in reversed(process_tree(process.pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            process.wait(10)


def base_env(**extra: str) -> dict[str, str]:
    path = os.environ.get('PYTHONPATH')
    return {**os.environ, 'PYTHONPATH': f'{ROOT}{os.pathsep}{path}' if path else str(ROOT), **extra}


def redis_client(db: int):
    import redis
    return redis.Redis.from_url(f'{REDIS_URL}/{db}')


# -- systems -----------------------------------------------------------------------------
class System:
    name = ''
    marker = ''

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.round = 0

    def fresh(self) -> None:
        """New, empty state; called while the worker is stopped."""

    def worker(self) -> Worker:
        raise NotImplementedError

    def enqueue(self, i: int): ...
    def ready(self, handle) -> bool: ...
    def get(self, handle, timeout: float): ...
    def group(self, n: int) -> None: ...

    def close(self) -> None:
        pass


class CeleryStyleCalls:
    """hueyapp and Celery answer to the same calls: that is hueyapp's point."""

    def enqueue(self, i):
        return self.add.delay(i, i)

    def ready(self, handle):
        return handle.ready()

    def get(self, handle, timeout):
        return handle.get(timeout=timeout)

    def group(self, n):
        self._group(self.add.s(i, i) for i in range(n)).apply_async()


class HueyappSystem(CeleryStyleCalls, System):
    name, marker = 'hueyapp', 'Huey consumer started'

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.db = tmp / 'hueyapp-0.db'
        os.environ['HUEYAPP_DB'] = str(self.db)
        os.environ['HUEYAPP_IMMEDIATE'] = '0'
        from hueyapp import tasks
        from hueyapp.canvas import group
        self.app, self.add, self._group = tasks.app, tasks.add, group

    def fresh(self) -> None:
        self.round += 1
        self.db = self.tmp / f'hueyapp-{self.round}.db'
        self.app.configure(db=str(self.db))

    def worker(self) -> Worker:
        from hueyapp.testing import consumer_command
        return Worker(consumer_command('hueyapp.tasks.huey', '-w', '1'),
                      base_env(HUEYAPP_DB=str(self.db), HUEYAPP_IMMEDIATE='0'),
                      self.tmp / 'hueyapp.log', self.marker)



class HueySqliteSystem(System):
    name, marker, module = 'huey', 'Huey consumer started', 'benchmarks.huey_sqlite'

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.db = tmp / 'huey-0.db'
        os.environ['BENCH_HUEY_DB'] = str(self.db)
        import importlib
        from huey import group
        self.module = importlib.import_module(self.module)
        self.huey, self.add, self._group = self.module.huey, self.module.add, group

    def fresh(self) -> None:
        self.round += 1
        self.db = self.tmp / f'huey-{self.round}.db'
        self.huey.storage.close()
        self.huey.storage_kwargs['filename'] = str(self.db)
        self.huey.storage = self.huey.create_storage()

    def worker(self) -> Worker:
        return Worker([str(BIN / 'huey_consumer'), f'{self.module.__name__}.huey'],
                      base_env(BENCH_HUEY_DB=str(self.db)), self.tmp / f'{self.name}.log', self.marker)

    def enqueue(self, i):
        return self.add(i, i)

    def ready(self, handle):
        return self.huey.storage.has_data_for_key(handle.id)

    def get(self, handle, timeout):
        return handle.get(blocking=True, timeout=timeout)

    def group(self, n):
        self.huey.enqueue(self._group([self.add.s(i, i) for i in range(n)]))


class HueyRedisSystem(HueySqliteSystem):
    name, module = 'huey-redis', 'benchmarks.huey_redis'

    def __init__(self, tmp: Path) -> None:
        os.environ['BENCH_REDIS_URL'] = f'{REDIS_URL}/{DB_HUEY_REDIS}'
        super().__init__(tmp)

    def fresh(self) -> None:
        redis_client(DB_HUEY_REDIS).flushdb()

    def worker(self) -> Worker:
        return Worker([str(BIN / 'huey_consumer'), f'{self.module.__name__}.huey'],
                      base_env(BENCH_REDIS_URL=f'{REDIS_URL}/{DB_HUEY_REDIS}'),
                      self.tmp / f'{self.name}.log', self.marker)

    def close(self) -> None:
        redis_client(DB_HUEY_REDIS).flushdb()


class CelerySystem(CeleryStyleCalls, System):
    name, marker = 'celery', ' ready.'

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.queue = f'bench-{os.getpid()}'
        self.env = {'BENCH_CELERY_URL': f'{REDIS_URL}/{DB_CELERY_BROKER}',
                    'BENCH_CELERY_BACKEND': f'{REDIS_URL}/{DB_CELERY_BACKEND}',
                    'BENCH_CELERY_QUEUE': self.queue}
        os.environ.update(self.env)
        from celery import group
        from benchmarks import celery_app
        self.add, self._group = celery_app.add, group

    def fresh(self) -> None:
        redis_client(DB_CELERY_BROKER).flushdb()
        redis_client(DB_CELERY_BACKEND).flushdb()

    def worker(self) -> Worker:
        return Worker([str(BIN / 'celery'), '-A', 'benchmarks.celery_app', 'worker', '-P', 'solo',
                       '-c', '1', '--without-gossip', '--without-mingle', '--without-heartbeat',
                       '-Q', self.queue, '--loglevel', 'INFO'],
                      base_env(**self.env), self.tmp / 'celery.log', self.marker)


    def close(self) -> None:
        self.fresh()


class RQSystem(System):
    name, marker = 'rq', 'Listening on'
    func = 'benchmarks.rq_tasks.add'

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        from rq import Queue
        self.queue_name = f'bench-{os.getpid()}'
        self.queue = Queue(self.queue_name, connection=redis_client(DB_RQ))
        self.Queue = Queue

    def fresh(self) -> None:
        redis_client(DB_RQ).flushdb()

    def worker(self) -> Worker:
        return Worker([str(BIN / 'rq'), 'worker', '-u', f'{REDIS_URL}/{DB_RQ}', '--results-ttl', '600',
                       self.queue_name], base_env(), self.tmp / 'rq.log', self.marker)

    def enqueue(self, i):
        return self.queue.enqueue(self.func, i, i, result_ttl=600)

    def ready(self, handle):
        return handle.latest_result() is not None

    def get(self, handle, timeout):
        result = handle.latest_result(timeout=max(1, math.ceil(timeout)))
        if result is None:
            raise TimeoutError(f'rq job {handle.id} did not finish within {timeout}s')
        return result.return_value

    def group(self, n):
        self.queue.enqueue_many([self.Queue.prepare_data(self.func, (i, i), result_ttl=600)
                                 for i in range(n)])

    def close(self) -> None:
        self.fresh()


SYSTEMS = {cls.name: cls for cls in (HueyappSystem, HueySqliteSystem, HueyRedisSystem,
                                     CelerySystem, RQSystem)}
REDIS_SYSTEMS = {'huey-redis', 'celery', 'rq'}


def ensure_redis() -> None:
    import redis
    try:
        redis.Redis.from_url(REDIS_URL).ping()
        return
    except redis.exceptions.ConnectionError:
        pass
    subprocess.run(REDIS_START, check=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(REDIS_URL).ping()
            return
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- scenarios ---------------------------------------------------------------------------
def batch(system: System, workers: dict[str, Worker], figures: dict, args) -> None:
    """Group enqueue and enqueue with the worker stopped, then drain from worker start."""
    if system.name in workers:
        workers.pop(system.name).stop()
    system.fresh()
    started = time.perf_counter()
    system.group(args.group)
    figures['group'].append(args.group / (time.perf_counter() - started))

    system.fresh()
    started = time.perf_counter()
    handles = [system.enqueue(i) for i in range(args.tasks)]
    figures['enqueue'].append(args.tasks / (time.perf_counter() - started))

    worker = system.worker()
    workers[system.name] = worker
    started = time.perf_counter()
    worker.start()
    ready_at, done = None, 0
    deadline = started + args.drain_deadline
    while done < len(handles) and time.perf_counter() < deadline:
        if ready_at is None and worker.ready():
            ready_at = time.perf_counter()
        while done < len(handles) and system.ready(handles[done]):
            done += 1
        if done < len(handles):
            time.sleep(0.005)
    finished = time.perf_counter()
    if ready_at is None:
        worker.wait_ready()
        ready_at = time.perf_counter()
    figures['startup'].append(ready_at - started)
    figures['drain'].append(done / (finished - started))
    figures['drain_ready'].append(done / max(finished - ready_at, 1e-9))
    if done < len(handles):
        figures['partial'] = True
        worker.stop()
        system.fresh()
        worker.start()
        worker.wait_ready()


def idle(workers: dict[str, Worker], figures: dict, window: float) -> None:
    time.sleep(1.0)
    trees = {name: process_tree(worker.pid) for name, worker in workers.items()}
    before = {name: cpu_ticks(pids) for name, pids in trees.items()}
    started = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - started
    for name, worker in workers.items():
        pids = process_tree(worker.pid)
        ticks = cpu_ticks(pids) - before[name]
        figures[name]['cpu'].append(100.0 * ticks / CLK_TCK / elapsed)
        figures[name]['rss'].append(rss_kb(pids) / 1024)


def round_trips(system: System, figures: dict, calls: int) -> None:
    assert system.get(system.enqueue(1), WAIT) == 2  # warm-up, not measured
    for _ in range(calls):
        time.sleep(random.uniform(0.2, 2.0))
        started = time.perf_counter()
        try:
            value = system.get(system.enqueue(1), WAIT)
        except Exception:  # a timeout counts as one, at the bound
            figures['rt_failures'] = figures.get('rt_failures', 0) + 1
            value = 2
        figures['rt'].append(time.perf_counter() - started)
        assert value == 2, value


# -- report ------------------------------------------------------------------------------
ROWS = [  # key, label, format, how to summarise
    ('rt_p50', 'round trip p50 (ms)', '{:.1f}', None),
    ('rt_p99', 'round trip p99 (ms)', '{:.1f}', None),
    ('enqueue', 'enqueue (tasks/s)', '{:.0f}', statistics.median),
    ('group', 'group enqueue (tasks/s)', '{:.0f}', statistics.median),
    ('drain', 'drain incl. start-up (tasks/s)', '{:.0f}', statistics.median),
    ('drain_ready', 'drain after ready (tasks/s)', '{:.0f}', statistics.median),
    ('startup', 'worker start-up (s)', '{:.2f}', statistics.median),
    ('rss', 'idle RSS (MB)', '{:.1f}', statistics.median),
    ('cpu', 'idle CPU (% of a core)', '{:.2f}', statistics.median),
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[index]


def summarise(figures: dict) -> dict[str, float]:
    summary = {}
    for key, _, _, how in ROWS:
        if key.startswith('rt_'):
            if figures['rt']:
                summary[key] = 1000 * percentile(figures['rt'], 0.5 if key == 'rt_p50' else 0.99)
        elif figures[key]:
            summary[key] = how(figures[key])
    return summary


def report(names: list[str], figures: dict, args, rounds: int, elapsed: float) -> str:
    summaries = {name: summarise(figures[name]) for name in names}
    calls = {name: len(figures[name]['rt']) for name in names}
    lines = [f'{rounds} round(s) in {elapsed:.0f} s; N={args.tasks} tasks, group of {args.group}, '
             f'round trips per system: {min(calls.values())}-{max(calls.values())}; '
             f'medians over rounds (round trips: percentiles over all calls)', '']
    width = 32
    header = f'{"":{width}}' + ''.join(f'{name:>12}' for name in names)
    lines += [header]
    for key, label, fmt, _ in ROWS:
        cells = []
        for name in names:
            value = summaries[name].get(key)
            text = '-' if value is None else fmt.format(value)
            if key.startswith('drain') and figures[name].get('partial'):
                text += '*'
            cells.append(f'{text:>12}')
        lines.append(f'{label:{width}}' + ''.join(cells))
    if 'hueyapp' in names:
        lines += ['', f'{"ratio system / hueyapp":{width}}' + ''.join(f'{name:>12}' for name in names)]
        for key, label, _, _ in ROWS:
            ours = summaries['hueyapp'].get(key)
            cells = []
            for name in names:
                value = summaries[name].get(key)
                cells.append(f'{"-":>12}' if value is None or not ours else f'{value / ours:12.2f}')
            lines.append(f'{label:{width}}' + ''.join(cells))
    notes = []
    if any(figures[name].get('partial') for name in names):
        notes.append(f'* drain did not finish within {args.drain_deadline:.0f} s in at least one round: '
                     'tasks done by then / elapsed')
    failures = {name: figures[name].get('rt_failures') for name in names if figures[name].get('rt_failures')}
    if failures:
        notes.append(f'round trips that timed out after {WAIT:.0f} s (counted at the bound): {failures}')
    return '\n'.join(lines + ([''] + notes if notes else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', default=','.join(SYSTEMS), help=f'comma-separated subset of {",".join(SYSTEMS)}')
    parser.add_argument('--quick', action='store_true', help='small sizes, ~30 s budget')
    parser.add_argument('--budget', type=float, help='seconds; no new round starts that would not fit (default 260, quick 30)')
    parser.add_argument('--tasks', type=int, help='N for enqueue and drain (default 2000, quick 200)')
    parser.add_argument('--group', type=int, help='group size (default 10000, quick 1000)')
    parser.add_argument('--calls', type=int, help='measured round trips per system per round (default 5, quick 2)')
    parser.add_argument('--idle-window', type=float, help='seconds (default 5, quick 2)')
    parser.add_argument('--drain-deadline', type=float, help='seconds (default 10, quick 5)')
    parser.add_argument('--seed', type=int, default=1)
    args = parser.parse_args()
    quick = args.quick
    for name, full, small in (('budget', 260.0, 30.0), ('tasks', 2000, 200), ('group', 10000, 1000),
                              ('calls', 5, 2), ('idle_window', 5.0, 2.0), ('drain_deadline', 10.0, 5.0)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    names = [name.strip() for name in args.only.split(',') if name.strip()]
    unknown = set(names) - set(SYSTEMS)
    if unknown:
        parser.error(f'unknown systems {sorted(unknown)}; choose from {list(SYSTEMS)}')
    random.seed(args.seed)
    if REDIS_SYSTEMS & set(names):
        ensure_redis()

    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix='hueyapp-bench-'))
    systems: dict[str, System] = {}
    workers: dict[str, Worker] = {}
    figures = {name: {key: [] for key in ('rt', 'enqueue', 'group', 'drain', 'drain_ready',
                                          'startup', 'rss', 'cpu')} for name in names}
    rounds = 0
    try:
        for name in names:
            systems[name] = SYSTEMS[name](tmp)
        last_round = 0.0
        while rounds == 0 or time.monotonic() - began + last_round <= args.budget:
            round_started = time.monotonic()
            shift = rounds % len(names)
            order = names[shift:] + names[:shift]
            for name in order:
                batch(systems[name], workers, figures[name], args)
            idle(workers, figures, args.idle_window)
            for name in order:
                round_trips(systems[name], figures[name], args.calls)
            rounds += 1
            last_round = time.monotonic() - round_started
            print(f'round {rounds} done in {last_round:.0f} s', file=sys.stderr, flush=True)
    finally:
        for worker in workers.values():
            worker.stop()
        for system in systems.values():
            try:
                system.close()
            except Exception as exc:  # cleanup must not hide the real error
                print(f'cleanup of {system.name} failed: {exc}', file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    print(report(names, figures, args, rounds, time.monotonic() - began))


if __name__ == '__main__':
    main()
