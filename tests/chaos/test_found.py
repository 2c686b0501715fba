"""Defects the chaos suite found, each reduced to a minimal reproduction (issue 16).

Each test states the guarantee that should hold. While its defect is open it is marked
``xfail(strict=True, raises=AssertionError)``: the suite stays green, and the day a fix lands
the test passes, strict xfail turns that into a failure, and whoever fixed it removes the mark
(and the ``EXCUSE_*`` flag of ``test_chaos.py`` naming it, if any, so the chaos rounds check it
again). A fixed defect's test stays, as its regression test. The setup of a reproduction raises
``RuntimeError`` (:func:`require`), never ``AssertionError``, so a reproduction that no longer
sets up its case fails loudly instead of passing as an expected failure.

Found, and fixed since: a failed display write dropped for good; display writes a crash cut
short never written; a restart's first events published before a ``runtime.watch`` could see
them; a run failing after the model's tool-calling reply leaving those calls unanswered; a model
call's coroutine never awaited when its run was cancelled at once; display rows left ahead of
the state by a stop whose save did not land, never reconciled; a save written but reported
failed (its acknowledgement lost), retried with the same version and refused as stale.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from sagents import Agent, ConversationOwnedElsewhere, PersistenceFailed, Status
from sagents.events import AgentShutdown, DisplayMessageUpdated, Event, SaveRefused
from sagents.execution import Middleware, Reply, ScriptedChatModel, ToolCall
from sagents.persistence import DisplayMessage, MemoryPersistence
from sagents.runtime import PendingSubscription, Runtime
from sagents.testing import crash_agent

pytestmark = pytest.mark.looptime

CONVERSATION = {"conversation_id": "c1", "scope": "team"}


@pytest.fixture
async def runtime() -> Any:
    async with Runtime() as rt:
        yield rt


def answer(messages: list[BaseMessage]) -> Reply:
    return Reply(text="ok")


def agent(**kwargs: Any) -> Agent:
    return Agent(agent_id="agent-1", model=ScriptedChatModel(responder=answer), **kwargs)


async def settle(handle: Any) -> None:
    for _ in range(100):
        if await handle.get_status() is not Status.RUNNING:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # the saves of the turn land


def require(condition: object, what: str) -> None:
    """A precondition of a reproduction: its failure is not the defect (the xfail marks only
    expect ``AssertionError``), so it fails the test loudly."""
    if not condition:
        raise RuntimeError(f"the reproduction no longer sets up its case: {what}")


def crash(runtime: Runtime) -> int:
    """Crash the agent's server; the instance number of the crashed one."""
    info = runtime.agent_info_nowait("agent-1")
    require(info is not None, "the agent runs")
    assert info is not None
    crash_agent(runtime, "agent-1")
    return info.instance


async def user_rows(store: MemoryPersistence) -> list[Any]:
    rows = await store.list_display_messages("team", "c1")
    return [row.content["text"] for row in rows if row.type == "user"]


