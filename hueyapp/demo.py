"""``make demo``: the Celery user guide's examples, run against real consumers.

Starts ``huey_consumer hueyapp.tasks.huey`` and ``huey_consumer hueyapp.tasks.hipri`` on a
fresh SQLite file in a temp dir, serves a small RSS feed on 127.0.0.1, types each example
line as a Python shell would, prints what it returns, and stops the consumers.
"""
from __future__ import annotations

import functools
import os
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SEED_LINES = [
    'from hueyapp.tasks import add, mul, xsum, import_feed',
    'result = add.delay(1, 1)',
    'result.ready()',
    'result.get(timeout=1)',
    "result = add.delay(1, '1')",
    'result.get(propagate=False)',
    'result.traceback',
    'from hueyapp.canvas import group, chain, chord',
    'group(add.s(i, i) for i in range(10))().get()',
    'chain(add.s(4, 4) | mul.s(8))().get()',
    'chord((add.s(i, i) for i in range(10)), xsum.s())().get()',
    "add.apply_async((2, 2), queue='hipri')",
    '_.get(timeout=1)',
    '# only one import per feed at a time: the second call finds the lock held',
    'first, second = import_feed.delay(FEED_URL), import_feed.delay(FEED_URL)',
    'first.get(timeout=10), second.get(timeout=10)',
]

FEED = b"""<?xml version="1.0"?>
<rss version="2.0"><channel><title>hueyapp demo</title><link>http://127.0.0.1/</link>
<description>demo</description>
<item><title>Hello</title><link>http://127.0.0.1/hello</link><guid>hello</guid></item>
</channel></rss>
"""


class _SlowQuietHandler(SimpleHTTPRequestHandler):
    """A slow feed server, so the two concurrent imports overlap as they would in real life."""

    def do_GET(self) -> None:
        time.sleep(0.5)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_directory(directory: Path) -> ThreadingHTTPServer:
    """Serve ``directory`` on 127.0.0.1 (a free port) from a daemon thread."""
    server = ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_SlowQuietHandler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _display(namespace: dict, value: object) -> None:
    """The shell's display hook, printing multi-line strings as text rather than repr."""
    if value is None:
        return
    namespace['_'] = value
    print(value if isinstance(value, str) and '\n' in value else repr(value))


def run_lines(lines: list[str], namespace: dict) -> None:
    for line in lines:
        print(f'>>> {line}', flush=True)
        if line.startswith('#'):
            continue
        sys.displayhook = functools.partial(_display, namespace)
        try:
            exec(compile(line, '<demo>', 'single'), namespace)
        finally:
            sys.displayhook = sys.__displayhook__
        sys.stdout.flush()


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix='hueyapp-demo-'))
    db = workdir / 'hueyapp.db'
    os.environ['HUEYAPP_DB'] = str(db)
    os.environ.pop('HUEYAPP_IMMEDIATE', None)
    (workdir / 'feed.xml').write_bytes(FEED)
    server = serve_directory(workdir)

    from hueyapp.testing import ConsumerProcess
    consumers = [ConsumerProcess('hueyapp.tasks.huey', db=db, options=['-w', '2']),
                 ConsumerProcess('hueyapp.tasks.hipri', db=db)]
    try:
        for consumer in consumers:
            print(f'$ HUEYAPP_DB={db} {" ".join(Path(c).name for c in consumer.command[:1])} '
                  f'{" ".join(consumer.command[1:])} &', flush=True)
            consumer.start().wait_started()
        namespace = {'FEED_URL': f'http://127.0.0.1:{server.server_port}/feed.xml'}
        run_lines(SEED_LINES, namespace)
    finally:
        for consumer in consumers:
            consumer.stop()
        server.shutdown()
        print(f'consumers stopped; database and logs in {workdir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
