"""SQL persistence: SQLite by default, PostgreSQL with the same code, Alembic migrations.

Import this sub-namespace explicitly; ``import sagents`` never imports SQLAlchemy::

    from sagents.persistence.sql import SqlPersistence, sqlite_url, upgrade

    await upgrade(sqlite_url(data_dir / "sagents.db"))  # or: sagents db upgrade --url ...
    async with SqlPersistence(sqlite_url(data_dir / "sagents.db")) as store:
        ...
"""

from sagents._public import publish as _publish
from sagents.persistence.sql._engine import SqliteSynchronous, create_engine_for, sqlite_url
from sagents.persistence.sql._models import SqlTables, build_tables
from sagents.persistence.sql._store import SqlPersistence
from sagents.persistence.sql.migrations import SchemaUpgrade, upgrade

__all__ = [
    "SchemaUpgrade",
    "SqlPersistence",
    "SqlTables",
    "SqliteSynchronous",
    "build_tables",
    "create_engine_for",
    "sqlite_url",
    "upgrade",
]

_publish(globals(), __all__, __name__)
