"""Recovery on every store (memory, SQLite, PostgreSQL): a crash restart resumes from storage
(issue 11 item 1), display rows follow the state after an unclean end (issue 16 item 9), and a
UI subscriber sees every change of a tool-call row (issue 11 item 4)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from sagents import (
    Agent,
    Runtime,
    Session,
    SessionConfig,
    SessionOptions,
    SingleFactoryRouter,
    State,
    Status,
)
from sagents.events import DisplayMessageSaved, DisplayMessageUpdated, Event, StatusChanged
from sagents.execution import Reply, RetryPolicy, ScriptedChatModel, ToolCall
from sagents.middleware import HumanInTheLoop
from sagents.persistence import DisplayMessage, StateSnapshot
from sagents.session import FactoryConfig
from sagents.testing import crash_agent
from tests.persistence.conftest import Store


def lookup(topic: str) -> str:
    """Look something up."""
    return f"found {topic}"


def respond(messages: list[Any]) -> Reply:
    last = messages[-1]
    if isinstance(last, HumanMessage) and "look" in str(last.content):
        return Reply(tool_calls=[ToolCall(name="lookup", args={"topic": "x"})])
    turns = sum(isinstance(m, HumanMessage) for m in messages)
    return Reply(text=f"answer {turns}")


class Factory:
    def __init__(self, *, approve: bool = False) -> None:
        self.approve = approve

    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        middleware = [HumanInTheLoop(interrupt_on={"lookup": True})] if self.approve else []
        agent = Agent(
            agent_id=agent_id,
            model=ScriptedChatModel(responder=respond),
            tools=[lookup],
            middleware=middleware,
            retry=RetryPolicy(max_attempts=1),
        )
        return agent, SessionOptions()


def session_config(store: Store, *, approve: bool = False) -> SessionConfig:
    return SessionConfig(
        factory_router=SingleFactoryRouter(Factory(approve=approve)),
        agent_persistence=store,
        display_message_persistence=store,
        inactivity_timeout=None,
    )


async def until(events: Any, *statuses: Status, seen: list[Event] | None = None) -> list[Event]:
    out = [] if seen is None else seen
    async with asyncio.timeout(30):
        async for event in events:
            out.append(event)
            if isinstance(event, StatusChanged) and event.status in statuses:
                return out
    raise AssertionError(f"no {statuses}")


async def settled(store: Store, conversation_id: str, messages: int) -> None:
    """Wait until storage holds ``messages`` messages (saves run off the hot path)."""
    async with asyncio.timeout(30):
        while True:
            stored = await store.load_state("u", conversation_id)
            if stored is not None and len(stored.state.messages) >= messages:
                return
            await asyncio.sleep(0.01)


async def test_a_crash_restart_resumes_from_the_stored_state_and_its_next_turn_is_stored(
    store: Store,
) -> None:
    config = session_config(store)
    async with Runtime() as runtime:
        session = await Session.ensure_running(runtime, config, "c", scope="u")
        async with session.events as events:
            for turn in range(3):
                await session.handle.add_message(f"turn {turn}")
                await until(events, Status.IDLE)
        await settled(store, "c", 6)
        stored = await store.load_state("u", "c")
        assert stored is not None
        crashed = runtime.agent_info_nowait(session.agent_id)
        assert crashed is not None
        crash_agent(runtime, session.agent_id)
        for _ in range(3000):
            restarted = runtime.agent_info_nowait(session.agent_id)
            if restarted is not None and restarted.instance != crashed.instance:
                break
            await asyncio.sleep(0.01)
        assert restarted is not None
        assert (await session.handle.get_state()).messages == stored.state.messages
        async with session.handle.subscribe() as events:
            await session.handle.add_message("after the crash")
            await until(events, Status.IDLE)
        await settled(store, "c", 8)
        after = await store.load_state("u", "c")
        assert after is not None
        assert after.state.messages[-1].content == "answer 4"


async def test_display_rows_ahead_of_the_state_are_reconciled_after_a_kill(
    store: Store,
) -> None:
    # What a process killed mid-turn leaves: the state of turn 1, the rows of turn 2 (its user
    # message and a tool call still "executing"), a tool call of turn 1 whose status update was
    # lost, and its lease never released.
    state = State(
        messages=[
            HumanMessage("look it up"),
            AIMessage("", tool_calls=[{"name": "lookup", "args": {}, "id": "done-call"}]),
            ToolMessage("found x", tool_call_id="done-call", name="lookup"),
            AIMessage("answer 1"),
        ]
    )
    await store.acquire_lease("u", "c", "a-killed-process", 1e-6)
    assert await store.save_state("u", "c", StateSnapshot(state=state, version=4))

    def row(kind: str, version: int, call: str | None = None, **content: Any) -> DisplayMessage:
        status = "executing" if kind == "tool_call" else None
        return DisplayMessage(
            conversation_id="c",
            type=kind,
            content=content,
            tool_call_id=call,
            status=status,
            state_version=version,
        )

    await store.append_display_messages(
        "u",
        "c",
        [
            row("user", 1, text="look it up"),
            row("tool_call", 2, "done-call", name="lookup", arguments={}),
            row("tool_result", 3, "done-call", text="found x"),
            row("assistant", 4, text="answer 1"),
            row("user", 5, text="look again"),
            row("tool_call", 6, "lost-call", name="lookup", arguments={}),
        ],
    )
    async with Runtime() as runtime:
        session = await Session.ensure_running(runtime, session_config(store), "c", scope="u")
        seen: list[Event] = []
        async with session.events as events:
            await session.handle.add_message("hello again")
            await until(events, Status.IDLE, seen=seen)
            await Session.stop(runtime, session_config(store), "c")
            seen += [event async for event in events]
    rows = await store.list_display_messages("u", "c")
    assert [(r.type, r.content.get("text"), r.status) for r in rows] == [
        ("user", "look it up", None),
        ("tool_call", None, "completed"),  # settled from the result in the state
        ("tool_result", "found x", None),
        ("assistant", "answer 1", None),
        ("user", "hello again", None),  # the lost turn's rows are gone, the new turn follows
        ("assistant", "answer 2", None),
    ]
    updated = [e.display_message for e in seen if isinstance(e, DisplayMessageUpdated)]
    assert [(u["tool_call_id"], u["status"]) for u in updated] == [("done-call", "completed")]


async def test_every_status_change_of_a_tool_call_row_reaches_a_ui_subscriber(
    store: Store,
) -> None:
    config = session_config(store, approve=True)
    async with Runtime() as runtime:
        session = await Session.ensure_running(runtime, config, "c", scope="u")
        seen: list[Event] = []
        async with session.events as events:
            await session.handle.add_message("look it up")
            await until(events, Status.INTERRUPTED, seen=seen)
            await session.handle.resume([{"type": "approve"}])
            await until(events, Status.IDLE, seen=seen)
            await Session.stop(runtime, config, "c")
            seen += [event async for event in events]
    rows = [
        e.display_message
        for e in seen
        if isinstance(e, DisplayMessageSaved | DisplayMessageUpdated)
        and e.display_message["type"] == "tool_call"
    ]
    assert [r["status"] for r in rows] == ["executing", "interrupted", "interrupted", "completed"]
    assert rows[-1]["metadata"]["decision"] == {"type": "approve"}


@pytest.mark.parametrize("reason", ["inactivity"])
async def test_a_restored_state_nothing_changed_is_not_saved_again(
    store: Store, reason: str
) -> None:
    saves: list[int] = []
    original = store.save_state

    async def counting(scope: Any, conversation_id: str, snapshot: StateSnapshot) -> bool:
        saves.append(snapshot.version)
        return await original(scope, conversation_id, snapshot)

    store.save_state = counting  # type: ignore[method-assign]
    config = session_config(store)
    async with Runtime() as runtime:
        session = await Session.ensure_running(runtime, config, "c", scope="u")
        async with session.events as events:
            await session.handle.add_message("hi")
            await until(events, Status.IDLE)
        await Session.stop(runtime, config, "c", reason=reason)
        count = len(saves)
        restored = await Session.ensure_running(runtime, config, "c", scope="u")
        assert restored.restored
        await restored.events.aclose()
        await Session.stop(runtime, config, "c", reason=reason)
    assert len(saves) == count  # restored, then stopped: nothing new to store
