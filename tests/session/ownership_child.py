"""A web worker of the ownership test: runs conversation ``c1`` if it can get its lease.

Run as ``python ownership_child.py URL PREFIX NAME TTL``. It tries ``Session.start`` until it
owns the conversation, printing ``refused <owner>`` the first time another process holds it;
then ``owner <name> <message count>``, and runs turns forever, printing ``idle <message count>``
after each and ``saved <message count>`` whenever a state is durably stored. The parent kills it
with SIGKILL.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from sagents import (
    Agent,
    ConversationOwnedElsewhere,
    Runtime,
    Session,
    SessionConfig,
    SessionOptions,
    SingleFactoryRouter,
    Status,
    telemetry,
)
from sagents.events import StatusChanged
from sagents.execution import Reply, ScriptedChatModel
from sagents.persistence.sql import SqlPersistence
from sagents.session import FactoryConfig


class Factory:
    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        model = ScriptedChatModel(responder=lambda messages: Reply(text=f"answer {len(messages)}"))
        return Agent(agent_id=agent_id, model=model), SessionOptions()


def report_save(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
    print(f"saved {metadata['message_count']}", flush=True)


async def main(url: str, prefix: str, name: str, ttl: float) -> None:
    telemetry.attach("ownership", ("sagents", "persistence", "save"), report_save)
    async with SqlPersistence(url, table_prefix=prefix) as store, Runtime(owner_id=name) as rt:
        config = SessionConfig(
            factory_router=SingleFactoryRouter(Factory()),
            agent_persistence=store,
            inactivity_timeout=None,
            server_options={"lease_ttl": ttl},
        )
        refused = False
        while True:
            try:
                session = await Session.ensure_running(rt, config, "c1", scope="owner")
                break
            except ConversationOwnedElsewhere as exc:
                if not refused:
                    print(f"refused {exc.owner}", flush=True)
                    refused = True
                await asyncio.sleep(0.05)
        state = await session.handle.get_state()
        print(f"owner {name} {len(state.messages)}", flush=True)
        async with session.events as events:
            turn = 0
            while True:
                turn += 1
                await session.handle.add_message(f"turn {turn} of {name}")
                async for event in events:
                    if isinstance(event, StatusChanged) and event.status is Status.IDLE:
                        break
                state = await session.handle.get_state()
                print(f"idle {len(state.messages)}", flush=True)
                await asyncio.sleep(0.01)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
