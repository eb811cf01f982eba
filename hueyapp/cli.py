"""The ``hueyapp`` command: what an operator needs without a Python shell.

    hueyapp queues                         pending tasks per queue, dead letters
    hueyapp dead-letters list              what could not run, and why
    hueyapp dead-letters show ID           one of them, decoded where possible
    hueyapp dead-letters replay ID... | --all
    hueyapp dead-letters purge ID... | --all

It reads the same settings as the workers (``HUEYAPP_DB``…); ``--db`` overrides the file.
"""
from __future__ import annotations

import datetime
import os

import click


def _app():
    from hueyapp.app import current_app
    app = current_app()
    app.import_task_modules()  # to decode the user's own tasks in dead letters
    return app


@click.group()
@click.option('--db', type=click.Path(dir_okay=False), help='SQLite file (default: $HUEYAPP_DB).')
def main(db: str | None) -> None:
    """Operate a hueyapp database."""
    if db:
        os.environ['HUEYAPP_DB'] = db


@main.command()
def queues() -> None:
    """Pending and scheduled tasks per queue, and the dead-letter count."""
    app = _app()
    for name, huey in app.queues.items():
        click.echo(f'{name}: {huey.pending_count()} pending, {huey.scheduled_count()} scheduled')
    click.echo(f'dead letters: {app.default.storage.dead_letter_count()}')


@main.group('dead-letters')
def dead_letters() -> None:
    """Messages no worker could run."""


@dead_letters.command('list')
@click.option('--limit', default=100, show_default=True)
def list_command(limit: int) -> None:
    from hueyapp.deadletters import list_dead_letters
    letters = list_dead_letters(_app(), limit)
    for letter in letters:
        when = datetime.datetime.fromtimestamp(letter.buried_at, datetime.timezone.utc)
        click.echo(f'{letter.id}\t{letter.queue}\t{when:%Y-%m-%d %H:%M:%S}Z\t'
                   f'{letter.deliveries} deliveries\t{letter.size} bytes\t{letter.reason}')
    if not letters:
        click.echo('no dead letters')


@dead_letters.command('show')
@click.argument('letter_id', type=int)
def show_command(letter_id: int) -> None:
    from hueyapp.deadletters import inspect
    details = inspect(letter_id, _app())
    if details is None:
        raise click.ClickException(f'no dead letter {letter_id}')
    for key, value in details.items():
        click.echo(f'{key}: {value}')


def _selection(letter_ids: tuple[int, ...], all_: bool) -> tuple[int, ...] | None:
    if bool(letter_ids) == all_:
        raise click.UsageError('give dead-letter ids, or --all')
    return None if all_ else letter_ids


@dead_letters.command('replay')
@click.argument('letter_ids', type=int, nargs=-1)
@click.option('--all', 'all_', is_flag=True, help='Replay every dead letter.')
def replay_command(letter_ids: tuple[int, ...], all_: bool) -> None:
    from hueyapp.deadletters import replay, replay_all
    selection = _selection(letter_ids, all_)
    count = replay_all(_app()) if selection is None else replay(selection, _app())
    click.echo(f'replayed {count}')


@dead_letters.command('purge')
@click.argument('letter_ids', type=int, nargs=-1)
@click.option('--all', 'all_', is_flag=True, help='Purge every dead letter.')
def purge_command(letter_ids: tuple[int, ...], all_: bool) -> None:
    from hueyapp.deadletters import purge
    click.echo(f'purged {purge(_selection(letter_ids, all_), _app())}')
