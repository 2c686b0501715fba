"""Dismissing an interrupt and resetting an agent (issue 15, item 2): ``handle.dismiss_interrupt``
and ``handle.reset``, through the public API, with what they save."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Hashable
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from sagents import (
    AgentHandle,
    AutoSave,
    InvalidOption,
    InvalidTransition,
    State,
    Status,
    Todo,
)
from sagents.events import AgentReset, DisplayMessageSaved, Event, StatusChanged
from sagents.execution import Reply, ToolCall
from sagents.middleware import ConversationFiles, FileSystem, HumanInTheLoop
from sagents.persistence import MemoryPersistence
from sagents.runtime import PendingSubscription, Runtime

from .conftest import make_agent, statuses, until_status, user

pytestmark = pytest.mark.looptime

CONVERSATION = {"conversation_id": "c1", "scope": "team"}


class Tools:
    """A protected ``delete`` and an unprotected ``lookup`` that record their calls."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def tools(self) -> list[Any]:
        ran = self.ran

        def delete(path: str) -> str:
            """Delete a path."""
            ran.append(f"delete {path}")
            return f"deleted {path}"

        def lookup(query: str) -> str:
            """Look something up."""
            ran.append(f"lookup {query}")
            return f"found {query}"

        return [delete, lookup]


def protected(tools: Tools, script: list[Any], **kwargs: Any) -> Any:
    kwargs.setdefault("middleware", [HumanInTheLoop(interrupt_on={"delete": True})])
    return make_agent(script, tools=tools.tools(), **kwargs)


def parallel_turn() -> Reply:
    return Reply(
        tool_calls=[
            ToolCall(name="delete", args={"path": "/a"}, id="call-1"),
            ToolCall(name="lookup", args={"query": "q"}, id="call-2"),
            ToolCall(name="delete", args={"path": "/b"}, id="call-3"),
        ]
    )


