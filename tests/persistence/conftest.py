"""Fixtures for the persistence tests: one store per backend (memory, SQLite, PostgreSQL).

PostgreSQL is real: the URL comes from ``SAGENTS_TEST_POSTGRES_URL`` (default: the trust-auth
server on 127.0.0.1:5432, database ``test``). Each test gets its own random table prefix and
drops its tables afterwards, so tests never see each other's rows. When the server cannot be
reached the PostgreSQL cases are skipped, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeAlias

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sagents.persistence._memory import MemoryPersistence
from sagents.persistence.sql import SqlPersistence, create_engine_for, sqlite_url

Store: TypeAlias = MemoryPersistence | SqlPersistence

POSTGRES_URL = os.environ.get(
    "SAGENTS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)

# Why PostgreSQL is unreachable, once we know (so later tests do not wait for it again).
_postgres_down: list[str] = []


def unique_prefix() -> str:
    """A table prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}_"


async def postgres_engine() -> AsyncEngine:
    """An engine on the test server; skips (or fails under CI=true) when it is unreachable."""
    if not _postgres_down:
        engine = create_engine_for(POSTGRES_URL, connect_args={"timeout": 5})
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            await engine.dispose()
            _postgres_down.append(f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc!r}")
        else:
            return engine
    reason = _postgres_down[0]
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
    pytest.skip(f"{reason}; set SAGENTS_TEST_POSTGRES_URL or start the server")


async def open_sql(kind: str, tmp_path: Path) -> AsyncIterator[SqlPersistence]:
    """A SQL store with fresh tables on SQLite (a file in ``tmp_path``) or PostgreSQL."""
    if kind == "sqlite":
        store = SqlPersistence(sqlite_url(tmp_path / "data" / "sagents.db"))
        await store.create_all()
        try:
            yield store
        finally:
            await store.aclose()
        return
    engine = await postgres_engine()
    store = SqlPersistence(engine, table_prefix=unique_prefix())
    try:
        await store.create_all()
        yield store
    finally:
        try:
            await store.drop_all()
        finally:
            await engine.dispose()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every implementation of the persistence protocols, one per test run."""
    if request.param == "memory":
        memory = MemoryPersistence()
        yield memory
        await memory.aclose()
        return
    async for sql in open_sql(request.param, tmp_path):
        yield sql


@pytest.fixture(params=["sqlite", "postgres"])
async def sql_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqlPersistence]:
    """The SQL implementation on each database."""
    async for sql in open_sql(request.param, tmp_path):
        yield sql


@pytest.fixture(params=["sqlite", "postgres"])
async def sql_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A bare engine on each database (the test creates and drops its own tables)."""
    if request.param == "sqlite":
        engine = create_engine_for(sqlite_url(tmp_path / "sagents.db"))
    else:
        engine = await postgres_engine()
    try:
        yield engine
    finally:
        await engine.dispose()
