"""The scenarios of benchmarks/run.py; each appends what it measures to a system's Figures."""
from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from benchmarks.processes import CLK_TCK, WAIT, Worker, cpu_ticks, process_tree, rss_kb
from benchmarks.systems import POOLS, RESIDENT_POOL, SYSTEMS, System

IDLE_GAP = (0.2, 2.0)  # seconds a worker idles before each ordinary round trip
SPAWN_WAIT = 2 * WAIT  # producer processes import their library before the start line
# The resident worker's drain runs last, so that its worker stays up for the idle scenarios.
DRAIN_ORDER = [pool for pool in POOLS if pool != RESIDENT_POOL] + [RESIDENT_POOL]


@dataclass
class Figures:
    """Everything measured for one system, over all rounds."""

    samples: dict[str, list[float]] = field(default_factory=dict)  # one per round (or more), by row key
    round_trips: list[float] = field(default_factory=list)  # seconds, every measured call
    long_idle_round_trips: list[float] = field(default_factory=list)  # also in round_trips
    cut_short: set[str] = field(default_factory=set)  # row keys whose deadline passed at least once
    producer_errors: Counter = field(default_factory=Counter)  # error text: count
    round_trip_errors: Counter = field(default_factory=Counter)

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(value)


def describe(exc: BaseException) -> str:
    return f'{type(exc).__name__}: {exc}'[:160]


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``action`` took, and what it returned."""
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


# -- with the system's worker stopped ------------------------------------------------------
def bulk_enqueues(system: System, figures: Figures, size: int) -> None:
    """A group, a chord and a map of ``size`` ``add(i, i)``, each on fresh state: enqueue only."""
    for kind in system.bulk_kinds:
        system.fresh()
        seconds, _ = timed(lambda: getattr(system, f'enqueue_{kind}')(size))
        figures.add(kind, size / seconds)


def enqueue_backlog(system: System, figures: Figures, tasks: int) -> list:
    """``tasks`` calls of ``add(i, i)`` from this process on fresh state; the 1-producer figure."""
    system.fresh()
    system.enqueue(-1)  # unmeasured: the new state's connection opens (as in each producer)
    seconds, handles = timed(lambda: [system.enqueue(i) for i in range(tasks)])
    figures.add('enqueue', tasks / seconds)
    return handles


def produce(name: str, tmp: str, state: int, seconds: float, start: Any, outcomes: Any) -> None:
    """One producer process: the parent's system and state; once all are ready, enqueue for
    ``seconds``. Reports its count, its errors and when its first and last calls began and ended."""
    system = SYSTEMS[name](Path(tmp), state)
    # One enqueue before the start line, as before the one producer's run: the connection
    # opens and the code warms up. Left out, the start-up of four processes fell inside a
    # run of about half a second.
    try:
        system.enqueue(-1)
    except Exception:
        pass  # if it recurs, the enqueues below count it
    start.wait(SPAWN_WAIT)
    began = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
    stop_at = began + seconds
    enqueued, errors, ended = 0, Counter(), began
    # Bounded by the clock; the count bound is far above any system's rate.
    for i in range(int(seconds * 10_000_000)):
        if ended >= stop_at:
            break
        try:
            system.enqueue(i)
            enqueued += 1
        except Exception as exc:  # e.g. database is locked: counted, the producer goes on
            errors[describe(exc)] += 1
        ended = time.monotonic()
    outcomes.put((enqueued, dict(errors), began, ended))


def enqueue_from_producers(system: System, figures: Figures, producers: int, seconds: float) -> None:
    """``producers`` processes enqueue at once for ``seconds``: tasks of all of them per second.

    Time-boxed, not a share of N each: with shares, whichever producer the lock favoured
    finished early and the last ones ran alone (measured for hueyapp: the four ended up to
    80 ms apart in runs of 190 ms), so the figure mixed in a tail that is not "at once".
    """
    system.fresh()
    context = multiprocessing.get_context('spawn')
    start, outcomes = context.Barrier(producers + 1), context.Queue()
    processes = [context.Process(target=produce, daemon=True, args=(
        system.name, str(system.tmp), system.state, seconds, start, outcomes))
        for _ in range(producers)]
    for process in processes:
        process.start()
    try:
        start.wait(SPAWN_WAIT)
        results = [outcomes.get(timeout=seconds + WAIT) for _ in processes]
    finally:
        for process in processes:
            process.join(WAIT)
            if process.is_alive():
                process.kill()
                process.join()
    enqueued = sum(count for count, _, _, _ in results)
    elapsed = max(ended for _, _, _, ended in results) - min(began for _, _, began, _ in results)
    errors = sum((Counter(found) for _, found, _, _ in results), Counter())
    figures.add('producers', enqueued / elapsed)
    figures.add('producer_errors', sum(errors.values()))
    figures.producer_errors.update(errors)


# -- drains --------------------------------------------------------------------------------
def wait_for_results(system: System, handles: list, worker: Worker,
                     stop_at: float) -> tuple[int, float, float]:
    """Check results in order (without consuming them) until all are in or ``stop_at``.

    Returns the tasks done, when the worker's log said it was ready, and when checking ended.
    """
    ready_at, done = None, 0
    while done < len(handles) and time.perf_counter() < stop_at:
        if ready_at is None and worker.ready():
            ready_at = time.perf_counter()
        while done < len(handles) and system.ready(handles[done]):
            done += 1
        if done < len(handles):
            time.sleep(0.005)
    ended = time.perf_counter()
    if ready_at is None:
        worker.wait_ready()
        ready_at = time.perf_counter()
    return done, ready_at, ended


def drain(system: System, pool: str, handles: list, figures: Figures,
          deadline: float) -> tuple[Worker, bool]:
    """Start a ``pool`` worker on the backlog; tasks/s from its ready line to the last result.

    A drain cut off by ``deadline`` counts the tasks done by then. Returns the worker, still
    running, and whether every task was done.
    """
    worker = system.worker(pool)
    started = time.perf_counter()
    worker.start()
    try:
        done, ready_at, ended = wait_for_results(system, handles, worker, started + deadline)
    except BaseException:
        worker.stop()
        raise
    system.stop_waiting()
    figures.add(f'drain_{pool}', done / max(ended - ready_at, 1e-9))
    if pool == RESIDENT_POOL:
        figures.add('startup', ready_at - started)
    if done < len(handles):
        figures.cut_short.add(f'drain_{pool}')
    return worker, done == len(handles)


def drains(system: System, figures: Figures, tasks: int, deadline: float) -> Worker:
    """One drain per pool the system has, each of a fresh backlog; returns the resident worker."""
    for pool in DRAIN_ORDER:
        if pool not in system.pools:
            continue
        handles = enqueue_backlog(system, figures, tasks)
        worker, finished = drain(system, pool, handles, figures, deadline)
        if pool != RESIDENT_POOL:
            worker.stop()
        elif not finished:  # leftover tasks would keep it busy: restart it idle
            worker.stop()
            system.fresh()
            worker = system.worker(pool).start()  # a new command line: the state has moved on
            worker.wait_ready()
    return worker


def batch(system: System, workers: dict[str, Worker], figures: Figures, args: Any) -> None:
    """Enqueue scenarios with the system's worker stopped, then the drains."""
    if system.name in workers:
        workers.pop(system.name).stop()
    bulk_enqueues(system, figures, args.group)
    enqueue_from_producers(system, figures, args.producers, args.producer_seconds)
    workers[system.name] = drains(system, figures, args.tasks, args.deadline)


