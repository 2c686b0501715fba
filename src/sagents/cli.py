"""The ``sagents`` command line.

Subcommands:

* ``sagents db upgrade --url URL [--table-prefix P] [--revision R]``: create or upgrade the SQL
  tables with the migrations shipped in the package (no ``alembic.ini`` needed).

Each subcommand is a function taking the parsed arguments and returning an exit status, and
imports what it needs when it runs, so that a command that does not touch a database never
imports SQLAlchemy. Errors sagents raises on purpose are printed on one line to stderr (exit
status 1) rather than as a traceback: they already say what to do next.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from sagents._errors import SagentsError

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def _db_upgrade(args: argparse.Namespace) -> int:
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    from sagents.persistence.sql import upgrade

    try:
        shown = make_url(args.url).render_as_string(hide_password=True)
    except ArgumentError:
        shown = args.url
    result = asyncio.run(upgrade(args.url, table_prefix=args.table_prefix, revision=args.revision))
    where = f"{shown} (tables {result.table_prefix}*)"
    if result.changed:
        before = result.from_revision or "empty"
        print(f"upgraded {where}: {before} -> {result.to_revision}")
    else:
        print(f"{where} is already at revision {result.to_revision}; nothing to do")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sagents`` command."""
    parser = argparse.ArgumentParser(prog="sagents", description="sagents command line tools")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    db = commands.add_parser("db", help="manage the SQL database of sagents")
    db_commands = db.add_subparsers(title="commands", metavar="COMMAND")
    upgrade = db_commands.add_parser(
        "upgrade", help="create or upgrade the tables (Alembic migrations shipped with sagents)"
    )
    upgrade.add_argument(
        "--url",
        required=True,
        help="async SQLAlchemy URL, e.g. sqlite+aiosqlite:///data/sagents.db or "
        "postgresql+asyncpg://user@host/db",
    )
    upgrade.add_argument(
        "--table-prefix", default="sagents_", help="prefix of the table names (default: sagents_)"
    )
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade.set_defaults(handler=_db_upgrade)
    db.set_defaults(handler=_help_of(db))
    parser.set_defaults(handler=_help_of(parser))
    return parser


def _help_of(parser: argparse.ArgumentParser) -> Handler:
    def show_help(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show_help


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sagents`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 when the command failed, 2 for a usage error.
    """
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except SagentsError as exc:
        print(f"sagents: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
