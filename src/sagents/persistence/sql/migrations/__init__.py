"""Alembic migrations for the sagents schema, shipped inside the package.

Applications do not need an ``alembic.ini``: :func:`upgrade` (and ``sagents db upgrade``) builds
the Alembic configuration in memory, points it at this folder and runs the migrations on a
connection it opens. The table prefix travels in ``Config.attributes`` and is read by ``env.py``
and by the version scripts, so one set of scripts serves every prefix; each prefix keeps its own
version table (``{prefix}alembic_version``), so two prefixes in one database migrate
independently.

Version scripts are frozen: they spell out their tables instead of importing
:mod:`sagents.persistence.sql._models`, which will change. A test checks that the migrated
schema equals the models.

Maintainers can also run the Alembic command line against this folder (``alembic -x
table_prefix=sagents_ ...`` with ``script_location`` set to it and ``sqlalchemy.url`` to the
database).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util.exc import CommandError
from sqlalchemy import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from sagents._errors import ConfigurationError
from sagents.persistence.sql._engine import create_engine_for, translated
from sagents.persistence.sql._models import DEFAULT_TABLE_PREFIX, check_table_prefix

__all__ = [
    "SCRIPT_LOCATION",
    "SchemaUpgrade",
    "alembic_config",
    "current_table_prefix",
    "upgrade",
    "version_table",
]

#: The folder holding ``env.py`` and ``versions/``.
SCRIPT_LOCATION = str(Path(__file__).resolve().parent)

_PREFIX_KEY = "table_prefix"
_CONNECTION_KEY = "connection"


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaUpgrade:
    """What :func:`upgrade` did.

    Attributes:
        table_prefix: the prefix of the migrated tables.
        from_revision: the revision before (None: the tables did not exist).
        to_revision: the revision after.
    """

    table_prefix: str
    from_revision: str | None
    to_revision: str | None

    @property
    def changed(self) -> bool:
        """Whether any migration ran."""
        return self.from_revision != self.to_revision


def version_table(table_prefix: str) -> str:
    """The table where Alembic records the revision of the tables with this prefix."""
    return f"{table_prefix}alembic_version"


def alembic_config(
    table_prefix: str = DEFAULT_TABLE_PREFIX, *, connection: Connection | None = None
) -> Config:
    """An in-memory Alembic ``Config`` for these migrations (no ini file).

    Args:
        table_prefix: the prefix of the tables to migrate.
        connection: run on this (sync) connection; without it, set ``sqlalchemy.url``.
    """
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes[_PREFIX_KEY] = check_table_prefix(table_prefix)
    if connection is not None:
        config.attributes[_CONNECTION_KEY] = connection
    return config


def current_table_prefix() -> str:
    """The table prefix of the migration being run (for ``env.py`` and version scripts)."""
    attributes: dict[str, Any] = context.config.attributes
    if _PREFIX_KEY not in attributes:
        x_arguments = context.get_x_argument(as_dictionary=True)
        attributes[_PREFIX_KEY] = x_arguments.get(_PREFIX_KEY, DEFAULT_TABLE_PREFIX)
    return check_table_prefix(str(attributes[_PREFIX_KEY]))


def given_connection() -> Connection | None:
    """The connection :func:`upgrade` handed to ``env.py``, if any."""
    connection = context.config.attributes.get(_CONNECTION_KEY)
    return connection if isinstance(connection, Connection) else None


async def upgrade(
    url_or_engine: str | URL | AsyncEngine,
    *,
    table_prefix: str = DEFAULT_TABLE_PREFIX,
    revision: str = "head",
) -> SchemaUpgrade:
    """Create or upgrade the sagents tables to ``revision``, in one transaction where possible.

    Args:
        url_or_engine: a database URL (see ``create_engine_for``) or an ``AsyncEngine``.
        table_prefix: the prefix of the tables.
        revision: the target revision.

    Raises:
        ConfigurationError: invalid URL, prefix or revision.
        PersistenceFailed: the database failed; the transaction was rolled back.
    """
    check_table_prefix(table_prefix)
    if isinstance(url_or_engine, AsyncEngine):
        engine, owned = url_or_engine, False
    else:
        engine, owned = create_engine_for(url_or_engine), True
    try:
        with translated("upgrade the database schema"):
            async with engine.begin() as conn:
                before, after = await conn.run_sync(_upgrade, table_prefix, revision)
    finally:
        if owned:
            await engine.dispose()
    return SchemaUpgrade(table_prefix=table_prefix, from_revision=before, to_revision=after)


def _revision(connection: Connection, table_prefix: str) -> str | None:
    migration = MigrationContext.configure(
        connection, opts={"version_table": version_table(table_prefix)}
    )
    return migration.get_current_revision()


def _upgrade(
    connection: Connection, table_prefix: str, revision: str
) -> tuple[str | None, str | None]:
    before = _revision(connection, table_prefix)
    try:
        command.upgrade(alembic_config(table_prefix, connection=connection), revision)
    except CommandError as exc:
        raise ConfigurationError(f"cannot upgrade to {revision!r}: {exc}") from exc
    return before, _revision(connection, table_prefix)
