"""Every SQL statement of hueyapp's SQLite storage, in one place.

The ``task`` and ``schedule`` tables are Huey's own (``huey.storage.SqliteStorage``), so its
queue and schedule methods are reused unchanged. Keys and counters live in hueyapp's own
tables, without Huey's per-queue column: every queue of an app shares one key space, so a
result, a lock or a revocation is found by id whichever queue wrote it. ``expires_at`` (unix
seconds, NULL = never) gives results their lifetime and locks their expiry.
"""

CREATE_KEYS = (
    'create table if not exists hueyapp_kv ('
    'key text not null primary key, value blob not null, expires_at real)')
CREATE_KEYS_EXPIRY_INDEX = (
    'create index if not exists hueyapp_kv_expires_at on hueyapp_kv (expires_at) '
    'where expires_at is not null')
CREATE_COUNTERS = (
    'create table if not exists hueyapp_counter ('
    'key text not null primary key, value integer not null default 0)')

LIVE = '(expires_at is null or expires_at > :now)'

PUT = 'insert or replace into hueyapp_kv (key, value, expires_at) values (:key, :value, :expires_at)'
# Insert, or take over a row whose expiry has passed; rowcount tells whether we now own the key.
PUT_IF_EMPTY = (
    'insert into hueyapp_kv (key, value, expires_at) values (:key, :value, :expires_at) '
    'on conflict (key) do update set value = excluded.value, expires_at = excluded.expires_at '
    'where hueyapp_kv.expires_at is not null and hueyapp_kv.expires_at <= :now')
PEEK = f'select value from hueyapp_kv where key = :key and {LIVE}'
PEEK_MANY = 'select key, value from hueyapp_kv where key in ({keys}) and ' + LIVE.replace(':now', '?')
POP = f'delete from hueyapp_kv where key = :key and {LIVE} returning value'
DELETE_IF_VALUE = 'delete from hueyapp_kv where key = :key and value = :value'
COUNT_LIVE = f'select count(*) from hueyapp_kv where {LIVE}'
ALL_LIVE = f'select key, value from hueyapp_kv where {LIVE}'
DELETE_ALL_KEYS = 'delete from hueyapp_kv'
DELETE_EXPIRED = 'delete from hueyapp_kv where expires_at is not null and expires_at <= :now'

INCR = (
    'insert into hueyapp_counter (key, value) values (:key, :amount) '
    'on conflict (key) do update set value = value + :amount returning value')
DELETE_COUNTER = 'delete from hueyapp_counter where key = :key'
DELETE_ALL_COUNTERS = 'delete from hueyapp_counter'

ENQUEUE = 'insert into task (queue, data, priority) values (?, ?, ?)'
ANY_TASK = 'select 1 from task where queue = :queue limit 1'
# One statement, so two workers can never pop the same row.
POP_TASK = (
    'delete from task where id = (select id from task where queue = :queue '
    'order by priority desc, id limit 1) returning data')
