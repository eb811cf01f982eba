"""Celery on Redis for benchmarks/run.py: ``celery -A benchmarks.celery_app worker …``."""
import os

from celery import Celery

app = Celery('bench', broker=os.environ.get('BENCH_CELERY_URL', 'redis://127.0.0.1:6379/3'),
             backend=os.environ.get('BENCH_CELERY_BACKEND', 'redis://127.0.0.1:6379/4'))
app.conf.task_default_queue = os.environ.get('BENCH_CELERY_QUEUE', 'bench')
app.conf.broker_connection_retry_on_startup = True


@app.task
def add(x, y):
    return x + y


@app.task
def xsum(numbers):
    return sum(numbers)
