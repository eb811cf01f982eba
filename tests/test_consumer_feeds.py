"""``import_feed`` and ``refresh_feeds`` run by real consumers against a real local feed server.

The feed documents are served by :class:`tests.feed_server.FeedServer`; entries are read back
from the test's SQLite file, the same one the consumers write.
"""
from __future__ import annotations

import re
import sqlite3
import time

import pytest

from hueyapp import GroupResult
from hueyapp.feeds import FeedError, FeedStore
from hueyapp.tasks import add, app, import_feed, refresh_feeds
from tests.feed_server import FeedServer, rss

FEED_PATH = '/feed.xml'
ITEMS = [('First post', 'http://example.invalid/1'), ('Second post', 'http://example.invalid/2')]


@pytest.fixture
def server():
    with FeedServer() as srv:
        yield srv


def stored_entries(url: str) -> list[tuple[str, str]]:
    return [(entry['title'], entry['link']) for entry in FeedStore(app.connect).entries(url)]


def feed_updated_at(db, url: str) -> float | None:
    with sqlite3.connect(db, timeout=30) as conn:
        row = conn.execute('select updated_at from feed where url = ?', (url,)).fetchone()
    return row[0] if row else None


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f'timed out after {timeout}s waiting for {what}'
        time.sleep(0.05)


def test_concurrent_imports_run_once_store_entries_and_refresh(consumers, server, db):
    server.add(FEED_PATH, rss('Test feed', ITEMS), delay=1.5)
    url = server.url(FEED_PATH)
    consumers('hueyapp.tasks.huey', '-w', '2')

    # Two imports of one URL at once, one per worker thread: one downloads, one is skipped.
    first = import_feed.delay(url)
    second = import_feed.delay(url)
    values = [first.get(timeout=15), second.get(timeout=15)]
    assert values.count(url) == 1 and values.count(None) == 1, values
    assert server.hits(FEED_PATH) == 1

    assert stored_entries(url) == ITEMS
    assert FeedStore(app.connect).urls() == [url]

    # Imported again later (the lock is free again): downloads again, no duplicate entries.
    assert import_feed.delay(url).get(timeout=15) == url
    assert server.hits(FEED_PATH) == 2
    assert stored_entries(url) == ITEMS

    # The periodic refresh, run now: re-imports the one known feed, once.
    updated_before = feed_updated_at(db, url)
    refresh_feeds.delay()
    wait_for(lambda: feed_updated_at(db, url) != updated_before, 15, 'the refresh to re-import the feed')
    assert server.hits(FEED_PATH) == 3
    assert stored_entries(url) == ITEMS


def test_bad_feeds_fail_with_feed_error_and_the_worker_carries_on(consumers, server):
    server.add('/page.html', b'<html><head><title>Hi</title></head><body>not a feed</body></html>',
               content_type='text/html')
    missing, not_a_feed = server.url('/missing.xml'), server.url('/page.html')
    consumers()

    for url, cause in ((missing, 'HTTP 404'), (not_a_feed, 'not a valid RSS/Atom feed')):
        result = import_feed.delay(url)
        with pytest.raises(FeedError, match=re.escape(url)) as raised:
            result.get(timeout=15)
        assert cause in str(raised.value)
        assert result.state == 'FAILURE'
        assert isinstance(result.get(propagate=False), FeedError)
        assert 'FeedError' in result.traceback
    assert server.hits('/missing.xml') == 1 and server.hits('/page.html') == 1
    assert FeedStore(app.connect).urls() == []

    assert add.delay(1, 1).get(timeout=10) == 2

    # A failed import released its single-run lock: once the feed exists, it imports.
    server.add('/missing.xml', rss('Late feed', ITEMS))
    assert import_feed.delay(missing).get(timeout=15) == missing
    assert stored_entries(missing) == ITEMS


def test_refresh_feeds_delay_gives_a_result(consumers, server):
    server.add(FEED_PATH, rss('Test feed', ITEMS))
    url = server.url(FEED_PATH)
    consumers()
    assert import_feed.delay(url).get(timeout=15) == url

    # "refresh_feeds.delay() runs it now" – and, as for any task called with delay(), its
    # AsyncResult must become ready: here the GroupResult of the imports it started.
    refreshed = refresh_feeds.delay()
    value = refreshed.get(timeout=10)
    assert isinstance(value, GroupResult)
    assert value.get(timeout=15) == [url]
    assert server.hits(FEED_PATH) == 2
