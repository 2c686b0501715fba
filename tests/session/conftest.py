"""Session tests run against every persistence implementation (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sagents.persistence import MemoryPersistence
from tests.persistence.conftest import Store, open_sql


# Virtual time cannot run beside real database I/O (looptime would jump over a pending query
# to the next timer), so the SQL cases run on real time with short timeouts.
@pytest.fixture(params=[pytest.param("memory", marks=pytest.mark.looptime), "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryPersistence()
        return
    async for sql in open_sql(request.param, tmp_path):
        yield sql


@pytest.fixture
def timeout_scale(store: Store) -> float:
    """1.0 on virtual time; short real-time timeouts for the SQL stores."""
    return 1.0 if isinstance(store, MemoryPersistence) else 0.005
