"""Defects found by the fuzzing campaign (issue 16), each pinned by a minimal test.

Each test was first a strict ``xfail`` naming the defect's cause; once fixed, it stays here as
a regression test, its docstring saying what went wrong. A defect found later and still open
goes in as a strict ``xfail`` (it fails today; the day it is fixed it passes, which fails the
suite until the marker is removed), and the fuzz module that meets it names it among its
exclusions.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sagents import (
    Approve,
    Edit,
    FileSystemError,
    InvalidDecision,
    Reject,
    Runtime,
    State,
    StateError,
)
from sagents.middleware import FileSystem, MemoryFileStore
from sagents.persistence import MemoryPersistence, StateSnapshot
from tests.fuzz.test_decisions import Call, Waiting, interrupted_agent

# -- State.from_dict / to_dict -------------------------------------------------------------------


def _nested(depth: int) -> str:
    return '{"k": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    "template",
    [
        '{"version": 1, "metadata": {"title": %s}}',
        '{"version": 1, "interrupt": {"action_requests": [], "data": {"x": %s}}}',
        '{"version": 1, "interrupt": {"action_requests": [{"tool_call_id": "c1", '
        '"name": "write_file", "arguments": {"content": %s}}]}}',
    ],
    ids=["metadata", "interrupt-data", "arguments"],
)
def test_defect_deeply_nested_state_values_are_a_state_error(template: str) -> None:
    """Was: ``from_dict`` copied metadata, interrupt data and action-request arguments with
    ``copy.deepcopy``, which recurses: JSON nested ~350+ levels (which the parser accepts)
    raised ``RecursionError`` instead of a ``StateError``."""
    data = json.loads(template % _nested(600))  # stored JSON: the parser takes it
    try:
        state = State.from_dict(data)
    except StateError:
        return
    except RecursionError:
        state = None
    if state is None:
        # Reported outside the handler and without a traceback: pytest takes a minute to
        # format the RecursionError's thousand frames.
        pytest.fail("State.from_dict raised RecursionError", pytrace=False)
    assert State.from_dict(state.to_dict()) == state  # accepting it is fine too


def test_defect_a_state_holding_deep_metadata_is_refused_or_round_trips() -> None:
    """Was: ``State()`` and ``State.with_metadata`` accepted metadata of any depth, but
    ``State.to_dict`` copies it with ``copy.deepcopy``: nested ~350+ levels it raised
    ``RecursionError``, so an agent whose middleware or tool kept such a value could not be
    exported or auto-saved (``AutoSave`` calls ``to_dict``)."""
    deep: Any = 1
    for _ in range(600):
        deep = {"k": deep}
    try:
        state = State().with_metadata("notes", deep)
    except StateError:
        return  # refusing it is a fix
    try:
        data = state.to_dict()
    except RecursionError:
        data = None
    if data is None:
        pytest.fail("State.to_dict raised RecursionError", pytrace=False)  # no 1,000 frames
    assert State.from_dict(data) == state


async def test_defect_a_deeply_nested_message_is_refused_by_save_state() -> None:
    """Was: ``State.from_dict`` accepts messages holding values nested thousands of levels deep
    (langchain takes them in content blocks, additional_kwargs, tool-call args, artifacts), and
    the stores' ``json_copy`` caught ``TypeError`` and ``ValueError`` but not the
    ``RecursionError`` of ``json.dumps``: ``save_state`` raised ``RecursionError`` instead of
    the ``StateError`` it documents for a state that is not JSON."""
    deep: Any = "leaf"
    for _ in range(3_000):
        deep = [deep]
    data = {"version": 1, "messages": [{"type": "ai", "data": {"content": "", "x": deep}}]}
    try:
        state = State.from_dict(data)
    except StateError:
        return  # refusing it when loading is a fix
    store = MemoryPersistence()
    await store.create_conversation(None, conversation_id="c1")
    snapshot = StateSnapshot(
        state=state, version=1, base_version=None, unchanged_prefix=0, lease_token=None
    )
    recursed = False
    try:
        await store.save_state(None, "c1", snapshot)
    except StateError:
        return  # refusing it when saving, as documented, is a fix
    except RecursionError:
        recursed = True
    if recursed:  # reported outside the handler, without the thousand frames
        pytest.fail("MemoryPersistence.save_state raised RecursionError", pytrace=False)


_MEGABYTE = "x" * 1_000_000


@pytest.mark.parametrize(
    "data",
    [
        {"version": _MEGABYTE},
        {"version": 1, _MEGABYTE: 1},
        {"version": 1, "todos": [{"content": "x", "status": _MEGABYTE}]},
        {"version": 1, "todos": [{"content": "x", _MEGABYTE: 1}]},
        {"version": 1, "messages": [{"type": _MEGABYTE, "data": {"content": "x"}}]},
        {"version": 1, "interrupt": {"action_requests": [{"arguments": {"a": _MEGABYTE}}]}},
        {
            "version": 1,
            "interrupt": {
                "action_requests": [
                    {
                        "tool_call_id": "c",
                        "name": "n",
                        "arguments": {},
                        "allowed_decisions": [_MEGABYTE],
                    }
                ]
            },
        },
    ],
    ids=["version", "unknown-key", "todo-status", "todo-key", "message-type", "request", "allowed"],
)
def test_defect_state_error_messages_never_quote_huge_values_whole(data: dict[str, Any]) -> None:
    """Was: ``StateError`` messages quoted the offending value whole (a 1 MB string made a
    1 MB message): the version and unknown-key checks of ``State.from_dict``, the todo status
    check, ``ActionRequest.from_dict``, and langchain's unknown-message-type error."""
    with pytest.raises(StateError) as info:
        State.from_dict(data)
    size = len(str(info.value))  # a name, so a failure does not print the megabyte
    assert size < 10_000


