"""Shared fixtures: a fresh SQLite file per test, real consumers on it, immediate mode."""
from __future__ import annotations

import os
import tempfile

# Before hueyapp is imported: the default app must not create ./hueyapp.db in the checkout.
_SESSION_DIR = tempfile.mkdtemp(prefix='hueyapp-tests-')
os.environ['HUEYAPP_DB'] = os.path.join(_SESSION_DIR, 'import-time.db')
os.environ.pop('HUEYAPP_IMMEDIATE', None)

import pytest  # noqa: E402

from hueyapp.tasks import app  # noqa: E402
from hueyapp.testing import ConsumerProcess, immediate_mode  # noqa: E402
from hueyapp.testing import hueyapp_immediate  # noqa: E402,F401  (the fixture users get)


@pytest.fixture
def db(tmp_path):
    """A fresh SQLite file that this process's app and the test's consumers share."""
    path = tmp_path / 'hueyapp.db'
    before = app.settings
    app.configure(db=str(path), immediate=False)
    yield path
    app.configure(db=before.db, immediate=before.immediate)


@pytest.fixture
def immediate():
    with immediate_mode(app) as configured:
        yield configured


@pytest.fixture
def consumers(db, tmp_path, request):
    """Start real `huey_consumer` processes on `db`: consumers('hueyapp.tasks.hipri', '-w', '2')."""
    started: list[ConsumerProcess] = []

    def start(huey_path: str = 'hueyapp.tasks.huey', *options: str, env=None, wait=True) -> ConsumerProcess:
        name = f'{huey_path.rsplit(".", 1)[-1]}-{len(started)}'
        consumer = ConsumerProcess(huey_path, db=db, options=options, env=env,
                                   log_path=tmp_path / f'{name}.log')
        started.append(consumer.start())
        return consumer.wait_started() if wait else consumer

    yield start
    for consumer in started:
        consumer.stop()
    if request.node.rep_call.failed if hasattr(request.node, 'rep_call') else False:
        for consumer in started:
            print(f'--- log of {consumer.huey_path} ---\n{consumer.log()}')


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f'rep_{report.when}', report)
    return report
