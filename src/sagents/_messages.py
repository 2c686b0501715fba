"""The JSON form of langchain messages, shared by state snapshots and events.

We use langchain-core's own ``message_to_dict`` shape (``{"type": ..., "data": {...}}``) rather
than inventing one: it round-trips every message kind, tool calls, usage and ids, and other
langchain tooling can read what we store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

from sagents._errors import StateError

__all__ = ["message_from_json", "message_to_json"]


def message_to_json(message: BaseMessage) -> dict[str, Any]:
    """Encode one langchain message (or chunk) as JSON-compatible data."""
    return message_to_dict(message)


def message_from_json(data: Mapping[str, Any], where: str = "message") -> BaseMessage:
    """Decode one message encoded by :func:`message_to_json`.

    Raises:
        StateError: ``data`` is not an encoded message; ``where`` names it in the message.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("data"), Mapping):
        raise StateError(f"{where}: expected {{'type': ..., 'data': {{...}}}}, got {data!r:.80}")
    try:
        return messages_from_dict([dict(data)])[0]
    except Exception as exc:
        raise StateError(f"{where}: not a valid message: {exc}") from None
