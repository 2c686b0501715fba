"""Tests for ``sagents._state``: the ``State`` value and its versioned JSON form (X2, X3, X21)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from sagents._errors import StateError, UnsupportedStateVersion
from sagents._interrupt import ActionRequest, Interrupt
from sagents._state import STATE_VERSION, State
from sagents._todo import Todo, TodoStatus

# -- strategies ----------------------------------------------------------------------------------

# Unicode text (hypothesis' default alphabet already excludes lone surrogates, which JSON
# encoders cannot round-trip and which langchain would never receive from a provider).
_text = st.text(max_size=20)
_nonempty_text = st.text(min_size=1, max_size=12)
_ids = st.none() | _nonempty_text
# Object keys stay short on purpose: langchain's AIMessage treats an ``additional_kwargs`` key
# named "tool_calls" as legacy OpenAI tool calls and parses them into ``tool_calls`` (its own
# backwards-compatibility normalisation, not a sagents bug). Keys of at most 8 characters can
# never spell it.
_keys = st.text(max_size=8)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_keys, children, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(_keys, json_values, max_size=3)

_text_blocks = st.builds(lambda t: {"type": "text", "text": t}, _text)
_image_blocks = st.builds(
    lambda url: {"type": "image_url", "image_url": {"url": url}}, st.just("https://x.test/") | _text
)
content = _text | st.lists(_text_blocks | _image_blocks | _text, max_size=3)

tool_calls = st.lists(
    st.fixed_dictionaries(
        {"name": _text, "args": json_objects, "id": _ids, "type": st.just("tool_call")}
    ),
    max_size=3,
)
invalid_tool_calls = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.none() | _text,
            "args": st.none() | _text,
            "id": _ids,
            "error": st.none() | _text,
            "type": st.just("invalid_tool_call"),
        }
    ),
    max_size=2,
)
_tokens = st.integers(min_value=0, max_value=10**9)
usage_metadata = st.none() | st.fixed_dictionaries(
    {"input_tokens": _tokens, "output_tokens": _tokens, "total_tokens": _tokens},
    optional={
        "input_token_details": st.fixed_dictionaries(
            {}, optional={"cache_read": _tokens, "cache_creation": _tokens, "audio": _tokens}
        ),
        "output_token_details": st.fixed_dictionaries(
            {}, optional={"reasoning": _tokens, "audio": _tokens}
        ),
    },
)

_common = {
    "id": _ids,
    "name": st.none() | _text,
    "additional_kwargs": json_objects,
    "response_metadata": json_objects,
}

human_messages = st.builds(HumanMessage, content=content, **_common)
system_messages = st.builds(SystemMessage, content=content, **_common)
ai_messages = st.builds(
    AIMessage,
    content=content,
    tool_calls=tool_calls,
    invalid_tool_calls=invalid_tool_calls,
    usage_metadata=usage_metadata,
    **_common,
)
tool_messages = st.builds(
    ToolMessage,
    content=content,
    tool_call_id=_nonempty_text,
    status=st.sampled_from(["success", "error"]),
    artifact=json_values,
    **_common,
)
messages = st.lists(
    st.one_of(human_messages, ai_messages, tool_messages, system_messages), max_size=6
)

todos = st.lists(
    st.builds(
        Todo,
        content=_nonempty_text.filter(str.strip),
        status=st.sampled_from(TodoStatus),
        id=_nonempty_text,
    ),
    max_size=4,
)

_decision_types = st.sampled_from(["approve", "edit", "reject"])
action_requests = st.builds(
    ActionRequest,
    tool_call_id=_text,
    name=_text,
    arguments=json_objects,
    allowed_decisions=st.lists(_decision_types, max_size=3).map(tuple),
    description=st.none() | _text,
)
interrupts = st.none() | st.builds(
    Interrupt,
    action_requests=st.lists(action_requests, max_size=3).map(tuple),
    kind=_text,
    data=json_objects,
)

states = st.builds(
    State,
    messages=messages,
    todos=todos,
    metadata=json_objects,
    interrupt=interrupts,
    agent_id=st.none() | _text,
)

# -- fixtures ------------------------------------------------------------------------------------


def _sample_state() -> State:
    return State(
        agent_id="agent-1",
        messages=[
            SystemMessage("be brief"),
            HumanMessage("hello ☃", id="h1"),
            AIMessage(
                "",
                tool_calls=[
                    {"name": "ls", "args": {"path": "/"}, "id": "c1"},
                    {"name": "read_file", "args": {"file_path": "/a"}, "id": "c2"},
                ],
                usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
            ),
            ToolMessage("a\nb", tool_call_id="c1", name="ls"),
        ],
        todos=[Todo(content="plan", status=TodoStatus.IN_PROGRESS, id="t1")],
        metadata={"title": {"text": "Greetings"}},
        interrupt=Interrupt(
            action_requests=(
                ActionRequest(tool_call_id="c2", name="read_file", arguments={"file_path": "/a"}),
            )
        ),
    )


def _valid_dict(**overrides: Any) -> dict[str, Any]:
    data = _sample_state().to_dict()
    data.update(overrides)
    return data


# -- construction --------------------------------------------------------------------------------


def test_defaults_are_empty() -> None:
    state = State()
    assert state.messages == []
    assert state.todos == []
    assert state.metadata == {}
    assert state.interrupt is None
    assert state.agent_id is None


def test_non_message_in_messages_is_rejected_with_its_index() -> None:
    with pytest.raises(StateError, match=r"messages\[1\]") as info:
        State(messages=[HumanMessage("ok"), "not a message"])  # type: ignore[list-item]
    assert "str" in str(info.value)


def test_message_dicts_are_not_silently_accepted() -> None:
    with pytest.raises(StateError, match=r"messages\[0\]"):
        State(messages=[{"type": "human", "data": {"content": "hi"}}])  # type: ignore[list-item]


def test_todos_given_as_dicts_are_validated_into_todos() -> None:
    state = State(
        todos=[{"content": "write tests"}, {"content": "ship", "status": "completed", "id": "x"}]  # type: ignore[list-item]
    )
    first, second = state.todos
    assert isinstance(first, Todo)
    assert first.status is TodoStatus.PENDING
    assert first.id
    assert second == Todo(content="ship", status=TodoStatus.COMPLETED, id="x")


@pytest.mark.parametrize(
    "todo",
    [
        {"content": "x", "status": "done"},
        {"content": ""},
        {"status": "pending"},
        {"content": "x", "priority": 1},
        "write tests",
    ],
)
def test_invalid_todo_dicts_are_rejected(todo: Any) -> None:
    with pytest.raises(StateError):
        State(todos=[todo])


@pytest.mark.parametrize("metadata", [[("a", 1)], "meta", 3, None])
def test_metadata_must_be_a_mapping(metadata: Any) -> None:
    with pytest.raises(StateError, match="metadata"):
        State(metadata=metadata)


@pytest.mark.parametrize("interrupt", [{"action_requests": []}, "pending", 1])
def test_interrupt_must_be_an_interrupt(interrupt: Any) -> None:
    with pytest.raises(StateError, match="interrupt"):
        State(interrupt=interrupt)


def test_construction_copies_the_callers_containers() -> None:
    msgs: list[BaseMessage] = [HumanMessage("a")]
    metadata: dict[str, Any] = {"k": 1}
    state = State(messages=msgs, metadata=metadata)
    msgs.append(HumanMessage("b"))
    metadata["k"] = 2
    assert state.messages == [HumanMessage("a")]
    assert state.metadata == {"k": 1}


def test_messages_may_be_any_iterable() -> None:
    state = State(messages=(HumanMessage("a"), AIMessage("b")))  # type: ignore[arg-type]
    assert isinstance(state.messages, list)
    assert len(state.messages) == 2


def test_state_is_frozen() -> None:
    state = State()
    with pytest.raises(AttributeError):
        state.agent_id = "x"  # type: ignore[misc]


# -- replace / append / with_metadata ------------------------------------------------------------


def test_replace_returns_a_new_state_and_leaves_the_original_alone() -> None:
    original = _sample_state()
    snapshot = original.to_dict()
    changed = original.replace(agent_id="other", todos=[{"content": "new"}])
    assert changed.agent_id == "other"
    assert [t.content for t in changed.todos] == ["new"]
    assert isinstance(changed.todos[0], Todo)
    assert changed.messages == original.messages
    assert original.to_dict() == snapshot


def test_replace_validates_like_the_constructor() -> None:
    with pytest.raises(StateError):
        State().replace(messages=["nope"])
    with pytest.raises(TypeError):
        State().replace(no_such_field=1)


def test_append_never_mutates_the_original() -> None:
    original = State(messages=[HumanMessage("a")])
    longer = original.append(AIMessage("b"), HumanMessage("c"))
    assert [m.content for m in longer.messages] == ["a", "b", "c"]
    assert [m.content for m in original.messages] == ["a"]
    assert longer.messages is not original.messages


def test_append_rejects_non_messages() -> None:
    with pytest.raises(StateError, match=r"messages\[1\]"):
        State(messages=[HumanMessage("a")]).append("b")  # type: ignore[arg-type]


def test_with_metadata_never_mutates_the_original() -> None:
    original = State(metadata={"a": 1})
    updated = original.with_metadata("b", {"x": [1, 2]}).with_metadata("a", 2)
    assert updated.metadata == {"a": 2, "b": {"x": [1, 2]}}
    assert original.metadata == {"a": 1}


@given(states, messages, _keys, json_values)
@settings(deadline=None, max_examples=20, suppress_health_check=[HealthCheck.too_slow])
def test_derivations_never_mutate_the_original(
    state: State, extra: list[BaseMessage], key: str, value: Any
) -> None:
    before = state.to_dict()
    state.append(*extra)
    state.with_metadata(key, value)
    state.replace(messages=[], todos=[], metadata={}, interrupt=None, agent_id=None)
    assert state.to_dict() == before


# -- pending_tool_calls --------------------------------------------------------------------------


def _ai_with_calls(*ids: str) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": f"tool_{i}", "args": {"i": i}, "id": i} for i in ids])


def test_no_pending_calls_in_an_empty_state() -> None:
    assert State().pending_tool_calls() == []


def test_no_pending_calls_when_the_last_ai_message_has_none() -> None:
    state = State(messages=[HumanMessage("hi"), AIMessage("hello")])
    assert state.pending_tool_calls() == []


def test_all_calls_pending_right_after_the_ai_message() -> None:
    state = State(messages=[HumanMessage("hi"), _ai_with_calls("a", "b", "c")])
    assert [c["id"] for c in state.pending_tool_calls()] == ["a", "b", "c"]
    first = state.pending_tool_calls()[0]
    assert first["name"] == "tool_a"
    assert first["args"] == {"i": "a"}


def test_answered_calls_are_not_pending_and_order_is_kept() -> None:
    state = State(
        messages=[
            _ai_with_calls("a", "b", "c"),
            ToolMessage("done", tool_call_id="b"),
        ]
    )
    assert [c["id"] for c in state.pending_tool_calls()] == ["a", "c"]


def test_error_results_count_as_answers() -> None:
    state = State(
        messages=[_ai_with_calls("a"), ToolMessage("boom", tool_call_id="a", status="error")]
    )
    assert state.pending_tool_calls() == []


def test_only_the_last_ai_message_counts() -> None:
    state = State(messages=[_ai_with_calls("old"), HumanMessage("?"), AIMessage("answer")])
    assert state.pending_tool_calls() == []


def test_results_for_another_turn_do_not_answer_this_one() -> None:
    state = State(
        messages=[
            _ai_with_calls("a"),
            ToolMessage("r", tool_call_id="a"),
            _ai_with_calls("a2"),
            ToolMessage("stale", tool_call_id="a"),
        ]
    )
    assert [c["id"] for c in state.pending_tool_calls()] == ["a2"]


def test_pending_calls_are_copies() -> None:
    state = State(messages=[_ai_with_calls("a")])
    state.pending_tool_calls()[0]["name"] = "changed"
    assert state.pending_tool_calls()[0]["name"] == "tool_a"
    assert state.messages[0].tool_calls[0]["name"] == "tool_a"  # type: ignore[attr-defined]


# -- to_dict / from_dict round trip --------------------------------------------------------------


def test_to_dict_is_versioned() -> None:
    data = State().to_dict()
    assert data["version"] == STATE_VERSION == 1
    assert set(data) == {"version", "agent_id", "messages", "todos", "metadata", "interrupt"}


def test_sample_state_round_trips_exactly() -> None:
    state = _sample_state()
    assert State.from_dict(state.to_dict()) == state
    assert State.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_round_trip_keeps_message_classes() -> None:
    back = State.from_dict(json.loads(json.dumps(_sample_state().to_dict())))
    assert [type(m) for m in back.messages] == [SystemMessage, HumanMessage, AIMessage, ToolMessage]
    assert back.todos[0].status is TodoStatus.IN_PROGRESS
    assert isinstance(back.interrupt, Interrupt)
    assert back.pending_tool_calls() == _sample_state().pending_tool_calls()


def test_to_dict_output_is_independent_of_the_state() -> None:
    # A state is an immutable value; a caller editing the dict it got (say, a migration adding a
    # key before saving) must not reach back into the live state.
    state = State(metadata={"title": {"text": "t"}}, interrupt=_sample_state().interrupt)
    data = state.to_dict()
    data["metadata"]["added"] = True
    data["metadata"]["title"]["text"] = "changed"
    data["interrupt"]["data"]["added"] = True
    data["interrupt"]["action_requests"][0]["arguments"]["file_path"] = "/etc/passwd"
    assert state.metadata == {"title": {"text": "t"}}
    assert state.interrupt == _sample_state().interrupt


def test_minimal_dict_gives_an_empty_state() -> None:
    assert State.from_dict({"version": 1}) == State()


@given(states)
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_state_round_trips_exactly(state: State) -> None:
    data = state.to_dict()
    assert State.from_dict(data) == state
    encoded = json.dumps(data)
    assert json.loads(encoded) == data, "to_dict() must already be plain JSON"
    again = State.from_dict(json.loads(encoded))
    assert again == state
    assert [type(m) for m in again.messages] == [type(m) for m in state.messages]
    assert again.to_dict() == data


# -- from_dict rejections ------------------------------------------------------------------------


@pytest.mark.parametrize("data", [None, [], "state", 1, [("version", 1)]])
def test_from_dict_rejects_non_dicts(data: Any) -> None:
    with pytest.raises(StateError, match="dict"):
        State.from_dict(data)


def test_from_dict_rejects_a_missing_version() -> None:
    data = _valid_dict()
    del data["version"]
    with pytest.raises(StateError, match="version") as info:
        State.from_dict(data)
    assert not isinstance(info.value, UnsupportedStateVersion)


@pytest.mark.parametrize("version", [True, False, "1", 1.0, 0, -1, None, [1]])
def test_from_dict_rejects_a_bad_version(version: Any) -> None:
    with pytest.raises(StateError, match="version") as info:
        State.from_dict(_valid_dict(version=version))
    assert not isinstance(info.value, UnsupportedStateVersion)


@pytest.mark.parametrize("version", [STATE_VERSION + 1, 99])
def test_from_dict_rejects_a_newer_version(version: int) -> None:
    with pytest.raises(UnsupportedStateVersion, match="upgrade") as info:
        State.from_dict(_valid_dict(version=version))
    assert str(version) in str(info.value)
    assert isinstance(info.value, StateError)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(StateError, match="colour"):
        State.from_dict(_valid_dict(colour="blue"))


@pytest.mark.parametrize("messages", [{"0": {}}, "hello", None, 3])
def test_from_dict_rejects_messages_that_are_not_a_list(messages: Any) -> None:
    with pytest.raises(StateError, match="messages"):
        State.from_dict(_valid_dict(messages=messages))


@pytest.mark.parametrize(
    "bad",
    [
        "hello",
        None,
        {"type": "human"},
        {"type": "human", "data": "hello"},
        {"type": "alien", "data": {"content": "x"}},
        {"type": "tool", "data": {"content": "no tool_call_id"}},
        {"type": "ai", "data": {"content": "x", "tool_calls": "not a list"}},
        {"data": {"content": "x"}},
    ],
)
def test_a_malformed_message_is_named_by_index(bad: Any) -> None:
    data = _valid_dict()
    assert len(data["messages"]) == 4
    data["messages"][3] = bad
    with pytest.raises(StateError, match=r"messages\[3\]"):
        State.from_dict(data)


@pytest.mark.parametrize(
    "todo",
    [
        {"content": "x", "status": "finished"},
        {"content": "x", "status": None},
        {"content": 3},
        {"content": "x", "id": ""},
        {"content": "x", "extra": 1},
        ["x"],
    ],
)
def test_from_dict_rejects_a_bad_todo(todo: Any) -> None:
    data = _valid_dict(todos=[{"content": "fine"}, todo])
    with pytest.raises(StateError, match=r"todos\[1\]"):
        State.from_dict(data)


def test_from_dict_rejects_todos_that_are_not_a_list() -> None:
    with pytest.raises(StateError, match="todos"):
        State.from_dict(_valid_dict(todos={"content": "x"}))


@pytest.mark.parametrize("metadata", [[], "x", 1])
def test_from_dict_rejects_bad_metadata(metadata: Any) -> None:
    with pytest.raises(StateError, match="metadata"):
        State.from_dict(_valid_dict(metadata=metadata))


@pytest.mark.parametrize("agent_id", [1, ["a"], {"id": "a"}])
def test_from_dict_rejects_a_bad_agent_id(agent_id: Any) -> None:
    with pytest.raises(StateError, match="agent_id"):
        State.from_dict(_valid_dict(agent_id=agent_id))


@pytest.mark.parametrize(
    "interrupt",
    [
        "pending",
        [],
        {},
        {"action_requests": "c1"},
        {"action_requests": [], "data": []},
        {"action_requests": [{"name": "ls", "arguments": {}}]},
        {"action_requests": [{"tool_call_id": "c", "name": "ls"}]},
        {"action_requests": [{"tool_call_id": "c", "name": "ls", "arguments": 5}]},
        {
            "action_requests": [
                {"tool_call_id": "c", "name": "ls", "arguments": {}, "allowed_decisions": ["ok"]}
            ]
        },
        # An action request that is not an object at all.
        {"action_requests": ["c1"]},
        {"action_requests": [None]},
    ],
)
def test_from_dict_rejects_a_bad_interrupt(interrupt: Any) -> None:
    with pytest.raises(StateError):
        State.from_dict(_valid_dict(interrupt=interrupt))


# -- from_dict never raises anything but StateError ----------------------------------------------

_known_keys = st.sampled_from(
    [
        "version",
        "agent_id",
        "messages",
        "todos",
        "metadata",
        "interrupt",
        "type",
        "data",
        "content",
        "status",
        "id",
        "tool_calls",
        "tool_call_id",
        "action_requests",
        "name",
        "arguments",
        "allowed_decisions",
        "description",
        "kind",
    ]
)
garbage = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_known_keys | _keys, children, max_size=4)
    ),
    max_leaves=12,
)

# Garbage that keeps the outer shape, so the inner validators are reached and fed garbage too.
# (Raw garbage alone almost never gets past the version check.)
_message_like = (
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["human", "ai", "tool", "system", "AIMessageChunk", "alien"])
            | garbage,
            "data": st.dictionaries(_known_keys, garbage, max_size=4),
        }
    )
    | garbage
)
_todo_like = (
    st.fixed_dictionaries(
        {"content": _text | garbage},
        optional={
            "status": st.sampled_from([s.value for s in TodoStatus]) | garbage,
            "id": _text | garbage,
        },
    )
    | garbage
)
_request_like = (
    st.fixed_dictionaries(
        {"tool_call_id": _text | garbage, "name": _text | garbage},
        optional={
            "arguments": json_objects | garbage,
            "allowed_decisions": st.lists(_decision_types) | garbage,
            "description": garbage,
        },
    )
    | garbage
)
_interrupt_like = (
    st.fixed_dictionaries(
        {"action_requests": st.lists(_request_like, min_size=1, max_size=3) | garbage},
        optional={"kind": garbage, "data": json_objects | garbage},
    )
    | garbage
)
_state_fields = {
    "agent_id": _text | garbage,
    "messages": st.lists(_message_like, min_size=1, max_size=3) | garbage,
    "todos": st.lists(_todo_like, min_size=1, max_size=3) | garbage,
    "metadata": json_objects | garbage,
    "interrupt": _interrupt_like,
}


def _assert_state_or_state_error(data: Any) -> None:
    try:
        state = State.from_dict(data)
    except StateError:
        return
    assert isinstance(state, State)
    # Whatever was accepted is a real state: it serialises, and reading it again is stable.
    again = State.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state


@given(garbage | st.fixed_dictionaries({"version": st.just(1) | garbage}, optional=_state_fields))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_from_dict_on_garbage_returns_a_state_or_raises_state_error(data: Any) -> None:
    _assert_state_or_state_error(data)


@pytest.mark.parametrize("field", sorted(_state_fields))
@given(data=st.data())
@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
def test_from_dict_on_one_garbage_field_returns_a_state_or_raises_state_error(
    field: str, data: st.DataObject
) -> None:
    _assert_state_or_state_error({"version": 1, field: data.draw(_state_fields[field])})
