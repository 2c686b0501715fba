"""Sessions (S10–S17) over the runtime, with the in-memory persistence.

The same pipeline runs against SQLite and PostgreSQL in tests/persistence; here the subject is the
session logic: idempotent starts, restores, the action path, the wake path of S15b.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from sagents import (
    Agent,
    AgentNotRunning,
    ConversationNotFound,
    InvalidTransition,
    LocalPresence,
    RegistryUnavailable,
    Runtime,
    Session,
    SessionConfig,
    SessionOptions,
    SingleFactoryRouter,
    State,
    Status,
)
from sagents.events import (
    AgentShutdown,
    DisplayMessageSaved,
    LLMMessage,
    StatusChanged,
    ToolExecutionCompleted,
)
from sagents.execution import Reply, RetryPolicy, ScriptedChatModel, ToolCall
from sagents.middleware import HumanInTheLoop
from sagents.session import FactoryConfig


def delete(path: str) -> str:
    """Delete a path."""
    return f"deleted {path}"


def respond(messages: list[Any]) -> Reply:
    last = messages[-1]
    if isinstance(last, HumanMessage) and "delete" in str(last.content):
        return Reply(tool_calls=[ToolCall(name="delete", args={"path": "/tmp/x"})])
    if isinstance(last, ToolMessage):
        return Reply(text=f"done: {last.content}")
    return Reply(text=f"echo: {last.content}")


class Factory:
    def __init__(self) -> None:
        self.built: list[FactoryConfig] = []
        self.model = ScriptedChatModel(responder=respond, record_prompts=False)

    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        self.built.append(config)
        agent = Agent(
            agent_id=agent_id,
            model=self.model,
            tools=[delete],
            middleware=[HumanInTheLoop(interrupt_on={"delete": True})],
            retry=RetryPolicy(max_attempts=1),
        )
        fresh = State(metadata={"timezone": config.request_opts.get("timezone", "UTC")})
        return agent, SessionOptions(fresh_state=fresh)


@pytest.fixture
def factory() -> Factory:
    return Factory()


@pytest.fixture
def config(store: Any, factory: Factory, timeout_scale: float) -> SessionConfig:
    return SessionConfig(
        factory_router=SingleFactoryRouter(factory),
        agent_persistence=store,
        display_message_persistence=store,
        inactivity_timeout=60.0 * timeout_scale,
    )


@pytest.fixture
async def runtime(store: Any) -> Any:
    # Depends on the store so that the store closes after the runtime's final saves.
    async with Runtime() as rt:
        yield rt


async def wait_status(events: Any, status: Status, seen: list[Any] | None = None) -> None:
    async for event in events:
        if seen is not None:
            seen.append(event)
        if isinstance(event, StatusChanged) and event.status is status:
            return
    raise AssertionError(f"no {status}")


async def test_start_builds_a_fresh_agent_once(
    runtime: Runtime, config: SessionConfig, factory: Factory
) -> None:
    session = await Session.start(
        runtime, config, "42", scope="user-1", request_opts={"timezone": "Europe/Paris"}
    )
    assert session.agent_id == "conversation-42"
    assert session.started
    assert not session.restored
    state = await session.handle.get_state()
    assert state.metadata == {"timezone": "Europe/Paris"}  # fresh_state applies (S11)
    assert factory.built[0].scope == "user-1"
    again = await Session.start(runtime, config, "42", scope="user-1")
    assert not again.started
    assert len(factory.built) == 1
    assert Session.is_running(runtime, config, "42")


async def test_fifty_concurrent_starts_make_exactly_one_agent(
    runtime: Runtime, config: SessionConfig, factory: Factory
) -> None:
    sessions = await asyncio.gather(*(Session.start(runtime, config, "7") for _ in range(50)))
    assert sum(s.started for s in sessions) == 1
    assert runtime.agent_count() == 1
    assert len(factory.built) == 1


async def test_ensure_running_restores_after_an_inactivity_shutdown(
    runtime: Runtime, config: SessionConfig, store: Any
) -> None:
    session = await Session.ensure_running(runtime, config, "9", scope="u")
    async with session.events as events:
        await session.handle.add_message("hello")
        await wait_status(events, Status.IDLE)
        shutdown = None
        async for event in events:
            if isinstance(event, AgentShutdown):
                shutdown = event
        assert shutdown is not None
        assert shutdown.reason == "inactivity"
    assert not Session.is_running(runtime, config, "9")
    again = await Session.ensure_running(runtime, config, "9", scope="u")
    assert again.started
    assert again.restored
    async with again.events as events:
        state = await again.handle.get_state()
        assert [type(m) for m in state.messages] == [HumanMessage, AIMessage]
        await again.handle.add_message("again")
        await wait_status(events, Status.IDLE)
    await Session.stop(runtime, config, "9")  # waits for its saves
    stored = await store.load_state("u", "9")
    assert stored is not None
    assert stored.state.messages[-1].content == "echo: again"


async def test_ensure_running_subscribes_to_a_running_agent(
    runtime: Runtime, config: SessionConfig
) -> None:
    await Session.start(runtime, config, "1")
    session = await Session.ensure_running(runtime, config, "1")
    assert not session.started
    async with session.events as events:
        await session.handle.add_message("hi")
        await wait_status(events, Status.IDLE)


async def test_resume_wakes_an_agent_that_shut_down_while_interrupted(
    runtime: Runtime, config: SessionConfig, store: Any
) -> None:
    """S15b: the interrupt is durable; the decisions are applied after the restart."""
    session = await Session.ensure_running(runtime, config, "5", scope="u")
    async with session.events as events:
        await session.handle.add_message("please delete it")
        await wait_status(events, Status.INTERRUPTED)
        async for event in events:  # waiting for approval counts as inactivity after 60 s
            if isinstance(event, AgentShutdown):
                assert event.reason == "inactivity"
    conversation = await store.get_conversation("u", "5")
    assert conversation is not None
    assert conversation.interrupted  # a persisted fact a UI can show (S1b)
    resumed = await Session.resume(runtime, config, "5", [{"type": "approve"}], scope="u")
    assert resumed.restored
    assert resumed.started
    seen: list[Any] = []
    async with resumed.events as events:  # attached before the restarted agent's first event
        await wait_status(events, Status.IDLE, seen)
    # The whole resumed run, from the restarted agent's first event, with no gap.
    assert [e.seq for e in seen] == list(range(seen[0].seq, seen[0].seq + len(seen)))
    assert any(isinstance(e, ToolExecutionCompleted) for e in seen)
    assert any(
        isinstance(e, LLMMessage) and e.message.content == "done: deleted /tmp/x" for e in seen
    )
    state = await resumed.handle.get_state()
    assert state.messages[-1].content == "done: deleted /tmp/x"
    await Session.stop(runtime, config, "5")
    stored = await store.load_state("u", "5")
    assert stored is not None
    assert stored.state == state


async def test_resume_of_a_running_agent_subscribes_before_the_decisions(
    runtime: Runtime, config: SessionConfig
) -> None:
    """As with ensure_running, ``events`` of a running agent is a fresh subscription; it is
    attached before the decisions are sent, so it sees the resumed run from its start."""
    session = await Session.ensure_running(runtime, config, "r", scope="u")
    async with session.events as events:
        await session.handle.add_message("please delete it")
        await wait_status(events, Status.INTERRUPTED)
    resumed = await Session.resume(runtime, config, "r", [{"type": "approve"}], scope="u")
    assert (resumed.started, resumed.restored) == (False, False)
    seen: list[Any] = []
    async with resumed.events as events:
        await wait_status(events, Status.IDLE, seen)
    statuses = [e.status for e in seen if isinstance(e, StatusChanged)]
    assert statuses == [Status.RUNNING, Status.IDLE]
    assert [e.seq for e in seen] == list(range(seen[0].seq, seen[0].seq + len(seen)))
    [message] = [e.message for e in seen if isinstance(e, LLMMessage)]
    assert message.content == "done: deleted /tmp/x"
    assert (await resumed.handle.info()).subscriber_count == 0  # closed by the async with


async def test_resume_without_an_interrupt_is_refused(
    runtime: Runtime, config: SessionConfig
) -> None:
    with pytest.raises(InvalidTransition):
        await Session.resume(runtime, config, "3", [{"type": "approve"}])
    # The refused call leaves no subscription behind (it started the agent to ask it).
    handle = runtime.agent(config.agent_id_for("3"))
    assert (await handle.info()).subscriber_count == 0


async def test_stop_and_is_running(runtime: Runtime, config: SessionConfig) -> None:
    assert await Session.stop(runtime, config, "x") is False
    await Session.start(runtime, config, "x")
    assert await Session.stop(runtime, config, "x") is True
    assert not Session.is_running(runtime, config, "x")


async def test_fetch_running_never_starts_the_agent(
    runtime: Runtime, config: SessionConfig
) -> None:
    assert await Session.fetch_running(runtime, config, "f") is None
    assert not Session.is_running(runtime, config, "f")  # it did not start it
    session = await Session.start(runtime, config, "f", scope="u")
    running = await Session.fetch_running(runtime, config, "f", scope="u")
    assert running is not None
    assert running.handle.agent_id == session.agent_id
    assert (running.conversation_id, running.started, running.restored) == ("f", False, False)
    assert running.events is None
    for other in ("someone else", None):  # (None is a scope too: a single-tenant app's)
        with pytest.raises(ConversationNotFound):
            await Session.fetch_running(runtime, config, "f", scope=other)
    await Session.stop(runtime, config, "f")
    assert await Session.fetch_running(runtime, config, "f", scope="u") is None


async def test_display_messages_are_saved_and_broadcast(
    runtime: Runtime, config: SessionConfig, store: Any
) -> None:
    session = await Session.ensure_running(runtime, config, "d", scope="u")
    seen: list[Any] = []
    async with session.events as events:
        await session.handle.add_message("please delete it")
        await wait_status(events, Status.INTERRUPTED, seen)
        await session.handle.resume([{"type": "edit", "arguments": {"path": "/tmp/y"}}])
        await wait_status(events, Status.IDLE, seen)
        await Session.stop(runtime, config, "d")  # waits for its saves, then ends the stream
        seen += [e async for e in events]
    saved = [e.display_message for e in seen if isinstance(e, DisplayMessageSaved)]
    rows = await store.list_display_messages("u", "d")
    assert [r.type for r in rows] == ["user", "tool_call", "tool_result", "assistant"]
    assert [r.sequence for r in rows] == [1, 2, 3, 4]
    call = rows[1]
    assert call.status == "completed"
    assert call.metadata["decision"] == {"type": "edit", "arguments": {"path": "/tmp/y"}}
    assert [d["type"] for d in saved] == ["user", "tool_call", "tool_result", "assistant"]
    assert await store.list_display_messages("someone-else", "d") == []  # S4


async def test_presence_from_the_session_config(
    runtime: Runtime, store: Any, factory: Factory, timeout_scale: float
) -> None:
    presence = LocalPresence()
    config = SessionConfig(
        factory_router=SingleFactoryRouter(factory),
        agent_persistence=store,
        presence=presence,
        grace_period=20.0 * timeout_scale,
        inactivity_timeout=None,
    )
    session = await Session.ensure_running(runtime, config, "p")
    async with session.events as events:
        last = [e async for e in events][-1]
    assert isinstance(last, AgentShutdown)
    assert last.reason == "no_viewers"


async def test_registry_unavailable_propagates_as_retryable(config: SessionConfig) -> None:
    runtime = Runtime()
    with pytest.raises(RegistryUnavailable):
        await Session.start(runtime, config, "r")


async def test_a_running_agent_is_not_found_from_another_scope(
    runtime: Runtime, config: SessionConfig
) -> None:
    from sagents import ConversationNotFound

    await Session.start(runtime, config, "s", scope="alice")
    with pytest.raises(ConversationNotFound):
        await Session.start(runtime, config, "s", scope="mallory")
    with pytest.raises(ConversationNotFound):
        await Session.ensure_running(runtime, config, "s", scope="mallory")
    with pytest.raises(ConversationNotFound):
        await Session.stop(runtime, config, "s", scope="mallory")
    assert Session.is_running(runtime, config, "s")
    assert await Session.stop(runtime, config, "s", scope="alice")


async def test_session_locks_do_not_outlive_their_use(
    runtime: Runtime, config: SessionConfig
) -> None:
    from sagents.session._session import _locks

    await asyncio.gather(*(Session.start(runtime, config, str(i)) for i in range(20)))
    assert _locks.get(runtime, {}) == {}


async def test_delete_racing_a_message_never_resurrects_the_conversation(
    runtime: Runtime, store: Any, factory: Factory
) -> None:
    """Issue 16 item 7: DELETE and a message together; the delete wins or loses as a whole."""
    config = SessionConfig(
        factory_router=SingleFactoryRouter(factory),
        agent_persistence=store,
        display_message_persistence=store,
        inactivity_timeout=None,
        server_options={"create_conversation": False},  # as the web demo: created by the API
    )

    async def message(conversation_id: str) -> None:
        try:
            session = await Session.ensure_running(runtime, config, conversation_id, scope="u")
        except ConversationNotFound:
            return  # the delete came first
        await session.events.aclose()
        with contextlib.suppress(AgentNotRunning):  # stopped by the delete right after it started
            await session.handle.add_message("hello")

    for attempt in range(20):
        conversation_id = f"race-{attempt}"
        await store.create_conversation("u", conversation_id=conversation_id)
        racing = [
            message(conversation_id),
            Session.delete(runtime, config, conversation_id, scope="u"),
        ]
        if attempt % 2:
            racing.reverse()
        results = await asyncio.gather(*racing)
        assert True in results  # the delete found it (once)
        await asyncio.sleep(0.05 if attempt % 3 else 0)  # saves in flight land (or are refused)
        assert await store.get_conversation("u", conversation_id) is None
        assert await store.load_state("u", conversation_id) is None
        assert await store.list_display_messages("u", conversation_id) == []
        assert not Session.is_running(runtime, config, conversation_id)


async def test_delete_of_an_unknown_conversation_is_false(
    runtime: Runtime, config: SessionConfig
) -> None:
    assert await Session.delete(runtime, config, "never", scope="u") is False
