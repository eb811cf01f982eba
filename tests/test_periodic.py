"""Periodic tasks: refresh_feeds fires on the hour, on its own queue, through Huey's scheduler."""
import datetime
import os
import subprocess
import sys
import threading

from freezegun import freeze_time

from hueyapp import AsyncResult, GroupResult
from hueyapp.consumer import Scheduler
from hueyapp.feed_store import FeedStore
from hueyapp.tasks import app, hipri, huey

T0 = datetime.datetime(2026, 1, 1, 10, 0, 0)


def names(tasks):
    return [task.name for task in tasks]


def scheduler(queue, stop=None):
    return Scheduler(queue, stop or threading.Event(), interval=1, periodic=True)


def test_refresh_feeds_is_due_on_the_hour():
    with freeze_time(T0):
        assert 'refresh_feeds' in names(huey.read_periodic(T0))


def test_refresh_feeds_is_not_due_past_the_hour():
    with freeze_time(T0):
        assert 'refresh_feeds' not in names(huey.read_periodic(datetime.datetime(2026, 1, 1, 10, 1)))
        assert 'refresh_feeds' not in names(huey.read_periodic(datetime.datetime(2026, 1, 1, 10, 30)))


def test_refresh_feeds_is_never_read_by_another_queue():
    for minute in (0, 1, 30):
        assert 'refresh_feeds' not in names(hipri.read_periodic(datetime.datetime(2026, 1, 1, 10, minute)))


def test_scheduler_enqueues_refresh_feeds_on_the_hour(db):
    with freeze_time(T0):
        scheduler(huey).enqueue_periodic_tasks(T0)
    assert huey.pending_count() == 1
    assert names(huey.pending()) == ['refresh_feeds']
    assert hipri.pending_count() == 0


def test_scheduler_enqueues_nothing_at_half_past(db):
    with freeze_time(T0):
        scheduler(huey).enqueue_periodic_tasks(datetime.datetime(2026, 1, 1, 10, 30))
    assert huey.pending_count() == 0


def test_hipri_scheduler_enqueues_nothing_on_the_hour(db):
    with freeze_time(T0):
        scheduler(hipri).enqueue_periodic_tasks(T0)
    assert huey.pending_count() == 0
    assert hipri.pending_count() == 0


def test_refresh_feeds_enqueues_one_import_per_known_feed(db):
    store = FeedStore(app.connect)
    for url in ('http://feeds.invalid/a', 'http://feeds.invalid/b'):
        store.save(url, {'feed': {'title': url}, 'entries': []})
    scheduler(huey).enqueue_periodic_tasks(T0)
    huey.execute(huey.dequeue())
    pending = huey.pending()
    assert names(pending) == ['import_feed', 'import_feed']
    assert sorted(task.args for task in pending) == [('http://feeds.invalid/a',), ('http://feeds.invalid/b',)]


def test_the_hourly_refresh_lists_feeds_without_importing_feedparser(tmp_path):
    # An idle worker runs refresh_feeds every hour; feedparser and urllib would stay in it (4 MB).
    code = '\n'.join((
        'import sys',
        'from hueyapp.feed_store import FeedStore',
        'from hueyapp.tasks import app, huey, refresh_feeds',
        "FeedStore(app.connect).save('http://feeds.invalid/a', {'feed': {'title': 'a'}, 'entries': []})",
        'refresh_feeds()',
        'print([task.args for task in huey.pending()])',
        "print(sorted({'feedparser', 'urllib.request'} & set(sys.modules)))"))
    env = {**os.environ, 'HUEYAPP_DB': str(tmp_path / 'feeds.db'), 'HUEYAPP_IMMEDIATE': '0'}
    ran = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["[('http://feeds.invalid/a',)]", '[]']


def test_periodic_tick_stores_its_result_like_any_task(db):
    # As with Celery beat, a periodic task is an ordinary task: its outcome is kept (and expires).
    scheduler(huey).enqueue_periodic_tasks(T0)
    tick = huey.dequeue()
    huey.execute(tick)
    assert isinstance(AsyncResult(tick.id).get(timeout=0), GroupResult)


def test_scheduler_loop_sweeps_expired_results(db):
    stop = threading.Event()
    stop.set()  # the loop's sleep returns at once
    with freeze_time(T0) as frozen:
        huey.put_result('old', 1)
        huey.put('revoke-like', 2)
        frozen.tick(app.settings.result_expires + 1)
        scheduler(huey, stop).loop(datetime.datetime(2026, 1, 2, 10, 30))
        rows = dict(huey.storage.sql('select key, expires_at from hueyapp_kv', results=True))
    assert set(rows) == {'revoke-like'}
