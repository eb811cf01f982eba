"""No option accepted that does nothing, Celery's ways of declaring a task, and results that
name what is missing when the reader cannot rebuild them."""
from __future__ import annotations

import pytest

from hueyapp import CorruptResultError, ResultNotLoadable, TaskError
from hueyapp.tasks import add, app, huey
from hueyapp.task_options import NOT_IMPLEMENTED
from tests import declared_tasks

CONSUMER = 'tests.declared_tasks.huey'


def _declare(decorator):
    def some_function(x):
        return x
    return decorator(some_function)


@pytest.mark.parametrize('option', sorted(NOT_IMPLEMENTED))
def test_each_celery_option_hueyapp_lacks_is_refused_at_declaration(option):
    for decorator in (app.task, huey.task):
        with pytest.raises(TypeError, match=f'{option}='):
            _declare(decorator(**{option: 1}))


@pytest.mark.parametrize('option, instead', [('max_retries', 'retries='),
                                             ('default_retry_delay', 'retry_delay='),
                                             ('bind', 'context=True'),
                                             ('time_limit', 'timeout=')])
def test_the_refusal_names_the_hueyapp_equivalent(option, instead):
    with pytest.raises(TypeError, match=instead):
        app.task(**{option: 3})


def test_app_task_refuses_unknown_options_and_huey_task_keeps_hueys_pass_through():
    with pytest.raises(TypeError, match='unknown option colour='):
        app.task(colour='red')
    task = _declare(huey.task(colour='red'))  # Huey documents arbitrary keywords
    assert task.task_class.colour == 'red'
    task.unregister()


def test_celerys_retry_backoff_switch_is_not_taken_for_hueys_multiplier():
    with pytest.raises(TypeError, match='multiplier'):
        app.task(retries=3, retry_backoff=True)


@pytest.mark.parametrize('option', ['link', 'link_error', 'retry_policy', 'exchange',
                                    'routing_key', 'compression', 'ignore_result', 'headers'])
def test_celery_calling_options_hueyapp_lacks_are_refused_at_the_call(option, db):
    with pytest.raises(TypeError, match=f'{option}='):
        add.apply_async((1, 1), **{option: None})
    with pytest.raises(TypeError, match=f'{option}='):
        add.s(1, 1).set(**{option: None})
    assert app.default.pending_count() == 0


def test_bare_decorator_and_exact_name_run_on_a_consumer(consumers):
    assert declared_tasks.bare.name == 'tests.declared_tasks.bare'
    assert declared_tasks.named.name == 'sum-of-two-numbers'
    consumers(CONSUMER)
    assert declared_tasks.bare.delay(2, 3).get(timeout=10) == 5
    assert declared_tasks.named.delay(2, 3).get(timeout=10) == 5


@pytest.fixture
def worker_only_module(tmp_path):
    """A module only the consumer can import: its directory is on the consumer's path alone."""
    directory = tmp_path / 'worker-only'
    directory.mkdir()
    (directory / 'hueyapp_worker_only.py').write_text(
        'class Thing:\n    pass\n\n\nclass Oops(Exception):\n    pass\n')
    return 'hueyapp_worker_only', {'PYTHONPATH': str(directory)}


def test_a_value_of_a_module_the_reader_lacks_names_the_module(consumers, worker_only_module):
    module, env = worker_only_module
    consumers(CONSUMER, env=env)
    result = declared_tasks.returns_from.delay(module)
    with pytest.raises(ResultNotLoadable, match=f"No module named '{module}'") as raised:
        result.get(timeout=10)
    assert not isinstance(raised.value, CorruptResultError)
    assert isinstance(raised.value, ImportError)


def test_an_exception_of_a_module_the_reader_lacks(consumers, worker_only_module):
    module, env = worker_only_module
    consumers(CONSUMER, env=env)
    # Plain arguments: the failure reads, as TaskError naming the type.
    with pytest.raises(TaskError, match=f'{module}.Oops: plain words'):
        declared_tasks.raises_from.delay(module, True).get(timeout=10)
    # An argument of a class the reader lacks: the error says which module is missing.
    with pytest.raises(ResultNotLoadable, match=module):
        declared_tasks.raises_from.delay(module, False).get(timeout=10)


def test_undecodable_bytes_stay_a_corrupt_result(db):
    app.default.storage.put_data('garbage-id', b'\x80\x04not a pickle', is_result=True)
    from hueyapp import AsyncResult
    with pytest.raises(CorruptResultError, match='cannot be decoded'):
        AsyncResult('garbage-id').get(timeout=1)
