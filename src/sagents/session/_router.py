"""Factory routers: which factory builds a conversation.

The router is consulted on every start, restores included, so a conversation is always rebuilt by
the factory it was created with (route on something stored with the conversation, not on the
current request alone).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, Protocol, runtime_checkable

from sagents.persistence._protocols import Scope
from sagents.session._factory import Factory, FactoryConfig

__all__ = ["FactoryRouter", "SingleFactoryRouter"]


@runtime_checkable
class FactoryRouter(Protocol):
    """Picks the factory and builds its config; ``resolve`` may be sync or async."""

    def resolve(
        self,
        scope: Scope,
        conversation_id: str,
        agent_id: str,
        request_opts: Mapping[str, Any],
    ) -> tuple[Factory, FactoryConfig] | Awaitable[tuple[Factory, FactoryConfig]]: ...


class SingleFactoryRouter:
    """The default router: every conversation is built by one factory."""

    def __init__(self, factory: Factory) -> None:
        self.factory = factory

    def resolve(
        self,
        scope: Scope,
        conversation_id: str,
        agent_id: str,
        request_opts: Mapping[str, Any],
    ) -> tuple[Factory, FactoryConfig]:
        config = FactoryConfig(
            conversation_id=conversation_id,
            agent_id=agent_id,
            scope=scope,
            request_opts=dict(request_opts),
        )
        return self.factory, config
