"""hueyapp.feeds against a real local HTTP server and a real SQLite file."""
from __future__ import annotations

import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from hueyapp import feeds
from hueyapp.feeds import FeedError, FeedStore, fetch_feed, import_feed
from tests.feed_server import FeedServer, rss

ITEMS = [("First post", "http://example.invalid/1"), ("Second post", "http://example.invalid/2")]

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Atom Example</title>
  <id>urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6</id>
  <updated>2024-01-02T03:04:05Z</updated>
  <entry>
    <title>Atom entry</title>
    <link href="http://example.invalid/atom/1"/>
    <id>urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a</id>
    <updated>2024-01-02T03:04:05Z</updated>
  </entry>
</feed>"""


@pytest.fixture
def server():
    with FeedServer() as srv:
        yield srv


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


def make_store(db_path: Path) -> FeedStore:
    return FeedStore(lambda: sqlite3.connect(db_path, timeout=10))


@pytest.fixture
def store(db_path: Path) -> FeedStore:
    return make_store(db_path)


def stored_title(db_path: Path, url: str) -> str:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("select title from feed where url = ?", (url,)).fetchone()[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- happy paths ---------------------------------------------------------------------------
def test_import_valid_rss_stores_feed_and_entries(server, store, db_path):
    server.add("/feed.xml", rss("My Blog", ITEMS))
    url = server.url("/feed.xml")

    assert import_feed(url, store) == url

    assert store.urls() == [url]
    assert stored_title(db_path, url) == "My Blog"
    entries = store.entries(url)
    assert [(e["title"], e["link"]) for e in entries] == ITEMS
    assert [e["entry_key"] for e in entries] == [link for _, link in ITEMS]
    assert server.hits("/feed.xml") == 1
    assert server.last_headers("/feed.xml")["User-Agent"] == "hueyapp/0.1"


def test_reimport_adds_no_duplicates_but_adds_new_items(server, store):
    server.add("/feed.xml", rss("My Blog", ITEMS))
    url = server.url("/feed.xml")

    assert store.save(url, fetch_feed(url)) == 2
    assert store.save(url, fetch_feed(url)) == 0
    assert len(store.entries(url)) == 2

    server.add("/feed.xml", rss("My Blog", [("Third post", "http://example.invalid/3"), *ITEMS]))
    assert store.save(url, fetch_feed(url)) == 1
    assert [e["title"] for e in store.entries(url)] == ["First post", "Second post", "Third post"]


def test_resave_updates_changed_entry_in_place(server, store, db_path):
    url = server.url("/feed.xml")
    server.add("/feed.xml", rss("Old name", ITEMS))
    import_feed(url, store)
    server.add("/feed.xml", rss("New name", [("First post (edited)", ITEMS[0][1]), ITEMS[1]]))

    assert store.save(url, fetch_feed(url)) == 0

    assert [e["title"] for e in store.entries(url)] == ["First post (edited)", "Second post"]
    assert stored_title(db_path, url) == "New name"


def test_atom_feed(server, store, db_path):
    server.add("/atom.xml", ATOM, content_type="application/atom+xml")
    url = server.url("/atom.xml")

    parsed = fetch_feed(url)
    assert parsed.version == "atom10"
    import_feed(url, store)

    assert stored_title(db_path, url) == "Atom Example"
    [entry] = store.entries(url)
    assert entry["entry_key"] == "urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a"
    assert entry["link"] == "http://example.invalid/atom/1"
    assert entry["published"] == "2024-01-02T03:04:05Z"  # Atom has only <updated>: used as fallback


def test_entries_without_any_identity_are_skipped(store):
    parsed = {"feed": {"title": "t"}, "entries": [{"summary": "no id, link or title"}, {"title": "ok"}]}
    assert store.save("http://example.invalid/f", parsed) == 1
    assert [e["entry_key"] for e in store.entries("http://example.invalid/f")] == ["ok"]


def test_empty_store(store):
    assert store.urls() == []
    assert store.entries("http://example.invalid/unknown") == []


def test_urls_sorted(store):
    for url in ("http://b.invalid/", "http://a.invalid/", "http://c.invalid/"):
        store.save(url, {"feed": {}, "entries": []})
    assert store.urls() == ["http://a.invalid/", "http://b.invalid/", "http://c.invalid/"]


# --- failures ------------------------------------------------------------------------------
def test_http_404_names_url_and_status(server, store):
    url = server.url("/missing.xml")
    with pytest.raises(FeedError) as info:
        import_feed(url, store)
    assert url in str(info.value) and "404" in str(info.value)
    assert store.urls() == []


def test_http_500(server):
    server.add("/broken.xml", b"oops", status=500, content_type="text/plain")
    with pytest.raises(FeedError, match="cannot fetch .*500"):
        fetch_feed(server.url("/broken.xml"))


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<!DOCTYPE html><html><head><title>Hi</title></head><body><p>not a feed</body></html>", "text/html"),
        (b"<html><head><title>Hi</title></head><body><p>x</p></body></html>", "text/html"),
        (b"\x00\xffgarbage{{{ not xml at all", "application/octet-stream"),
        (b"", "application/rss+xml"),
        (b"/etc/passwd", "text/plain"),  # raw bytes given to feedparser.parse would be opened as a file
    ],
    ids=["html", "xhtml-like", "garbage", "empty", "path-like-body"],
)
def test_non_feed_document_is_rejected(server, store, body, content_type):
    server.add("/page", body, content_type=content_type)
    url = server.url("/page")
    with pytest.raises(FeedError, match="not a valid RSS/Atom feed") as info:
        import_feed(url, store)
    assert url in str(info.value)
    assert store.urls() == []


@pytest.mark.parametrize("make_url", [
    lambda srv: "file:///etc/passwd",
    lambda srv: srv.url("/feed.xml").replace("http://", "ftp://"),
    lambda srv: "127.0.0.1/feed.xml",
])
def test_unsupported_scheme_rejected_without_io(server, monkeypatch, make_url):
    server.add("/feed.xml", rss("x", ITEMS))

    def no_io(*args, **kwargs):
        raise AssertionError("urlopen must not be called")

    monkeypatch.setattr(feeds._OPENER, "open", no_io)
    url = make_url(server)
    with pytest.raises(FeedError, match="unsupported URL scheme") as info:
        fetch_feed(url)
    assert url in str(info.value)
    assert server.hits("/feed.xml") == 0


def test_a_redirect_to_another_http_url_is_followed(server, store):
    server.add("/feed.xml", rss("Moved", ITEMS))
    server.redirect("/old.xml", server.url("/feed.xml"), status=301)
    url = server.url("/old.xml")
    assert import_feed(url, store) == url
    assert store.urls() == [url] and len(store.entries(url)) == 2
    assert server.hits("/feed.xml") == 1


@pytest.mark.parametrize("target", ["ftp://127.0.0.1:{port}/feed.xml", "file:///etc/passwd"])
def test_a_redirect_to_another_scheme_is_refused(server, target):
    server.redirect("/feed.xml", target.format(port=free_port()))
    url = server.url("/feed.xml")
    with pytest.raises(FeedError, match="unsupported URL scheme|not allowed") as info:
        fetch_feed(url, timeout=5)
    assert url in str(info.value)


def test_timeout(server):
    server.add("/slow.xml", rss("slow", ITEMS), delay=3.0)
    url = server.url("/slow.xml")
    started = time.monotonic()
    with pytest.raises(FeedError, match="cannot fetch") as info:
        fetch_feed(url, timeout=0.3)
    assert time.monotonic() - started < 2.0
    assert url in str(info.value) and "timed out" in str(info.value)
    assert server.hits("/slow.xml") == 1


def test_connection_refused():
    url = f"http://127.0.0.1:{free_port()}/feed.xml"
    with pytest.raises(FeedError, match="cannot fetch") as info:
        fetch_feed(url, timeout=2)
    assert url in str(info.value)


# --- concurrency ---------------------------------------------------------------------------
def test_concurrent_saves_from_two_stores_leave_no_duplicates(server, db_path):
    items = [(f"Post {i}", f"http://example.invalid/{i}") for i in range(50)]
    server.add("/feed.xml", rss("Busy", items))
    url = server.url("/feed.xml")
    parsed = fetch_feed(url)
    stores = [make_store(db_path), make_store(db_path)]  # fresh file: tables get created concurrently too
    barrier = threading.Barrier(len(stores), timeout=5)
    added: list[int] = []
    errors: list[BaseException] = []

    def worker(store: FeedStore) -> None:
        try:
            barrier.wait()
            added.append(store.save(url, parsed))
        except BaseException as exc:  # surfaced by the main thread's assert
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sorted(added) == [0, 50]
    assert len(stores[0].entries(url)) == 50
    assert stores[1].urls() == [url]
