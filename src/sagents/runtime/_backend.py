"""``Backend``: where a runtime's agent servers run when they do not run in its process.

A :class:`~sagents.Runtime` hosts its agents itself by default: registry, placement and routing
are a dict lookup away. Given a backend (``Runtime(backend=RayBackend())``), the runtime is a
client of it instead: starts, lookups, health checks and every handle call go through the
backend, which places each agent on one of its hosts (each host runs an ordinary in-process
runtime) and routes calls and event streams to it. Code written against ``Runtime``,
``AgentHandle``, ``Session`` and subscriptions does not change.

This protocol is the seam, small on purpose; :mod:`sagents.ray` implements it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sagents._files import FileStore
    from sagents._state import State
    from sagents.events import Channel
    from sagents.execution._agent import Agent
    from sagents.runtime._handle import AgentHandle
    from sagents.runtime._info import AgentInfo
    from sagents.runtime._options import StartOptions
    from sagents.runtime._runtime import Runtime
    from sagents.runtime._watch import Watch
    from sagents.session._config import SessionConfig

__all__ = ["Backend"]


class Backend(Protocol):
    """Registry, placement and routing of agent servers outside the runtime's process."""

    async def start(self, runtime: Runtime) -> None:
        """Connect (or start what is needed); the runtime is a client of this backend once
        this returns."""
        ...

    async def shutdown(self) -> None:
        """Disconnect; stop what :meth:`start` started (its hosts stop their agents
        gracefully, saving them)."""
        ...

    def ready(self) -> bool:
        """Whether agents can be started and reached now."""
        ...

    async def start_agent(
        self,
        runtime: Runtime,
        agent: Agent,
        initial_state: State | Mapping[str, Any] | None,
        options: StartOptions,
    ) -> AgentHandle:
        """Place ``agent`` on a host and start it there; its handle.

        Raises:
            AgentAlreadyRunning: the agent id runs somewhere in the cluster.
        """
        ...

    def handle(self, runtime: Runtime, agent_id: str) -> AgentHandle:
        """A handle routing to the host of ``agent_id``.

        Raises:
            AgentNotRunning: no host runs it (as far as this process knows).
        """
        ...

    async def agent_info(self, agent_id: str) -> AgentInfo | None:
        """The agent's snapshot from its host, or None when it runs nowhere."""
        ...

    async def agent_infos(self) -> list[AgentInfo]:
        """Every running agent's snapshot, each with its ``node``."""
        ...

    def running_agents(self) -> list[str]:
        """Ids of the agents running anywhere in the cluster (this process's view of the
        directory, never older than its last update)."""
        ...

    def watch(self, agent_id: str, channel: Channel) -> Watch:
        """A durable subscription to ``agent_id`` across its instances, on any host."""
        ...

    def runs(self, agent_id: str) -> bool:
        """Whether ``agent_id`` runs somewhere, in this process's view."""
        ...

    def filesystem(self, scope: Hashable) -> FileStore:
        """The store of ``scope`` wherever its agents run; its operations raise
        ``SagentsError`` while no agent of that scope runs."""
        ...

    async def session(
        self,
        method: str,
        config: SessionConfig,
        agent_id: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        where: str,
    ) -> Any:
        """Run a :class:`~sagents.Session` operation on the host where ``agent_id`` runs
        (``where="running"``: None when it runs nowhere), runs or is to start (``"place"``),
        or any host (``"any"``); a resulting session comes back as ``(agent_id,
        conversation_id, restored, started)``."""
        ...
