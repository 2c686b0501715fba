"""The A2A server of a :class:`~sagents.SessionConfig`: its agent card and its ASGI app.

Choices:

- **The card's skills are the agent's tools.** A skill per tool, described by the tool's own
  description, tagged ``tool`` and the middleware that brings it. The tools are read from an
  agent the factory builds and nobody starts (or from the ``agent`` given), so the card says
  what the conversations really run with.
- **JSON-RPC, streaming.** The binding every A2A client speaks first (the SDK client's
  default), served with server-sent events for streamed updates.
- **The runtime belongs to the application.** A runtime usually serves other doors too (a web
  app, a CLI), so the app only starts and shuts it down when asked (``manage_runtime=True``);
  it always closes the A2A request handler when it stops, which ends the tasks it follows
  (their agents carry on, and stop as the runtime decides).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TypeVar, cast

from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskStore
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentProvider,
    AgentSkill,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, PROTOCOL_VERSION_1_0, TransportProtocol
from langchain_core.tools import BaseTool
from starlette.applications import Starlette

from sagents._errors import InvalidOption
from sagents.a2a._executor import ScopeOf, SessionExecutor
from sagents.execution._agent import Agent
from sagents.persistence._protocols import Scope
from sagents.runtime._runtime import Runtime
from sagents.session._config import SessionConfig
from sagents.session._factory import FactoryConfig

__all__ = ["CARD_CONVERSATION_ID", "a2a_app", "build_agent_card", "tool_skills"]

T = TypeVar("T")

#: The conversation id the factory is asked to build an agent for when a card reads its tools.
CARD_CONVERSATION_ID = "a2a-agent-card"
#: What a task accepts and answers: text, and JSON data parts (decisions, events).
_MODES = ("text/plain", "application/json")


async def _maybe_await(value: T | Awaitable[T]) -> T:
    if inspect.isawaitable(value):
        return await cast(Awaitable[T], value)
    return value


async def _card_agent(config: SessionConfig, scope: Scope) -> Agent:
    agent_id = config.agent_id_for(CARD_CONVERSATION_ID)
    factory, factory_config = await _maybe_await(
        config.factory_router.resolve(scope, CARD_CONVERSATION_ID, agent_id, {})
    )
    if not isinstance(factory_config, FactoryConfig):
        raise TypeError("FactoryRouter.resolve must return (factory, FactoryConfig)")
    agent, _ = await _maybe_await(factory.create_agent(agent_id, factory_config))
    if not isinstance(agent, Agent):
        raise TypeError("Factory.create_agent must return (Agent, SessionOptions)")
    return agent


def _summary(tool: BaseTool) -> str:
    paragraph = (tool.description or "").strip().split("\n\n", 1)[0]
    return " ".join(paragraph.split()) or tool.name


def tool_skills(agent: Agent) -> list[AgentSkill]:
    """One skill per tool of ``agent``, in the agent's tool order."""
    owners = {t.name: mw.name for mw in agent.middleware_instances for t in mw.tools()}
    return [
        AgentSkill(
            id=name,
            name=name,
            description=_summary(tool),
            tags=["tool", owners[name]] if name in owners else ["tool"],
        )
        for name, tool in agent.all_tools.items()
    ]


async def build_agent_card(
    config: SessionConfig,
    *,
    url: str,
    name: str,
    description: str,
    version: str = "1.0.0",
    skills: Sequence[AgentSkill] | None = None,
    agent: Agent | None = None,
    scope: Scope = None,
    provider: AgentProvider | None = None,
    documentation_url: str | None = None,
) -> AgentCard:
    """The A2A agent card of ``config``'s conversations.

    Args:
        config: the conversations served.
        url: where the JSON-RPC endpoint is reachable from clients (the app's ``rpc_path``
            under its public address), e.g. ``"https://agents.example.com/a2a/"``.
        name: the agent's name for other agents.
        description: what it does, for other agents.
        version: the version of this agent (not of the protocol).
        skills: the card's skills; by default one per tool of the agent (see ``agent``).
        agent: the agent whose tools become the skills; by default the factory of ``config``
            builds one (for conversation ``CARD_CONVERSATION_ID`` in ``scope``, never started).
        scope: the tenant the default agent is built for (any hashable value with a stable
            key: see :func:`sagents.persistence.scope_key`).
        provider: the organisation that runs the agent.
        documentation_url: where people read about it.

    Returns:
        A card with streaming, text and JSON input and output, and the JSON-RPC interface.
    """
    if skills is None:
        if agent is None:
            agent = await _card_agent(config, scope)
        skills = tool_skills(agent)
    card = AgentCard(
        name=name,
        description=description,
        version=version,
        supported_interfaces=[
            AgentInterface(
                url=url,
                protocol_binding=TransportProtocol.JSONRPC.value,
                protocol_version=PROTOCOL_VERSION_1_0,
            )
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=list(_MODES),
        default_output_modes=list(_MODES),
        skills=list(skills),
    )
    if provider is not None:
        card.provider.CopyFrom(provider)
    if documentation_url is not None:
        card.documentation_url = documentation_url
    return card


def a2a_app(
    runtime: Runtime,
    config: SessionConfig,
    card: AgentCard,
    *,
    task_store: TaskStore | None = None,
    scope: ScopeOf | None = None,
    rpc_path: str = "/",
    card_path: str = AGENT_CARD_WELL_KNOWN_PATH,
    interrupted_task_timeout: float | None = None,
    manage_runtime: bool = False,
) -> Starlette:
    """The ASGI app serving ``config``'s conversations over A2A (JSON-RPC with streaming).

    Args:
        runtime: the runtime the conversations' agents run in.
        config: how conversations are built, restored and kept.
        card: the agent card (:func:`build_agent_card`), served at ``card_path``.
        task_store: where A2A tasks are kept (default: in memory, lost with the process; the
            conversations themselves are kept by ``config``'s persistence).
        scope: the tenant of a request (see :class:`SessionExecutor`): a callable of the
            request context answering any hashable value with a stable key (see
            :func:`sagents.persistence.scope_key`).
        rpc_path: the path of the JSON-RPC endpoint (the card's interface URL points here).
        card_path: the path of the agent card.
        interrupted_task_timeout: seconds a task waiting for input keeps the SDK's workers for
            it in memory (None: until it is answered or cancelled); a reply after that picks
            the task up again from ``task_store``.
        manage_runtime: start ``runtime`` with the app and shut it down with it.

    Raises:
        InvalidOption: a path does not start with ``/``.
    """
    for option, path in (("rpc_path", rpc_path), ("card_path", card_path)):
        if not path.startswith("/"):
            raise InvalidOption(f"{option} must start with '/', got {path!r}")
    handler = DefaultRequestHandler(
        agent_executor=SessionExecutor(runtime, config, scope=scope),
        task_store=task_store if task_store is not None else InMemoryTaskStore(),
        agent_card=card,
        interrupted_task_timeout=interrupted_task_timeout,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_runtime:
            await runtime.start()
        try:
            yield
        finally:
            try:
                await handler.aclose()
            finally:
                if manage_runtime:
                    await runtime.shutdown()

    routes = [
        *create_agent_card_routes(card, card_url=card_path),
        *create_jsonrpc_routes(handler, rpc_path),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
