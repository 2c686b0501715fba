"""Factories: how an application builds the agent of a conversation.

The agent configuration always comes from code: on every start, including a restore, the
session asks a factory to build the :class:`~sagents.Agent` for the conversation; storage only
ever provides the state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sagents._state import State
from sagents.execution._agent import Agent
from sagents.persistence._protocols import Scope

__all__ = ["Factory", "FactoryConfig", "SessionOptions"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FactoryConfig:
    """What a factory needs to build one conversation's agent.

    Attributes:
        conversation_id: the conversation.
        agent_id: the id the agent will run under.
        scope: the caller's tenant (never stored in the state).
        request_opts: per-request options from the caller (timezone, locale, feature flags).
        extra: anything a router adds (e.g. the plan or model tier it chose).
    """

    conversation_id: str
    agent_id: str
    scope: Scope = None
    request_opts: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionOptions:
    """What a factory returns besides the agent.

    Attributes:
        fresh_state: the state of a brand-new conversation (used only when nothing is stored).
        server_options: extra ``start_agent`` options for this conversation (they override the
            ``SessionConfig`` ones).
    """

    fresh_state: State | None = None
    server_options: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Factory(Protocol):
    """Builds the agent of a conversation; ``create_agent`` may be sync or async."""

    def create_agent(
        self, agent_id: str, config: FactoryConfig
    ) -> tuple[Agent, SessionOptions] | Awaitable[tuple[Agent, SessionOptions]]: ...
