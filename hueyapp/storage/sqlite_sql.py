"""Every SQL statement of hueyapp's SQLite storage, in one place.

Tables:

* ``hueyapp_inbox``: where producers append new tasks. It has no index, so an enqueue writes
  one b-tree page, not a row page and an index page, and holds the write lock for less time.
  A consumer moves its rows into ``task`` (FOLD_INBOX) in the transaction of its next lease;
  the readers of a queue (its size, its items) look at both tables.
* ``task``: the queues. Huey's own table (same name and columns, so Huey's queue methods
  work on it) plus a lease: ``lease_owner``/``lease_expires`` while a worker runs the task,
  and ``deliveries``, how many times it was handed out. A row is deleted (acknowledged) only
  in the transaction that records the task's outcome.
* ``schedule``: Huey's own table of tasks waiting for their eta.
* ``hueyapp_kv``: results, locks, revocations and chord results, shared by every queue of
  the file, so anything is found by key whichever queue wrote it. ``expires_at`` (unix
  seconds, NULL = never) gives results their lifetime and locks their expiry.
* ``hueyapp_counter``: Huey's counters (chords, rate limits), shared likewise.
* ``hueyapp_dead_letter``: messages no worker could run, with the reason, for operators.
"""

AUTO_VACUUM = 'pragma auto_vacuum = incremental'   # must precede the first table of a new file
CREATE_TASKS = (
    'create table if not exists task ('
    'id integer not null primary key, queue text not null, data blob not null, '
    'priority real not null default 0.0, lease_owner text, lease_expires real, '
    'deliveries integer not null default 0)')
TASK_COLUMNS = 'pragma table_info(task)'
# A database made by plain Huey (or hueyapp 0.1) gains the lease columns.
ADD_TASK_COLUMNS = {
    'lease_owner': 'alter table task add column lease_owner text',
    'lease_expires': 'alter table task add column lease_expires real',
    'deliveries': 'alter table task add column deliveries integer not null default 0',
}
CREATE_INBOX = (
    'create table if not exists hueyapp_inbox ('
    'queue text not null, data blob not null, priority real not null default 0.0)')
# WITHOUT ROWID: the key is the table's only b-tree, so storing a result (and the done mark
# beside it) rewrites one page, not a row page plus a key-index page. Files made by hueyapp
# 0.1 keep their rowid table; every statement below works on both.
CREATE_KEYS = (
    'create table if not exists hueyapp_kv ('
    'key text not null primary key, value blob not null, expires_at real) without rowid')
# No index on expires_at: every result would rewrite one more page of it (measured: drain
# 15% slower). The sweep finds expired keys with a read-only scan instead, once a minute.
DROP_KEYS_EXPIRY_INDEX = 'drop index if exists hueyapp_kv_expires_at'  # made by hueyapp 0.1
CREATE_COUNTERS = (
    'create table if not exists hueyapp_counter ('
    'key text not null primary key, value integer not null default 0)')
CREATE_DEAD_LETTERS = (
    'create table if not exists hueyapp_dead_letter ('
    'id integer not null primary key, queue text not null, data blob not null, '
    'priority real not null default 0.0, reason text not null, deliveries integer not null, '
    'buried_at real not null)')

# -- queue ---------------------------------------------------------------------------------
# Measured, one producer of add.delay(): 54k tasks/s into the inbox against 42k into ``task``;
# four producers at once 72k against 49k.
ENQUEUE = 'insert into hueyapp_inbox (queue, data, priority) values (?, ?, ?)'
INBOX_HAS_ROWS = 'select exists (select 1 from hueyapp_inbox)'
# In the inbox's order (rowid), so ``task.id`` keeps the order of the enqueues; then empty it
# (a DELETE without WHERE drops its pages at once). Both in one transaction with the lease,
# when the inbox holds no more than one chunk (SqliteStorage.fold_chunk rows).
FOLD_INBOX = (
    'insert into task (queue, data, priority) '
    'select queue, data, priority from hueyapp_inbox order by rowid')
EMPTY_INBOX = 'delete from hueyapp_inbox'
# A larger inbox moves a chunk per transaction, oldest first: rows up to rowid :last.
# Two subqueries, so that each of min() and max() reads one end of the b-tree, not the table.
INBOX_ROWIDS = ('select (select min(rowid) from hueyapp_inbox), '
                '(select max(rowid) from hueyapp_inbox)')
FOLD_INBOX_UP_TO = (
    'insert into task (queue, data, priority) '
    'select queue, data, priority from hueyapp_inbox where rowid <= :last order by rowid')
EMPTY_INBOX_UP_TO = 'delete from hueyapp_inbox where rowid <= :last'
# Short of space: the last rowid of the oldest rows (at most :rows) whose data fits in :budget
# bytes. length() of a blob reads its size from the row header, not the blob.
INBOX_CHUNK_END = (
    'select max(rowid) from (select rowid, sum(length(data)) over (order by rowid) as bytes '
    'from (select rowid, data from hueyapp_inbox order by rowid limit :rows)) '
    'where bytes <= :budget')
FREE = '(lease_expires is null or lease_expires <= :now)'
# Whether the inbox has rows (of any queue: the lease moves them all, then leases its own),
# and whether the queue has a free task; the lease reuses the first instead of reading again.
ANY_WORK = f'{INBOX_HAS_ROWS}, exists (select 1 from task where queue = :queue and {FREE})'
# Up to :count tasks in one statement; RETURNING has no order, the caller sorts by priority, id.
LEASE = (
    'update task set lease_owner = :owner, lease_expires = :now + :lease, '
    'deliveries = deliveries + 1 '
    f'where id in (select id from task where queue = :queue and {FREE} '
    'order by priority desc, id limit :count) '
    'returning id, data, deliveries, priority')
