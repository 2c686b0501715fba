"""Engines for the SQL store: URLs, SQLite connection settings, and error translation.

SQLite choices, made for every connection of an engine from :func:`create_engine_for`:

* **WAL journal**: readers never block the writer, and the writer never blocks readers.
* **synchronous=NORMAL**: in WAL mode every committed transaction survives the *process* dying
  (SIGKILL included: the WAL is written before commit returns); only an OS crash or power cut
  may lose the last commits, and even then the database is never corrupt. FULL would fsync on
  every commit, which costs milliseconds per save on ordinary disks; pass
  ``sqlite_synchronous="FULL"`` when power-loss durability matters more.
* **foreign keys on**, so deleting a conversation cascades to its rows.
* **SQLAlchemy begins transactions**, not the sqlite3 driver: its legacy mode issues ``BEGIN``
  only before a write, so two ``SELECT`` statements would each see their own snapshot. Write
  transactions begin with ``BEGIN IMMEDIATE`` (selected by an execution option), taking the
  write lock before their first read, so a read-then-write transaction never fails half-way on
  a lock.

Foreign exceptions stop here: :func:`translated` turns SQLAlchemy and driver errors into
:class:`~sagents.persistence._memory.PersistenceFailed` (retry later) or ``StateError`` (the data
itself cannot be stored), with the original chained as ``__cause__``.
"""

from __future__ import annotations

import contextlib
import json
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Literal

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sagents._errors import ConfigurationError, PersistenceFailed, StateError

__all__ = [
    "SQLITE_BEGIN",
    "sqlite_writer_twin",
    "SqliteSynchronous",
    "configure_sqlite",
    "create_engine_for",
    "sqlite_url",
    "translated",
]

SqliteSynchronous = Literal["NORMAL", "FULL"]

#: Execution option read by the SQLite ``begin`` hook: ``IMMEDIATE`` for write transactions.
SQLITE_BEGIN: Final = "sagents_sqlite_begin"


# -- engines ----------------------------------------------------------------------------------


def sqlite_url(path: str | Path) -> str:
    """The async SQLite URL of a database file (e.g. ``data_dir / "sagents.db"``)."""
    return f"sqlite+aiosqlite:///{Path(path).expanduser().resolve()}"


def _json_dumps(value: Any) -> str:
    # NaN and Infinity are not JSON: PostgreSQL refuses them, so SQLite must too.
    return json.dumps(value, allow_nan=False)


def create_engine_for(
    url: str | URL, *, sqlite_synchronous: SqliteSynchronous = "NORMAL", **engine_options: Any
) -> AsyncEngine:
    """An async engine configured for sagents.

    For SQLite (``sqlite+aiosqlite:///path``): creates the file's folder, and sets WAL mode,
    ``synchronous`` and foreign keys on every connection, with transactions begun by SQLAlchemy
    (``BEGIN IMMEDIATE`` for writes). For PostgreSQL use ``postgresql+asyncpg://...``.

    Args:
        url: a SQLAlchemy URL with an async driver.
        sqlite_synchronous: ``NORMAL`` (committed saves survive a killed process) or ``FULL``
            (they also survive a power cut, at the cost of an fsync per commit).
        engine_options: passed to :func:`sqlalchemy.ext.asyncio.create_async_engine`.

    Raises:
        ConfigurationError: the URL is malformed, its driver is missing or not async.
    """
    if sqlite_synchronous not in ("NORMAL", "FULL"):
        raise ConfigurationError(
            f"sqlite_synchronous must be 'NORMAL' or 'FULL', got {sqlite_synchronous!r}"
        )
    try:
        parsed = make_url(url)
        sqlite = parsed.get_backend_name() == "sqlite"
        if sqlite:
            _make_parent_folder(parsed.database)
        engine_options.setdefault("json_serializer", _json_dumps)
        engine = create_async_engine(parsed, **engine_options)
    except (SQLAlchemyError, ImportError) as exc:
        raise ConfigurationError(
            f"cannot create a database engine for {_safe_url(url)}: {exc}; use e.g. "
            "'sqlite+aiosqlite:///path/to/sagents.db' or 'postgresql+asyncpg://user@host/db'"
        ) from exc
    if sqlite:
        configure_sqlite(engine, sqlite_synchronous)
    return engine