@pytest.mark.parametrize(
    ("where", "field", "value"),
    [
        ("request", "tool_call_id", None),
        ("request", "tool_call_id", {"id": "c1"}),
        ("request", "name", 5),
        ("request", "description", 5),
        ("request", "colour", "blue"),
        ("interrupt", "kind", ["sub_agent"]),
        ("interrupt", "colour", "blue"),
    ],
)
def test_defect_interrupt_fields_of_the_wrong_type_are_refused_not_coerced(
    where: str, field: str, value: Any
) -> None:
    """Was: ``ActionRequest.from_dict`` and ``Interrupt.from_dict`` coerced instead of
    validating: ``str(None)`` made a null ``tool_call_id`` the id ``"None"``, ``str()`` turned
    a number or a list into a name or kind, a non-string description was kept, and unknown
    keys were dropped silently (the state and todos refuse theirs)."""
    request: dict[str, Any] = {"tool_call_id": "c1", "name": "delete", "arguments": {}}
    interrupt: dict[str, Any] = {"action_requests": [request]}
    (request if where == "request" else interrupt)[field] = value
    with pytest.raises(StateError):
        State.from_dict({"version": 1, "interrupt": interrupt})


# -- AgentHandle.resume --------------------------------------------------------------------------


async def _waiting(runtime: Runtime, *allowed: str) -> Waiting:
    return await interrupted_agent(runtime, [Call("delete", "/notes/a.md", allowed)])


@pytest.mark.parametrize(
    ("decision", "allowed"),
    [
        (Edit(arguments={"path": "/etc/passwd"}, type="approve"), ("approve", "reject")),  # type: ignore[arg-type]
        (Reject(message="no", type="approve"), ("approve",)),  # type: ignore[arg-type]
        (Approve(type="reject"), ("reject",)),  # type: ignore[arg-type]
    ],
    ids=["edit-as-approve", "reject-as-approve", "approve-as-reject"],
)
async def test_defect_a_decision_whose_type_disagrees_with_its_class_is_refused(
    decision: Any, allowed: tuple[str, ...]
) -> None:
    """Was: ``parse_decisions`` checked ``decision.type`` against the allowed decisions while
    the run applies a decision by its class, and the dataclasses let a caller set ``type``:
    ``Edit(type="approve")`` ran the tool with edited arguments where edits are not allowed."""
    async with Runtime() as runtime:
        waiting = await _waiting(runtime, *allowed)
        with pytest.raises(InvalidDecision):
            await waiting.handle.resume([decision])
        assert waiting.ran == {}


@pytest.mark.parametrize(
    "arguments",
    [{"path": float("nan")}, {"path": {"/a", "/b"}}, {"path": b"/a"}, {"path": "/a", 1: 2}],
    ids=["nan", "set", "bytes", "int-key"],
)
async def test_defect_edit_arguments_that_are_not_json_are_refused(
    arguments: dict[Any, Any],
) -> None:
    """Was: edited arguments only had to be a dict; NaN, sets, bytes or non-string keys went
    into the AI message's tool call, after which every save of the state failed (the stores:
    ``StateError`` "cannot be stored as JSON", logged as "agent_persistence.save failed") and
    a restart lost the turns since. The web edge checked this; ``resume()`` did not."""
    async with Runtime() as runtime:
        waiting = await _waiting(runtime, "approve", "edit", "reject")
        with pytest.raises(InvalidDecision):
            await waiting.handle.resume([Edit(arguments=arguments)])


async def test_defect_resume_with_none_is_an_invalid_decision() -> None:
    """Was: ``resume(None)`` reached ``Run(decisions=None)``, which reads None as "no
    decisions", and raised ``InvalidTransition`` "the state has a pending interrupt: resume it
    with decisions" to a caller who did call resume."""
    async with Runtime() as runtime:
        waiting = await _waiting(runtime, "approve")
        with pytest.raises(InvalidDecision):
            await waiting.handle.resume(None)  # type: ignore[arg-type]


# -- FileSystem ----------------------------------------------------------------------------------


async def _find(pattern: str, *, case_sensitive: bool = True) -> str:
    store = MemoryFileStore()
    await store.write("/a.txt", "alpha\nbeta\n")
    find = next(t for t in FileSystem(store).tools() if t.name == "find_in_file")
    result = await find.ainvoke(
        {"file_path": "/a.txt", "pattern": pattern, "case_sensitive": case_sensitive}
    )
    return str(result)


@pytest.mark.parametrize("pattern", ["\ud800", "a|\udfff"])
async def test_defect_a_pattern_with_a_lone_surrogate_is_a_filesystem_error(pattern: str) -> None:
    """Was: the pattern went to ``re2.compile``, which encodes it as UTF-8, so a lone surrogate
    (``"\\ud800"`` in a model's JSON tool call) raised ``UnicodeEncodeError`` out of the tool."""
    with pytest.raises(FileSystemError):
        await _find(pattern)


async def test_defect_a_huge_pattern_is_refused() -> None:
    """Was: neither the pattern's length nor RE2's memory was bounded, and matching costs the
    pattern's size times the text's: a 100,000-character pattern, case-insensitive, took ~27 s
    over 73 kB of text (minutes over a 1 MB file) in a worker thread no tool timeout can stop,
    and a few such calls filled the default executor DiskFileStore's disk work also uses."""
    with pytest.raises(FileSystemError):
        await _find("a" * 100_000, case_sensitive=False)
