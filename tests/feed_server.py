"""A real HTTP server on 127.0.0.1 serving configurable feed documents, for tests."""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape


@dataclass(frozen=True)
class _Route:
    body: bytes
    status: int
    content_type: str
    delay: float
    location: str | None = None


def rss(title: str, items: list[tuple[str, str]]) -> bytes:
    """A valid RSS 2.0 document; each (title, link) item gets its link as <guid>."""
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<rss version="2.0"><channel>',
        f"<title>{escape(title)}</title>",
        "<link>http://example.invalid/</link>",
        f"<description>{escape(title)} (test feed)</description>",
    ]
    for item_title, link in items:
        parts.append(
            f"<item><title>{escape(item_title)}</title><link>{escape(link)}</link>"
            f'<guid isPermaLink="true">{escape(link)}</guid></item>'
        )
    parts.append("</channel></rss>")
    return "\n".join(parts).encode("utf-8")


class FeedServer:
    """Context manager: a ThreadingHTTPServer on an ephemeral port whose routes the test configures."""

    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}
        self._hits: Counter[str] = Counter()
        self._headers: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()  # releases handlers still sleeping on `delay` at shutdown
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, client_address: None  # client gone (timeouts): ignore
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="FeedServer", daemon=True
        )  # short poll: shutdown() otherwise waits up to 0.5 s per test

    # --- configuration / inspection used by tests ---
    def add(self, path: str, body: bytes, status: int = 200,
            content_type: str = "application/rss+xml", delay: float = 0.0) -> None:
        """Serve `body` at `path` (replacing any previous route)."""
        with self._lock:
            self._routes[path] = _Route(body, status, content_type, delay)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        """Answer GET `path` with a redirect to `location` (any URL, any scheme)."""
        with self._lock:
            self._routes[path] = _Route(b"", status, "text/plain", 0.0, location)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def hits(self, path: str) -> int:
        """Number of GET requests received for `path` (counted before any delay)."""
        with self._lock:
            return self._hits[path]

    def last_headers(self, path: str) -> dict[str, str]:
        """Request headers of the latest GET for `path` (empty if none)."""
        with self._lock:
            return dict(self._headers.get(path, {}))

    # --- lifecycle ---
    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # --- request handling ---
    def _record(self, path: str, headers: dict[str, str]) -> _Route | None:
        with self._lock:
            self._hits[path] += 1
            self._headers[path] = headers
            return self._routes.get(path)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
                route = server._record(self.path, dict(self.headers.items()))
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                if route.delay and server._closing.wait(route.delay):
                    return  # server is shutting down; don't answer
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                if route.location is not None:
                    self.send_header("Location", route.location)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)

            def log_message(self, format: str, *args: object) -> None:  # silence request log
                pass

        return Handler
