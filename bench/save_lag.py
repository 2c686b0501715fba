"""How far behind its completed turns an agent's stored state falls under load (issue 16, item 10).

Six agents run turns back to back, each turn a tool call returning 50 kB, with agent persistence
and display messages on one database (the probe that found saves hundreds of turns behind).
Every time a turn completes, the script notes how many turns that agent has completed and how many
are durably stored (from the ``("sagents", "persistence", "save")`` telemetry event); the lag is
the difference, and the time lag is how long after completing a turn it became durable. The
documented bound: a completed turn is durable after at most the save in flight and the one that
follows it, so the lag is at most 2 turns on a fast agent, usually 0–1.

Run: ``python -m bench.save_lag [--db sqlite|postgres] [--agents 6] [--turns 200]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage, ToolMessage

from sagents import (
    Agent,
    Runtime,
    Session,
    SessionConfig,
    SessionOptions,
    SingleFactoryRouter,
    Status,
    telemetry,
)
from sagents.events import StatusChanged
from sagents.execution import Reply, ScriptedChatModel, ToolCall
from sagents.persistence.sql import SqlPersistence, sqlite_url
from sagents.session import FactoryConfig

POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
RESULT = "x" * 50_000


def fetch(n: int) -> str:
    """Fetch a large document."""
    return RESULT


class Factory:
    def __init__(self, delay: float) -> None:
        self.delay = delay

    def respond(self, messages: list[Any]) -> Reply:
        if isinstance(messages[-1], HumanMessage):
            return Reply(
                tool_calls=[ToolCall(name="fetch", args={"n": len(messages)})], delay=self.delay
            )
        assert isinstance(messages[-1], ToolMessage)
        return Reply(text="done", delay=self.delay)

    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        model = ScriptedChatModel(responder=self.respond)
        return Agent(agent_id=agent_id, model=model, tools=[fetch]), SessionOptions()


async def main(db: str, agents: int, turns: int, delay: float = 0.0) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        if db == "sqlite":
            store = SqlPersistence(sqlite_url(Path(folder) / "lag.db"))
        else:
            store = SqlPersistence(POSTGRES, table_prefix=f"lag{int(time.time())}_")
        await store.create_all()
        stored: dict[str, int] = {}  # agent id -> turns durably stored
        saves = 0
        stored_at: dict[tuple[str, int], float] = {}

        def on_save(event: Any, measurements: Any, metadata: dict[str, Any], _: Any) -> None:
            nonlocal saves
            saves += 1
            done = metadata["message_count"] // 4
            agent_id = metadata["agent_id"]
            for turn in range(stored.get(agent_id, 0) + 1, done + 1):
                stored_at[(agent_id, turn)] = time.perf_counter()
            stored[agent_id] = max(stored.get(agent_id, 0), done)

        telemetry.attach("save-lag", ("sagents", "persistence", "save"), on_save)
        lags: list[int] = []
        completed_at: dict[tuple[str, int], float] = {}
        config = SessionConfig(
            factory_router=SingleFactoryRouter(Factory(delay)),
            agent_persistence=store,
            display_message_persistence=store,
            inactivity_timeout=None,
        )
        try:
            async with Runtime() as runtime:

                async def converse(i: int) -> None:
                    session = await Session.ensure_running(runtime, config, f"c{i}")
                    async with session.events as events:
                        for turn in range(1, turns + 1):
                            await session.handle.add_message(f"turn {turn}")
                            async for event in events:
                                if isinstance(event, StatusChanged) and event.status in (
                                    Status.IDLE,
                                    Status.ERROR,
                                ):
                                    break
                            completed_at[(session.agent_id, turn)] = time.perf_counter()
                            lags.append(turn - stored.get(session.agent_id, 0))

                started = time.perf_counter()
                await asyncio.gather(*(converse(i) for i in range(agents)))
                elapsed = time.perf_counter() - started
                for _ in range(500):  # the last saves land
                    if all(stored.get(f"conversation-c{i}", 0) == turns for i in range(agents)):
                        break
                    await asyncio.sleep(0.01)
        finally:
            telemetry.detach("save-lag")
            if db != "sqlite":
                await store.drop_all()
            await store.aclose()
        delays = [
            (stored_at[key] - completed_at[key]) * 1000 for key in completed_at if key in stored_at
        ]
        lost = sum(1 for key in completed_at if key not in stored_at)
        return {
            "turns": agents * turns,
            "state_saves": saves,
            "turns_per_s": agents * turns / elapsed,
            "lag_max_turns": max(lags),
            "lag_mean_turns": statistics.mean(lags),
            "durable_ms_median": statistics.median(delays),
            "durable_ms_p99": sorted(delays)[int(len(delays) * 0.99) - 1],
            "durable_ms_max": max(delays),
            "never_stored": lost,
        }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--agents", type=int, default=6)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per model call")
    args = parser.parse_args()
    result = asyncio.run(main(args.db, args.agents, args.turns, args.delay))
    for key, value in result.items():
        print(f"{key:>20}: {value:,.2f}" if isinstance(value, float) else f"{key:>20}: {value}")
