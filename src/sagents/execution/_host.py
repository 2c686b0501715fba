"""``AgentHost``: what middleware may ask of the runtime that hosts their agent.

Tools and hooks find the runtime in ``services["runtime"]`` (``ToolContext.services``,
``MiddlewareContext.services``). The runtime sits in the layer *above* this one, so this layer
cannot import it; typing that service ``Any`` would hide the dependency, not remove it. Instead
the few operations a middleware uses (the ``SubAgent`` middleware: start a sub-agent, follow it,
stop it) are declared here as small protocols that ``Runtime`` and ``AgentHandle`` implement,
and :func:`agent_host` returns the service typed by them (None when the agent runs without a
runtime, under a plain ``Agent.run``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sagents._interrupt import Decision
from sagents._state import State
from sagents._status import Status
from sagents.events import Event

if TYPE_CHECKING:
    from sagents.execution._agent import Agent

__all__ = ["AgentHost", "EventStream", "HostedAgent", "agent_host"]


class EventStream(Protocol):
    """A subscription to an agent's events: iterate, then close."""

    def __aiter__(self) -> AsyncIterator[Event]: ...

    async def aclose(self) -> None: ...


class HostedAgent(Protocol):
    """A handle on a running agent."""

    def subscribe(self) -> EventStream: ...

    async def execute(self) -> None: ...

    async def resume(self, decisions: Sequence[Decision | Mapping[str, Any]]) -> None: ...

    async def get_state(self) -> State: ...


@runtime_checkable
class AgentHost(Protocol):
    """The runtime, as its agents' middleware see it."""

    def get_status_nowait(self, agent_id: str) -> Status | None: ...

    def agent(self, agent_id: str) -> HostedAgent: ...

    async def stop(self, agent_id: str, reason: str = "manual") -> None: ...

    async def start_sub_agent(
        self,
        parent_id: str,
        agent: Agent,
        initial_state: State | Mapping[str, Any] | None = None,
        *,
        inactivity_timeout: float | None = ...,
        tool_context: Mapping[str, Any] = ...,
    ) -> HostedAgent: ...


def agent_host(services: Mapping[str, object]) -> AgentHost | None:
    """The runtime hosting the agent (``services["runtime"]``), or None without one."""
    host = services.get("runtime")
    return host if isinstance(host, AgentHost) else None
