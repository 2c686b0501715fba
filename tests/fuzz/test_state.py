"""Fuzzing ``State.from_dict``: stored data is a real state or a ``StateError``, nothing else.

``tests/test_state.py`` already feeds garbage of the right outer shape; this module feeds what a
database, a migration or a hostile client can really hold: NaN and infinities, integers past 64
bits, NUL, lone surrogates, megabyte strings, long lists, nested values, unknown message kinds,
extra and missing keys at every level, and Python values JSON has no word for. Most inputs are
*mutations* of a valid state's dict (a few random edits anywhere in its tree), so the validators
deep inside — messages, todos, interrupts — are reached and fed the bad value.

The contract checked everywhere:

* ``from_dict`` returns a ``State`` or raises ``StateError`` (or a subclass) with a message;
* it never changes the dict it was given;
* whatever it accepts is a real state: ``from_dict(to_dict(s)) == s``;
* valid states with hostile but legal content round-trip, also through JSON text.

Nesting in the random trees is bounded at :data:`MAX_DEPTH` levels, because the harness itself
recurses (copying, comparing, hypothesis printing an example); the metadata of valid states
stays within the 100 levels a state allows.
:func:`test_values_nested_at_any_depth_load_or_raise_state_error` goes to 3,000 levels in every
field that holds JSON, building the values in a loop.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from sagents import ActionRequest, Interrupt, State, StateError, Todo, TodoStatus
from tests.fuzz import fuzz_settings

#: The deepest nesting generated (see the module docstring).
MAX_DEPTH = 100

# -- hostile values ------------------------------------------------------------------------------

_odd_chars = st.sampled_from(
    ["\x00", "\x01", "\x7f", "\x85", "\u2028", "\ufeff", "\U0010ffff", "\ud800", "\udfff", "é"]
)
#: Unicode text including lone surrogates (hypothesis leaves them out by default) and NUL.
hostile_text = st.text(st.characters() | st.characters(categories=["Cs"]) | _odd_chars, max_size=24)
#: Strings of 10 kB to 1 MB, cheap to build.
huge_text = st.builds(
    lambda char, size: char * size,
    st.sampled_from(["x", "\x00", "é", "\ud800", "🦀"]),
    st.sampled_from([10_000, 200_001, 1_000_000]),
)
hostile_numbers = (
    st.integers()
    | st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**100, -(10**100)])
    | st.floats()  # NaN, infinities and -0.0 included
)
json_scalars = st.none() | st.booleans() | hostile_numbers | hostile_text
#: Values a Python caller may pass although JSON cannot hold them (each compares by value, so
#: an accepted state holding one still round-trips).
python_values = st.sampled_from(
    [
        b"bytes",
        (1, "tuple"),
        frozenset({1, 2}),
        {3, 4},
        datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
        decimal.Decimal("1.5"),
        1j,
        ...,
    ]
)


@st.composite
def deep_values(draw: st.DrawFn, max_depth: int = MAX_DEPTH) -> Any:
    """A value nested 1 to ``max_depth`` levels deep (built in a loop, not by recursion)."""
    depth = draw(st.integers(1, max_depth))
    shape = draw(st.sampled_from(["dict", "list", "both"]))
    value: Any = draw(json_scalars)
    for level in range(depth):
        as_dict = shape == "dict" or (shape == "both" and level % 2 == 0)
        value = {"k": value} if as_dict else [value]
    return value


@st.composite
def long_lists(draw: st.DrawFn) -> list[Any]:
    """One value repeated up to 2,000 times."""
    item = draw(json_scalars | st.builds(dict, content=st.just("x")))
    return [copy.copy(item) for _ in range(draw(st.integers(100, 2_000)))]


_keys = hostile_text | st.sampled_from(
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
        "name",
        "tool_calls",
        "invalid_tool_calls",
        "tool_call_chunks",
        "tool_call_id",
        "args",
        "additional_kwargs",
        "response_metadata",
        "usage_metadata",
        "artifact",
        "role",
        "example",
        "action_requests",
        "arguments",
        "allowed_decisions",
        "description",
        "kind",
    ]
)
hostile_json = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=12,
)
#: Anything a field could be found holding.
hostile_values = (
    hostile_json | deep_values() | huge_text | long_lists() | python_values | st.builds(dict)
)

# -- valid states with hostile but legal content -------------------------------------------------

_content_text = hostile_text | huge_text
_nonblank = hostile_text.filter(str.strip)
_json_object = st.dictionaries(hostile_text, hostile_json | deep_values(), max_size=4)
#: Metadata a state accepts: at most 100 levels (``State``'s bound), the object included.
_metadata = st.dictionaries(hostile_text, hostile_json | deep_values(98), max_size=4)
_tool_calls = st.lists(
    st.fixed_dictionaries(
        {"name": hostile_text, "args": _json_object, "id": st.none() | _nonblank}
    ),
    max_size=3,
)
valid_messages = st.one_of(
    st.builds(HumanMessage, content=_content_text),
    st.builds(SystemMessage, content=_content_text),
    st.builds(
        lambda text, calls: AIMessage(content=text, tool_calls=calls), _content_text, _tool_calls
    ),
    st.builds(
        ToolMessage,
        content=_content_text,
        tool_call_id=_nonblank,
        status=st.sampled_from(["success", "error"]),
    ),
)
valid_todos = st.builds(
    Todo, content=_nonblank | huge_text, status=st.sampled_from(TodoStatus), id=_nonblank
)
_decisions = st.lists(st.sampled_from(["approve", "edit", "reject"]), min_size=1, unique=True)
valid_interrupts = st.builds(
    Interrupt,
    action_requests=st.lists(
        st.builds(
            ActionRequest,
            tool_call_id=hostile_text,
            name=hostile_text,
            arguments=_json_object,
            allowed_decisions=_decisions.map(tuple),
            description=st.none() | hostile_text,
        ),
        max_size=3,
    ).map(tuple),
    kind=hostile_text,
    data=_json_object,
)
valid_states = st.builds(
    State,
    messages=st.lists(valid_messages, max_size=5)
    | st.integers(100, 1_000).map(lambda n: [HumanMessage("again")] * n),
    todos=st.lists(valid_todos, max_size=4),
    metadata=_metadata,
    interrupt=st.none() | valid_interrupts,
    agent_id=st.none() | hostile_text | huge_text,
)

# -- mutations -----------------------------------------------------------------------------------

Path = tuple[Any, ...]


def _containers(value: Any, path: Path = ()) -> Iterator[Path]:
    """The path of every dict and list in a JSON tree, the root included."""
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(item, dict | list):
            yield from _containers(item, (*path, key))


def _at(root: Any, path: Path) -> Any:
    for key in path:
        root = root[key]
    return root


def _hostile(data: st.DataObject) -> Any:
    # A copy: the edits below change the dicts and lists they reach, and a value drawn from a
    # strategy may be shared with later examples.
    return copy.deepcopy(data.draw(hostile_values, label="value"))


def mutate(data: st.DataObject, base: dict[str, Any]) -> Any:
    """``base`` (a state's dict) after one to four random edits anywhere in its tree.

    Each edit first picks a top-level field, then a dict or list inside it, so that a state
    with a thousand messages still gets its todos and interrupt edited as often.
    """
    root: Any = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        if not isinstance(root, dict | list):
            break
        places: dict[Any, list[Path]] = {}
        for path in _containers(root):
            places.setdefault(path[0] if path else None, []).append(path)
        # The root (None) is one choice in about nine: its own checks are few.
        fields = [name for name in places if name is not None] * 2 + [None]
        field = data.draw(st.sampled_from(fields), label="field")
        path = data.draw(st.sampled_from(places[field]), label="where")
        target = _at(root, path)
        operation = data.draw(
            st.sampled_from(["set", "add", "delete", "replace", "wrap"]), label="edit"
        )
        if operation == "replace" or (operation == "wrap" and path):
            new = _hostile(data) if operation == "replace" else [target]
            if not path:
                root = new
            else:
                _at(root, path[:-1])[path[-1]] = new
        elif operation == "delete" and target:
            keys = list(target) if isinstance(target, dict) else list(range(len(target)))
            del target[data.draw(st.sampled_from(keys), label="key")]
        elif isinstance(target, dict):
            keys = list(target) if operation == "set" and target else []
            key = data.draw(st.sampled_from(keys) if keys else _keys, label="key")
            target[key] = _hostile(data)
        elif isinstance(target, list):
            value = _hostile(data)
            if operation == "set" and target:
                target[data.draw(st.integers(0, len(target) - 1), label="index")] = value
            else:
                target.append(value)
    return root


@st.composite
def spoiled(draw: st.DrawFn, valid: dict[str, Any], hostile: dict[str, Any]) -> dict[str, Any]:
    """A valid dict (from the strategies ``valid``) with zero to two fields spoiled (drawn from
    ``hostile``) and maybe one removed."""
    value = draw(st.fixed_dictionaries(valid))
    names = sorted(hostile)
    for name in draw(st.lists(st.sampled_from(names), max_size=2, unique=True)):
        value[name] = draw(hostile[name])
    if value and draw(st.booleans()):
        del value[draw(st.sampled_from(sorted(value)))]
    return value


# -- the contract --------------------------------------------------------------------------------


def assert_state_or_state_error(data: Any) -> State | None:
    """``from_dict(data)``: a state that round-trips, or a ``StateError`` with a message; and
    ``data`` left as it was."""
    before = copy.deepcopy(data)
    refusal: StateError | None = None
    state: State | None = None
    try:
        state = State.from_dict(data)
    except StateError as exc:
        refusal = exc
    assert data == before, "from_dict changed its input"
    if refusal is not None:
        assert str(refusal).strip(), "a StateError without a message"
        event(f"refused: {str(refusal)[:24]}")
    if state is not None:
        event("accepted")
        assert isinstance(state, State)
        assert State.from_dict(state.to_dict()) == state
    return state


def canonical(value: Any) -> str:
    """JSON text with sorted keys: equal for equal trees, NaN included (``NaN != NaN``)."""
    return json.dumps(value, sort_keys=True)


# -- tests ---------------------------------------------------------------------------------------


@given(base=valid_states, data=st.data())
@fuzz_settings(150)
def test_a_mutated_state_dict_loads_or_raises_state_error(base: State, data: st.DataObject) -> None:
    assert_state_or_state_error(mutate(data, base.to_dict()))


@pytest.mark.parametrize("field", ["agent_id", "messages", "todos", "metadata", "interrupt"])
@given(value=hostile_values)
@fuzz_settings(40)
def test_a_hostile_value_in_any_field_loads_or_raises_state_error(field: str, value: Any) -> None:
    assert_state_or_state_error({"version": 1, field: value})


@given(version=hostile_values | st.integers(-5, 5), extra=st.dictionaries(_keys, hostile_values))
@fuzz_settings(60)
def test_a_hostile_version_or_extra_keys_are_a_state_error(
    version: Any, extra: dict[str, Any]
) -> None:
    data = {**extra, "version": version}
    state = assert_state_or_state_error(data)
    if state is not None:
        assert type(version) is int
        assert version == 1
        assert set(extra) <= {"agent_id", "messages", "todos", "metadata", "interrupt", "version"}


_message_types = st.sampled_from(
    [
        "human",
        "ai",
        "tool",
        "system",
        "chat",
        "function",
        "remove",
        "developer",
        "AIMessageChunk",
        "HumanMessageChunk",
        "ToolMessageChunk",
        "SystemMessageChunk",
        "ChatMessageChunk",
        "FunctionMessageChunk",
        "BaseMessage",
        "Human",
        "",
    ]
)


@given(
    kind=_message_types | hostile_values,
    fields=st.dictionaries(_keys, hostile_values | hostile_text, max_size=5),
    with_content=st.booleans(),
)
@fuzz_settings(120)
def test_any_message_kind_and_fields_load_or_raise_state_error(
    kind: Any, fields: dict[Any, Any], with_content: bool
) -> None:
    if with_content:
        fields.setdefault("content", "hello")
    state = assert_state_or_state_error(
        {"version": 1, "messages": [{"type": kind, "data": fields}]}
    )
    if state is not None:
        assert all(isinstance(m, BaseMessage) for m in state.messages)


@given(
    todo=spoiled(
        {
            "content": _nonblank,
            "status": st.sampled_from([s.value for s in TodoStatus]),
            "id": _nonblank,
        },
        {
            "content": hostile_values | hostile_text,
            "status": hostile_values | hostile_text,
            "id": hostile_values | hostile_text,
            "priority": hostile_values,
        },
    )
    | hostile_values
)
@fuzz_settings(80)
def test_any_todo_loads_or_raises_state_error(todo: Any) -> None:
    state = assert_state_or_state_error({"version": 1, "todos": [{"content": "ok"}, todo]})
    if state is not None:
        loaded = state.todos[1]
        assert isinstance(loaded.content, str)
        assert loaded.content.strip()
        assert isinstance(loaded.id, str)
        assert loaded.id
        assert isinstance(loaded.status, TodoStatus)


_valid_request = {
    "tool_call_id": _nonblank,
    "name": _nonblank,
    "arguments": _json_object,
    "allowed_decisions": _decisions,
    "description": st.none() | hostile_text,
}
_hostile_request = {
    "tool_call_id": hostile_values,
    "name": hostile_values,
    "arguments": hostile_values,
    "allowed_decisions": hostile_values | st.lists(hostile_text | st.just("approve")),
    "description": hostile_values,
    "unknown": hostile_values,
}


@given(
    requests=st.lists(spoiled(_valid_request, _hostile_request) | hostile_values, max_size=3),
    interrupt=spoiled(
        {"kind": hostile_text, "data": _json_object},
        {"kind": hostile_values, "data": hostile_values, "unknown": hostile_values},
    ),
)
@fuzz_settings(100)
def test_any_interrupt_loads_or_raises_state_error(
    requests: list[Any], interrupt: dict[str, Any]
) -> None:
    state = assert_state_or_state_error(
        {"version": 1, "interrupt": {**interrupt, "action_requests": requests}}
    )
    if state is not None:
        assert state.interrupt is not None
        for loaded in state.interrupt.action_requests:
            assert isinstance(loaded.arguments, dict)
            assert set(loaded.allowed_decisions) <= {"approve", "edit", "reject"}


@given(state=valid_states)
@fuzz_settings(60)
def test_valid_states_with_hostile_content_round_trip(state: State) -> None:
    data = state.to_dict()
    assert State.from_dict(data) == state
    # Through JSON text, as a store keeps it (lone surrogates travel as escapes, NaN as NaN).
    again = State.from_dict(json.loads(json.dumps(data)))
    assert canonical(again.to_dict()) == canonical(data)
    assert [type(m) for m in again.messages] == [type(m) for m in state.messages]


def _nest(depth: int, shape: str) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value} if shape == "dict" else [value]
    return value


#: Where JSON of any shape may sit in a state, as a function of that JSON.
_DEEP_PLACES = {
    "metadata": lambda v: {"metadata": {"x": v}},
    "interrupt data": lambda v: {"interrupt": {"action_requests": [], "data": {"x": v}}},
    "arguments": lambda v: {
        "interrupt": {
            "action_requests": [{"tool_call_id": "c", "name": "n", "arguments": {"x": v}}]
        }
    },
    "content block": lambda v: {
        "messages": [{"type": "human", "data": {"content": [{"type": "text", "text": "", "x": v}]}}]
    },
    "additional_kwargs": lambda v: {
        "messages": [{"type": "ai", "data": {"content": "", "additional_kwargs": {"x": v}}}]
    },
    "tool call args": lambda v: {
        "messages": [
            {
                "type": "ai",
                "data": {"content": "", "tool_calls": [{"name": "n", "id": "1", "args": {"x": v}}]},
            }
        ]
    },
    "artifact": lambda v: {
        "messages": [{"type": "tool", "data": {"content": "", "tool_call_id": "1", "artifact": v}}]
    },
    "todo content": lambda v: {"todos": [{"content": v}]},
}


@given(
    place=st.sampled_from(sorted(_DEEP_PLACES)),
    depth=st.integers(1, 3_000) | st.sampled_from([300, 350, 400, 500, 1_000]),
    shape=st.sampled_from(["dict", "list"]),
)
@fuzz_settings(60)
def test_values_nested_at_any_depth_load_or_raise_state_error(
    place: str, depth: int, shape: str
) -> None:
    data = {"version": 1, **_DEEP_PLACES[place](_nest(depth, shape))}
    failure = None
    try:
        state = State.from_dict(data)
        State.from_dict(state.to_dict())  # what is accepted is a real state
    except StateError as exc:
        event(f"refused: {str(exc)[:30]}")
        return
    except RecursionError:
        failure = "RecursionError"
    if failure is not None:
        # Without its traceback: pytest would take a minute to format a thousand frames.
        pytest.fail(f"{place} nested {depth} deep: {failure}", pytrace=False)
    event("accepted")
