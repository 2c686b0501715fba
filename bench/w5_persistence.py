"""W5 persistence: a conversation grown to ``turns × 4`` messages (1,000) through the system
with persistence on, then: storage size, turn cost at that length, full save, delta save and
restore, in milliseconds.

LangGraph's ``AsyncSqliteSaver`` writes a checkpoint per graph step; a "full save" is one more
``aput`` of the latest checkpoint under a new thread, a restore is ``graph.aget_state``. sagents'
``SqlPersistence`` stores messages as append-only rows: a full save writes every row, a delta
save the new ones, a restore is ``load_state``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from bench._measure import summary, timed
from bench._model import make_model
from bench._systems import open_system

__all__ = ["run"]


def _file_bytes(path: Any) -> int:
    # Fold the write-ahead log into the database first, so both systems are measured alike.
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(
        os.path.getsize(f"{path}{suffix}")
        for suffix in ("", "-wal", "-shm")
        if os.path.exists(f"{path}{suffix}")
    )


async def _postgres_bytes(store: Any) -> int:
    from sqlalchemy import text

    names = [table.name for table in store.tables.metadata.sorted_tables]
    async with store.engine.connect() as conn:
        total = 0
        for name in names:
            size = await conn.execute(text(f"select pg_total_relation_size('{name}')"))
            total += int(size.scalar_one())
    return total


async def run(system_name: str, params: dict[str, Any]) -> dict[str, Any]:
    turns, reps = params["turns"], params["reps"]
    async with open_system(system_name, make_model()) as system:
        conv = await system.conversation("w5", stream=False)
        last_turns: list[float] = []
        with timed() as build:
            for i in range(turns):
                with timed() as clock:
                    await conv.turn(f"hello {i}")
                if i >= turns - 10:
                    last_turns.append(clock.wall * 1e3)
        result: dict[str, Any] = {
            "messages": turns * 4,
            "build_seconds": build.wall,
            "turn_ms_at_end": summary(last_turns),
        }
        if system_name.startswith("langgraph"):
            result.update(await _langgraph(system, conv, reps))
        else:
            await conv.aclose()  # the final save, so what is stored is complete
            result.update(await _sagents(system, reps))
    return result


async def _langgraph(system: Any, conv: Any, reps: int) -> dict[str, Any]:
    saver, graph = system.checkpointer, system.graph(False)
    restore, full = [], []
    for _ in range(reps):
        with timed() as clock:
            snapshot = await graph.aget_state(conv.config)
        restore.append(clock.wall * 1e3)
    tup = await saver.aget_tuple(conv.config)
    for rep in range(reps):
        config = {"configurable": {"thread_id": f"copy-{rep}", "checkpoint_ns": ""}}
        with timed() as clock:
            await saver.aput(config, tup.checkpoint, tup.metadata, {})
        full.append(clock.wall * 1e3)
    return {
        "storage_bytes": _file_bytes(system.db_path),
        "restore_ms": summary(restore),
        "full_save_ms": summary(full),
        "stored_messages": len(snapshot.values["messages"]),
    }


async def _sagents(system: Any, reps: int) -> dict[str, Any]:
    from sagents.persistence import StateSnapshot

    store = system.store
    if system.db_path is not None:
        storage = _file_bytes(system.db_path)
    else:
        storage = await _postgres_bytes(store)
    restore, full, delta = [], [], []
    for _ in range(reps):
        with timed() as clock:
            stored = await store.load_state(None, "w5")
        restore.append(clock.wall * 1e3)
    state, version = stored.state, stored.version
    for rep in range(reps):
        with timed() as clock:
            await store.save_state(None, f"copy-{rep}", StateSnapshot(state=state, version=1))
        full.append(clock.wall * 1e3)
    for rep in range(reps):
        new = state.append(
            HumanMessage(f"more {rep}"),
            AIMessage("", tool_calls=[{"name": "echo", "args": {"text": "x"}, "id": f"d{rep}"}]),
            ToolMessage("x", tool_call_id=f"d{rep}", name="echo"),
            AIMessage("done: x"),
        )
        snapshot = StateSnapshot(
            state=new,
            version=version + 1,
            base_version=version,
            unchanged_prefix=len(state.messages),
        )
        with timed() as clock:
            written = await store.save_state(None, "w5", snapshot)
        if not written:
            raise RuntimeError("the delta save was refused as stale")
        delta.append(clock.wall * 1e3)
        state, version = new, version + 1
    return {
        "storage_bytes": storage,
        "restore_ms": summary(restore),
        "full_save_ms": summary(full),
        "delta_save_ms": summary(delta),
        "stored_messages": len(stored.state.messages),
    }
