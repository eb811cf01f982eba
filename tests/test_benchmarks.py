"""The benchmark scripts run (their figures are not checked: no timing asserts in tests)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_leasing_benchmark_runs_and_prints_ratios(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(ROOT / 'benchmarks' / 'leasing.py'), '--tasks', '20', '--rounds', '2'],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert [line.split()[0] for line in lines[-2:]] == ['enqueue', 'drain']
    assert 'ratio' in lines[-3]


def test_run_benchmark_quick_without_brokers(tmp_path):
    # hueyapp and plain Huey only: no Redis, Celery or RQ needed; real huey_consumer processes.
    completed = subprocess.run(
        [sys.executable, str(ROOT / 'benchmarks' / 'run.py'), '--only', 'hueyapp,huey', '--quick',
         '--budget', '1', '--tasks', '20', '--group', '50', '--calls', '1', '--long-idle', '0.5'],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].startswith('1 round(s)')
    assert lines[2].split() == ['hueyapp', 'huey']
    labels = [line.split('  ')[0] for line in lines[3:18]]
    assert labels == [
        'round trip p50 (ms)', 'round trip p99 (ms)', 'round trip after 0.5 s idle (ms)',
        'enqueue, 1 producer (tasks/s)', 'enqueue, 4 producers (tasks/s)', 'enqueue errors, 4 producers',
        'group enqueue (tasks/s)', 'chord enqueue (tasks/s)', 'map enqueue (tasks/s)',
        'drain 1 thread (tasks/s)', 'drain 4 threads (tasks/s)', 'drain 2 processes (tasks/s)',
        'worker start-up, 1 thread (s)', 'idle RSS (MB)', 'idle CPU (% of a core)']
    assert all('-' not in line.split('  ', 1)[1] for line in lines[3:18])  # every figure measured
    assert lines[19].startswith('ratio system / hueyapp')
    assert any(line.startswith('SQLite synchronous: hueyapp') for line in lines)
