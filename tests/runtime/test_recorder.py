"""What an agent server saves, and that nothing it cannot save passes silently (issue 11).

Regression tests, named after the defects they pin: a crash restart that forked the
conversation back to its start, saves refused with only a debug event, tool-call rows whose
status changes were never broadcast, middleware messages that bypassed saving, an ``until_tool``
result that never reached subscribers, and two runtimes running one conversation.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from sagents import ConversationOwnedElsewhere, State, Status
from sagents.events import (
    AgentShutdown,
    DisplayMessageSaved,
    DisplayMessageUpdated,
    Event,
    FileChanged,
    SaveRefused,
    StatusChanged,
    ToolExecutionFailed,
)
from sagents.execution import Middleware, Reply, ToolCall, get_middleware_context
from sagents.middleware import FileSystem, HumanInTheLoop
from sagents.persistence import Lease, MemoryPersistence, StateSnapshot
from sagents.runtime import PendingSubscription, Runtime
from sagents.testing import crash_agent

from .conftest import make_agent, until_status, user

pytestmark = pytest.mark.looptime

CONVERSATION = {"conversation_id": "c1", "scope": "team"}


async def crash_and_restart(runtime: Runtime, agent_id: str = "agent-1") -> State:
    """Crash the agent's server; the state its restarted server starts from."""
    crashed = runtime.agent_info_nowait(agent_id)
    assert crashed is not None
    crash_agent(runtime, agent_id)
    for _ in range(100):
        info = runtime.agent_info_nowait(agent_id)
        if info is not None and info.instance != crashed.instance:
            return await runtime.agent(agent_id).get_state()
        await asyncio.sleep(0.01)
    raise AssertionError("the server was not restarted")


class LeaseLog(MemoryPersistence):
    """A memory store that keeps the leases it hands out, e.g. the one its agent holds."""

    def __init__(self) -> None:
        super().__init__()
        self.leases: list[Lease] = []

    async def acquire_lease(
        self, scope: Any, conversation_id: str, owner: str, ttl: float, *, create: bool = True
    ) -> Lease:
        lease = await super().acquire_lease(scope, conversation_id, owner, ttl, create=create)
        self.leases.append(lease)
        return lease


def counting(messages: list[BaseMessage]) -> Reply:
    return Reply(text=f"answer {sum(isinstance(m, HumanMessage) for m in messages)}")


async def turn(handle: Any, text: str) -> list[Event]:
    async with handle.subscribe() as events:
        await handle.add_message(text)
        return await until_status(events, Status.IDLE, Status.ERROR)


async def test_crash_restart_resumes_from_the_stored_state_and_keeps_saving(
    runtime: Runtime,
) -> None:
    store = MemoryPersistence()
    handle = await runtime.start_agent(
        make_agent(responder=counting), agent_persistence=store, **CONVERSATION
    )
    for i in range(3):
        await turn(handle, f"turn {i}")
    await asyncio.sleep(0.1)  # the last save lands
    stored = await store.load_state("team", "c1")
    assert stored is not None
    assert len(stored.state.messages) == 6
    restarted = await crash_and_restart(runtime)
    assert restarted.messages == stored.state.messages  # not the 0 it started with
    await turn(handle, "after the crash")
    await asyncio.sleep(0.1)
    after = await store.load_state("team", "c1")
    assert after is not None
    assert len(after.state.messages) == 8
    assert after.version > stored.version
    assert after.state.messages[-1].content == "answer 4"


async def test_crash_restart_without_persistence_resumes_from_the_last_completed_state(
    runtime: Runtime,
) -> None:
    handle = await runtime.start_agent(make_agent(responder=counting))
    await turn(handle, "one")
    await turn(handle, "two")
    restarted = await crash_and_restart(runtime)
    assert [m.content for m in restarted.messages] == ["one", "answer 1", "two", "answer 2"]


