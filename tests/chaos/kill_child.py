"""The process the kill campaign kills: fast agents saving to SQL, turn after turn, until SIGKILL.

Run as ``python kill_child.py URL PREFIX LEASE_TTL`` and write one line to its standard input:
the conversations to run, separated by spaces (``echo c1 c2 | python kill_child.py ...``). The
campaign starts the next child while it checks the previous kill, and sends that line when the
round begins: the imports (seconds) overlap the checks, and the child touches nothing in the
database before it.

Each conversation runs turns back to back on a zero-latency model, each turn a tool call
returning 50 kB (the lag scenario of ``bench/save_lag.py``), with agent persistence and display
messages in one database. A conversation continues from its stored state: turn ``n`` is the
message ``turn n``, where ``n - 1`` turns are stored, so a history is always ``turn 1, turn 2,
...`` whatever was lost.

It prints, one line each, flushed at once (a line the parent reads was written before the kill):

* ``started`` once it read its conversations (the parent times the kill from there);
* ``start <conversation> <message count>`` when a conversation's agent runs (after waiting for
  the lease a killed predecessor left behind to expire);
* ``idle <conversation> <message count>`` after each completed turn;
* ``saved <conversation> <message count>`` for each durable state save (the
  ``("sagents", "persistence", "save")`` telemetry event, emitted once the transaction
  committed);
* ``error <conversation> <what>`` when an agent errs, has a save refused or stops: never
  expected.

The campaign's verifier imports :class:`Factory` to start the conversations in its own process.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from langchain_core.messages import HumanMessage, ToolMessage

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
from sagents.events import AgentShutdown, SaveRefused, StatusChanged
from sagents.execution import Reply, ScriptedChatModel, ToolCall
from sagents.persistence.sql import SqlPersistence
from sagents.session import FactoryConfig

SCOPE = "owner"
RESULT = "x" * 50_000
MESSAGES_PER_TURN = 4  # the user's message, the tool call, its result, the answer


def fetch(n: int) -> str:
    """Fetch a large document."""
    return RESULT


def respond(messages: list[Any]) -> Reply:
    if isinstance(messages[-1], HumanMessage):
        return Reply(tool_calls=[ToolCall(name="fetch", args={"n": len(messages)})])
    if not isinstance(messages[-1], ToolMessage):
        raise TypeError(f"unexpected last message {messages[-1]!r}")
    return Reply(text="done")


class Factory:
    """Agents whose every turn is one ``fetch`` call and the answer ``done``."""

    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        model = ScriptedChatModel(responder=respond, record_prompts=False)
        return Agent(agent_id=agent_id, model=model, tools=[fetch]), SessionOptions()


def session_config(store: SqlPersistence, lease_ttl: float) -> SessionConfig:
    """Agent persistence and display messages in ``store``, with a short lease (a killed
    process's conversations can be taken over ``lease_ttl`` seconds later)."""
    return SessionConfig(
        factory_router=SingleFactoryRouter(Factory()),
        agent_persistence=store,
        display_message_persistence=store,
        inactivity_timeout=None,
        server_options={"lease_ttl": lease_ttl},
    )


async def start(runtime: Runtime, config: SessionConfig, conversation_id: str) -> Session:
    """Start the conversation, waiting for the lease a killed owner left to expire."""
    while True:
        try:
            return await Session.ensure_running(runtime, config, conversation_id, scope=SCOPE)
        except ConversationOwnedElsewhere:
            await asyncio.sleep(0.05)


def emit(line: str) -> None:
    # One write of a whole short line: a pipe write below PIPE_BUF is atomic, so the parent
    # never reads half a line, even from a process killed while printing.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def report_save(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
    emit(f"saved {metadata['conversation_id']} {metadata['message_count']}")


async def converse(runtime: Runtime, config: SessionConfig, conversation_id: str) -> None:
    session = await start(runtime, config, conversation_id)
    async with session.events as events:
        count = len((await session.handle.get_state()).messages)
        emit(f"start {conversation_id} {count}")
        while True:
            await session.handle.add_message(f"turn {count // MESSAGES_PER_TURN + 1}")
            async for event in events:
                if isinstance(event, StatusChanged) and event.status is Status.ERROR:
                    emit(f"error {conversation_id} status error: {event.data!r}")
                    return
                if isinstance(event, SaveRefused | AgentShutdown):
                    emit(f"error {conversation_id} {event!r}")
                    return
                if isinstance(event, StatusChanged) and event.status is Status.IDLE:
                    break
            count = len((await session.handle.get_state()).messages)
            emit(f"idle {conversation_id} {count}")


async def main(url: str, prefix: str, lease_ttl: float, conversation_ids: list[str]) -> None:
    emit("started")
    telemetry.attach("kill-child", ("sagents", "persistence", "save"), report_save)
    async with SqlPersistence(url, table_prefix=prefix) as store, Runtime() as runtime:
        config = session_config(store, lease_ttl)
        await asyncio.gather(*(converse(runtime, config, c) for c in conversation_ids))


if __name__ == "__main__":
    # Blocks until the round begins; at end of file (the parent is gone) there is nothing to run.
    ids = sys.stdin.readline().split()
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), ids))