# -- against idle workers ------------------------------------------------------------------
def round_trip(system: System, figures: Figures) -> float:
    """Seconds for ``add(1, 1)`` and its result; a failed call is noted and counts as it took."""
    started = time.perf_counter()
    try:
        value = system.get(system.enqueue(1), WAIT)
        if value != 2:
            raise ValueError(f'add(1, 1) returned {value!r}')
    except Exception as exc:
        figures.round_trip_errors[describe(exc)] += 1
    return time.perf_counter() - started


def round_trips(system: System, figures: Figures, calls: int) -> None:
    """One unmeasured warm-up call, then ``calls`` calls each after a random idle gap."""
    round_trip(system, figures)
    for _ in range(calls):
        time.sleep(random.uniform(*IDLE_GAP))
        figures.round_trips.append(round_trip(system, figures))


def long_idle(systems: Iterable[System], workers: dict[str, Worker], figures: dict[str, Figures],
              seconds: float) -> None:
    """Every worker idle at once: CPU and RSS over ``seconds``, then one round trip each."""
    trees = {name: process_tree(worker.pid) for name, worker in workers.items()}
    before = {name: cpu_ticks(pids) for name, pids in trees.items()}
    elapsed, _ = timed(lambda: time.sleep(seconds))
    for name, worker in workers.items():
        pids = process_tree(worker.pid)
        ticks = cpu_ticks(pids) - before[name]
        figures[name].add('cpu', 100.0 * ticks / CLK_TCK / elapsed)
        figures[name].add('rss', rss_kb(pids) / 1024)
    for system in systems:
        took = round_trip(system, figures[system.name])
        figures[system.name].round_trips.append(took)
        figures[system.name].long_idle_round_trips.append(took)
