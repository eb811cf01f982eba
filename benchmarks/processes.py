"""Worker processes for benchmarks/run.py, and what /proc says about them (CPU ticks, RSS)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf('SC_CLK_TCK')
WAIT = 15.0  # bound of every single wait for a result or a worker start
STOP_GRACE = 5.0  # a worker still up this long after SIGINT is killed (rq worker-pool hangs)


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
    """``pid`` and all its descendants: a worker's pool processes count as the worker."""
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


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment, with the repo importable (the ``benchmarks`` modules)."""
    path = os.environ.get('PYTHONPATH')
    return {**os.environ, 'PYTHONPATH': f'{ROOT}{os.pathsep}{path}' if path else str(ROOT), **extra}


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
        """SIGINT (a warm shutdown everywhere), then SIGKILL to the whole tree after a grace."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            for pid in reversed(process_tree(process.pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            process.wait(STOP_GRACE)
