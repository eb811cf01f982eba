"""hueyapp against plain Huey (SQLite and Redis), Celery and RQ, on real worker processes.

    .venv-bench/bin/python benchmarks/run.py [--quick] [--only hueyapp,huey] [--sqlite-venv .venv]

Systems (benchmarks/systems.py), each on fresh state for every scenario (a new SQLite file in
a temp dir, or a FLUSHDB-ed Redis DB of its own):

* hueyapp: ``huey_consumer hueyapp.tasks.huey`` on SQLite, at hueyapp's own ``synchronous``;
* huey: plain ``SqliteHuey`` at its defaults (synchronous FULL), ``huey_consumer``;
* huey-normal: plain ``SqliteHuey`` whose connections set ``synchronous=NORMAL``;
* huey-redis: ``RedisHuey(notify_result=True)``, ``huey_consumer``;
* celery: ``celery -A benchmarks.celery_app worker``, Redis broker and result backend;
* rq: ``rq worker`` (RQ's forking worker) and ``rq worker-pool``.

The SQLite systems' workers run ``huey_consumer`` from ``--sqlite-venv`` (default: this
interpreter's venv). ``make bench`` points it at ``.venv``, which holds only hueyapp's own
dependencies, while this script runs in ``.venv-bench`` with celery, redis and rq: Huey's
storage module imports redis-py whenever it is installed, which would add several MB to the
idle RSS of a SQLite worker whose user never touches Redis.

Each round runs every scenario for every system, the systems' order rotating from round to
round, until the time budget would be exceeded (at least one round). Per system, with its
worker stopped:

* group, chord and map enqueue of G ``add(i, i)`` (chord body ``xsum``), enqueue time only;
* enqueue from P producer processes at once for S seconds (started together, each after one
  unmeasured enqueue that opens its connection): tasks/s of all of them, errors;
* per worker pool (1 thread, 4 threads, 2 processes): N ``add.delay(i, i)`` from this process
  (the 1-producer enqueue figure), then a worker on that backlog: tasks/s from its ready line
  to the last result; start-up (process start to ready line) apart.

Then, with every worker (1 thread) up: round trips ``add(1, 1)`` + wait, each after a random
0.2-2 s idle gap; then a long idle of every worker at once (CPU % and RSS over it) and one
more round trip each. Every wait is bounded (15 s for a start or a result, ``--deadline`` for
a drain; cut-off figures are marked ``*``). Prints medians over rounds
(round trips: percentiles over all calls) and ratios system / hueyapp.
"""
from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.processes import Worker  # noqa: E402
from benchmarks.report import report  # noqa: E402
from benchmarks.scenarios import Figures, batch, long_idle, round_trips, timed  # noqa: E402
from benchmarks.systems import CURRENT_VENV, REDIS_URL, SYSTEMS, System  # noqa: E402

REDIS_START = ['redis-server', '--daemonize', 'yes', '--bind', '127.0.0.1', '--port', '6379',
               '--save', '', '--appendonly', 'no', '--dir', '/var/lib/redis',
               '--logfile', '/var/log/redis/ci.log']
# name: (default, --quick default, help)
SIZES = {
    'budget': (600.0, 45.0, 'seconds; no new round starts that would not fit'),
    'tasks': (10000, 400, 'N: tasks of each 1-producer enqueue and of each drain'),
    'group': (10000, 1000, 'G: size of the group, the chord and the map'),
    'producers': (4, 4, 'P: producer processes enqueuing at once'),
    'producer_seconds': (1.0, 0.3, 'seconds the P producers enqueue at once'),
    'calls': (5, 2, 'round trips per system per round after 0.2-2 s idle gaps'),
    'long_idle': (30.0, 3.0, 'seconds every worker idles at once before one more round trip; '
                             'idle CPU and RSS are measured over it'),
    'deadline': (20.0, 3.0, 'seconds a drain may take before being cut off'),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', default=','.join(SYSTEMS),
                        help=f'comma-separated subset of {",".join(SYSTEMS)}')
    parser.add_argument('--quick', action='store_true', help='small sizes, about a minute')
    for name, (full, small, text) in SIZES.items():
        parser.add_argument(f'--{name.replace("_", "-")}', type=type(full),
                            help=f'{text} (default {full}, quick {small})')
    parser.add_argument('--sqlite-venv', type=Path, default=CURRENT_VENV,
                        help="venv whose huey_consumer runs the SQLite systems' workers "
                             '(default: the one running this script)')
    parser.add_argument('--seed', type=int, default=1)
    args = parser.parse_args()
    for name, (full, small, _) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    args.names = [name.strip() for name in args.only.split(',') if name.strip()]
    unknown = set(args.names) - set(SYSTEMS)
    if unknown:
        parser.error(f'unknown systems {sorted(unknown)}; choose from {list(SYSTEMS)}')
    args.sqlite_venv = args.sqlite_venv.absolute()  # workers start in the repo's root
    if not (args.sqlite_venv / 'bin' / 'huey_consumer').exists():
        parser.error(f'--sqlite-venv {args.sqlite_venv} has no bin/huey_consumer')
    if args.long_idle <= 0 or args.producer_seconds <= 0 or args.producers < 1:
        parser.error('--long-idle and --producer-seconds must be positive, --producers at least 1')
    return args