class FlakyDisplay(MemoryPersistence):
    """Display appends fail ``fail`` times, or stall ``stall`` seconds once."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = 0
        self.stall = 0.0

    async def append_display_messages(self, scope: Any, conversation_id: str, rows: Any) -> Any:
        if self.fail:
            self.fail -= 1
            raise PersistenceFailed("the database is down")
        if self.stall:
            stall, self.stall = self.stall, 0.0
            await asyncio.sleep(stall)
        return await super().append_display_messages(scope, conversation_id, rows)


async def test_a_failed_display_write_is_retried(runtime: Runtime) -> None:
    store = FlakyDisplay()
    handle = await runtime.start_agent(
        agent(), agent_persistence=store, display_message_persistence=store, **CONVERSATION
    )
    store.fail = 1  # one failure: "the next trigger" retries, as for state saves
    await handle.add_message("one")
    await settle(handle)
    await handle.add_message("two")
    await settle(handle)
    stored = await store.load_state("team", "c1")
    require(stored is not None, "the state is stored")
    assert stored is not None
    require([m.content for m in stored.state.messages] == ["one", "ok", "two", "ok"], "stored")
    # docs/persistence.md: "rows are never behind the stored state".
    assert await user_rows(store) == ["one", "two"]


async def test_display_rows_a_crash_cancelled_are_written_after_the_restart(
    runtime: Runtime,
) -> None:
    store = FlakyDisplay()
    handle = await runtime.start_agent(
        agent(),
        agent_persistence=store,
        display_message_persistence=store,
        shutdown_timeout=5.0,
        **CONVERSATION,
    )
    store.stall = 60.0  # longer than the crash's drain (shutdown_timeout)
    await handle.add_message("one")
    await settle(handle)
    previous = crash(runtime)
    await asyncio.sleep(10.0)  # the crash drains its saves for 5 s, then restarts
    current = runtime.agent_info_nowait("agent-1")
    require(current is not None and current.instance != previous, "the server was restarted")
    await handle.add_message("two")
    await settle(handle)
    stored = await store.load_state("team", "c1")
    require(stored is not None, "the state is stored")
    assert stored is not None
    require([m.content for m in stored.state.messages] == ["one", "ok", "two", "ok"], "stored")
    assert await user_rows(store) == ["one", "two"]


async def test_a_watch_sees_everything_a_restarted_server_publishes(runtime: Runtime) -> None:
    store = MemoryPersistence()
    handle = await runtime.start_agent(
        agent(), agent_persistence=store, display_message_persistence=store, **CONVERSATION
    )
    await handle.add_message("one")
    await settle(handle)
    stored = await store.load_state("team", "c1")
    require(stored is not None, "the state is stored")
    assert stored is not None
    # A tool call row left "executing", as a process killed in the middle of a tool leaves it:
    # the next start after an unclean end settles it and broadcasts the change.
    row = DisplayMessage(
        conversation_id="c1",
        type="tool_call",
        content={"name": "lookup", "arguments": {}},
        tool_call_id="call-1",
        status="executing",
        state_version=stored.version,
    )
    await store.append_display_messages("team", "c1", [row])
    seen: list[Event] = []

    async def read() -> None:
        async for event in runtime.watch("agent-1"):
            seen.append(event)

    reader = asyncio.get_running_loop().create_task(read())
    await asyncio.sleep(0.1)
    crash(runtime)
    await asyncio.sleep(1.0)
    rows = await store.list_display_messages("team", "c1")
    settled = [r.status for r in rows if r.tool_call_id == "call-1"]
    require(settled == ["interrupted"], f"the restart settled the row (it is {settled})")
    await handle.add_message("two")
    await settle(handle)
    reader.cancel()
    require(any(isinstance(e, AgentShutdown) for e in seen), "the watch saw the crash")
    after_crash = seen[[isinstance(e, AgentShutdown) for e in seen].index(True) + 1 :]
    assert any(isinstance(e, DisplayMessageUpdated) for e in after_crash)
    assert [e.seq for e in after_crash] == list(range(1, len(after_crash) + 1))


class FailAfterTheFirstReply(Middleware):
    def __init__(self) -> None:
        self.failures = 1

    async def after_model(self, state: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("a bug in after_model")


async def lookup(query: str) -> str:
    """Look a fact up."""
    return "42"


def call_then_answer(messages: list[BaseMessage]) -> Reply:
    if isinstance(messages[-1], HumanMessage):
        return Reply(tool_calls=[ToolCall(name="lookup", args={"query": "x"})])
    return Reply(text="ok")


async def test_a_run_failing_after_a_tool_calling_reply_leaves_a_valid_history(
    runtime: Runtime,
) -> None:
    store = MemoryPersistence()
    failing = Agent(
        agent_id="agent-1",
        model=ScriptedChatModel(responder=call_then_answer),
        tools=[lookup],
        middleware=[FailAfterTheFirstReply()],
    )
    handle = await runtime.start_agent(
        failing, agent_persistence=store, display_message_persistence=store, **CONVERSATION
    )
    await handle.add_message("one")
    await settle(handle)
    require(await handle.get_status() is Status.ERROR, "the run failed")
    await handle.add_message("two")
    await settle(handle)
    require(await handle.get_status() is Status.IDLE, "the next run completed")
    messages = (await handle.get_state()).messages
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    calls = [c["id"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    # What OpenAI and Anthropic require of every request: each tool call has its result.
    assert [c for c in calls if c not in answered] == []
    rows = await store.list_display_messages("team", "c1")
    assert [r.status for r in rows if r.type == "tool_call" and r.status == "executing"] == []


class CancelAsTheModelCallStarts(Middleware):
    async def before_model(self, state: Any) -> None:
        # A cancel request (cancel(), a stop) lands in the loop iteration in which the model
        # attempt's task is created, before that task ran a step.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_soon(task.cancel)


async def test_a_run_cancelled_as_a_model_call_starts_leaves_no_coroutine(
    runtime: Runtime,
) -> None:
    handle = await runtime.start_agent(agent(middleware=[CancelAsTheModelCallStarts()]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await handle.add_message("hello")
        await settle(handle)
        gc.collect()
    require(await handle.get_status() is Status.CANCELLED, "the run was cancelled")
    assert [str(w.message) for w in caught] == []


class SlowSaves(MemoryPersistence):
    """State saves stall ``stall`` seconds (the database hangs) while display writes go on."""

    def __init__(self) -> None:
        super().__init__()
        self.stall = 0.0

    async def save_state(self, scope: Any, conversation_id: str, snapshot: Any) -> bool:
        if self.stall:
            await asyncio.sleep(self.stall)
        return await super().save_state(scope, conversation_id, snapshot)


async def test_rows_ahead_of_a_stop_that_could_not_save_are_reconciled(runtime: Runtime) -> None:
    store = SlowSaves()
    options: dict[str, Any] = {
        "agent_persistence": store,
        "display_message_persistence": store,
        "shutdown_timeout": 5.0,
        **CONVERSATION,
    }
    handle = await runtime.start_agent(agent(), **options)
    await handle.add_message("one")
    await settle(handle)
    store.stall = 60.0  # the save of the next turn outlasts the stop's drain
    await handle.add_message("two")
    await settle(handle)
    await handle.stop()
    store.stall = 0.0
    stored = await store.load_state("team", "c1")
    require(stored is not None, "the first turn is stored")
    assert stored is not None
    require([m.content for m in stored.state.messages] == ["one", "ok"], "the second is not")
    require(await user_rows(store) == ["one", "two"], "the second turn's rows were written")
    # Started again from storage, as Session.start does: the agent's history is "one" only.
    handle = await runtime.start_agent(
        agent(), stored.state, state_version=stored.version, **options
    )
    await handle.add_message("three")
    await settle(handle)
    state = await handle.get_state()
    require([m.content for m in state.messages] == ["one", "ok", "three", "ok"], "history")
    # docs/persistence.md: rows are ahead of the state only after a kill, and the next start
    # after an unclean end reconciles them.
    assert await user_rows(store) == ["one", "three"]


class LostAcknowledgement(MemoryPersistence):
    """The next ``lose`` state saves are written, then fail as if the connection dropped after
    the commit: the caller cannot tell whether they were stored."""

    def __init__(self) -> None:
        super().__init__()
        self.lose = 0

    async def save_state(self, scope: Any, conversation_id: str, snapshot: Any) -> bool:
        written = await super().save_state(scope, conversation_id, snapshot)
        if self.lose:
            self.lose -= 1
            raise PersistenceFailed("the connection dropped after the commit")
        return written


async def test_a_save_whose_ack_was_lost_is_not_refused_when_retried(runtime: Runtime) -> None:
    store = LostAcknowledgement()
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent(), agent_persistence=store, initial_subscribers=[events], **CONVERSATION
    )
    store.lose = 1  # the save of the turn's end is stored, but its caller hears a failure
    await handle.add_message("one")
    await settle(handle)
    stored = await store.load_state("team", "c1")
    require(stored is not None, "the save was written")
    assert stored is not None
    require([m.content for m in stored.state.messages] == ["one", "ok"], "the turn is stored")
    await handle.stop()  # the failed save is retried by the stop's final save
    seen = [event async for event in events]
    assert not [e for e in seen if isinstance(e, SaveRefused)]
    # A clean end released the lease: the next start need not wait for it to expire, and
    # recovers nothing (the agent held one: the next token is not the first).
    try:
        taken = await store.acquire_lease("team", "c1", "another-host:1:x", 30.0, create=False)
    except ConversationOwnedElsewhere:
        taken = None
    assert taken is not None, "the lease is still held"
    assert taken.token > 1
    assert not taken.recovered
