"""The commands a handle sends to its agent server.

Each is a message of the server's mailbox (``await server.call(command, server, ...)``), so
commands never interleave halfway: whatever one changes, the next sees whole. Most hand over
to the server's :class:`~sagents.runtime._runner.Runner`, which owns the runs; reads (state,
status, info) are not commands and are answered directly.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage

from sagents._errors import InvalidOption, InvalidTransition
from sagents._interrupt import Decision
from sagents._state import State
from sagents._status import Status
from sagents.events import StateRestored
from sagents.execution._agent import Agent
from sagents.execution._tool_context import Display
from sagents.runtime._context import apply_context
from sagents.runtime._reset import ResetFiles, reset

if TYPE_CHECKING:
    from sagents.runtime._server import AgentServer

__all__ = [
    "add_message",
    "cancel",
    "dismiss_interrupt",
    "execute",
    "pause",
    "replace_state",
    "reset_agent",
    "resume",
    "send_to_middleware",
    "update_context",
]


def add_message(
    server: AgentServer,
    message: BaseMessage,
    run: bool,
    tool_context: Mapping[str, Any] | None,
    display: Display = True,
) -> None:
    if not isinstance(message, BaseMessage):
        raise TypeError(f"add_message takes a langchain message, got {type(message).__name__}")
    if tool_context is not None and not isinstance(tool_context, Mapping):
        raise InvalidOption("tool_context must be a dict of the data your tools read")
    server.touch()
    server.runs().add_message(message, run, tool_context, display)


def execute(server: AgentServer) -> None:
    server.touch()
    server.runs().execute()


def resume(server: AgentServer, decisions: Sequence[Decision | Mapping[str, Any]]) -> None:
    server.touch()
    server.runs().resume(decisions)


def dismiss_interrupt(server: AgentServer) -> None:
    server.runs().dismiss()


async def reset_agent(server: AgentServer, files: ResetFiles) -> None:
    await reset(server, server.runs(), files)


async def cancel(server: AgentServer) -> None:
    await server.runs().cancel_run()


async def pause(server: AgentServer) -> None:
    await server.runs().pause()


async def send_to_middleware(server: AgentServer, key: str, message: Any) -> None:
    await server.runs().send_to_middleware(key, message)


def update_context(server: AgentServer, context: contextvars.Context) -> None:
    server.context = context
    apply_context(context)


def replace_state(server: AgentServer, state: State, agent: Agent | None) -> None:
    """``restore_state`` / ``update_agent_and_state``: only between runs."""
    if server.status is Status.RUNNING:
        raise InvalidTransition(f"agent {server.agent_id!r} is running: cancel it first")
    if agent is not None:
        if agent.agent_id != server.agent_id:
            raise InvalidTransition("update_agent_and_state cannot change the agent_id")
        server.agent = agent
    state = state.replace(agent_id=server.agent_id)
    server.set_state(state)
    server.touch()
    server.publisher.publish(StateRestored(state=state))
    status = Status.INTERRUPTED if state.interrupt is not None else Status.IDLE
    if status is not server.status:
        server.set_status(status, state.interrupt)