def ensure_redis() -> None:
    """Start a throwaway Redis if none answers, and wait (bounded) until it does."""
    import redis
    deadline = time.monotonic() + 10
    started = False
    while True:
        try:
            redis.Redis.from_url(REDIS_URL).ping()
            return
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            if not started:
                subprocess.run(REDIS_START, check=True)
                started = True
            time.sleep(0.1)


def compile_sources(venvs: set[Path]) -> None:
    """Write the bytecode of hueyapp and of these scripts, with every interpreter that runs them.

    Installed packages (Huey, Celery, RQ) got theirs from pip; an editable hueyapp is compiled
    by its first import, unless the environment sets PYTHONDONTWRITEBYTECODE (this machine
    does). Then every worker would compile hueyapp from source as it starts: slower, and the
    compiler's garbage stays in its heap (measured: idle RSS 25.5 MB instead of 24.1).
    """
    for venv in sorted(venvs):
        subprocess.run([str(venv / 'bin' / 'python'), '-m', 'compileall', '-q',
                        str(ROOT / 'hueyapp'), str(ROOT / 'benchmarks')],
                       check=True, stdout=subprocess.DEVNULL)


def has_redis_py(venv: Path) -> bool:
    """Whether ``venv`` can import redis-py (then Huey's storage module imports it too)."""
    probe = 'import importlib.util, sys; sys.exit(importlib.util.find_spec("redis") is None)'
    return subprocess.run([str(venv / 'bin' / 'python'), '-c', probe]).returncode == 0


def context_lines(systems: dict[str, System], venv: Path) -> list[str]:
    """How the SQLite systems ran: their workers' venv and SQLite's synchronous setting."""
    sqlite = {name: system.synchronous() for name, system in systems.items() if system.on_sqlite}
    if not sqlite:
        return []
    redis_py = ('INSTALLED (Huey imports it: idle RSS includes it)' if has_redis_py(venv)
                else 'not installed')
    settings = ', '.join(f'{name} {level}' for name, level in sqlite.items())
    if 'hueyapp' in sqlite:
        from hueyapp.config import Settings
        peers = [name for name, level in sqlite.items()
                 if name != 'hueyapp' and level == sqlite['hueyapp']]
        settings += (f"; hueyapp.config's default: {Settings.synchronous}; "
                     f"at hueyapp's setting: {', '.join(peers) or 'none'}")
    return [f'SQLite workers ({", ".join(sqlite)}) ran from {venv}/bin, where redis-py is {redis_py}',
            f'SQLite synchronous: {settings}']


def run_round(systems: dict[str, System], order: list[str], workers: dict[str, Worker],
              figures: dict[str, Figures], args: argparse.Namespace) -> None:
    """Every scenario for every system, in ``order``; progress goes to stderr."""
    for name in order:
        seconds, _ = timed(lambda: batch(systems[name], workers, figures[name], args))
        print(f'  {name}: enqueues and drains in {seconds:.0f} s', file=sys.stderr, flush=True)
    for name in order:
        round_trips(systems[name], figures[name], args.calls)
    long_idle([systems[name] for name in order], workers, figures, args.long_idle)


def main() -> None:
    args = parse_args()
    names = args.names
    random.seed(args.seed)
    compile_sources({args.sqlite_venv, CURRENT_VENV})
    if any(not SYSTEMS[name].on_sqlite for name in names):
        ensure_redis()

    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix='hueyapp-bench-'))
    systems: dict[str, System] = {}
    workers: dict[str, Worker] = {}
    figures = {name: Figures() for name in names}
    rounds, last_round = 0, 0.0
    try:
        for name in names:
            cls = SYSTEMS[name]
            systems[name] = cls(tmp, venv=args.sqlite_venv if cls.on_sqlite else CURRENT_VENV)
        context = ['hueyapp and benchmarks/ were compiled to bytecode first, as pip compiles '
                   'what it installs'] + context_lines(systems, args.sqlite_venv)
        while rounds == 0 or time.monotonic() - began + last_round <= args.budget:
            round_started = time.monotonic()
            shift = rounds % len(names)
            run_round(systems, names[shift:] + names[:shift], workers, figures, args)
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
    print(report(names, figures, args, rounds, time.monotonic() - began, context))


if __name__ == '__main__':
    main()
