"""The process the durability test kills: a conversation saved to SQLite, turn after turn.

Run as ``python durability_child.py DB_PATH``. After each completed turn it prints
``idle <n> <digest>`` where digest identifies the exact state of that turn, and whenever a
state is durably stored ``saved <message count>`` (from the persistence telemetry event). The
parent kills it with SIGKILL in the middle of a later turn.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from typing import Any

from langchain_core.messages import HumanMessage, ToolMessage

from sagents import (
    Agent,
    Runtime,
    Session,
    SessionConfig,
    SessionOptions,
    SingleFactoryRouter,
    State,
    Status,
    telemetry,
)
from sagents.events import StatusChanged
from sagents.execution import Reply, ScriptedChatModel, ToolCall
from sagents.persistence.sql import SqlPersistence, sqlite_url, upgrade
from sagents.session import FactoryConfig


def digest(state: State) -> str:
    return hashlib.sha256(json.dumps(state.to_dict(), sort_keys=True).encode()).hexdigest()


def step(n: int) -> str:
    """Do one step of work."""
    return f"step {n} done"


def respond(messages: list[Any]) -> Reply:
    last = messages[-1]
    if isinstance(last, HumanMessage):
        turn = int(str(last.content).split()[-1])
        return Reply(
            text=f"working on {turn}",
            tool_calls=[ToolCall(name="step", args={"n": turn})],
            chunk_size=3,
            delay=0.002,
        )
    assert isinstance(last, ToolMessage)
    return Reply(text=f"finished: {last.content}", chunk_size=3, delay=0.002)


class Factory:
    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        model = ScriptedChatModel(responder=respond, record_prompts=False)
        return Agent(agent_id=agent_id, model=model, tools=[step]), SessionOptions()


def report_save(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
    print(f"saved {metadata['message_count']}", flush=True)


async def main(path: str) -> None:
    telemetry.attach("durability", ("sagents", "persistence", "save"), report_save)
    url = sqlite_url(path)
    await upgrade(url)
    async with SqlPersistence(url) as store, Runtime() as runtime:
        config = SessionConfig(
            factory_router=SingleFactoryRouter(Factory()),
            agent_persistence=store,
            display_message_persistence=store,
            inactivity_timeout=None,
        )
        session = await Session.ensure_running(runtime, config, "c1", scope="owner")
        async with session.events as events:
            for turn in range(10_000):
                await session.handle.add_message(f"turn {turn}")
                async for event in events:
                    if isinstance(event, StatusChanged) and event.status is Status.IDLE:
                        break
                state = await session.handle.get_state()
                print(f"idle {turn} {digest(state)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
