"""Events every subscriber of an agent sees (``events.md``).

Each event is a frozen dataclass you can ``match`` on::

    match event:
        case StatusChanged(status=Status.IDLE):
            ...
        case LLMDeltas(deltas=deltas):
            ...

Every event carries ``agent_id`` and ``seq``, a per-agent number that increases by one for every
event the agent's server publishes (the execution loop emits events with ``seq=0`` and the server
stamps them), so a reconnecting client can say which events it already has.

``event.to_json()`` / :func:`from_json` give the stable JSON form used by web clients:
``{"type": "status_changed", "agent_id": ..., "seq": ..., <fields>}``. Messages use
langchain-core's dict form, states :meth:`State.to_dict`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar, Literal, TypeAlias

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage

from sagents._errors import SagentsError
from sagents._interrupt import Interrupt
from sagents._messages import message_from_json, message_to_json
from sagents._state import State
from sagents._status import Status
from sagents._todo import Todo

__all__ = [
    "AgentReset",
    "AgentShutdown",
    "AgentStateUpdate",
    "ChainError",
    "Channel",
    "ConversationTitleGenerated",
    "DisplayMessageSaved",
    "DisplayMessageUpdated",
    "Event",
    "FileChanged",
    "FollowUpsLimited",
    "LLMDeltas",
    "LLMError",
    "LLMMessage",
    "LLMTokenUsage",
    "MessageQueued",
    "MiddlewareAction",
    "NodeTransferred",
    "NodeTransferring",
    "RunHalted",
    "SaveFailed",
    "SaveRefused",
    "StateRestored",
    "StatusChanged",
    "SubAgentActivity",
    "SubscriptionOverflow",
    "TodosUpdated",
    "ToolCallIdentified",
    "ToolExecutionCompleted",
    "ToolExecutionFailed",
    "ToolExecutionStarted",
    "event_types",
    "from_json",
]

Channel: TypeAlias = Literal["main", "debug"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of all events. ``type`` is the JSON name, ``channel`` where it is published."""

    type: ClassVar[str] = "event"
    channel: ClassVar[Channel] = "main"

    agent_id: str = ""
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form of this event."""
        out: dict[str, Any] = {"type": self.type}
        for f in fields(self):
            out[f.name] = _encode(getattr(self, f.name))
        return out


# -- main channel ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChanged(Event):
    """Every status transition; ``data`` is the interrupt for ``interrupted``, the reason for
    ``error``, else None."""

    type: ClassVar[str] = "status_changed"
    status: Status
    data: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMDeltas(Event):
    """Streamed pieces of the assistant message being generated."""

    type: ClassVar[str] = "llm_deltas"
    deltas: list[AIMessageChunk]


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMMessage(Event):
    """A complete assistant message, as it entered the state."""

    type: ClassVar[str] = "llm_message"
    message: AIMessage


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMTokenUsage(Event):
    """Token usage reported by the model for one call (``input_tokens``, ``output_tokens``,
    ``total_tokens`` and any details the provider gives)."""

    type: ClassVar[str] = "llm_token_usage"
    usage: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainError(Event):
    """The model failed for good (after retries and fallbacks); the run ends in error."""

    type: ClassVar[str] = "chain_error"
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallIdentified(Event):
    """A tool call was recognised while the model was still streaming."""

    type: ClassVar[str] = "tool_call_identified"
    tool_call_id: str
    name: str
    display_text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolExecutionStarted(Event):
    type: ClassVar[str] = "tool_execution_started"
    tool_call_id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolExecutionCompleted(Event):
    type: ClassVar[str] = "tool_execution_completed"
    tool_call_id: str
    name: str = ""
    result: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolExecutionFailed(Event):
    """A tool raised, timed out, got invalid arguments, was unknown, or was rejected."""

    type: ClassVar[str] = "tool_execution_failed"
    tool_call_id: str
    name: str = ""
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TodosUpdated(Event):
    """The todo list changed; ``todos`` is the full new list."""

    type: ClassVar[str] = "todos_updated"
    todos: list[Todo]


@dataclass(frozen=True, slots=True, kw_only=True)
class StateRestored(Event):
    type: ClassVar[str] = "state_restored"
    state: State


@dataclass(frozen=True, slots=True, kw_only=True)
class DisplayMessageSaved(Event):
    type: ClassVar[str] = "display_message_saved"
    display_message: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class DisplayMessageUpdated(Event):
    """A stored display row changed (a tool call's status, a recorded human decision);
    ``display_message`` is the whole row as stored now, to replace the one a UI shows."""

    type: ClassVar[str] = "display_message_updated"
    display_message: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class SaveRefused(Event):
    """Storage refused to save the state, so the agent stops: its later work could never be
    saved. ``reason`` is ``"stale"`` (a newer state is stored), ``"owned_elsewhere"`` (another
    process took the conversation over) or ``"deleted"``; ``error`` says what happened. It is
    followed by ``StatusChanged(ERROR)`` and ``AgentShutdown(reason="save_refused")``; starting
    the conversation again continues from the stored state."""

    type: ClassVar[str] = "save_refused"
    reason: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentShutdown(Event):
    """The last event of a server instance: ``inactivity``, ``no_viewers``, ``manual``,
    ``crash`` or a custom reason."""

    type: ClassVar[str] = "agent_shutdown"
    reason: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeTransferring(Event):
    type: ClassVar[str] = "node_transferring"
    from_node: str
    to_node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeTransferred(Event):
    type: ClassVar[str] = "node_transferred"
    from_node: str
    to_node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionOverflow(Event):
    """This subscriber fell behind its bounded queue and ``dropped`` events were lost to it."""

    type: ClassVar[str] = "subscription_overflow"
    dropped: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationTitleGenerated(Event):
    """A title was generated for the conversation (``ConversationTitle`` middleware)."""

    type: ClassVar[str] = "conversation_title_generated"
    title: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunHalted(Event):
    """A tool, a middleware hook or a step ended the run on purpose (``raise Halt(reason)``);
    ``reason`` says why. It is followed by ``StatusChanged(IDLE)``: a halt is a clean end."""

    type: ClassVar[str] = "run_halted"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentReset(Event):
    """The agent went back to a fresh state (``handle.reset()``): no messages, todos, metadata
    or pending interrupt. ``files`` is the policy applied to its files, ``"keep"`` or
    ``"clear"``. A page clears what it shows; ``StatusChanged(IDLE)`` follows unless the agent
    was idle already."""

    type: ClassVar[str] = "agent_reset"
    files: str = "keep"


@dataclass(frozen=True, slots=True, kw_only=True)
class FileChanged(Event):
    """A FileSystem tool changed a file of the agent's filesystem, so a UI's file panel can
    update without polling. ``change`` is ``"created"``, ``"modified"``, ``"deleted"`` or
    ``"moved"``; a move names the old path in ``previous_path``."""

    type: ClassVar[str] = "file_changed"
    path: str
    change: Literal["created", "modified", "deleted", "moved"]
    previous_path: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageQueued(Event):
    """A message arrived while a run was in progress (sent by the user, or queued by a tool
    with ``ToolContext.queue_message``): it waits for the follow-up turn after the run, so a
    UI can show it as pending. ``message`` is what the user sees of it (None: nothing, a
    tool's hidden message), ``queued`` how many wait now, ``from_tool`` who queued it."""

    type: ClassVar[str] = "message_queued"
    message: BaseMessage | None = None
    queued: int = 1
    from_tool: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowUpsLimited(Event):
    """``max_follow_ups`` follow-up turns ran in a row, so the ``added`` messages queued
    meanwhile entered the conversation without a run: nothing answers them until the next
    message or ``execute()``. Guards against two parties making an agent loop forever."""

    type: ClassVar[str] = "follow_ups_limited"
    max_follow_ups: int
    added: int


# -- debug channel -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStateUpdate(Event):
    """The state after a step that changed it."""

    type: ClassVar[str] = "agent_state_update"
    channel: ClassVar[Channel] = "debug"
    state: State


@dataclass(frozen=True, slots=True, kw_only=True)
class MiddlewareAction(Event):
    type: ClassVar[str] = "middleware_action"
    channel: ClassVar[Channel] = "debug"
    middleware: str
    data: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMError(Event):
    """One failed model call attempt (retried or not)."""

    type: ClassVar[str] = "llm_error"
    channel: ClassVar[Channel] = "debug"
    error: str
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SaveFailed(Event):
    """A save callback or persistence call failed; the agent carried on (the next lifecycle
    point retries). Named apart from the ``sagents.PersistenceError`` exception; its JSON type
    keeps its first name, ``persistence_error``, so that clients are unaffected."""

    type: ClassVar[str] = "persistence_error"
    channel: ClassVar[Channel] = "debug"
    operation: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SubAgentActivity(Event):
    """What a sub-agent started by the ``task`` tool is doing, on its parent's debug channel.

    ``activity`` is ``"started"``, ``"status"`` (``data``: the status), ``"message"`` (``data``:
    the message's JSON), ``"completed"`` (``data``: the answer) or ``"failed"`` (``data``: the
    error).
    """

    type: ClassVar[str] = "sub_agent_activity"
    channel: ClassVar[Channel] = "debug"
    sub_agent_id: str
    tool_call_id: str
    activity: str
    data: Any = None


# -- JSON --------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        StatusChanged,
        LLMDeltas,
        LLMMessage,
        LLMTokenUsage,
        ChainError,
        ToolCallIdentified,
        ToolExecutionStarted,
        ToolExecutionCompleted,
        ToolExecutionFailed,
        TodosUpdated,
        StateRestored,
        DisplayMessageSaved,
        DisplayMessageUpdated,
        SaveRefused,
        AgentShutdown,
        NodeTransferring,
        NodeTransferred,
        SubscriptionOverflow,
        ConversationTitleGenerated,
        FileChanged,
        RunHalted,
        AgentReset,
        MessageQueued,
        FollowUpsLimited,
        AgentStateUpdate,
        MiddlewareAction,
        LLMError,
        SaveFailed,
        SubAgentActivity,
    )
}


