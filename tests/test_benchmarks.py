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
         '--budget', '1', '--tasks', '20', '--group', '50', '--calls', '1', '--idle-window', '0.5'],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert 'hueyapp' in lines[2] and 'huey' in lines[2]
    labels = [line.split('(')[0].strip() for line in lines[3:12]]
    assert labels[0] == 'round trip p50' and labels[-1] == 'idle CPU'
    assert any(line.startswith('ratio system / hueyapp') for line in lines)
