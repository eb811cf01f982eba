"""Plain Huey on Redis for benchmarks/run.py: ``huey_consumer benchmarks.huey_redis.huey``.

``notify_result=True`` lets a waiting ``Result.get(blocking=True)`` BLPOP instead of polling.
"""
import os

from huey import RedisHuey

from benchmarks.huey_tasks import declare_tasks

huey = RedisHuey('bench-redis', url=os.environ.get('BENCH_REDIS_URL', 'redis://127.0.0.1:6379/2'),
                 notify_result=True)
add, xsum = declare_tasks(huey)
