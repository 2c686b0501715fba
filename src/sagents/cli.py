"""The ``sagents`` command line.

Subcommands:

* ``sagents db upgrade --url URL [--table-prefix P] [--revision R]``: create or upgrade the SQL
  tables with the migrations shipped in the package (no ``alembic.ini`` needed).
* ``sagents demo [--host H] [--port P] [--data DIR] [--model provider:name] [--workers N]
  [--ray-address A] [--debugger] [--debugger-token T]``: run the web demo (FastAPI on uvicorn,
  SQLite in DIR, the offline scripted model unless ``--model`` names a real one; with several
  workers, the agents on a Ray cluster) and print its URL.
* ``sagents setup PACKAGE.MODULE [--owner-type T] [--owner-field F] [--table-prefix P]
  [--factory NAME] [--coordinator NAME] [--force] [--dir ROOT]``: write a coordinator, its
  factory, router, persistence wiring, tables, migration and test into an app.

Each subcommand is a function taking the parsed arguments and returning an exit status, and
imports what it needs when it runs, so that a command that does not touch a database never
imports SQLAlchemy. Errors sagents raises on purpose are printed on one line to stderr (exit
status 1) rather than as a traceback: they already say what to do next.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from sagents._errors import ConfigurationError, SagentsError

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


def _demo(args: argparse.Namespace) -> int:
    missing = [
        m for m in ("fastapi", "uvicorn", "websockets") if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise ConfigurationError(f"the demo needs {', '.join(missing)}: pip install 'sagents[web]'")
    from sagents.web import WebConfig, check_model, create_app, serve, serve_workers

    if args.model is not None:
        check_model(args.model, os.environ)
    if args.workers < 1:
        raise ConfigurationError(f"--workers must be 1 or more, got {args.workers}")
    clustered = args.workers > 1 or args.ray_address is not None
    if clustered and importlib.util.find_spec("ray") is None:
        raise ConfigurationError(
            "--workers and --ray-address run the agents on Ray: pip install 'sagents[ray]'"
        )
    config = WebConfig(
        data_dir=Path(args.data),
        model=args.model,
        debugger=args.debugger or args.debugger_token is not None,
        debugger_token=args.debugger_token,
        ray_address=args.ray_address,
    )

    cluster = args.ray_address

    def joined(address: str) -> None:
        nonlocal cluster
        cluster = address

    def ready(url: str) -> None:
        model = args.model or "the offline scripted model (no API key needed)"
        print(f"sagents demo: open {url}", flush=True)
        print(f"  model: {model}; data: {config.data_dir.resolve()}", flush=True)
        if config.debugger:
            print(f"  live debugger: {url}debug", flush=True)
        if clustered:
            # Another server joins with --ray-address (e.g. on another port).
            print(f"  {args.workers} server process(es); agents on Ray at {cluster}", flush=True)
        print("  stop with Ctrl-C (agents save their state on the way out)", flush=True)

    if clustered:
        serve_workers(
            config,
            workers=args.workers,
            host=args.host,
            port=args.port,
            on_ready=ready,
            on_cluster=joined,
        )
    else:
        asyncio.run(serve(create_app(config), host=args.host, port=args.port, on_ready=ready))
    print("sagents demo: stopped", flush=True)
    return 0


def _setup(args: argparse.Namespace) -> int:
    from sagents._generator import (
        FilesExist,
        SetupError,
        SetupOptions,
        plan_setup,
        write_setup,
    )

    try:
        options = SetupOptions(
            target=args.target,
            owner_type=args.owner_type,
            owner_field=args.owner_field,
            table_prefix=args.table_prefix,
            factory=args.factory,
            coordinator=args.coordinator,
            force=args.force,
            root=Path(args.dir),
        )
        plan = plan_setup(options)
        written = write_setup(plan, force=options.force)
    except SetupError as exc:
        # A usage error, reported the way argparse reports its own (exit status 2).
        print(f"sagents setup: error: {exc}", file=sys.stderr)
        return 2
    except FilesExist as exc:
        print(
            "sagents setup: error: these files exist; nothing was written "
            "(use --force to overwrite them):",
            file=sys.stderr,
        )
        for path in exc.paths:
            print(f"  {path}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"sagents setup: error: writing stopped part-way: {exc}; "
            "fix that and run again with --force",
            file=sys.stderr,
        )
        return 1
    print(f"sagents setup: wrote {len(written)} files into {plan.root.resolve()}")
    for item in written:
        print(f"  {item.action:<9} {item.path}")
    module = options.target
    # The commands must work from the project's root in a fresh virtual environment, where
    # the project is not installed: ``python -m`` puts the current folder on ``sys.path``
    # (plain ``pytest`` does not, and the generated test could not import the package), and
    # a src layout needs ``src`` there too. Generating a conftest.py or pytest settings
    # instead would write into files the project may already have.
    depth = len(plan.package_path.parts) - len(options.parts)
    source = PurePosixPath(*plan.package_path.parts[:depth])
    python = "python" if source == PurePosixPath() else f"PYTHONPATH={source} python"
    print(
        "next:\n"
        f"  {python} -m pytest {plan.test_path}\n"
        f"  {python} -m {module}.migrations sqlite+aiosqlite:///data/{options.module}.db"
        "  # create the tables\n"
        f"  then use {module}.{options.coordinator} from your app "
        f"(see {plan.package_path}/coordinator.py)"
    )
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

    demo = commands.add_parser(
        "demo",
        help="run the web demo: chat with agents that plan, write files and ask for approval",
        description="Start the demo web app (FastAPI on uvicorn) and print its URL. It runs "
        "offline with a scripted model unless --model names a real one.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    demo.add_argument(
        "--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)"
    )
    demo.add_argument(
        "--data",
        default="sagents-data",
        metavar="DIR",
        help="folder for the SQLite database and files (default: ./sagents-data)",
    )
    demo.add_argument(
        "--model",
        default=None,
        metavar="PROVIDER:NAME",
        help="a real model through langchain, e.g. openai:gpt-4o-mini (needs its API key)",
    )
    demo.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="server processes (default: 1); more than one runs the agents on a local Ray "
        "cluster, so that any process serves any conversation (needs sagents[ray])",
    )
    demo.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="run the agents on this Ray cluster (e.g. 'auto' or 'head:6379'); its hosts "
        "are left running at exit",
    )
    demo.add_argument("--debugger", action="store_true", help="mount the live debugger at /debug")
    demo.add_argument(
        "--debugger-token",
        default=None,
        help="token the debugger asks of non-loopback clients (implies --debugger)",
    )
    demo.set_defaults(handler=_demo)

    setup = commands.add_parser(
        "setup",
        help="generate a coordinator, factory, router, persistence, tables, migration and "
        "test into your app",
        description="Write into your project a package PACKAGE/MODULE/ wiring sagents to your "
        "app (coordinator, factory and its settings, router, persistence, SQLAlchemy tables, "
        "an Alembic migration) and tests/test_MODULE_session.py. Existing files are left "
        "alone unless --force is given.",
    )
    setup.add_argument(
        "target", metavar="PACKAGE.MODULE", help="where the code goes, e.g. myapp.conversations"
    )
    setup.add_argument(
        "--owner-type",
        default="user",
        metavar="{user,account,team,org,none}",
        help="who owns a conversation; every query is scoped by the owner's id "
        "(none: a single-tenant app; default: user)",
    )
    setup.add_argument(
        "--owner-field",
        default=None,
        help="name of the owner's id parameter (default: OWNER_TYPE_id, e.g. user_id)",
    )
    setup.add_argument(
        "--table-prefix", default="sagents_", help="prefix of the table names (default: sagents_)"
    )
    setup.add_argument(
        "--factory", default="Factory", help="class name of the factory (default: Factory)"
    )
    setup.add_argument(
        "--coordinator",
        default="Coordinator",
        help="class name of the coordinator (default: Coordinator)",
    )
    setup.add_argument("--force", action="store_true", help="overwrite generated files that exist")
    setup.add_argument(
        "--dir",
        default=".",
        metavar="PROJECT_ROOT",
        help="the project's root folder (default: the current directory)",
    )
    setup.set_defaults(handler=_setup)
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
