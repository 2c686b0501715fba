"""Start options of an agent server, validated before anything starts.

``runtime.start_agent(agent, initial_state, **options)`` takes keyword options so call sites read
like Sagents' ``start_link`` keyword lists, and turns them into one frozen :class:`AgentOptions`
at once: an unknown option, a wrong type or a nonsensical value raises :class:`InvalidOption`
naming it, before any task exists.
"""

from __future__ import annotations

import contextvars
import functools
import math
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from langchain_core.messages import BaseMessage

from sagents._errors import InvalidOption
from sagents._state import State
from sagents.persistence._protocols import AgentPersistence, DisplayMessagePersistence

if TYPE_CHECKING:
    from sagents.runtime._presence import PresenceTracking
    from sagents.runtime._publisher import Publisher

__all__ = [
    "AgentOptions",
    "AutoSave",
    "InitialSubscriber",
    "MessagePreprocessor",
    "SaveCallback",
    "SaveMessageCallback",
    "StartOptions",
]

#: ``async (agent_id, state_dict) -> None``
SaveCallback = Callable[[str, dict[str, Any]], Awaitable[None]]
#: ``async (conversation_id, message) -> None``
SaveMessageCallback = Callable[[str | None, BaseMessage], Awaitable[None]]
#: ``(message, state) -> (for_the_model, for_the_user)``: the second is a message or its text.
MessagePreprocessor = Callable[[BaseMessage, State], tuple[BaseMessage, BaseMessage | str]]


