"""``State``: the runtime data of one agent.

A state is an immutable value: every step of a run builds a new one with :meth:`State.replace`
instead of mutating lists in place. That is what lets a cancelled or failed run hand back "the
state before the failing step" for free, and lets the server give readers a snapshot without
copying. The lists inside are plain lists for convenience; treat them as read-only.

``to_dict()`` is versioned JSON. ``from_dict()`` validates everything before building anything, so
bad input raises :class:`StateError` and never yields a half-built state.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from sagents._errors import StateError, UnsupportedStateVersion, shown
from sagents._interrupt import Interrupt
from sagents._messages import message_from_json, message_to_json
from sagents._todo import Todo

__all__ = ["STATE_VERSION", "State"]

#: The version written by :meth:`State.to_dict`; older versions are upgraded on read.
STATE_VERSION = 1

_KEYS = {"version", "agent_id", "messages", "todos", "metadata", "interrupt"}


@dataclass(frozen=True, slots=True, kw_only=True)
class State:
    """Messages, todos, middleware metadata and a pending interrupt.

    Todos may be given as dicts (``{"content": ..., "status": ...}``); they are validated.
    """

    messages: list[BaseMessage] = field(default_factory=list)
    todos: list[Todo] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    interrupt: Interrupt | None = None
    agent_id: str | None = None

    def __post_init__(self) -> None:
        messages = list(self.messages)
        for i, message in enumerate(messages):
            if not isinstance(message, BaseMessage):
                raise StateError(
                    f"State.messages[{i}] is a {type(message).__name__}, not a langchain message"
                )
        todos = [t if isinstance(t, Todo) else Todo.from_dict(t) for t in self.todos]
        if not isinstance(self.metadata, Mapping):
            raise StateError("State.metadata must be a dict")
        if _too_deep(self.metadata):
            raise StateError(
                f"State.metadata is nested more than {MAX_DEPTH} levels deep; a state must be "
                "storable as JSON, and copyable: flatten it"
            )
        if self.interrupt is not None and not isinstance(self.interrupt, Interrupt):
            raise StateError("State.interrupt must be an Interrupt or None")
        object.__setattr__(self, "messages", messages)
        object.__setattr__(self, "todos", todos)
        object.__setattr__(self, "metadata", dict(self.metadata))

    def replace(self, **changes: Any) -> State:
        """A copy with ``changes`` applied (``messages=``, ``todos=``, ``metadata=``, ...)."""
        return dataclasses.replace(self, **changes)

    def append(self, *messages: BaseMessage) -> State:
        """A copy with ``messages`` appended.

        The hot path of every run (each reply and tool result is appended): only the new
        messages are checked, because this state's fields are already valid.
        """
        for i, message in enumerate(messages, start=len(self.messages)):
            if not isinstance(message, BaseMessage):
                raise StateError(
                    f"State.messages[{i}] is a {type(message).__name__}, not a langchain message"
                )
        return self._shared(messages=[*self.messages, *messages])

    def _shared(self, **valid: Any) -> State:
        """A copy sharing this state's fields, with ``valid`` ones replaced, unchecked: for
        values known to be valid (the fields are immutable once checked)."""
        new = object.__new__(State)
        for name in _FIELD_NAMES:
            object.__setattr__(new, name, valid[name] if name in valid else getattr(self, name))
        return new

    def with_metadata(self, key: str, value: Any) -> State:
        """A copy with ``metadata[key] = value`` (middleware keep their state this way)."""
        return dataclasses.replace(self, metadata={**self.metadata, key: value})

    def pending_tool_calls(self) -> list[dict[str, Any]]:
        """Tool calls of the last AI message that have no tool result yet, in call order.

        Calls whose arguments were not valid JSON (langchain's ``invalid_tool_calls``) come
        last, with an ``"invalid"`` entry holding the parse error: they need a result too, or
        providers refuse the history.
        """
        for index in range(len(self.messages) - 1, -1, -1):
            message = self.messages[index]
            if isinstance(message, AIMessage):
                answered = {
                    m.tool_call_id for m in self.messages[index + 1 :] if isinstance(m, ToolMessage)
                }
                pending = [dict(c) for c in message.tool_calls if c.get("id") not in answered]
                pending += [
                    {
                        "name": c.get("name") or "",
                        "args": c.get("args"),
                        "id": c.get("id"),
                        "invalid": c.get("error") or "the arguments are not valid JSON",
                    }
                    for c in message.invalid_tool_calls
                    if c.get("id") and c.get("id") not in answered
                ]
                return pending
            if not isinstance(message, ToolMessage):
                return []
        return []

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Versioned, JSON-serialisable form (``{"version": 1, ...}``)."""
        return {
            "version": STATE_VERSION,
            "agent_id": self.agent_id,
            "messages": [message_to_json(m) for m in self.messages],
            "todos": [t.to_dict() for t in self.todos],
            # Copies: callers may edit the dict (e.g. a migration before saving) and the state
            # must stay immutable.
            "metadata": copy.deepcopy(self.metadata),
            "interrupt": None
            if self.interrupt is None
            else copy.deepcopy(self.interrupt.to_dict()),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> State:
        """Rebuild a state from :meth:`to_dict` output.

        Raises:
            UnsupportedStateVersion: written by a newer sagents.
            StateError: anything else malformed (the message says where).
        """
        if not isinstance(data, Mapping):
            raise StateError(f"a state must be a dict, got {type(data).__name__}")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise StateError(f"state 'version' must be a positive integer, got {shown(version)}")
        if version > STATE_VERSION:
            raise UnsupportedStateVersion(
                f"state version {version} was written by a newer sagents (this one reads up to "
                f"{STATE_VERSION}); upgrade sagents rather than editing the data"
            )
        unknown = set(data) - _KEYS
        if unknown:
            names = ", ".join(sorted(shown(k, 40) for k in unknown)[:5])
            raise StateError(f"unknown state field(s): {names}")
        agent_id = data.get("agent_id")
        if agent_id is not None and not isinstance(agent_id, str):
            raise StateError("state 'agent_id' must be a string or null")
        messages = _list(data, "messages")
        todos = _list(data, "todos")
        metadata = data.get("metadata", {})
        if not isinstance(metadata, Mapping):
            raise StateError("state 'metadata' must be an object")
        raw_interrupt = data.get("interrupt")
        return cls(
            messages=[message_from_json(m, f"messages[{i}]") for i, m in enumerate(messages)],
            todos=[_todo(i, t) for i, t in enumerate(todos)],
            metadata=_copy(dict(metadata), "metadata"),
            interrupt=None
            if raw_interrupt is None
            else Interrupt.from_dict(_copy(raw_interrupt, "interrupt")),
            agent_id=agent_id,
        )


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(State))


#: The deepest nesting of metadata a state holds (JSON stores and copy.deepcopy need a bound).
MAX_DEPTH = 100


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests dicts and lists more than :data:`MAX_DEPTH` levels (iterative:
    the check itself must not recurse)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)
    return False


def _copy(value: Any, what: str) -> Any:
    # deepcopy recurses: JSON nested a few hundred levels (which parsers accept) would raise
    # RecursionError from the depths of copy.py instead of saying what is wrong.
    try:
        return copy.deepcopy(value)
    except RecursionError:
        raise StateError(f"state {what!r} is nested too deeply to be a state") from None


def _list(data: Mapping[str, Any], key: str) -> Iterable[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise StateError(f"state {key!r} must be a list, got {type(value).__name__}")
    return value


def _todo(index: int, data: Any) -> Todo:
    try:
        return Todo.from_dict(data)
    except StateError as exc:
        raise StateError(f"todos[{index}]: {exc}") from None