def _safe_url(url: str | URL) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:
        return "<unparsable url>"


def _make_parent_folder(database: str | None) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the folder of {database!r}: {exc}") from exc


def configure_sqlite(
    engine: AsyncEngine | Engine, synchronous: SqliteSynchronous | None = None
) -> None:
    """Install the SQLite connection settings on ``engine`` (once; later calls do nothing).

    Connections the engine opened before this call keep their old settings. ``synchronous``
    defaults to what :func:`create_engine_for` was given, else ``NORMAL``.
    """
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    if event.contains(sync_engine, "begin", _sqlite_begin):
        return
    if synchronous is None:
        synchronous = _SYNCHRONOUS.get(sync_engine, "NORMAL")
    _SYNCHRONOUS[sync_engine] = synchronous

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The sqlite3 driver's legacy mode issues BEGIN only before DML, so the two SELECTs of
        # a load would each see their own snapshot. Let SQLAlchemy begin transactions instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    event.listen(sync_engine, "connect", on_connect)
    event.listen(sync_engine, "begin", _sqlite_begin)


def sqlite_writer_twin(engine: AsyncEngine) -> Engine | None:
    """A synchronous engine on the same SQLite file, with the same settings, or None (not a
    file database).

    A save is several statements, and through aiosqlite each one costs several hops to its
    thread (execute, fetch, close): run whole, in one ``asyncio.to_thread``, a delta save costs
    one hop. Writers of one store still queue on its lock, so the twin never adds a writer.
    """
    url = engine.url
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or url.query.get("uri"):
        return None  # URI databases (shared memory, options): keep the one engine
    twin = create_engine(
        url.set(drivername="sqlite"),
        json_serializer=_json_dumps,
        connect_args={"check_same_thread": False},
    )
    configure_sqlite(twin, _SYNCHRONOUS.get(engine.sync_engine, "NORMAL"))
    return twin


#: The ``synchronous`` setting each configured engine was given (a twin copies it).
_SYNCHRONOUS: weakref.WeakKeyDictionary[Engine, SqliteSynchronous] = weakref.WeakKeyDictionary()


def _sqlite_begin(connection: Connection) -> None:
    # IMMEDIATE takes the write lock up front: a write transaction never fails half-way with
    # "database is locked" after reading, it waits (busy timeout) before its first statement.
    mode = connection.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


# -- errors -----------------------------------------------------------------------------------


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Translate SQLAlchemy and driver exceptions raised inside into sagents errors.

    ``action`` completes "could not ..." in the message.
    """
    try:
        yield
    except StatementError as exc:
        cause = exc.orig
        if not isinstance(exc, DBAPIError) and isinstance(cause, TypeError | ValueError):
            raise StateError(
                f"could not {action}: a value cannot be stored as JSON: {cause}"
            ) from exc
        if str(getattr(cause, "sqlstate", "")).startswith("22"):
            # SQLSTATE class 22, "data exception": retrying cannot help. On PostgreSQL the usual
            # cause is text holding U+0000, which JSONB cannot store.
            raise StateError(f"could not {action}: the database refused a value: {cause}") from exc
        raise _failed(action, cause if cause is not None else exc) from exc
    except (SQLAlchemyError, OSError) as exc:
        raise _failed(action, exc) from exc


def _failed(action: str, cause: BaseException) -> PersistenceFailed:
    # The driver's message, never SQLAlchemy's rendering of the statement: its parameters hold
    # conversation content, which has no place in logs.
    return PersistenceFailed(
        f"could not {action}: {type(cause).__name__}: {cause}. Check that the database is "
        "reachable and migrated ('sagents db upgrade'), then retry"
    )
