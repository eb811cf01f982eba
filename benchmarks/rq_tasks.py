"""The task RQ's worker imports for benchmarks/run.py."""


def add(x, y):
    return x + y
