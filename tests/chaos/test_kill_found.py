"""Defects the kill campaign (``bench/kill_campaign.py``) found, each reduced to a deterministic
test that fails until it is fixed.

A lease taken while a renewal is in flight is reported lost. The runtime renews all its leases
with one statement (``renew_leases(owner)``) and then treats every lease it holds that the
statement did not return as taken over by another process. On PostgreSQL that statement runs
beside the other connections: when a conversation's ``acquire_lease`` commits after the renewal
statement read the lease rows but before its result is handled, the new lease is registered as
held and is missing from the result, so its agent — the conversation's only owner — gets
``SaveRefused("owned_elsewhere")`` and stops. The campaign saw it on PostgreSQL (6 agents
starting while the first one's renewal ticked; round 41 of 200, seed 16); here the renewal's
result is held back until the second conversation's lease is taken, which is the same order of
events, made certain.

Display rows are not fenced. Found while tracing the first defect's consequences (its refused
agent left rows ahead of the state that no later start reconciled): a process that stalls past
its lease while another takes the conversation over keeps writing display rows (only its state
saves name the lease's fencing token), so the rows of a turn it finishes land *after* the new
owner reconciled the rows at takeover, and its state save is then refused. Nothing reconciles
them afterwards (the new owner's later ends are clean), so the conversation shows a tool result
and an answer that are in no stored state, for good.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from sagents import (
    Agent,
    AgentNotRunning,
    ConversationOwnedElsewhere,
    Runtime,
    Session,
    SessionConfig,
    SessionOptions,
    SingleFactoryRouter,
    Status,
)
from sagents.events import AgentShutdown, DisplayMessageSaved, SaveRefused, StatusChanged
from sagents.execution import Reply, ScriptedChatModel, ToolCall
from sagents.persistence.sql import SqlPersistence, sqlite_url
from sagents.session import FactoryConfig
from tests.chaos.kill_child import SCOPE, session_config


class RenewalInFlight(SqlPersistence):
    """A store whose first lease renewal is answered only once ``answer`` is set: its statement
    ran, and its result arrives late (as a slow round trip delivers it)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.renewing = asyncio.Event()  # the first renewal's statement ran
        self.answer = asyncio.Event()
        self.renewals = 0
        self.renewed_again = asyncio.Event()  # the first renewal's result was handled

    async def renew_leases(self, owner: str, ttl: float) -> set[str]:
        kept = await super().renew_leases(owner, ttl)
        self.renewals += 1
        if self.renewals == 1:
            self.renewing.set()
            await self.answer.wait()
        else:
            self.renewed_again.set()
        return kept


@pytest.mark.timeout(60)
async def test_a_lease_taken_while_a_renewal_is_in_flight_is_not_lost(tmp_path: Path) -> None:
    store = RenewalInFlight(sqlite_url(tmp_path / "sagents.db"))
    await store.create_all()
    config = session_config(store, lease_ttl=0.3)
    try:
        async with Runtime() as runtime:
            await Session.start(runtime, config, "first", scope=SCOPE)  # starts the renewals
            await store.renewing.wait()
            second = await Session.ensure_running(runtime, config, "second", scope=SCOPE)
            store.answer.set()
            await store.renewed_again.wait()  # the late result was handled: the next renewal
            async with second.events as events:
                with contextlib.suppress(AgentNotRunning):  # stopped already: events say why
                    await second.handle.add_message("turn 1")
                seen = []
                async with asyncio.timeout(30):
                    async for event in events:
                        seen.append(event)
                        if isinstance(event, SaveRefused | AgentShutdown) or (
                            isinstance(event, StatusChanged)
                            and event.status in (Status.IDLE, Status.ERROR)
                        ):
                            break
            refused = [e for e in seen if isinstance(e, SaveRefused)]
            assert refused == [], "the conversation's only owner was told it was taken over"
            assert isinstance(seen[-1], StatusChanged)
            assert seen[-1].status is Status.IDLE
    finally:
        await store.aclose()


class StalledRenewals(SqlPersistence):
    """A store in which the runtime named ``stalled`` never gets its leases renewed (its
    process stalls): they expire and another process can take its conversations over."""

    async def renew_leases(self, owner: str, ttl: float) -> set[str]:
        if owner == "stalled":
            await asyncio.Event().wait()
        return await super().renew_leases(owner, ttl)


class GatedTool:
    """Agents whose turn is one call to a tool that finishes when ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        gate = self.gate

        async def work(n: int) -> str:
            """Work until the test lets it finish."""
            await gate.wait()
            return "worked"

        def respond(messages: list[object]) -> Reply:
            if isinstance(messages[-1], HumanMessage):
                return Reply(tool_calls=[ToolCall(name="work", args={"n": 1})])
            return Reply(text="done")

        model = ScriptedChatModel(responder=respond, record_prompts=False)
        return Agent(agent_id=agent_id, model=model, tools=[work]), SessionOptions()


async def _start(runtime: Runtime, config: SessionConfig, conversation_id: str) -> None:
    while True:
        try:
            await Session.start(runtime, config, conversation_id, scope=SCOPE)
            return
        except ConversationOwnedElsewhere:
            await asyncio.sleep(0.05)  # the stalled owner's lease expires


@pytest.mark.timeout(60)
async def test_a_stalled_owner_writes_no_display_rows_after_a_takeover(tmp_path: Path) -> None:
    store = StalledRenewals(sqlite_url(tmp_path / "sagents.db"))
    await store.create_all()
    factory = GatedTool()
    config = SessionConfig(
        factory_router=SingleFactoryRouter(factory),
        agent_persistence=store,
        display_message_persistence=store,
        inactivity_timeout=None,
        server_options={"lease_ttl": 0.3},
    )
    try:
        async with Runtime(owner_id="stalled") as stalled:
            session = await Session.ensure_running(stalled, config, "c", scope=SCOPE)
            async with session.events as events:
                await session.handle.add_message("turn 1")
                async for event in events:  # its tool call is shown, and runs
                    if (
                        isinstance(event, DisplayMessageSaved)
                        and event.display_message["type"] == "tool_call"
                    ):
                        break
                async with Runtime(owner_id="new-owner") as new_owner:
                    await _start(new_owner, config, "c")  # takes over, reconciles the rows
                    await Session.stop(new_owner, config, "c")
                factory.gate.set()  # the stalled process carries on: its turn completes
                async for event in events:
                    if isinstance(event, AgentShutdown):
                        break  # its save was refused: it stops
        async with Runtime(owner_id="later") as later:
            await _start(later, config, "c")  # any later start: nothing to reconcile
            await Session.stop(later, config, "c")
        stored = await store.load_state(SCOPE, "c")
        messages = 0 if stored is None else len(stored.state.messages)
        rows = await store.list_display_messages(SCOPE, "c")
        assert [(r.type, r.state_version) for r in rows] == [], f"{messages} messages stored"
    finally:
        await store.aclose()
