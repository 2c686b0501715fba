"""Questions and dismissals through sessions, durable across shutdown and restore (issue 15,
items 1 and 2), against every persistence (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from sagents import (
    Agent,
    InvalidDecision,
    InvalidTransition,
    RetryPolicy,
    Runtime,
    Session,
    SessionConfig,
    SessionOptions,
    SingleFactoryRouter,
    State,
    Status,
)
from sagents.events import StatusChanged
from sagents.middleware import AskUserQuestion, HumanInTheLoop
from sagents.session import FactoryConfig
from sagents.testing import Reply, ScriptedChatModel, ToolCall

QUESTION = {"question": "Which plan?", "choices": ["basic", "pro"], "recommended": "pro"}


def delete(path: str) -> str:
    """Delete a path."""
    return f"deleted {path}"


def respond(messages: list[Any]) -> Reply:
    last = messages[-1]
    if isinstance(last, HumanMessage) and "ask" in str(last.content):
        return Reply(tool_calls=[ToolCall(name="ask_user", args={"questions": [QUESTION]})])
    if isinstance(last, HumanMessage) and "delete" in str(last.content):
        return Reply(tool_calls=[ToolCall(name="delete", args={"path": "/tmp/x"})])
    if isinstance(last, ToolMessage):
        return Reply(text=f"done: {last.content}")
    return Reply(text=f"echo: {last.content}")


class Factory:
    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        agent = Agent(
            agent_id=agent_id,
            model=ScriptedChatModel(responder=respond, record_prompts=False),
            tools=[delete],
            middleware=[AskUserQuestion(), HumanInTheLoop(interrupt_on={"delete": True})],
            retry=RetryPolicy(max_attempts=1),
        )
        return agent, SessionOptions()


@pytest.fixture
def config(store: Any) -> SessionConfig:
    return SessionConfig(
        factory_router=SingleFactoryRouter(Factory()),
        agent_persistence=store,
        display_message_persistence=store,
        inactivity_timeout=None,
    )


@pytest.fixture
async def runtime(store: Any) -> Any:
    # Depends on the store so that the store closes after the runtime's final saves.
    async with Runtime() as rt:
        yield rt


async def wait_status(events: Any, status: Status) -> StatusChanged:
    async for event in events:
        if isinstance(event, StatusChanged) and event.status is status:
            return event
    raise AssertionError(f"no {status}")


async def interrupted_then_stopped(
    runtime: Runtime, config: SessionConfig, text: str, store: Any
) -> None:
    """Start conversation "q1", send ``text``, wait for the interrupt, stop the agent."""
    session = await Session.ensure_running(runtime, config, "q1", scope="u")
    async with session.events as events:
        await session.handle.add_message(text)
        await wait_status(events, Status.INTERRUPTED)
    assert await Session.stop(runtime, config, "q1")
    assert not Session.is_running(runtime, config, "q1")
    conversation = await store.get_conversation("u", "q1")
    assert conversation is not None
    assert conversation.interrupted


async def test_a_question_waits_across_shutdown_and_is_answered_after_restore(
    runtime: Runtime, config: SessionConfig, store: Any
) -> None:
    await interrupted_then_stopped(runtime, config, "ask me", store)
    stored = await store.load_state("u", "q1")
    assert stored.state.interrupt.kind == "question"

    # Invalid answers restore the agent but change nothing: the question still waits.
    with pytest.raises(InvalidDecision, match="not one of the choices"):
        await Session.resume(
            runtime, config, "q1", [{"type": "answer", "answers": ["gold"]}], scope="u"
        )
    handle = runtime.agent(config.agent_id_for("q1"))
    assert await handle.get_status() is Status.INTERRUPTED
    assert (await handle.info()).subscriber_count == 0  # the refused call's events are closed

    session = await Session.resume(
        runtime, config, "q1", [{"type": "answer", "answers": ["basic"]}], scope="u"
    )
    async with session.events as events:
        await wait_status(events, Status.IDLE)
    state = await session.handle.get_state()
    assert "Answer: basic" in str(state.messages[-1].content)
    assert str(state.messages[-1].content).startswith("done: The user answered")
    await Session.stop(runtime, config, "q1")
    stored = await store.load_state("u", "q1")
    assert stored.state == state
    conversation = await store.get_conversation("u", "q1")
    assert not conversation.interrupted


@pytest.mark.parametrize("text", ["ask me", "please delete it"], ids=["question", "approval"])
async def test_dismiss_after_restore_clears_it_without_a_run(
    runtime: Runtime, config: SessionConfig, store: Any, text: str
) -> None:
    await interrupted_then_stopped(runtime, config, text, store)

    session = await Session.dismiss(runtime, config, "q1", scope="u")

    assert session.restored
    assert await session.handle.get_status() is Status.IDLE
    state = await session.handle.get_state()
    assert state.interrupt is None
    assert [type(m) for m in state.messages] == [HumanMessage, AIMessage, ToolMessage]
    assert "dismissed" in str(state.messages[-1].content)
    await Session.stop(runtime, config, "q1")
    stored = await store.load_state("u", "q1")
    assert stored.state == state
    conversation = await store.get_conversation("u", "q1")
    assert not conversation.interrupted
    with pytest.raises(InvalidTransition, match="nothing to resume"):
        await Session.resume(runtime, config, "q1", [{"type": "approve"}], scope="u")


async def test_dismiss_without_a_pending_interrupt_is_refused(
    runtime: Runtime, config: SessionConfig
) -> None:
    with pytest.raises(InvalidTransition, match="nothing to dismiss"):
        await Session.dismiss(runtime, config, "q2", scope="u")


async def test_a_reset_conversation_restores_fresh(
    runtime: Runtime, config: SessionConfig, store: Any
) -> None:
    await interrupted_then_stopped(runtime, config, "ask me", store)
    session = await Session.start(runtime, config, "q1", scope="u")
    await session.handle.reset()
    await Session.stop(runtime, config, "q1")

    again = await Session.start(runtime, config, "q1", scope="u")
    assert again.restored
    assert await again.handle.get_status() is Status.IDLE
    assert await again.handle.get_state() == State(agent_id=again.agent_id)
