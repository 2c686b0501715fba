"""Tests for ``sagents.persistence.sql.migrations``: the shipped Alembic scripts build exactly
the schema of the models, on SQLite and PostgreSQL, for any table prefix."""

from __future__ import annotations

import io
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from sagents._errors import ConfigurationError
from sagents.persistence import StateSnapshot
from sagents.persistence.sql import SqlPersistence, upgrade
from sagents.persistence.sql._models import build_tables
from sagents.persistence.sql.migrations import alembic_config, version_table
from tests.persistence.conftest import unique_prefix
from tests.persistence.test_contract import ALICE, rich_state

#: The newest revision the shipped scripts define.
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def _schema_diff(connection: Connection, prefix: str) -> list[Any]:
    tables = build_tables(prefix)
    ours = {t.name for t in tables.metadata.sorted_tables}
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "include_name": lambda name, type_, _parents: type_ != "table" or name in ours,
        },
    )
    return list(compare_metadata(context, tables.metadata))


def _table_names(connection: Connection, prefix: str) -> set[str]:
    return {name for name in inspect(connection).get_table_names() if name.startswith(prefix)}


def _downgrade(connection: Connection, prefix: str) -> None:
    command.downgrade(alembic_config(prefix, connection=connection), "base")


def _drop_version_table(connection: Connection, prefix: str) -> None:
    connection.exec_driver_sql(f"DROP TABLE {version_table(prefix)}")


async def test_the_migrations_build_the_models_schema(sql_engine: AsyncEngine) -> None:
    prefix = unique_prefix()
    try:
        first = await upgrade(sql_engine, table_prefix=prefix)
        assert (first.from_revision, first.to_revision, first.changed) == (None, HEAD, True)
        async with sql_engine.connect() as conn:
            assert await conn.run_sync(_schema_diff, prefix) == []
            assert await conn.run_sync(_table_names, prefix) == {
                f"{prefix}{name}"
                for name in (
                    "conversations",
                    "agent_states",
                    "agent_messages",
                    "display_messages",
                    "files",
                    "leases",
                    "alembic_version",
                )
            }
        again = await upgrade(sql_engine, table_prefix=prefix)
        assert (again.from_revision, again.to_revision, again.changed) == (HEAD, HEAD, False)

        store = SqlPersistence(sql_engine, table_prefix=prefix)
        assert await store.save_state(ALICE, "c1", StateSnapshot(state=rich_state(), version=1))
        stored = await store.load_state(ALICE, "c1")
        assert stored is not None
        assert stored.state == rich_state()
        await store.save_files(ALICE, "c1", {"/notes.md": "a\x00b"})
        assert await store.load_files(ALICE, "c1") == {"/notes.md": "a\x00b"}
        assert await store.delete_conversation(ALICE, "c1")  # the cascades exist
        assert await store.load_files(ALICE, "c1") == {}
    finally:
        async with sql_engine.begin() as conn:
            await conn.run_sync(_downgrade, prefix)
    async with sql_engine.begin() as conn:
        assert await conn.run_sync(_table_names, prefix) == {version_table(prefix)}
        await conn.run_sync(_drop_version_table, prefix)


async def test_a_schema_that_differs_is_detected(sql_engine: AsyncEngine) -> None:
    # The comparison above must be able to fail: drop an index and look again.
    prefix = unique_prefix()
    tables = build_tables(prefix)
    async with sql_engine.begin() as conn:
        await conn.run_sync(tables.metadata.create_all)
    try:
        async with sql_engine.begin() as conn:
            await conn.run_sync(
                lambda c: c.exec_driver_sql(f"DROP INDEX ix_{prefix}display_messages_tool_call_id")
            )
            diff = await conn.run_sync(_schema_diff, prefix)
        assert [d[0] for d in diff] == ["add_index"]
    finally:
        async with sql_engine.begin() as conn:
            await conn.run_sync(tables.metadata.drop_all)


async def test_prefixes_migrate_independently(sql_engine: AsyncEngine) -> None:
    one, two = unique_prefix(), unique_prefix()
    try:
        assert (await upgrade(sql_engine, table_prefix=one)).changed
        assert (await upgrade(sql_engine, table_prefix=two)).changed
    finally:
        async with sql_engine.begin() as conn:
            for prefix in (one, two):
                await conn.run_sync(_downgrade, prefix)
                await conn.run_sync(_drop_version_table, prefix)


async def test_an_unknown_revision_is_a_configuration_error(sql_engine: AsyncEngine) -> None:
    with pytest.raises(ConfigurationError, match="cannot upgrade to 'nope'"):
        await upgrade(sql_engine, table_prefix=unique_prefix(), revision="nope")


def test_offline_mode_writes_the_sql_for_a_dba() -> None:
    out = io.StringIO()
    config = alembic_config("app_")
    config.output_buffer = out
    config.set_main_option("sqlalchemy.url", "postgresql+asyncpg://dba@db.invalid/app")
    command.upgrade(config, "head", sql=True)
    sql = out.getvalue()
    assert "CREATE TABLE app_conversations" in sql
    assert "JSONB" in sql
    assert "CREATE TABLE app_alembic_version" in sql