async def test_crash_restart_stores_a_state_whose_save_the_crash_lost(
    runtime: Runtime,
) -> None:
    store = MemoryPersistence()
    handle = await runtime.start_agent(
        make_agent(responder=counting), agent_persistence=store, **CONVERSATION
    )
    await turn(handle, "one")
    await asyncio.sleep(0.1)
    # Storage falls behind (as if the save of the next turn died with the process's task).
    saved = store.save_state
    blocked: list[int] = []

    async def lose(scope: Any, conversation_id: str, snapshot: StateSnapshot) -> bool:
        blocked.append(snapshot.version)
        raise ConnectionError("database down")

    store.save_state = lose  # type: ignore[method-assign]
    await turn(handle, "two")
    await asyncio.sleep(0.1)
    store.save_state = saved  # type: ignore[method-assign]
    assert blocked
    restarted = await crash_and_restart(runtime)
    assert len(restarted.messages) == 4
    await asyncio.sleep(0.1)
    stored = await store.load_state("team", "c1")
    assert stored is not None
    assert len(stored.state.messages) == 4


async def test_a_stale_save_is_reported_and_the_agent_stops(runtime: Runtime) -> None:
    store = MemoryPersistence()
    events = PendingSubscription()
    handle = await runtime.start_agent(
        make_agent(responder=counting),
        agent_persistence=store,
        lease_ttl=None,  # no lease: only the version check stands between two writers
        initial_subscribers=[events],
        **CONVERSATION,
    )
    # Another server saved a newer state behind this one's back.
    newer = State(messages=[HumanMessage("elsewhere")])
    assert await store.save_state("team", "c1", StateSnapshot(state=newer, version=100))
    await handle.add_message("here")
    seen = [event async for event in events]
    refused = [e for e in seen if isinstance(e, SaveRefused)]
    assert [e.reason for e in refused] == ["stale"]
    assert "newer state" in refused[0].error
    errors = [e for e in seen if isinstance(e, StatusChanged) and e.status is Status.ERROR]
    assert errors
    assert "newer state" in str(errors[-1].data)
    last = seen[-1]
    assert isinstance(last, AgentShutdown)
    assert last.reason == "save_refused"
    assert runtime.list_running_agents() == []
    stored = await store.load_state("team", "c1")
    assert stored is not None
    assert stored.state.messages[0].content == "elsewhere"


async def test_a_second_runtime_cannot_start_a_conversation_the_first_owns() -> None:
    store = MemoryPersistence()
    async with Runtime(owner_id="worker-a") as first, Runtime(owner_id="worker-b") as second:
        handle = await first.start_agent(
            make_agent(responder=counting), agent_persistence=store, **CONVERSATION
        )
        await turn(handle, "one")
        with pytest.raises(ConversationOwnedElsewhere) as refused:
            await second.start_agent(
                make_agent(responder=counting), agent_persistence=store, **CONVERSATION
            )
        assert refused.value.owner == "worker-a"
        assert second.list_running_agents() == []
        await handle.stop()
        # Released at the stop: the second runtime takes over with everything stored.
        taken = await second.start_agent(
            make_agent(responder=counting), agent_persistence=store, **CONVERSATION
        )
        assert len((await taken.get_state()).messages) == 2
        await turn(taken, "two")
        await asyncio.sleep(0.1)
        stored = await store.load_state("team", "c1")
        assert stored is not None
        assert len(stored.state.messages) == 4


async def test_a_lease_taken_over_while_stalled_stops_the_agent(runtime: Runtime) -> None:
    store = LeaseLog()
    events = PendingSubscription()
    handle = await runtime.start_agent(
        make_agent(responder=counting),
        agent_persistence=store,
        lease_ttl=3.0,
        initial_subscribers=[events],
        **CONVERSATION,
    )
    await turn(handle, "one")
    # This process stalled past the expiry and another one took the conversation over.
    held = store.leases[-1]
    assert held.owner == runtime.owner_id
    await store.release_lease("team", "c1", held)
    await store.acquire_lease("team", "c1", "another-host:1:x", 30.0)
    await asyncio.sleep(1.5)  # the next renewal finds the lease gone
    seen = [event async for event in events]
    assert [e.reason for e in seen if isinstance(e, SaveRefused)] == ["owned_elsewhere"]
    assert isinstance(seen[-1], AgentShutdown)
    assert seen[-1].reason == "save_refused"


