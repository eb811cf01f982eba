"""What at-least-once delivery costs: hueyapp against plain ``SqliteHuey``, side by side.

    .venv/bin/python benchmarks/leasing.py [--tasks 2000] [--rounds 5]

Each round runs both systems on fresh SQLite files in a temp dir, alternating which goes
first (A B, B A, …), and measures:

* enqueue: ``add.delay(i, i)`` (hueyapp) / ``add(i, i)`` (Huey) from one producer;
* drain: one in-process worker loop, ``huey.execute(huey.dequeue())`` until the queue is
  empty, each task storing its result (hueyapp: lease as a one-thread consumer does, run,
  result + done mark + ack in one commit; Huey: delete, run, store result).

Both run at the same SQLite ``synchronous`` (``--synchronous``, default ``normal``, hueyapp's
default; ``full`` is plain Huey's). Prints medians and the hueyapp/Huey ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def plain_huey(path: Path, synchronous: str):
    from huey import SqliteHuey

    from benchmarks.huey_tasks import NormalSyncSqliteHuey, declare_tasks
    huey_class = NormalSyncSqliteHuey if synchronous == 'normal' else SqliteHuey
    huey = huey_class('bench', filename=str(path))
    add, _ = declare_tasks(huey)
    return huey, add


def hueyapp_app(path: Path, synchronous: str):
    from hueyapp.app import App
    from hueyapp.config import Settings
    app = App(Settings(db=str(path), queues=('default',), synchronous=synchronous))
    app.default.storage.prefetch = app.settings.prefetch_multiplier  # as a 1-thread consumer

    @app.task()
    def add(x, y):
        return x + y

    return app.default, add.delay


def measure(build: Callable, path: Path, tasks: int, synchronous: str) -> tuple[float, float]:
    """Tasks per second for enqueue, then for drain."""
    huey, call = build(path, synchronous)
    started = time.perf_counter()
    for i in range(tasks):
        call(i, i)
    enqueue = tasks / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(tasks):
        huey.execute(huey.dequeue())
    drain = tasks / (time.perf_counter() - started)
    assert huey.pending_count() == 0
    return enqueue, drain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tasks', type=int, default=2000)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--synchronous', choices=('normal', 'full'), default='normal')
    args = parser.parse_args()

    systems = {'huey': plain_huey, 'hueyapp': hueyapp_app}
    figures: dict[str, dict[str, list[float]]] = {name: {'enqueue': [], 'drain': []} for name in systems}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = list(systems) if round_ % 2 == 0 else list(reversed(systems))
            for name in order:
                enqueue, drain = measure(systems[name], Path(tmp) / f'{name}-{round_}.db', args.tasks,
                                         args.synchronous)
                figures[name]['enqueue'].append(enqueue)
                figures[name]['drain'].append(drain)

    print(f'{args.tasks} tasks x {args.rounds} rounds, synchronous={args.synchronous}, '
          f'medians (tasks/s)')
    print(f'{"":10}{"huey":>10}{"hueyapp":>10}{"ratio":>8}')
    for measure_name in ('enqueue', 'drain'):
        huey = statistics.median(figures['huey'][measure_name])
        ours = statistics.median(figures['hueyapp'][measure_name])
        print(f'{measure_name:10}{huey:10.0f}{ours:10.0f}{ours / huey:8.2f}')


if __name__ == '__main__':
    main()
