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
