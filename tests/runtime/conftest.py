"""Helpers for runtime tests: a runtime per test and small agent builders."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from sagents import Agent, State, Status
from sagents.events import Event, StatusChanged
from sagents.execution import Reply, RetryPolicy, ScriptedChatModel, ToolCall
from sagents.persistence import MemoryPersistence
from sagents.runtime import AgentHandle, Runtime


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    async with Runtime() as rt:
        yield rt


def ping() -> str:
    """Ping."""
    return "pong"


def make_agent(
    script: Sequence[Any] | None = None,
    *,
    agent_id: str = "agent-1",
    responder: Callable[..., Any] | None = None,
    **kwargs: Any,
) -> Agent:
    if responder is not None:
        model = ScriptedChatModel(responder=responder, record_prompts=True)
    else:
        model = ScriptedChatModel(script=list(script or [Reply(text="hello")]))
    kwargs.setdefault("tools", [ping])
    kwargs.setdefault("retry", RetryPolicy(max_attempts=1))
    return Agent(agent_id=agent_id, model=model, **kwargs)


def tool_turn(name: str = "ping", **args: Any) -> Reply:
    return Reply(tool_calls=[ToolCall(name=name, args=args)])


async def until_status(events: Any, *statuses: Status) -> list[Event]:
    """Collect events until a StatusChanged to one of ``statuses`` (inclusive)."""
    seen: list[Event] = []
    async for event in events:
        seen.append(event)
        if isinstance(event, StatusChanged) and event.status in statuses:
            return seen
    raise AssertionError(f"stream ended before {statuses}: {[type(e).__name__ for e in seen]}")


def statuses(events: Sequence[Event]) -> list[Status]:
    return [e.status for e in events if isinstance(e, StatusChanged)]


def user(text: str = "hi") -> State:
    from langchain_core.messages import HumanMessage

    return State(messages=[HumanMessage(text)])


async def start_saved(
    runtime: Runtime, agent: Agent, **options: Any
) -> tuple[AgentHandle, MemoryPersistence]:
    """``agent`` started as conversation ``c1`` of scope ``team``, saving its state and display
    rows to a fresh memory store (returned with its handle)."""
    store = MemoryPersistence()
    handle = await runtime.start_agent(
        agent,
        conversation_id="c1",
        scope="team",
        agent_persistence=store,
        display_message_persistence=store,
        inactivity_timeout=None,
        **options,
    )
    return handle, store
