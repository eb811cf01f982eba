"""Download RSS/Atom feeds and keep them (and their entries) in the app's SQLite file.

Pure library code: the Huey tasks call ``import_feed``; nothing here knows about the queue.
"""
from __future__ import annotations

import http.client
import io
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from contextlib import closing
from typing import Any

import feedparser

__all__ = ["FeedError", "FeedStore", "fetch_feed", "import_feed"]

USER_AGENT = "hueyapp/0.1"
ALLOWED_SCHEMES = frozenset({"http", "https"})
# A feed is small; refusing huge bodies keeps one bad URL from eating a worker's memory.
MAX_FEED_BYTES = 20 * 1024 * 1024

# --- all SQL lives here -------------------------------------------------------------------
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


class FeedError(Exception):
    """A feed could not be fetched or parsed; the message names the URL and the cause."""


# --- fetching -----------------------------------------------------------------------------
def fetch_feed(url: str, timeout: float = 10.0) -> feedparser.FeedParserDict:
    """Download ``url`` ourselves and let feedparser only parse, so timeouts, schemes and errors stay ours."""
    _check_scheme(url)
    body, headers = _download(url, timeout)
    parsed = feedparser.parse(io.BytesIO(body), response_headers=headers)
    _check_is_feed(url, parsed)
    return parsed


def _check_scheme(url: str) -> None:
    """Refuse file://, ftp:// etc. before any I/O: a feed URL may come from an untrusted user."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise FeedError(f"cannot fetch {url}: unsupported URL scheme {scheme or '(none)'!r}")


def _download(url: str, timeout: float) -> tuple[bytes, dict[str, str]]:
    """Return the body plus the headers feedparser needs (charset, base URI), mapping every failure to FeedError."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(MAX_FEED_BYTES + 1)
            content_type = response.headers.get("Content-Type", "")
            final_url = response.geturl()
    except urllib.error.HTTPError as exc:
        raise FeedError(f"cannot fetch {url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise FeedError(f"cannot fetch {url}: {exc.reason}") from exc
    except TimeoutError as exc:
        raise FeedError(f"cannot fetch {url}: timed out after {timeout}s") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise FeedError(f"cannot fetch {url}: {exc!r}") from exc
    if len(body) > MAX_FEED_BYTES:
        raise FeedError(f"cannot fetch {url}: response larger than {MAX_FEED_BYTES} bytes")
    headers = {"content-location": final_url}
    if content_type:
        headers["content-type"] = content_type
    return body, headers


def _check_is_feed(url: str, parsed: feedparser.FeedParserDict) -> None:
    """feedparser never raises; it flags problems (bozo), so decide here what counts as a feed."""
    has_content = bool(parsed.get("feed", {}).get("title")) or bool(parsed.get("entries"))
    if not parsed.get("version") or (parsed.get("bozo") and not has_content):
        cause = parsed.get("bozo_exception") or "no RSS/Atom root element found"
        raise FeedError(f"{url} is not a valid RSS/Atom feed: {cause}")


# --- storing ------------------------------------------------------------------------------
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


def import_feed(url: str, store: FeedStore, timeout: float = 10.0) -> str:
    """fetch_feed + store.save; returns the url (as Celery's seed recipe returns Feed.url)."""
    store.save(url, fetch_feed(url, timeout=timeout))
    return url
