"""Download and parse RSS/Atom feeds; :mod:`hueyapp.feed_store` keeps them in the app's file.

Pure library code: the Huey tasks call ``import_feed``; nothing here knows about the queue.
"""
from __future__ import annotations

import http.client
import io
import urllib.error
import urllib.parse
import urllib.request

import feedparser

from hueyapp.feed_store import FeedStore

__all__ = ["FeedError", "FeedStore", "fetch_feed", "import_feed"]

USER_AGENT = "hueyapp/0.1"
ALLOWED_SCHEMES = frozenset({"http", "https"})
# A feed is small; refusing huge bodies keeps one bad URL from eating a worker's memory.
MAX_FEED_BYTES = 20 * 1024 * 1024


class FeedError(Exception):
    """A feed could not be fetched or parsed; the message names the URL and the cause."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's handler follows a redirect to ftp:// as well; a URL a user gave may lead to
    http(s) only, as ``_check_scheme`` requires of the URL itself."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise urllib.error.HTTPError(newurl, code, f"redirect to unsupported URL scheme {scheme!r}",
                                         headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


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
        with _OPENER.open(request, timeout=timeout) as response:
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


def import_feed(url: str, store: FeedStore, timeout: float = 10.0) -> str:
    """fetch_feed + store.save; returns the url (as Celery's seed recipe returns Feed.url)."""
    store.save(url, fetch_feed(url, timeout=timeout))
    return url