# The lease a worker takes with a task's outcome (``lease_ahead``): none while the inbox has
# rows, which the next plain lease moves first, so their priorities are seen.
LEASE_UNLESS_INBOX = LEASE.replace('where id in', f'where not ({INBOX_HAS_ROWS}) and id in')
RENEW = 'update task set lease_expires = :expires where id = :id and lease_owner = :owner'
ACK = 'delete from task where id = :id and lease_owner = :owner'
# Back on the queue at once (the consumer stops, or the worker thread is gone). The run that
# was interrupted keeps its hand-out: a task whose runs keep ending this way is dead-lettered.
RELEASE = 'update task set lease_owner = null, lease_expires = null where id = :id and lease_owner = :owner'
# Back on the queue at once, leased ahead but never handed to a worker: its hand-out is given back.
RELEASE_UNSTARTED = (
    'update task set lease_owner = null, lease_expires = null, '
    'deliveries = max(deliveries - 1, 0) where id = :id and lease_owner = :owner')
FREE_COUNT = (
    f'select (select count(*) from task where queue = :queue and {FREE}) '
    '+ (select count(*) from hueyapp_inbox where queue = :queue)')
# The order a lease would take them in: priority, then ``task`` rows before the inbox's.
FREE_ITEMS = (
    f'select data from (select data, priority, 0 as folded, id as seq from task '
    f'where queue = :queue and {FREE} '
    'union all select data, priority, 1, rowid from hueyapp_inbox where queue = :queue) '
    'order by priority desc, folded, seq')
FLUSH_QUEUE = 'delete from task where queue = :queue'
FLUSH_INBOX = 'delete from hueyapp_inbox where queue = :queue'

# -- dead letters --------------------------------------------------------------------------
BURY = (
    'insert into hueyapp_dead_letter (queue, data, priority, reason, deliveries, buried_at) '
    'select queue, data, priority, :reason, deliveries, :now from task '
    'where id = :id and lease_owner = :owner')
BURY_DATA = (
    'insert into hueyapp_dead_letter (queue, data, priority, reason, deliveries, buried_at) '
    'values (:queue, :data, 0, :reason, 0, :now)')
DEAD_LETTERS = (
    'select id, queue, reason, deliveries, buried_at, length(data) from hueyapp_dead_letter '
    'order by id limit :limit')
DEAD_LETTER = (
    'select id, queue, reason, deliveries, buried_at, data, priority '
    'from hueyapp_dead_letter where id = :id')
REPLAY = (
    'insert into hueyapp_inbox (queue, data, priority) '
    'select queue, data, priority from hueyapp_dead_letter where id = :id')
DELETE_DEAD_LETTER = 'delete from hueyapp_dead_letter where id = :id'
DELETE_ALL_DEAD_LETTERS = 'delete from hueyapp_dead_letter'
COUNT_DEAD_LETTERS = 'select count(*) from hueyapp_dead_letter'

# -- keys ----------------------------------------------------------------------------------
LIVE = '(expires_at is null or expires_at > :now)'
PUT = 'insert or replace into hueyapp_kv (key, value, expires_at) values (:key, :value, :expires_at)'
# Insert, or take over a row whose expiry has passed; rowcount tells whether we now own the key.
PUT_IF_EMPTY = (
    'insert into hueyapp_kv (key, value, expires_at) values (:key, :value, :expires_at) '
    'on conflict (key) do update set value = excluded.value, expires_at = excluded.expires_at '
    'where hueyapp_kv.expires_at is not null and hueyapp_kv.expires_at <= :now')
# As PUT_IF_EMPTY, and also take over a lock left by another holder of the same family
# (an earlier delivery of the same task): ``:family`` is the owner's prefix.
TAKE_LOCK = PUT_IF_EMPTY + (
    ' or (hueyapp_kv.value != :value and substr(hueyapp_kv.value, 1, length(:family)) = :family)')
PEEK = f'select value from hueyapp_kv where key = :key and {LIVE}'
PEEK_MANY = 'select key, value from hueyapp_kv where key in ({keys}) and ' + LIVE.replace(':now', '?')
POP = f'delete from hueyapp_kv where key = :key and {LIVE} returning value'
DELETE_IF_VALUE = 'delete from hueyapp_kv where key = :key and value = :value'
COUNT_LIVE = f'select count(*) from hueyapp_kv where {LIVE}'
ALL_LIVE = f'select key, value from hueyapp_kv where {LIVE}'
DELETE_ALL_KEYS = 'delete from hueyapp_kv'
EXPIRED = 'select key from hueyapp_kv where expires_at <= :now'
DELETE_EXPIRED = 'delete from hueyapp_kv where key = :key and expires_at <= :now'

INCR = (
    'insert into hueyapp_counter (key, value) values (:key, :amount) '
    'on conflict (key) do update set value = value + :amount returning value')
DELETE_COUNTER = 'delete from hueyapp_counter where key = :key'
DELETE_ALL_COUNTERS = 'delete from hueyapp_counter'

# -- hygiene -------------------------------------------------------------------------------
INCREMENTAL_VACUUM = 'pragma incremental_vacuum'
FREE_PAGES = 'pragma freelist_count'
# PASSIVE copies the WAL into the file while writers go on; RESTART (after each paced
# checkpoint) and TRUNCATE (the sweep's) then hold the write lock only to copy what came
# meanwhile, and let the WAL start over; TRUNCATE also empties the file.
CHECKPOINT_PASSIVE = 'pragma wal_checkpoint(passive)'
CHECKPOINT_RESTART = 'pragma wal_checkpoint(restart)'
CHECKPOINT = 'pragma wal_checkpoint(truncate)'
