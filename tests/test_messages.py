"""The stored JSON form of messages: compact, exact, and compatible with langchain's own."""

from __future__ import annotations

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
)

from sagents._errors import StateError
from sagents._messages import message_from_json, message_to_json

MESSAGES: list[BaseMessage] = [
    HumanMessage("hi"),
    HumanMessage("hi", id="h1", name="ann", example=True),
    SystemMessage("be brief", additional_kwargs={"cache": True}),
    AIMessage(""),
    AIMessage(
        "calling",
        id="a1",
        tool_calls=[{"name": "echo", "args": {"text": "x"}, "id": "c1"}],
        usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
        response_metadata={"model_name": "m"},
    ),
    AIMessage(
        "",
        invalid_tool_calls=[
            {"type": "invalid_tool_call", "name": "e", "args": "{", "id": "c2", "error": "bad"}
        ],
    ),
    ToolMessage("result", tool_call_id="c1", name="echo", status="error", artifact={"n": 1}),
    ToolMessage([{"type": "text", "text": "block"}], tool_call_id="c3"),
    AIMessageChunk(content="par", id="k1"),
    ChatMessage(content="hey", role="critic"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_is_exact(message: BaseMessage) -> None:
    decoded = message_from_json(message_to_json(message))
    assert type(decoded) is type(message)
    assert decoded == message
    assert message_to_dict(decoded) == message_to_dict(message)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_langchains_full_form_still_decodes(message: BaseMessage) -> None:
    assert message_from_json(message_to_dict(message)) == message


def test_defaults_are_left_out() -> None:
    encoded = message_to_json(AIMessage("x"))
    assert encoded == {"type": "ai", "data": {"content": "x", "type": "ai"}}
    assert message_to_json(HumanMessage(""))["data"]["content"] == ""


@pytest.mark.parametrize(
    "bad", [None, [], {"type": "ai"}, {"type": "ai", "data": {"content": 3.5j}}, {"data": {}}]
)
def test_malformed_data_is_a_state_error(bad: object) -> None:
    with pytest.raises(StateError, match="where-it-was"):
        message_from_json(bad, "where-it-was")  # type: ignore[arg-type]
