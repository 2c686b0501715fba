"""sagents: long-lived, supervised LLM agents for asyncio.

One agent server per conversation, in the manner of Sagents on Elixir/OTP. This namespace only
re-exports; integrations live in sub-namespaces so ``import sagents`` stays light.
"""

from sagents import events, telemetry
from sagents._errors import (
    AgentAlreadyRunning,
    AgentNotRunning,
    AgentUnavailable,
    ConfigurationError,
    ConversationExists,
    ConversationNotFound,
    ConversationOwnedElsewhere,
    FileSystemError,
    InvalidAgent,
    InvalidDecision,
    InvalidMiddleware,
    InvalidOption,
    InvalidTransition,
    MaxRunsExceeded,
    ModelCallFailed,
    PathNotAllowed,
    PersistenceError,
    PersistenceFailed,
    RegistryUnavailable,
    RunError,
    SagentsError,
    StateConflict,
    StateError,
    UnsupportedStateVersion,
    UntilToolNotCalled,
)
from sagents._interrupt import (
    ActionRequest,
    Answer,
    Approve,
    Decision,
    Edit,
    Interrupt,
    Question,
    Reject,
    Respond,
)
from sagents._public import publish as _publish
from sagents._state import State
from sagents._status import Status
from sagents._todo import Todo, TodoStatus
from sagents.execution import (
    Agent,
    Done,
    Failed,
    Halt,
    Interrupted,
    Middleware,
    MiddlewareContext,
    Mode,
    RetryPolicy,
    Run,
    RunResult,
    ToolContext,
    dismiss_interrupt,
    get_middleware_context,
    get_tool_context,
)
from sagents.runtime import (
    AgentHandle,
    AgentInfo,
    AutoSave,
    LocalPresence,
    PendingSubscription,
    Presence,
    PresenceTracking,
    Runtime,
    Subscription,
    Watch,
)
from sagents.session import (
    Factory,
    FactoryConfig,
    FactoryRouter,
    Session,
    SessionConfig,
    SessionOptions,
    SingleFactoryRouter,
)

__version__ = "0.1.0"

__all__ = [
    "ActionRequest",
    "Agent",
    "AgentAlreadyRunning",
    "AgentHandle",
    "AgentInfo",
    "AgentNotRunning",
    "AgentUnavailable",
    "Answer",
    "Approve",
    "AutoSave",
    "ConfigurationError",
    "ConversationExists",
    "ConversationNotFound",
    "ConversationOwnedElsewhere",
    "Decision",
    "Done",
    "Edit",
    "Factory",
    "FactoryConfig",
    "FactoryRouter",
    "Failed",
    "FileSystemError",
    "Halt",
    "Interrupt",
    "Interrupted",
    "InvalidAgent",
    "InvalidDecision",
    "InvalidMiddleware",
    "InvalidOption",
    "InvalidTransition",
    "LocalPresence",
    "MaxRunsExceeded",
    "Middleware",
    "MiddlewareContext",
    "Mode",
    "ModelCallFailed",
    "PathNotAllowed",
    "PendingSubscription",
    "PersistenceError",
    "PersistenceFailed",
    "Presence",
    "PresenceTracking",
    "Question",
    "RegistryUnavailable",
    "Reject",
    "Respond",
    "RetryPolicy",
    "Run",
    "RunError",
    "RunResult",
    "Runtime",
    "SagentsError",
    "Session",
    "SessionConfig",
    "SessionOptions",
    "SingleFactoryRouter",
    "State",
    "StateConflict",
    "StateError",
    "Status",
    "Subscription",
    "Todo",
    "TodoStatus",
    "ToolContext",
    "UnsupportedStateVersion",
    "UntilToolNotCalled",
    "Watch",
    "__version__",
    "dismiss_interrupt",
    "events",
    "get_middleware_context",
    "get_tool_context",
    "telemetry",
]

_publish(globals(), __all__, __name__)


#: Names that moved, kept for one release: ``sagents.X`` warns and returns the new one.
_MOVED = {
    "ScriptedChatModel": "sagents.testing",
    "ScriptExhausted": "sagents.testing",
    "ChildNotFound": "sagents.runtime",
    "SupervisionError": "sagents.runtime",
    "SupervisorGaveUp": "sagents.runtime",
}


def __getattr__(name: str) -> object:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'sagents' has no attribute {name!r}")
    import importlib
    import warnings

    warnings.warn(
        f"sagents.{name} moved to {module}.{name}; the old name goes in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), name)
