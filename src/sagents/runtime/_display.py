"""From what the model sees to what the user sees: display messages.

The state holds langchain messages for the model; a chat UI wants rows: the user's text, the
assistant's text, each tool call with a live status, each tool result, the model's thinking.
These functions turn one message entering the state into those rows, so the agent server can
persist them through a :class:`~sagents.persistence.DisplayMessagePersistence` as they appear.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from sagents.persistence._protocols import DisplayMessage, ToolCallStatus

__all__ = ["display_messages_for", "tool_result_status"]

_CANCELLED_PREFIXES = ("Cancelled:", "Not run:")


def _text_and_thinking(content: str | list[Any]) -> tuple[str, list[str]]:
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    thinking: list[str] = []
    for block in content:
        if isinstance(block, str):
            texts.append(block)
        elif isinstance(block, dict):
            kind = block.get("type")
            if kind == "text":
                texts.append(str(block.get("text", "")))
            elif kind in ("thinking", "reasoning"):
                thinking.append(str(block.get("thinking") or block.get("reasoning") or ""))
    return "".join(texts), thinking


def tool_result_status(message: ToolMessage) -> ToolCallStatus:
    """The final status of a tool call, read from its result."""
    text = message.content if isinstance(message.content, str) else ""
    if message.status == "error" and text.startswith(_CANCELLED_PREFIXES):
        return "cancelled"
    return "failed" if message.status == "error" else "completed"


def display_messages_for(
    conversation_id: str, message: BaseMessage, *, state_version: int | None = None
) -> list[DisplayMessage]:
    """The display rows of one message that entered the state (in order), tagged with the
    version of the state it entered."""
    rows: list[DisplayMessage] = []
    if isinstance(message, HumanMessage):
        text, _ = _text_and_thinking(message.content)
        rows.append(
            DisplayMessage(conversation_id=conversation_id, type="user", content={"text": text})
        )
    elif isinstance(message, AIMessage):
        text, thinking = _text_and_thinking(message.content)
        for thought in thinking:
            rows.append(
                DisplayMessage(
                    conversation_id=conversation_id, type="thinking", content={"text": thought}
                )
            )
        if text:
            rows.append(
                DisplayMessage(
                    conversation_id=conversation_id,
                    type="assistant",
                    content={"text": text},
                    content_type="markdown",
                )
            )
        for call in message.tool_calls:
            rows.append(
                DisplayMessage(
                    conversation_id=conversation_id,
                    type="tool_call",
                    content={"name": call["name"], "arguments": call["args"]},
                    content_type="json",
                    tool_call_id=call.get("id"),
                    status="executing",
                )
            )
    elif isinstance(message, ToolMessage):
        text, _ = _text_and_thinking(message.content)
        rows.append(
            DisplayMessage(
                conversation_id=conversation_id,
                type="tool_result",
                content={"name": message.name, "text": text},
                tool_call_id=message.tool_call_id,
                status=tool_result_status(message),
            )
        )
    if state_version is not None:
        rows = [dataclasses.replace(row, state_version=state_version) for row in rows]
    return rows
