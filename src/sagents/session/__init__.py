"""The session layer: conversations that outlive processes."""

from sagents._public import publish as _publish
from sagents.session._config import SessionConfig, conversation_agent_id
from sagents.session._factory import Factory, FactoryConfig, SessionOptions
from sagents.session._router import FactoryRouter, SingleFactoryRouter
from sagents.session._session import Session

__all__ = [
    "Factory",
    "FactoryConfig",
    "FactoryRouter",
    "Session",
    "SessionConfig",
    "SessionOptions",
    "SingleFactoryRouter",
    "conversation_agent_id",
]

_publish(globals(), __all__, __name__)