def assert_history_valid(messages: list[BaseMessage]) -> None:
    """Every AI tool call has exactly one result, and every result answers a call."""
    calls = [c["id"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    results = [m.tool_call_id for m in messages if isinstance(m, ToolMessage)]
    assert Counter(results) == Counter(calls)


async def interrupted(runtime: Runtime, agent: Any, **options: Any) -> AgentHandle:
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user("go"), initial_subscribers=[events], **options)
    await handle.execute()
    await until_status(events, Status.INTERRUPTED)
    await events.aclose()
    return handle


async def collect(handle: AgentHandle, action: Any, *until: Status) -> list[Event]:
    async with handle.subscribe() as events:
        await action()
        return await until_status(events, *until)


# -- dismiss --------------------------------------------------------------------------------------


async def test_dismiss_answers_every_pending_call_and_goes_idle_without_running(
    runtime: Runtime,
) -> None:
    tools = Tools()
    agent = protected(tools, [parallel_turn(), Reply(text="after")])
    handle = await interrupted(runtime, agent)

    seen = await collect(handle, handle.dismiss_interrupt, Status.IDLE)

    assert statuses(seen) == [Status.IDLE]  # nothing ran: no RUNNING
    assert tools.ran == []
    state = await handle.get_state()
    assert state.interrupt is None
    results = [m for m in state.messages if isinstance(m, ToolMessage)]
    assert [r.tool_call_id for r in results] == ["call-1", "call-2", "call-3"]
    assert all(r.status == "error" and "dismissed" in str(r.content) for r in results)
    assert_history_valid(state.messages)
    info = await handle.info()
    assert not info.has_interrupt
    assert info.status is Status.IDLE


async def test_after_a_dismiss_the_next_message_runs_on_a_valid_history(runtime: Runtime) -> None:
    tools = Tools()
    prompts: list[list[BaseMessage]] = []

    def respond(messages: list[BaseMessage]) -> Reply:
        prompts.append(list(messages))
        if len(prompts) == 1:
            return parallel_turn()
        return Reply(text="fine")

    agent = make_agent(
        tools=tools.tools(),
        responder=respond,
        middleware=[HumanInTheLoop(interrupt_on={"delete": True})],
    )
    handle = await interrupted(runtime, agent)
    await handle.dismiss_interrupt()

    seen = await collect(handle, lambda: handle.add_message("something else"), Status.IDLE)

    assert statuses(seen) == [Status.RUNNING, Status.IDLE]
    assert tools.ran == []
    assert_history_valid(prompts[-1])  # what the model got answers every call
    assert isinstance(prompts[-1][-1], HumanMessage)


async def test_dismiss_is_refused_when_nothing_waits(runtime: Runtime) -> None:
    handle = await runtime.start_agent(make_agent(), user())
    with pytest.raises(InvalidTransition, match="nothing to dismiss"):
        await handle.dismiss_interrupt()

    slow = make_agent([Reply(text="slow", delay=10.0, chunk_size=2)], agent_id="agent-2")
    running = await runtime.start_agent(slow, user())
    await running.execute()
    with pytest.raises(InvalidTransition, match="running"):
        await running.dismiss_interrupt()
    assert await running.get_status() is Status.RUNNING
    await running.cancel()


async def test_dismiss_then_resume_is_refused(runtime: Runtime) -> None:
    tools = Tools()
    handle = await interrupted(runtime, protected(tools, [parallel_turn()]))
    await handle.dismiss_interrupt()
    with pytest.raises(InvalidTransition, match="nothing to resume"):
        await handle.resume([{"type": "approve"}] * 2)
    with pytest.raises(InvalidTransition, match="nothing to dismiss"):
        await handle.dismiss_interrupt()


async def test_a_dismiss_is_saved_with_its_display_rows(runtime: Runtime) -> None:
    store = MemoryPersistence()
    tools = Tools()
    saved: list[dict[str, Any]] = []

    async def auto_save(agent_id: str, state: dict[str, Any]) -> None:
        saved.append(state)

    handle = await interrupted(
        runtime,
        protected(tools, [parallel_turn()]),
        agent_persistence=store,
        display_message_persistence=store,
        auto_save=AutoSave(callback=auto_save, interval=None, on_idle=True),
        **CONVERSATION,
    )
    await saved_interrupted(store, True)

    await collect(handle, handle.dismiss_interrupt, Status.IDLE)
    await handle.stop()

    stored = await store.load_state("team", "c1")
    assert stored is not None
    assert stored.state.interrupt is None
    assert_history_valid(stored.state.messages)
    conversation = await store.get_conversation("team", "c1")
    assert conversation is not None
    assert not conversation.interrupted
    assert saved[-1]["interrupt"] is None
    rows = await store.list_display_messages("team", "c1")
    calls = {row.tool_call_id: row.status for row in rows if row.type == "tool_call"}
    # "Not run" results: the rows say the calls were cancelled, not that they failed.
    assert calls == {"call-1": "cancelled", "call-2": "cancelled", "call-3": "cancelled"}


async def saved_interrupted(store: MemoryPersistence, expected: bool) -> None:
    """Wait (virtual time) until the conversation's stored ``interrupted`` flag is
    ``expected``: saves run off the agent's path."""
    for _ in range(100):
        conversation = await store.get_conversation("team", "c1")
        if conversation is not None and conversation.interrupted is expected:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the stored conversation never had interrupted={expected}")


# -- reset --------------------------------------------------------------------------------------


def busy_state() -> State:
    return State(
        messages=[HumanMessage("hi"), AIMessage("hello")],
        todos=[Todo(content="plan")],
        metadata={"conversation_title": {"title": "Greetings"}, "custom": 1},
    )


async def test_reset_gives_a_fresh_state_and_says_so(runtime: Runtime) -> None:
    prompts: list[list[BaseMessage]] = []

    def respond(messages: list[BaseMessage]) -> Reply:
        prompts.append(list(messages))
        return Reply(text="fresh answer")

    handle = await runtime.start_agent(make_agent(responder=respond), busy_state())

    async with handle.subscribe() as events:
        await handle.reset()
        await handle.add_message("new start")
        seen = await until_status(events, Status.IDLE)

    resets = [e for e in seen if isinstance(e, AgentReset)]
    assert [r.files for r in resets] == ["keep"]
    assert seen[0] == resets[0]  # idle already: no status change before the run
    assert statuses(seen) == [Status.RUNNING, Status.IDLE]
    assert [m.content for m in prompts[0]] == ["new start"]  # nothing of the old conversation
    state = await handle.get_state()
    assert state.todos == []
    assert state.metadata == {}
    assert state.agent_id == "agent-1"
    assert [type(m) for m in state.messages] == [HumanMessage, AIMessage]


async def test_reset_while_running_cancels_the_run_and_drops_queued_messages(
    runtime: Runtime,
) -> None:
    agent = make_agent([Reply(text="slow", delay=10.0, chunk_size=2), Reply(text="next")])
    handle = await runtime.start_agent(agent, user())
    async with handle.subscribe() as events:
        await handle.execute()
        await handle.add_message("queued")
        await handle.reset()
        seen = await until_status(events, Status.IDLE)

    assert statuses(seen) == [Status.RUNNING, Status.CANCELLED, Status.IDLE]
    kinds = [type(e) for e in seen if isinstance(e, StatusChanged | AgentReset)]
    assert kinds == [StatusChanged, StatusChanged, AgentReset, StatusChanged]
    state = await handle.get_state()
    assert state.messages == []
    info = await handle.info()
    assert info.queued_messages == 0
    assert info.message_count == 0


async def test_reset_while_interrupted_drops_the_interrupt(runtime: Runtime) -> None:
    tools = Tools()
    handle = await interrupted(runtime, protected(tools, [parallel_turn()]))

    seen = await collect(handle, handle.reset, Status.IDLE)

    assert [type(e) for e in seen] == [AgentReset, StatusChanged]
    assert (await handle.get_state()).interrupt is None
    assert not (await handle.info()).has_interrupt
    with pytest.raises(InvalidTransition):
        await handle.resume([{"type": "approve"}] * 2)
    assert tools.ran == []


async def test_reset_of_a_paused_agent_leaves_it_idle(runtime: Runtime) -> None:
    handle = await runtime.start_agent(make_agent(), busy_state())
    await handle.pause()
    await handle.reset()
    assert await handle.get_status() is Status.IDLE
    assert (await handle.get_state()).metadata == {}


async def test_reset_forgets_the_last_result(runtime: Runtime) -> None:
    def finish(answer: str) -> str:
        """Finish."""
        return answer

    agent = make_agent(
        [Reply(tool_calls=[ToolCall(name="finish", args={"answer": "42"})])],
        tools=[finish],
        until_tool="finish",
    )
    handle = await runtime.start_agent(agent, user())
    await collect(handle, handle.execute, Status.IDLE)
    assert await handle.last_result() == 42
    await handle.reset()
    assert await handle.last_result() is None


async def test_reset_is_saved(runtime: Runtime) -> None:
    store = MemoryPersistence()
    tools = Tools()
    handle = await interrupted(
        runtime,
        protected(tools, [parallel_turn()]),
        agent_persistence=store,
        display_message_persistence=store,
        **CONVERSATION,
    )
    await saved_interrupted(store, True)
    async with handle.subscribe() as events:
        await handle.reset(files="clear")
        rows = []
        async for event in events:
            if isinstance(event, DisplayMessageSaved):
                rows.append(event.display_message)
                break
    await handle.stop()

    # The transcript stays, with a row marking where the fresh conversation starts.
    assert [(r["type"], r["content"]) for r in rows] == [("reset", {"files": "clear"})]
    types = [row.type for row in await store.list_display_messages("team", "c1")]
    assert types[-1] == "reset"
    assert "tool_call" in types[:-1]

    stored = await store.load_state("team", "c1")
    assert stored is not None
    assert stored.state.messages == []
    assert stored.state.interrupt is None
    conversation = await store.get_conversation("team", "c1")
    assert conversation is not None
    assert not conversation.interrupted
    # A restart from storage starts fresh, not from the old conversation.
    again = await runtime.start_agent(
        protected(tools, []),
        stored.state,
        agent_persistence=store,
        state_version=stored.version,
        **CONVERSATION,
    )
    assert await again.get_status() is Status.IDLE
    assert (await again.get_state()).messages == []


async def files_agent(runtime: Runtime, **options: Any) -> tuple[AgentHandle, Hashable]:
    handle = await runtime.start_agent(
        make_agent(middleware=[FileSystem()]), busy_state(), **options
    )
    scope = (await handle.options()).filesystem_scope
    assert scope is not None
    store = runtime.filesystem(scope)
    await store.write("/notes/plan.md", "plan")
    await store.write("/readme.md", "hello")
    return handle, scope


async def test_reset_keeps_files_by_default(runtime: Runtime) -> None:
    handle, scope = await files_agent(runtime, **CONVERSATION)
    await handle.reset()
    assert await runtime.filesystem(scope).list("/") == ["/notes/plan.md", "/readme.md"]


async def test_reset_can_clear_the_conversation_s_files(runtime: Runtime) -> None:
    handle, scope = await files_agent(runtime, **CONVERSATION)
    assert scope == ConversationFiles(scope="team", conversation_id="c1")

    seen = await collect_reset(handle, files="clear")

    assert await runtime.filesystem(scope).list("/") == []
    assert [e.files for e in seen if isinstance(e, AgentReset)] == ["clear"]
    assert (await handle.get_state()).messages == []


async def collect_reset(handle: AgentHandle, **kwargs: Any) -> list[Event]:
    """Reset an idle agent; the events up to its ``AgentReset`` (idle already, no status
    change follows)."""
    async with handle.subscribe() as events:
        await handle.reset(**kwargs)
        seen: list[Event] = []
        async for event in events:
            seen.append(event)
            if isinstance(event, AgentReset):
                return seen
    raise AssertionError("no AgentReset")


async def test_reset_refuses_to_clear_files_shared_with_other_conversations(
    runtime: Runtime,
) -> None:
    handle, scope = await files_agent(runtime, filesystem_scope=("team", "shared"))

    with pytest.raises(InvalidOption, match="shares the files"):
        await handle.reset(files="clear")

    # Nothing changed: the files, the messages.
    assert await runtime.filesystem(scope).list("/") == ["/notes/plan.md", "/readme.md"]
    assert len((await handle.get_state()).messages) == 2


async def test_reset_takes_only_the_known_file_policies(runtime: Runtime) -> None:
    handle = await runtime.start_agent(make_agent(), busy_state())
    with pytest.raises(InvalidOption, match="keep"):
        await handle.reset(files="wipe")  # type: ignore[arg-type]
    assert len((await handle.get_state()).messages) == 2


async def test_clearing_files_of_an_agent_without_files_only_resets(runtime: Runtime) -> None:
    handle = await runtime.start_agent(make_agent(), busy_state(), **CONVERSATION)
    assert (await handle.options()).filesystem_scope is None
    await handle.reset(files="clear")
    assert (await handle.get_state()).messages == []
