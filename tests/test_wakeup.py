"""Wake-ups between processes: a commit wakes the waiters of its topic, and only after it."""
import os
import subprocess
import sys
import threading
import time

from hueyapp.storage.sqlite_db import SqliteDatabase
from hueyapp.storage.wakeup import Wakeups


def test_a_notification_wakes_a_waiter_in_another_thread(tmp_path):
    wakeups = Wakeups(str(tmp_path / 'a.db'))
    armed, woken = threading.Event(), []

    def wait_in_thread():
        wakeups.arm('queue.default')  # a socket per thread, bound before the check-then-wait
        armed.set()
        woken.append(wakeups.wait('queue.default', 10))

    waiter = threading.Thread(target=wait_in_thread)
    waiter.start()
    assert armed.wait(10)
    wakeups.notify('queue.default')
    waiter.join(10)
    assert woken == [True]
    wakeups.close()


def test_a_wait_without_notification_times_out_false(tmp_path):
    wakeups = Wakeups(str(tmp_path / 'b.db'))
    assert wakeups.wait('results', 0.05) is False
    wakeups.close()


def test_other_topics_do_not_wake(tmp_path):
    wakeups = Wakeups(str(tmp_path / 'c.db'))
    wakeups.arm('queue.hipri')
    wakeups.notify('queue.default')
    assert wakeups.wait('queue.hipri', 0.05) is False
    wakeups.close()


def test_arming_drops_the_wake_ups_sent_before_it(tmp_path):
    # A get() that finds its result at the first look never waits, so the result's wake-up
    # stays in its socket; the next get() arms before its first look, and must then sleep
    # until a new notification, not wake at once for the old one.
    wakeups = Wakeups(str(tmp_path / 'g.db'))
    wakeups.arm('results')
    wakeups.notify('results')
    assert wakeups.wait('results', 5) is True    # delivered, and waited for: consumed
    wakeups.notify('results')                     # sent while nobody waits
    wakeups.arm('results')
    assert wakeups.wait('results', 0.05) is False
    wakeups.close()


def test_the_socket_of_a_dead_process_is_removed_by_the_next_notifier(tmp_path):
    db = str(tmp_path / 'd.db')
    code = ('import sys; from hueyapp.storage.wakeup import Wakeups; '
            f'w = Wakeups({db!r}); w.arm("results"); print(w._paths[0]); sys.stdout.flush(); '
            'import os; os._exit(0)')  # no atexit tidying: as if killed
    path = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=60).stdout.strip()
    assert os.path.exists(path)
    wakeups = Wakeups(db)
    wakeups.notify('results')
    assert not os.path.exists(path)
    wakeups.close()


def test_a_waiter_bound_just_after_a_writer_looked_is_not_left_asleep(tmp_path):
    # A writer trusts its list of waiters for a few ms: a get() whose socket is newer than
    # the list must look at the database again by then, not at the fallback poll.
    db = str(tmp_path / 'g.db')
    writer, waiter = Wakeups(db), Wakeups(db)
    writer.notify('results')  # reads the directory: nobody waits yet
    waiter.arm('results')
    writer.notify('results')  # the list may not have the new socket yet
    started = time.monotonic()
    waiter.wait('results', 5)  # woken, or back early to look at the database
    assert time.monotonic() - started < 1
    writer.notify('results')  # by now the writer reads the directory again
    assert waiter.wait('results', 0) is True
    writer.close()
    waiter.close()


def test_notify_after_the_last_waiter_removed_the_directory_does_not_raise(tmp_path):
    # Another process's exit removes the empty directory; the commit being announced is done,
    # so an enqueue must not fail because nobody is left to wake.
    wakeups = Wakeups(str(tmp_path / 'f.db'))
    wakeups.directory.rmdir()
    wakeups.notify('queue.default')
    wakeups.arm('results')                      # a new waiter makes the directory again
    wakeups.notify('results')
    assert wakeups.wait('results', 5) is True
    wakeups.close()


def test_wake_ups_wait_for_the_unit_of_work_to_commit(tmp_path):
    database = SqliteDatabase(str(tmp_path / 'e.db'), uri=False)
    calls = []
    with database.unit_of_work():
        with database.transaction() as cursor:
            cursor.execute('create table t (x)')
        database.after_commit(lambda: calls.append('after'))
        assert calls == []
    assert calls == ['after']


def test_wake_ups_of_a_rolled_back_unit_never_fire(tmp_path):
    database = SqliteDatabase(str(tmp_path / 'f.db'), uri=False)
    calls = []
    try:
        with database.unit_of_work():
            with database.transaction() as cursor:
                cursor.execute('create table t (x)')
            database.after_commit(lambda: calls.append('after'))
            raise RuntimeError('rolled back')
    except RuntimeError:
        pass
    assert calls == []


def test_a_forked_child_listens_on_a_socket_of_its_own(tmp_path):
    # Process workers are forked from a consumer that may have armed listeners already: the
    # parent's socket would swallow the child's wake-ups (and the parent's exit removes it).
    from hueyapp.storage.sqlite_db import database_for
    wakeups = database_for(str(tmp_path / 'g.db'), False, 60.0).wakeups
    wakeups.arm('queue.default')
    parent_path = wakeups._paths[0]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its socket and whether a notification reaches it
        try:
            wakeups.arm('queue.default')
            child_path = wakeups._paths[0] if wakeups._paths else ''
            Wakeups(str(tmp_path / 'g.db')).notify('queue.default')
            woken = wakeups.wait('queue.default', 5)
            os.write(write_end, f'{child_path}|{woken}'.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_path, woken = pipe.read().split('|')
    os.waitpid(pid, 0)
    assert child_path and child_path != parent_path
    assert woken == 'True'
    wakeups.close()