def event_types() -> dict[str, type[Event]]:
    """Every event class by its JSON ``type`` name."""
    return dict(_REGISTRY)


def _encode(value: Any) -> Any:
    if isinstance(value, BaseMessage):
        return message_to_json(value)
    if isinstance(value, State | Todo | Interrupt):
        return value.to_dict()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode_status_data(event_data: Mapping[str, Any]) -> Any:
    data = event_data.get("data")
    if event_data.get("status") == Status.INTERRUPTED and isinstance(data, Mapping):
        return Interrupt.from_dict(data)
    return data


_FIELD_DECODERS: dict[str, Callable[[Any], Any]] = {
    "status": Status,
    "message": message_from_json,
    "deltas": lambda items: [message_from_json(d) for d in items],
    "todos": lambda items: [Todo.from_dict(t) for t in items],
    "state": State.from_dict,
}


def from_json(data: Mapping[str, Any]) -> Event:
    """Rebuild an event from :meth:`Event.to_json` output.

    Raises:
        SagentsError: unknown ``type`` or malformed fields.
    """
    if not isinstance(data, Mapping):
        raise SagentsError(f"an event must be an object, got {type(data).__name__}")
    cls = _REGISTRY.get(str(data.get("type")))
    if cls is None:
        raise SagentsError(f"unknown event type {data.get('type')!r}")
    kwargs: dict[str, Any] = {}
    try:
        for f in fields(cls):
            if f.name not in data:
                continue
            raw = data[f.name]
            if cls is StatusChanged and f.name == "data":
                kwargs[f.name] = _decode_status_data(data)
            elif f.name in _FIELD_DECODERS and raw is not None:
                kwargs[f.name] = _FIELD_DECODERS[f.name](raw)
            else:
                kwargs[f.name] = raw
        return cls(**kwargs)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise SagentsError(f"malformed {cls.type} event: {exc}") from None


def __getattr__(name: str) -> Any:
    # Deprecated names, kept for one release.
    if name == "PersistenceError":
        warnings.warn(
            "sagents.events.PersistenceError is now SaveFailed (sagents.PersistenceError is the "
            "exception); the old name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return SaveFailed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
