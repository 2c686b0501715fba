"""The agent server's statuses and commands: rules L1–L8, L40–L43, E1–E3."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from sagents import (
    AgentNotRunning,
    InvalidDecision,
    InvalidTransition,
    State,
    Status,
)
from sagents.events import AgentShutdown, LLMDeltas, LLMMessage, StateRestored, StatusChanged
from sagents.execution import Fail, Reply, ToolCall
from sagents.middleware import HumanInTheLoop
from sagents.runtime import PendingSubscription, Runtime

from .conftest import make_agent, statuses, tool_turn, until_status, user

pytestmark = pytest.mark.looptime


def protected_agent(script: list[Any], **kwargs: Any) -> Any:
    def delete(path: str) -> str:
        """Delete a path."""
        return f"deleted {path}"

    return make_agent(
        script,
        tools=[delete],
        middleware=[HumanInTheLoop(interrupt_on={"delete": True})],
        **kwargs,
    )


async def test_a_new_server_is_idle_and_registered_before_start_returns(runtime: Runtime) -> None:
    handle = await runtime.start_agent(make_agent(), user())
    assert runtime.list_running_agents() == ["agent-1"]
    assert await handle.get_status() is Status.IDLE
    assert runtime.agent("agent-1").agent_id == "agent-1"


async def test_execute_broadcasts_running_then_idle(runtime: Runtime) -> None:
    events = PendingSubscription()
    handle = await runtime.start_agent(make_agent(), user(), initial_subscribers=[events])
    await handle.execute()
    seen = await until_status(events, Status.IDLE)
    assert statuses(seen) == [Status.RUNNING, Status.IDLE]
    assert any(isinstance(e, LLMMessage) for e in seen)
    seqs = [e.seq for e in seen]
    assert seqs == list(range(1, len(seen) + 1))  # E1: in order, no gaps
    state = await handle.get_state()
    assert [type(m) for m in state.messages] == [HumanMessage, AIMessage]


async def test_execute_while_running_or_interrupted_is_refused(runtime: Runtime) -> None:
    agent = make_agent([Reply(text="slow", delay=10.0, chunk_size=2)])
    handle = await runtime.start_agent(agent, user())
    await handle.execute()
    with pytest.raises(InvalidTransition, match="already running"):
        await handle.execute()
    await handle.cancel()

    agent2 = protected_agent([tool_turn("delete", path="/x")], agent_id="agent-2")
    events = PendingSubscription()
    h2 = await runtime.start_agent(agent2, user(), initial_subscribers=[events])
    await h2.execute()
    await until_status(events, Status.INTERRUPTED)
    with pytest.raises(InvalidTransition, match="resume"):
        await h2.execute()


async def test_interrupt_and_resume(runtime: Runtime) -> None:
    agent = protected_agent([tool_turn("delete", path="/x"), Reply(text="done")])
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.execute()
    seen = await until_status(events, Status.INTERRUPTED)
    interrupted = seen[-1]
    assert isinstance(interrupted, StatusChanged)
    assert interrupted.data.action_requests[0].name == "delete"
    info = await handle.info()
    assert info.has_interrupt
    with pytest.raises(InvalidDecision):
        await handle.resume([{"type": "approve"}, {"type": "approve"}])
    assert await handle.get_status() is Status.INTERRUPTED  # L4: interrupt kept
    await handle.resume([{"type": "approve"}])
    seen = await until_status(events, Status.IDLE)
    assert statuses(seen) == [Status.RUNNING, Status.IDLE]
    state = await handle.get_state()
    assert state.interrupt is None
    assert any(isinstance(m, ToolMessage) and m.content == "deleted /x" for m in state.messages)


async def test_resume_when_not_interrupted_is_refused(runtime: Runtime) -> None:
    handle = await runtime.start_agent(make_agent(), user())
    with pytest.raises(InvalidTransition, match="nothing to resume"):
        await handle.resume([{"type": "approve"}])


async def test_messages_sent_while_running_are_queued_and_merged_into_one_follow_up(
    runtime: Runtime,
) -> None:
    prompts: list[list[Any]] = []

    def respond(messages: list[Any]) -> Reply:
        prompts.append(messages)
        return Reply(text=f"answer {len(prompts)}", delay=1.0 if len(prompts) == 1 else 0.0)

    events = PendingSubscription()
    handle = await runtime.start_agent(make_agent(responder=respond), initial_subscribers=[events])
    await handle.add_message("first")
    await handle.add_message("second")
    await handle.add_message("third")
    info = await handle.info()
    assert info.queued_messages == 2
    seen = await until_status(events, Status.IDLE)
    # The follow-up continues the run: no idle in between (a UI would take it for "done").
    assert statuses(seen) == [Status.RUNNING, Status.IDLE]
    assert len(prompts) == 2  # one follow-up turn, not two
    assert [m.content for m in prompts[1] if isinstance(m, HumanMessage)] == [
        "first",
        "second",
        "third",
    ]
    state = await handle.get_state()
    assert len(state.messages) == 5


async def test_follow_up_runs_are_capped(runtime: Runtime) -> None:
    calls = 0

    def respond(messages: list[Any]) -> Reply:
        nonlocal calls
        calls += 1
        return Reply(text="ok", delay=1.0)

    events = PendingSubscription()
    handle = await runtime.start_agent(
        make_agent(responder=respond), max_follow_ups=0, initial_subscribers=[events]
    )
    await handle.add_message("one")
    await handle.add_message("two")  # queued; no follow-up allowed
    await until_status(events, Status.IDLE)
    await asyncio.sleep(0)
    assert calls == 1
    state = await handle.get_state()
    assert state.messages[-1].content == "two"  # never lost
    assert await handle.get_status() is Status.IDLE


async def test_a_user_message_while_interrupted_dismisses_the_interrupt(runtime: Runtime) -> None:
    agent = protected_agent([tool_turn("delete", path="/x"), Reply(text="ok, not deleting")])
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.execute()
    await until_status(events, Status.INTERRUPTED)
    await handle.add_message("never mind")
    seen = await until_status(events, Status.IDLE)
    seen += await until_status(events, Status.IDLE)
    assert statuses(seen) == [Status.IDLE, Status.RUNNING, Status.IDLE]
    state = await handle.get_state()
    results = [m for m in state.messages if isinstance(m, ToolMessage)]
    assert len(results) == 1
    assert "not approved" in str(results[0].content)
    assert state.pending_tool_calls() == []


@pytest.mark.looptime
async def test_cancel_stops_a_streaming_run_at_once(runtime: Runtime) -> None:
    agent = make_agent([Reply(text="x" * 100, chunk_size=10, delay=1.0)])
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.execute()
    await asyncio.sleep(2.5)
    await handle.cancel()
    seen = await until_status(events, Status.CANCELLED)
    assert statuses(seen) == [Status.RUNNING, Status.CANCELLED]
    assert sum(isinstance(e, LLMDeltas) for e in seen) == 2
    state = await handle.get_state()
    assert [type(m) for m in state.messages] == [HumanMessage]  # no half message (L5)
    with pytest.raises(InvalidTransition, match="no run to cancel"):
        await handle.cancel()
    # A cancelled agent can run again (L2).
    await handle.add_message("again")
    assert await handle.get_status() is Status.RUNNING


async def test_a_failed_run_keeps_the_state_and_the_server(runtime: Runtime) -> None:
    agent = make_agent([Fail(error=ValueError("bad request")), Reply(text="recovered")])
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.execute()
    seen = await until_status(events, Status.ERROR)
    error = seen[-1]
    assert isinstance(error, StatusChanged)
    assert "bad request" in error.data
    state = await handle.get_state()
    assert [type(m) for m in state.messages] == [HumanMessage]
    await handle.add_message("try again")
    await until_status(events, Status.IDLE)
    assert (await handle.get_state()).messages[-1].content == "recovered"


async def test_stop_is_graceful_and_the_id_can_start_again(runtime: Runtime) -> None:
    saved: list[dict[str, Any]] = []

    async def save(agent_id: str, state: dict[str, Any]) -> None:
        saved.append(state)

    from sagents.runtime import AutoSave

    events = PendingSubscription()
    handle = await runtime.start_agent(
        make_agent(), user(), auto_save=AutoSave(callback=save), initial_subscribers=[events]
    )
    await handle.stop(reason="user_left")
    remaining = [e async for e in events]
    assert isinstance(remaining[-1], AgentShutdown)
    assert remaining[-1].reason == "user_left"  # L41
    assert runtime.list_running_agents() == []
    assert len(saved) == 1  # saved before shutdown
    with pytest.raises(AgentNotRunning):
        await handle.get_state()
    with pytest.raises(AgentNotRunning):
        await runtime.stop("agent-1")  # L43
    with pytest.raises(AgentNotRunning):
        await runtime.cancel("agent-1")
    again = await runtime.start_agent(make_agent(), user())
    assert await again.get_status() is Status.IDLE
    assert await handle.get_status() is Status.IDLE  # handles resolve by id


async def test_stopping_a_running_agent_cancels_its_run_first(runtime: Runtime) -> None:
    agent = make_agent(
        [Reply(tool_calls=[ToolCall(name="ping", args={})]), Reply(text="x", delay=3600)]
    )
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.execute()
    async for event in events:
        if isinstance(event, LLMMessage):
            break
    await runtime.stop("agent-1")
    rest = [e async for e in events]
    assert Status.CANCELLED in statuses(rest)
    assert isinstance(rest[-1], AgentShutdown)


async def test_restore_state_replaces_it_and_broadcasts(runtime: Runtime) -> None:
    events = PendingSubscription()
    handle = await runtime.start_agent(make_agent(), user(), initial_subscribers=[events])
    new = State(messages=[HumanMessage("restored")], metadata={"k": 1})
    await handle.restore_state(new.to_dict())
    event = await events.__anext__()
    assert isinstance(event, StateRestored)
    state = await handle.get_state()
    assert state.messages[0].content == "restored"
    assert state.metadata == {"k": 1}
    assert state.agent_id == "agent-1"


async def test_export_then_start_restores_an_equal_state_including_the_interrupt(
    runtime: Runtime,
) -> None:
    agent = protected_agent([tool_turn("delete", path="/x"), Reply(text="done")])
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.execute()
    await until_status(events, Status.INTERRUPTED)
    exported = await runtime.export_state("agent-1")
    await runtime.stop("agent-1")
    restored = await runtime.start_agent(agent, exported)
    assert await restored.get_status() is Status.INTERRUPTED  # the interrupt is durable
    assert (await restored.get_state()) == State.from_dict(exported)
    await restored.resume([{"type": "approve"}])


async def test_add_message_rejects_non_messages(runtime: Runtime) -> None:
    handle = await runtime.start_agent(make_agent())
    with pytest.raises(TypeError, match="langchain message"):
        await handle.add_message(42)  # type: ignore[arg-type]


async def test_messages_to_middleware_update_its_state(runtime: Runtime) -> None:
    from sagents import Middleware

    class Notes(Middleware):
        async def handle_message(self, message: Any, state: State) -> State | None:
            return state.with_metadata(self.key, [*state.metadata.get(self.key, []), message])

    agent = make_agent([Reply(text="slow", chunk_size=1, delay=1.0)], middleware=[Notes()])
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.send_to_middleware("notes", "while idle")
    await handle.execute()
    await handle.send_to_middleware("notes", "while running")  # handled after the run
    assert (await handle.get_state()).metadata["notes"] == ["while idle"]
    await until_status(events, Status.IDLE)
    await handle.touch()
    assert (await handle.get_state()).metadata["notes"] == ["while idle", "while running"]
    with pytest.raises(InvalidTransition, match="no middleware with key 'nope'"):
        await handle.send_to_middleware("nope", 1)


async def test_pause_stops_the_run_saves_and_survives_a_restart(runtime: Runtime) -> None:
    from sagents.runtime import AutoSave

    saved: list[dict[str, Any]] = []

    async def save(agent_id: str, state: dict[str, Any]) -> None:
        saved.append(state)

    agent = make_agent([Reply(text="x" * 50, chunk_size=5, delay=1.0), Reply(text="continued")])
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent, user(), auto_save=AutoSave(callback=save), initial_subscribers=[events]
    )
    await handle.execute()
    await asyncio.sleep(2.5)
    await handle.pause()
    seen = await until_status(events, Status.PAUSED)
    assert statuses(seen) == [Status.RUNNING, Status.PAUSED]  # never "cancelled" (L8)
    assert saved
    assert saved[-1]["metadata"] == {"sagents.runtime": {"paused": True}}
    await runtime.stop("agent-1")
    restarted = await runtime.start_agent(agent, saved[-1])  # e.g. on another node
    assert await restarted.get_status() is Status.PAUSED
    await restarted.execute()
    state = await restarted.get_state()
    assert "sagents.runtime" not in state.metadata
    assert await restarted.get_status() is Status.RUNNING


async def test_pause_of_an_interrupted_agent_is_refused(runtime: Runtime) -> None:
    agent = protected_agent([tool_turn("delete", path="/x")])
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.execute()
    await until_status(events, Status.INTERRUPTED)
    with pytest.raises(InvalidTransition, match="approval"):
        await handle.pause()