async def take_over(store: LeaseLog, runtime: Runtime) -> Lease:
    """This process stalled past the expiry, and another one took the conversation over before
    any renewal of this one's noticed: the new owner's lease."""
    held = store.leases[-1]
    assert held.owner == runtime.owner_id
    await store.release_lease("team", "c1", held)
    return await store.acquire_lease("team", "c1", "another-host:1:x", 30.0)


async def test_a_stalled_agents_tool_call_row_update_is_refused_and_stops_it(
    runtime: Runtime,
) -> None:
    store = LeaseLog()
    agent = make_agent(
        [Reply(tool_calls=[ToolCall(name="ping", args={}, id="call-1")]), Reply(text="done")],
        middleware=[HumanInTheLoop(interrupt_on={"ping": True})],
    )
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent,
        user(),
        agent_persistence=store,
        display_message_persistence=store,
        lease_ttl=3.0,
        initial_subscribers=[events],
        **CONVERSATION,
    )
    await handle.execute()
    await until_status(events, Status.INTERRUPTED)
    await asyncio.sleep(0.1)  # the rows are written: the call waits for a human
    await take_over(store, runtime)
    # The decision is the stalled agent's first write: its row must not record it.
    await handle.resume([{"type": "approve"}])
    seen = [event async for event in events]
    assert [e.reason for e in seen if isinstance(e, SaveRefused)] == ["owned_elsewhere"]
    updates = [e for e in seen if isinstance(e, DisplayMessageUpdated)]
    assert not [e for e in updates if e.display_message["metadata"]]  # no decision said stored
    last = seen[-1]
    assert isinstance(last, AgentShutdown)
    assert last.reason == "save_refused"
    rows = await store.list_display_messages("team", "c1")
    call = next(r for r in rows if r.type == "tool_call")
    assert (call.status, call.metadata) == ("interrupted", {})
    assert not [r for r in rows if r.type == "tool_result"]


async def test_a_stalled_agents_file_write_fails_its_tool_call_and_stops_it(
    runtime: Runtime,
) -> None:
    store = LeaseLog()
    write = ToolCall(
        name="write_file", args={"file_path": "/plan.md", "content": "stale"}, id="call-1"
    )
    agent = make_agent(
        [Reply(tool_calls=[write]), Reply(text="written")], tools=[], middleware=[FileSystem()]
    )
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent,
        agent_persistence=store,
        lease_ttl=3.0,
        initial_subscribers=[events],
        **CONVERSATION,
    )
    await take_over(store, runtime)
    await store.save_files("team", "c1", {"/plan.md": "the new owner's"})  # its own write
    await handle.add_message("write the plan")
    seen = [event async for event in events]
    # The call fails (the model would read why), and the agent stops as for a refused save.
    failed = [e for e in seen if isinstance(e, ToolExecutionFailed)]
    assert [e.tool_call_id for e in failed] == ["call-1"]
    assert "no longer owns conversation 'c1'" in failed[0].error
    assert not [e for e in seen if isinstance(e, FileChanged)]
    assert [e.reason for e in seen if isinstance(e, SaveRefused)] == ["owned_elsewhere"]
    last = seen[-1]
    assert isinstance(last, AgentShutdown)
    assert last.reason == "save_refused"
    assert await store.load_files("team", "c1") == {"/plan.md": "the new owner's"}
    stored = await store.load_state("team", "c1")
    assert stored is None  # nothing of the stalled run was saved either


async def test_the_lease_is_renewed_while_the_agent_runs(runtime: Runtime) -> None:
    store = MemoryPersistence()
    await runtime.start_agent(
        make_agent(responder=counting), agent_persistence=store, lease_ttl=3.0, **CONVERSATION
    )
    await asyncio.sleep(30)  # ten times the ttl, on virtual time
    with pytest.raises(ConversationOwnedElsewhere):
        await store.acquire_lease("team", "c1", "someone-else", 3.0)


