"""Feeds and their entries in the app's SQLite file: the storing half of :mod:`hueyapp.feeds`.

Apart from fetching and parsing, so that the hourly ``refresh_feeds`` can list the known
feeds without importing feedparser and urllib (4 MB an idle worker need not carry).
"""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

__all__ = ["FeedStore"]

# --- all SQL of the feed tables lives here ---------------------------------------------
SQL_CREATE_FEED = """
create table if not exists feed (
    id         integer primary key,
    url        text not null unique,
    title      text not null default '',
    updated_at real not null
)"""
SQL_CREATE_FEED_ENTRY = """
create table if not exists feed_entry (
    id        integer primary key,
    feed_id   integer not null references feed(id) on delete cascade,
    entry_key text not null,
    title     text,
    link      text,
    published text,
    unique (feed_id, entry_key)
)"""
SQL_BEGIN = "begin immediate"
SQL_UPSERT_FEED = """
insert into feed (url, title, updated_at) values (?, ?, ?)
on conflict (url) do update set title = excluded.title, updated_at = excluded.updated_at"""
SQL_FEED_ID = "select id from feed where url = ?"
SQL_COUNT_ENTRIES = "select count(*) from feed_entry where feed_id = ?"
SQL_UPSERT_ENTRY = """
insert into feed_entry (feed_id, entry_key, title, link, published) values (?, ?, ?, ?, ?)
on conflict (feed_id, entry_key) do update set
    title = excluded.title, link = excluded.link, published = excluded.published"""
SQL_URLS = "select url from feed order by url"
SQL_ENTRIES = """
select e.entry_key, e.title, e.link, e.published
from feed_entry e join feed f on f.id = e.feed_id
where f.url = ?
order by e.id"""


def _entry_key(entry: Any) -> str | None:
    """An entry's identity inside its feed: the id if given, else link, else title."""
    for field in ("id", "link", "title"):
        value = entry.get(field)
        if value:
            return str(value)
    return None


def _entry_row(feed_id: int, entry: Any) -> tuple | None:
    """Row for SQL_UPSERT_ENTRY, or None for an entry we cannot identify (nothing to dedupe on)."""
    key = _entry_key(entry)
    if key is None:
        return None
    published = entry.get("published") or entry.get("updated")
    return (feed_id, key, entry.get("title"), entry.get("link"), published)


class FeedStore:
    """Feeds and their entries in the app's SQLite file.

    Takes a zero-arg callable returning a new sqlite3.Connection (so the caller decides the path,
    busy_timeout, in-memory URI); opens one connection per operation and closes it, because the
    store is used from several worker processes.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect

    def _open(self) -> closing[sqlite3.Connection]:
        """A fresh connection in autocommit mode, so transactions are exactly the ones we begin."""
        conn = self._connect()
        conn.isolation_level = None
        conn.row_factory = sqlite3.Row
        return closing(conn)

    @staticmethod
    def _ensure_schema(conn: sqlite3.Connection) -> None:
        """Create our two tables if missing (a no-op read of the schema when they exist)."""
        conn.execute(SQL_CREATE_FEED)
        conn.execute(SQL_CREATE_FEED_ENTRY)

    def save(self, url: str, parsed: Any) -> int:
        """Upsert the feed row and its entries in one short write transaction; return how many entries are new.

        Re-saving the same document is idempotent: entries are keyed on (feed, id|link|title) and
        existing ones are only refreshed (title/link/published), never duplicated.
        """
        title = parsed.get("feed", {}).get("title") or ""
        entries = parsed.get("entries") or []
        with self._open() as conn:
            conn.execute(SQL_BEGIN)
            try:
                self._ensure_schema(conn)
                conn.execute(SQL_UPSERT_FEED, (url, title, time.time()))
                feed_id = conn.execute(SQL_FEED_ID, (url,)).fetchone()[0]
                before = conn.execute(SQL_COUNT_ENTRIES, (feed_id,)).fetchone()[0]
                rows = [row for e in entries if (row := _entry_row(feed_id, e)) is not None]
                conn.executemany(SQL_UPSERT_ENTRY, rows)
                after = conn.execute(SQL_COUNT_ENTRIES, (feed_id,)).fetchone()[0]
                conn.execute("commit")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("rollback")
                raise
        return after - before

    def urls(self) -> list[str]:
        """All known feed URLs, sorted (what a periodic refresh task iterates over)."""
        with self._open() as conn:
            self._ensure_schema(conn)
            return [row["url"] for row in conn.execute(SQL_URLS)]

    def entries(self, url: str) -> list[dict]:
        """Stored entries of one feed, in the order they were first saved."""
        with self._open() as conn:
            self._ensure_schema(conn)
            return [dict(row) for row in conn.execute(SQL_ENTRIES, (url,))]
