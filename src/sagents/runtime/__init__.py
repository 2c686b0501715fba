"""The runtime layer: agent servers, supervision, registry, presence, subscriptions."""

from sagents._errors import ChildNotFound, SupervisionError
from sagents._public import publish as _publish
from sagents.runtime._handle import AgentHandle
from sagents.runtime._info import AgentInfo
from sagents.runtime._options import AgentOptions, AutoSave
from sagents.runtime._presence import LocalPresence, Presence, PresenceTracking
from sagents.runtime._publisher import Publisher, Subscription
from sagents.runtime._runtime import Runtime
from sagents.runtime._supervisor import (
    ChildSpec,
    RestartType,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
)
from sagents.runtime._watch import PendingSubscription, Watch

__all__ = [
    "AgentHandle",
    "AgentInfo",
    "AgentOptions",
    "AutoSave",
    "ChildNotFound",
    "ChildSpec",
    "LocalPresence",
    "PendingSubscription",
    "Presence",
    "PresenceTracking",
    "Publisher",
    "RestartType",
    "Runtime",
    "Strategy",
    "Subscription",
    "SupervisionError",
    "Supervisor",
    "SupervisorGaveUp",
    "Watch",
]

_publish(globals(), __all__, __name__)