async def test_every_status_change_of_a_tool_call_row_is_broadcast(runtime: Runtime) -> None:
    store = MemoryPersistence()
    agent = make_agent(
        [
            Reply(tool_calls=[ToolCall(name="ping", args={}, id="call-1")]),
            Reply(text="done"),
        ],
        middleware=[HumanInTheLoop(interrupt_on={"ping": True})],
    )
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent,
        user(),
        display_message_persistence=store,
        initial_subscribers=[events],
        **CONVERSATION,
    )
    await handle.execute()
    seen = await until_status(events, Status.INTERRUPTED)
    await handle.resume([{"type": "approve"}])
    seen += await until_status(events, Status.IDLE)
    await handle.stop()
    seen += [event async for event in events]
    rows = [
        e.display_message
        for e in seen
        if isinstance(e, DisplayMessageSaved | DisplayMessageUpdated)
        and e.display_message["tool_call_id"] == "call-1"
        and e.display_message["type"] == "tool_call"
    ]
    statuses = [(row["status"], "decision" in row["metadata"]) for row in rows]
    assert statuses == [
        ("executing", False),  # saved
        ("interrupted", False),  # updated: waits for a human
        ("interrupted", True),  # updated: the decision recorded
        ("completed", True),  # updated: the tool ran
    ]
    stored = await store.list_display_messages("team", "c1")
    call = next(r for r in stored if r.type == "tool_call")
    assert call.status == "completed"


class Greeter(Middleware):
    """Adds messages from its hooks: at server start, and when sent a message."""

    async def on_server_start(self, state: State) -> State | None:
        return state.append(AIMessage("welcome back"))

    async def handle_message(self, message: Any, state: State) -> State | None:
        get_middleware_context()
        return state.append(AIMessage(f"note: {message}"))


async def test_messages_added_by_hooks_are_saved_and_displayed(runtime: Runtime) -> None:
    store = MemoryPersistence()
    saved: list[str] = []

    async def save_message(conversation_id: str | None, message: BaseMessage) -> None:
        saved.append(str(message.content))

    handle = await runtime.start_agent(
        make_agent(middleware=[Greeter()]),
        display_message_persistence=store,
        save_new_message=save_message,
        **CONVERSATION,
    )
    await handle.send_to_middleware("greeter", "remember this")
    await asyncio.sleep(0.1)
    assert saved == ["welcome back", "note: remember this"]
    rows = await store.list_display_messages("team", "c1")
    assert [r.content["text"] for r in rows] == ["welcome back", "note: remember this"]


def submit(answer: str) -> dict[str, str]:
    """Submit the final answer."""
    return {"answer": answer}


async def test_an_until_tool_result_reaches_subscribers_and_the_handle(runtime: Runtime) -> None:
    agent = make_agent(
        [Reply(tool_calls=[ToolCall(name="submit", args={"answer": "42"})])],
        tools=[submit],
        until_tool="submit",
    )
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.execute()
    seen = await until_status(events, Status.IDLE)
    idle = seen[-1]
    assert isinstance(idle, StatusChanged)
    assert idle.data == {"answer": "42"}
    assert idle.to_json()["data"] == {"answer": "42"}
    assert await handle.last_result() == {"answer": "42"}


async def test_a_run_never_starts_with_two_completed_turns_unsaved(runtime: Runtime) -> None:
    """Issue 16 item 10: a fast agent and a slow database; the saves never fall behind."""
    store = MemoryPersistence()
    gate = asyncio.Event()
    save = store.save_state
    saved: list[int] = []

    async def slow(scope: Any, conversation_id: str, snapshot: StateSnapshot) -> bool:
        await gate.wait()
        saved.append(len(snapshot.state.messages))
        return await save(scope, conversation_id, snapshot)

    store.save_state = slow  # type: ignore[method-assign]
    calls: list[int] = []

    def respond(messages: list[BaseMessage]) -> Reply:
        calls.append(len(messages))
        return Reply(text="ok")

    handle = await runtime.start_agent(
        make_agent(responder=respond), agent_persistence=store, lease_ttl=None, **CONVERSATION
    )
    await turn(handle, "one")  # its save is stuck in flight
    await turn(handle, "two")  # two completed turns unsaved now
    async with handle.subscribe() as events:
        await handle.add_message("three")
        await asyncio.sleep(5)
        assert await handle.get_status() is Status.RUNNING
        assert len(calls) == 2  # the third run waits for the saves
        gate.set()
        await until_status(events, Status.IDLE)
    assert len(calls) == 3
    await asyncio.sleep(0.1)
    assert saved[-1] == 6
