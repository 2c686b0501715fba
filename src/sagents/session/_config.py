"""``SessionConfig``: what a Coordinator declares once."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sagents._errors import InvalidOption
from sagents.persistence._protocols import AgentPersistence, DisplayMessagePersistence
from sagents.runtime._presence import Presence
from sagents.session._router import FactoryRouter

__all__ = ["SessionConfig", "conversation_agent_id"]


def conversation_agent_id(conversation_id: str) -> str:
    """The default agent id of a conversation: ``"conversation-<id>"``."""
    return f"conversation-{conversation_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """The Coordinator's configuration.

    Attributes:
        factory_router: picks the factory of each conversation.
        agent_persistence: where agent states are loaded from and saved to.
        display_message_persistence: where display messages go.
        presence: viewer tracking; with it, each agent watches ``presence_topic(id)``.
        presence_topic: the presence topic of a conversation.
        grace_period: seconds an idle agent with no viewers waits before shutting down.
        inactivity_timeout: seconds without activity before an agent shuts down (None: never).
        agent_id_for: the agent id of a conversation.
        server_options: more ``start_agent`` options for every conversation.
    """

    factory_router: FactoryRouter
    agent_persistence: AgentPersistence | None = None
    display_message_persistence: DisplayMessagePersistence | None = None
    presence: Presence | None = None
    presence_topic: Callable[[str], str] = field(default=lambda c: f"conversation:{c}")
    grace_period: float = 5.0
    inactivity_timeout: float | None = 300.0
    agent_id_for: Callable[[str], str] = conversation_agent_id
    server_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.factory_router, FactoryRouter):
            raise InvalidOption("SessionConfig.factory_router must have resolve(...)")
        if self.agent_persistence is not None and not isinstance(
            self.agent_persistence, AgentPersistence
        ):
            raise InvalidOption("SessionConfig.agent_persistence must be an AgentPersistence")
        if self.display_message_persistence is not None and not isinstance(
            self.display_message_persistence, DisplayMessagePersistence
        ):
            raise InvalidOption(
                "SessionConfig.display_message_persistence must be a DisplayMessagePersistence"
            )
