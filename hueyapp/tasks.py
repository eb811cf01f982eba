"""The default app, its queues, and the example tasks of the Celery user guide.

Run a worker per queue::

    huey_consumer hueyapp.tasks.huey      # the default queue
    huey_consumer hueyapp.tasks.hipri     # any other declared queue, by its name

``huey`` is the default queue's Huey; every queue named in ``HUEYAPP_QUEUES`` is an
attribute of this module too (``hueyapp.tasks.hipri`` with the default settings).
"""
from __future__ import annotations

from collections.abc import Iterable

from huey import crontab

from hueyapp.app import App
from hueyapp.canvas import group
from hueyapp.lock import single_run
from hueyapp.result import GroupResult

app = App()
huey = app.default


def __getattr__(name: str):
    # Each declared queue's Huey, by name, for `huey_consumer hueyapp.tasks.<queue>`.
    if name in app.queues:
        return app.queues[name]
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


@huey.task()
def add(x, y):
    return x + y


@huey.task()
def mul(x, y):
    return x * y


@huey.task()
def xsum(numbers: Iterable):
    return sum(numbers)


@huey.task()
@single_run(key=lambda feed_url: feed_url, expire=60 * 10)
def import_feed(feed_url: str) -> str:
    """Download, parse and store a feed; one import per URL at a time (skips return None)."""
    from hueyapp import feeds  # feedparser and urllib: 5 MB an idle worker need not carry
    store = feeds.FeedStore(app.connect)
    return feeds.import_feed(feed_url, store, timeout=app.settings.feed_timeout)


@huey.periodic_task(crontab(minute='0'))
def refresh_feeds() -> GroupResult:
    """Every hour, on the hour: re-import every feed imported before."""
    from hueyapp.feed_store import FeedStore  # without feedparser: a worker with no feeds stays small
    return group(import_feed.s(url) for url in FeedStore(app.connect).urls()).apply_async()
