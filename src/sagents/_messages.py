"""The JSON form of langchain messages, shared by state snapshots and events.

We use langchain-core's own ``message_to_dict`` shape (``{"type": ..., "data": {...}}``) rather
than inventing one: it round-trips every message kind, tool calls, usage and ids, and other
langchain tooling can read what we store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)

from sagents._errors import StateError

__all__ = ["message_from_json", "message_to_json"]


# Fields left out of the JSON when they hold their default: they are most of a typical message's
# bytes, and decoding restores them. Stored states shrink by about half and load faster.
_DEFAULTS: dict[str, Any] = {
    "additional_kwargs": {},
    "response_metadata": {},
    "name": None,
    "id": None,
    "example": False,
    "tool_calls": [],
    "invalid_tool_calls": [],
    "usage_metadata": None,
    "artifact": None,
}

# The common kinds, decoded by their class directly; anything else goes through langchain.
_CLASSES: dict[str, type[BaseMessage]] = {
    "human": HumanMessage,
    "ai": AIMessage,
    "tool": ToolMessage,
    "system": SystemMessage,
}


def message_to_json(message: BaseMessage) -> dict[str, Any]:
    """Encode one langchain message (or chunk) as JSON-compatible data.

    The shape is langchain's ``message_to_dict`` (``{"type": ..., "data": {...}}``), without the
    fields that hold their default value.
    """
    encoded = message_to_dict(message)
    data = encoded["data"]
    encoded["data"] = {
        key: value
        for key, value in data.items()
        if key not in _DEFAULTS or value != _DEFAULTS[key] or key == "content"
    }
    return encoded


def message_from_json(data: Mapping[str, Any], where: str = "message") -> BaseMessage:
    """Decode one message encoded by :func:`message_to_json` (or langchain's
    ``message_to_dict``).

    Raises:
        StateError: ``data`` is not an encoded message; ``where`` names it in the message.
    """
    if not isinstance(data, Mapping) or not isinstance(fields := data.get("data"), Mapping):
        raise StateError(f"{where}: expected {{'type': ..., 'data': {{...}}}}, got {data!r:.80}")
    try:
        cls = _CLASSES.get(data.get("type"))  # type: ignore[arg-type]
        if cls is not None:
            return cls(**fields)
        return messages_from_dict([dict(data)])[0]
    except Exception as exc:
        raise StateError(f"{where}: not a valid message: {str(exc)[:200]}") from None
