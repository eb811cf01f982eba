"""The table benchmarks/run.py prints: one column per system, then the ratios system / hueyapp."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from benchmarks.processes import WAIT
from benchmarks.scenarios import Figures
from benchmarks.systems import BULK_KINDS, POOLS, RESIDENT_POOL

LABEL_WIDTH, CELL_WIDTH = 34, 12


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    fmt: str


def rows(args: Any) -> list[Row]:
    """The report's rows, in order; labels name the sizes that vary with the arguments."""
    return [
        Row('rt_p50', 'round trip p50 (ms)', '{:.1f}'),
        Row('rt_p99', 'round trip p99 (ms)', '{:.1f}'),
        Row('rt_long', f'round trip after {args.long_idle:g} s idle (ms)', '{:.1f}'),
        Row('enqueue', 'enqueue, 1 producer (tasks/s)', '{:.0f}'),
        Row('producers', f'enqueue, {args.producers} producers (tasks/s)', '{:.0f}'),
        Row('producer_errors', f'enqueue errors, {args.producers} producers', '{:.0f}'),
        *(Row(kind, f'{kind} enqueue (tasks/s)', '{:.0f}') for kind in BULK_KINDS),
        *(Row(f'drain_{pool}', f'drain {label} (tasks/s)', '{:.0f}') for pool, label in POOLS.items()),
        Row('startup', f'worker start-up, {POOLS[RESIDENT_POOL]} (s)', '{:.2f}'),
        Row('rss', 'idle RSS (MB)', '{:.1f}'),
        Row('cpu', 'idle CPU (% of a core)', '{:.2f}'),
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarise(figures: Figures) -> dict[str, float]:
    """One figure per row key: percentiles of round trips, the total of errors, else medians."""
    summary = {key: statistics.median(values) for key, values in figures.samples.items() if values}
    if 'producer_errors' in figures.samples:
        summary['producer_errors'] = sum(figures.samples['producer_errors'])
    if figures.round_trips:
        summary['rt_p50'] = 1000 * percentile(figures.round_trips, 0.5)
        summary['rt_p99'] = 1000 * percentile(figures.round_trips, 0.99)
    if figures.long_idle_round_trips:
        summary['rt_long'] = 1000 * statistics.median(figures.long_idle_round_trips)
    return summary


def table_line(label: str, cells: list[str]) -> str:
    return f'{label:{LABEL_WIDTH}}' + ''.join(f'{cell:>{CELL_WIDTH}}' for cell in cells)


def figure_lines(names: list[str], figures: dict[str, Figures], summaries: dict[str, dict[str, float]],
                 table_rows: list[Row]) -> list[str]:
    lines = [table_line('', names)]
    for row in table_rows:
        cells = []
        for name in names:
            value = summaries[name].get(row.key)
            cell = '-' if value is None else row.fmt.format(value)
            cells.append(cell + ('*' if row.key in figures[name].cut_short else ''))
        lines.append(table_line(row.label, cells))
    return lines


def ratio_lines(names: list[str], summaries: dict[str, dict[str, float]],
                table_rows: list[Row]) -> list[str]:
    lines = [table_line('ratio system / hueyapp', names)]
    for row in table_rows:
        ours = summaries['hueyapp'].get(row.key)
        cells = []
        for name in names:
            value = summaries[name].get(row.key)
            cells.append('-' if value is None or not ours else f'{value / ours:.2f}')
        lines.append(table_line(row.label, cells))
    return lines


def error_notes(what: str, errors: dict[str, Any]) -> list[str]:
    lines = []
    for name, counter in errors.items():
        if counter:
            listed = '; '.join(f'{count} x {text}' for text, count in counter.most_common(3))
            lines.append(f'{what} of {name}: {listed}')
    return lines


def notes(names: list[str], figures: dict[str, Figures], args: Any, missing: bool) -> list[str]:
    lines = []
    if any(figures[name].cut_short for name in names):
        lines.append(f'* cut off by the {args.deadline:g} s deadline in at least one round: '
                     'tasks done by then / elapsed')
    if missing:
        lines.append('- the system has no such pool or call (docs/benchmarks.md), '
                     'or it was not measured')
    lines += error_notes('enqueue errors', {name: figures[name].producer_errors for name in names})
    lines += error_notes(f'failed round trips (warm-ups included; measured ones count at the '
                         f'time they took, at most {WAIT:g} s)',
                         {name: figures[name].round_trip_errors for name in names})
    return lines


def report(names: list[str], figures: dict[str, Figures], args: Any, rounds: int, elapsed: float,
           context: list[str]) -> str:
    """The whole report: header, figures, ratios, then notes and ``context`` (setup lines)."""
    summaries = {name: summarise(figures[name]) for name in names}
    table_rows = rows(args)
    calls = [len(figures[name].round_trips) for name in names]
    header = (f'{rounds} round(s) in {elapsed:.0f} s; N={args.tasks} tasks, group/chord/map of '
              f'{args.group}, round trips per system: {min(calls)}-{max(calls)} (1 a round after the '
              f'long idle); medians over rounds '
              f'(round trips: percentiles over all calls, errors: total)')
    lines = [header, '', *figure_lines(names, figures, summaries, table_rows)]
    if 'hueyapp' in names:
        lines += ['', *ratio_lines(names, summaries, table_rows)]
    missing = any(row.key not in summaries[name] for row in table_rows for name in names)
    footer = notes(names, figures, args, missing) + context
    return '\n'.join(lines + ([''] + footer if footer else []))
