"""sagents: long-lived, supervised LLM agents for asyncio.

One agent server per conversation, in the manner of Sagents on Elixir/OTP. This namespace only
re-exports; integrations live in sub-namespaces so ``import sagents`` stays light.
"""

from sagents import events, telemetry
from sagents._errors import (
    AgentAlreadyRunning,
    AgentNotRunning,
    ChildNotFound,
    ConfigurationError,
    FileSystemError,
    InvalidAgent,
    InvalidDecision,
    InvalidMiddleware,
    InvalidOption,
    InvalidTransition,
    MaxRunsExceeded,
    ModelCallFailed,
    PathNotAllowed,
    RegistryUnavailable,
    RunError,
    SagentsError,
    ScriptExhausted,
    StateError,
    SupervisionError,
    SupervisorGaveUp,
    UnsupportedStateVersion,
    UntilToolNotCalled,
)
from sagents._interrupt import ActionRequest, Approve, Decision, Edit, Interrupt, Reject
from sagents._public import publish as _publish
from sagents._state import State
from sagents._status import Status
from sagents._todo import Todo, TodoStatus
from sagents.execution import (
    Agent,
    Done,
    Failed,
    Interrupted,
    Middleware,
    Mode,
    RetryPolicy,
    Run,
    RunResult,
    ScriptedChatModel,
    ToolContext,
    dismiss_interrupt,
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

__version__ = "0.1.0"

__all__ = [
    "ActionRequest",
    "Agent",
    "AgentAlreadyRunning",
    "AgentHandle",
    "AgentInfo",
    "AgentNotRunning",
    "Approve",
    "AutoSave",
    "ChildNotFound",
    "ConfigurationError",
    "Decision",
    "Done",
    "Edit",
    "Failed",
    "FileSystemError",
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
    "Mode",
    "ModelCallFailed",
    "PathNotAllowed",
    "PendingSubscription",
    "Presence",
    "PresenceTracking",
    "RegistryUnavailable",
    "Reject",
    "RetryPolicy",
    "Run",
    "RunError",
    "RunResult",
    "Runtime",
    "SagentsError",
    "ScriptExhausted",
    "ScriptedChatModel",
    "State",
    "StateError",
    "Status",
    "Subscription",
    "SupervisionError",
    "SupervisorGaveUp",
    "Todo",
    "TodoStatus",
    "ToolContext",
    "UnsupportedStateVersion",
    "UntilToolNotCalled",
    "Watch",
    "__version__",
    "dismiss_interrupt",
    "events",
    "get_tool_context",
    "telemetry",
]

_publish(globals(), __all__, __name__)