def _seconds(name: str, value: Any, *, allow_none: bool) -> float | None:
    if value is None or (isinstance(value, float) and math.isinf(value) and value > 0):
        if allow_none:
            return None
        raise InvalidOption(f"{name} must be a number of seconds, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        hint = " (or None to disable)" if allow_none else ""
        raise InvalidOption(f"{name} must be a positive number of seconds{hint}, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoSave:
    """Save the state through ``callback``.

    Args:
        callback: ``async (agent_id, state_dict) -> None``.
        interval: seconds between saves, each made only if the state changed; None disables.
        on_idle: also save when a run completes.
    """

    callback: SaveCallback
    interval: float | None = 60.0
    on_idle: bool = True

    def __post_init__(self) -> None:
        if not callable(self.callback):
            raise InvalidOption("AutoSave.callback must be an async function (agent_id, state)")
        object.__setattr__(
            self, "interval", _seconds("AutoSave.interval", self.interval, allow_none=True)
        )
        if not isinstance(self.on_idle, bool):
            raise InvalidOption("AutoSave.on_idle must be True or False")


class InitialSubscriber(Protocol):
    """What ``initial_subscribers`` holds: something that subscribes to a server's publisher
    before its first event (``PendingSubscription``, ``runtime.watch(...)``)."""

    def attach(self, publisher: Publisher) -> None: ...


class StartOptions(TypedDict, total=False):
    """The keyword options of ``runtime.start_agent`` (see :class:`AgentOptions` for each),
    plus ``context``."""

    inactivity_timeout: float | None
    presence: PresenceTracking | None
    auto_save: AutoSave | None
    conversation_id: str | None
    save_new_message: SaveMessageCallback | None
    message_preprocessor: MessagePreprocessor | None
    agent_persistence: AgentPersistence | None
    display_message_persistence: DisplayMessagePersistence | None
    lease_ttl: float | None
    create_conversation: bool
    scope: Hashable | None
    state_version: int | None
    filesystem_scope: Hashable | None
    initial_subscribers: Sequence[InitialSubscriber]
    max_follow_ups: int
    replay_size: int
    queue_size: int
    shutdown_timeout: float
    metadata: Mapping[str, object]
    tool_context: Mapping[str, object]
    context: contextvars.Context | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentOptions:
    """Everything ``start_agent`` accepts besides the agent and its initial state.

    Attributes:
        inactivity_timeout: seconds without activity before the server shuts down;
            None (or ``math.inf``) disables it.
        presence: a ``PresenceTracking`` for viewer-based shutdown.
        auto_save: an :class:`AutoSave`.
        conversation_id: the conversation this agent serves (metadata, message saving).
        save_new_message: ``async (conversation_id, message)`` awaited for each new message.
        message_preprocessor: ``(message, state) -> (for_the_model, for_the_user)``, applied to
            each message given to ``add_message``: the first enters the state (what the model
            sees and the agent persistence saves: attachments expanded, context injected), the
            second is what the conversation's display rows show (a message or its text).
        agent_persistence: an ``AgentPersistence``; the server saves the state through it at
            its lifecycle points (run completed, error, interrupt, cancel, pause,
            shutdown), as deltas. Needs ``conversation_id``.
        display_message_persistence: a ``DisplayMessagePersistence`` (sessions).
        lease_ttl: with an ``agent_persistence`` that has ownership leases
            (``ConversationLeases``, as both shipped stores do), the server takes the
            conversation's lease when it starts and its runtime renews it every ``lease_ttl / 3``
            seconds; another process cannot run the conversation until it is released (at
            shutdown) or expired (``lease_ttl`` seconds after a crash). None: take no lease.
        create_conversation: whether starting may create a conversation that does not exist
            in storage (False: a deleted conversation cannot be brought back by a start).
        scope: the tenant the agent serves, passed to the persistence adapters: any hashable
            value (a user id, a ``(tenant, user)`` tuple, a frozen dataclass); stores that
            need text store its key (:func:`sagents.persistence.scope_key`).
        state_version: the stored version ``initial_state`` was loaded with, so the first save
            builds on it instead of rewriting everything.
        filesystem_scope: the key of the filesystem server shared by this agent.
        initial_subscribers: subscriptions attached before the first event.
        max_follow_ups: automatic follow-up runs for queued messages before stopping.
        replay_size: main-channel events kept for reconnecting subscribers.
        queue_size: per-subscriber queue bound.
        shutdown_timeout: seconds a graceful stop may take (final save) before it is forced.
        metadata: free-form data reported in telemetry and ``AgentInfo``.
        tool_context: the caller's data for the agent's tools (a user id, a tenant, a
            client), read as ``ToolContext.tool_context``; a message's own
            (``add_message(..., tool_context=...)``) goes over it from the run that message
            starts. Not persisted: whoever starts the agent again gives it again.
        context: the ``contextvars`` the agent's runs, tools and hooks see (request ids, tenant,
            OpenTelemetry context); None: a copy of the context ``start_agent`` was called in.
            ``handle.update_context()`` replaces it on a running agent.
    """

    inactivity_timeout: float | None = 300.0
    presence: PresenceTracking | None = None
    auto_save: AutoSave | None = None
    conversation_id: str | None = None
    save_new_message: SaveMessageCallback | None = None
    message_preprocessor: MessagePreprocessor | None = None
    agent_persistence: AgentPersistence | None = None
    display_message_persistence: DisplayMessagePersistence | None = None
    lease_ttl: float | None = 30.0
    create_conversation: bool = True
    scope: Hashable | None = None
    state_version: int | None = None
    filesystem_scope: Hashable | None = None
    initial_subscribers: Sequence[InitialSubscriber] = ()
    max_follow_ups: int = 10
    replay_size: int = 1000
    queue_size: int = 1000
    shutdown_timeout: float = 30.0
    metadata: Mapping[str, object] = field(default_factory=lambda: _NO_METADATA)
    tool_context: Mapping[str, object] = field(default_factory=lambda: _NO_METADATA)
    context: contextvars.Context | None = None

    def __post_init__(self) -> None:
        # Checked in the order the fields are documented, one concern at a time.
        self._check_times()
        self._check_persistence()
        self._check_runtime()
        subscribers = self.initial_subscribers
        if type(subscribers) is not tuple:
            object.__setattr__(self, "initial_subscribers", tuple(subscribers))
        # A copy the caller cannot change later; the (usual) empty one is shared.
        object.__setattr__(self, "metadata", dict(self.metadata) if self.metadata else _NO_METADATA)
        object.__setattr__(
            self, "tool_context", dict(self.tool_context) if self.tool_context else _NO_METADATA
        )

    def _check_times(self) -> None:
        set_ = object.__setattr__
        set_(
            self,
            "inactivity_timeout",
            _seconds("inactivity_timeout", self.inactivity_timeout, allow_none=True),
        )
        set_(self, "lease_ttl", _seconds("lease_ttl", self.lease_ttl, allow_none=True))
        if not isinstance(self.create_conversation, bool):
            raise InvalidOption("create_conversation must be True or False")
        set_(
            self,
            "shutdown_timeout",
            _seconds("shutdown_timeout", self.shutdown_timeout, allow_none=False),
        )

    def _check_persistence(self) -> None:
        if self.auto_save is not None and not isinstance(self.auto_save, AutoSave):
            raise InvalidOption("auto_save must be an AutoSave(callback, interval, on_idle)")
        if self.conversation_id is not None and not isinstance(self.conversation_id, str):
            raise InvalidOption("conversation_id must be a string")
        if self.save_new_message is not None and not callable(self.save_new_message):
            raise InvalidOption(
                "save_new_message must be an async function (conversation_id, message)"
            )
        if self.message_preprocessor is not None and not callable(self.message_preprocessor):
            raise InvalidOption(
                "message_preprocessor must be a function (message, state) -> "
                "(for_the_model, for_the_user)"
            )
        self._check_stores()

    def _check_stores(self) -> None:
        if self.agent_persistence is not None:
            if not isinstance(self.agent_persistence, AgentPersistence):
                raise InvalidOption(
                    "agent_persistence must implement AgentPersistence (save_state, load_state)"
                )
            if self.conversation_id is None:
                raise InvalidOption("agent_persistence needs a conversation_id to save under")
        if self.display_message_persistence is not None:
            if not isinstance(self.display_message_persistence, DisplayMessagePersistence):
                raise InvalidOption(
                    "display_message_persistence must implement DisplayMessagePersistence"
                )
            if self.conversation_id is None:
                raise InvalidOption("display_message_persistence needs a conversation_id")
        if self.scope is not None and not isinstance(self.scope, Hashable):
            raise InvalidOption("scope must be hashable (a user id, a tuple, a frozen dataclass)")
        if self.state_version is not None and (
            isinstance(self.state_version, bool)
            or not isinstance(self.state_version, int)
            or self.state_version < 0
        ):
            raise InvalidOption("state_version must be a non-negative integer or None")

    def _check_runtime(self) -> None:
        if self.presence is not None:
            from sagents.runtime._presence import PresenceTracking

            if not isinstance(self.presence, PresenceTracking):
                raise InvalidOption("presence must be a PresenceTracking(presence=..., topic=...)")
        for name in ("max_follow_ups", "replay_size", "queue_size"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (0 if name == "max_follow_ups" else 1)
            ):
                raise InvalidOption(f"{name} must be a positive integer, got {value!r}")
        subscribers = self.initial_subscribers
        if type(subscribers) is not tuple and (
            isinstance(subscribers, str | bytes) or not isinstance(subscribers, Sequence)
        ):
            raise InvalidOption("initial_subscribers must be a list of subscriptions")
        if self.filesystem_scope is not None and not isinstance(self.filesystem_scope, Hashable):
            raise InvalidOption("filesystem_scope must be hashable, e.g. ('user', 42)")
        if type(self.metadata) is not dict and not isinstance(self.metadata, Mapping):
            raise InvalidOption("metadata must be a dict")
        if type(self.tool_context) is not dict and not isinstance(self.tool_context, Mapping):
            raise InvalidOption("tool_context must be a dict of the data your tools read")
        if self.context is not None and not isinstance(self.context, contextvars.Context):
            raise InvalidOption("context must be a contextvars.Context (copy_context()) or None")

    @classmethod
    def from_kwargs(cls, options: Mapping[str, object]) -> AgentOptions:
        """Build options from ``start_agent`` keywords.

        Raises:
            InvalidOption: an unknown option (the message lists the valid ones) or a bad value.
        """
        valid = _option_names()
        if not valid.issuperset(options):
            unknown = sorted(set(options) - valid)
            raise InvalidOption(
                f"unknown start option(s) {unknown}; valid options: {', '.join(sorted(valid))}"
            )
        return cls(**options)  # type: ignore[arg-type]  # checked by __post_init__


_NO_METADATA: Mapping[str, object] = MappingProxyType({})


@functools.cache
def _option_names() -> frozenset[str]:
    return frozenset(f.name for f in fields(AgentOptions))
