"""Settings from HUEYAPP_* variables: defaults, and a ConfigError naming each bad variable."""
import os
import subprocess
import sys

import pytest

from hueyapp.config import ConfigError, Settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_when_nothing_is_set():
    settings = Settings.from_env({})
    assert settings.db == 'hueyapp.db'
    assert settings.immediate is False
    assert settings.queues == ('default', 'hipri')
    assert settings.result_expires == 86400
    assert settings.default_queue == 'default'
    assert settings.synchronous == 'normal'


def test_values_are_read_from_the_environment():
    settings = Settings.from_env({'HUEYAPP_DB': '/tmp/x.db', 'HUEYAPP_IMMEDIATE': 'true',
                                  'HUEYAPP_QUEUES': 'a, b', 'HUEYAPP_RESULT_EXPIRES': '60'})
    assert (settings.db, settings.immediate, settings.queues, settings.result_expires) == (
        '/tmp/x.db', True, ('a', 'b'), 60.0)


@pytest.mark.parametrize('variable, value', [
    ('HUEYAPP_RESULT_EXPIRES', 'abc'),
    ('HUEYAPP_RESULT_EXPIRES', '0'),
    ('HUEYAPP_RESULT_EXPIRES', '-1'),
    ('HUEYAPP_RESULT_EXPIRES', 'nan'),
    ('HUEYAPP_IMMEDIATE', 'maybe'),
    ('HUEYAPP_QUEUES', ''),
    ('HUEYAPP_QUEUES', 'a,a'),
    ('HUEYAPP_QUEUES', 'bad-name'),
    ('HUEYAPP_IMPORTS', 'a..b'),
    ('HUEYAPP_FEED_TIMEOUT', '0'),
    ('HUEYAPP_PREFETCH_MULTIPLIER', '0'),
    ('HUEYAPP_SYNCHRONOUS', 'off'),
])
def test_invalid_value_raises_config_error_naming_the_variable(variable, value):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_bad_setting_fails_at_import_naming_the_variable(tmp_path):
    env = {**os.environ, 'HUEYAPP_DB': str(tmp_path / 'x.db'), 'HUEYAPP_RESULT_EXPIRES': 'abc'}
    env.pop('HUEYAPP_IMMEDIATE', None)
    proc = subprocess.run([sys.executable, '-c', 'import hueyapp.tasks'], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert 'HUEYAPP_RESULT_EXPIRES' in proc.stderr
    assert 'ConfigError' in proc.stderr


def run_python(code, tmp_path, **variables):
    env = {**os.environ, 'HUEYAPP_DB': str(tmp_path / 'x.db'), **variables}
    if 'HUEYAPP_IMMEDIATE' not in variables:
        env.pop('HUEYAPP_IMMEDIATE', None)
    return subprocess.run([sys.executable, '-c', code], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


def test_immediate_from_the_environment_runs_tasks_in_process_without_a_file(tmp_path):
    proc = run_python('import hueyapp.tasks as t; print(t.add.delay(1, 2).get(timeout=5))',
                      tmp_path, HUEYAPP_IMMEDIATE='1')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '3'
    assert not (tmp_path / 'x.db').exists()


def test_declared_queues_are_attributes_of_the_tasks_module(tmp_path):
    code = ('import hueyapp.tasks as t; '
            'print(t.app.settings.default_queue, t.huey.name, t.fast.name, t.add.queue)')
    proc = run_python(code, tmp_path, HUEYAPP_QUEUES='main,fast')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ['main', 'main', 'fast', 'main']
