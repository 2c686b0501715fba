"""Tests for ``sagents._interrupt``: interrupts and human decisions (L4, X24)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagents._errors import InvalidDecision, SagentsError, StateError
from sagents._interrupt import (
    ActionRequest,
    Approve,
    Edit,
    Interrupt,
    Reject,
    parse_decisions,
)


def _interrupt(*requests: ActionRequest) -> Interrupt:
    return Interrupt(action_requests=requests)


WRITE = ActionRequest(tool_call_id="c1", name="write_file", arguments={"file_path": "/a"})
RUN = ActionRequest(
    tool_call_id="c2",
    name="run",
    arguments={"cmd": "ls"},
    allowed_decisions=("approve", "reject"),
    description="Run a shell command",
)


# -- Interrupt / ActionRequest -------------------------------------------------------------------


def test_action_request_allows_every_decision_by_default() -> None:
    assert WRITE.allowed_decisions == ("approve", "edit", "reject")


def test_interrupt_defaults() -> None:
    interrupt = _interrupt(WRITE)
    assert interrupt.kind == "human_approval"
    assert interrupt.data == {}


def test_interrupt_round_trips_through_json() -> None:
    interrupt = Interrupt(
        action_requests=(WRITE, RUN), kind="sub_agent", data={"sub_agent": "researcher"}
    )
    data = interrupt.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["action_requests"][1]["allowed_decisions"] == ["approve", "reject"]
    back = Interrupt.from_dict(json.loads(json.dumps(data)))
    assert back == interrupt
    assert back.action_requests[1].allowed_decisions == ("approve", "reject")


def test_from_dict_fills_defaults() -> None:
    back = Interrupt.from_dict(
        {"action_requests": [{"tool_call_id": "c1", "name": "ls", "arguments": {}}]}
    )
    assert back == _interrupt(ActionRequest(tool_call_id="c1", name="ls", arguments={}))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=6,
)
_objects = st.dictionaries(st.text(max_size=5), _json, max_size=3)
interrupts = st.builds(
    Interrupt,
    action_requests=st.lists(
        st.builds(
            ActionRequest,
            tool_call_id=st.text(),
            name=st.text(),
            arguments=_objects,
            allowed_decisions=st.lists(st.sampled_from(["approve", "edit", "reject"])).map(tuple),
            description=st.none() | st.text(),
        ),
        max_size=3,
    ).map(tuple),
    kind=st.text(),
    data=_objects,
)


@given(interrupts)
def test_every_interrupt_round_trips(interrupt: Interrupt) -> None:
    data = json.loads(json.dumps(interrupt.to_dict()))
    assert Interrupt.from_dict(data) == interrupt


@pytest.mark.parametrize(
    "data",
    [
        "pending",
        None,
        [],
        {},
        {"action_requests": {"0": {}}},
        {"action_requests": [], "data": "x"},
        {"action_requests": [{"name": "ls", "arguments": {}}]},
        {"action_requests": [{"tool_call_id": "c1", "arguments": {}}]},
        {"action_requests": [{"tool_call_id": "c1", "name": "ls"}]},
        {"action_requests": [{"tool_call_id": "c1", "name": "ls", "arguments": 3}]},
        {
            "action_requests": [
                {
                    "tool_call_id": "c1",
                    "name": "ls",
                    "arguments": {},
                    "allowed_decisions": ["approve", "maybe"],
                }
            ]
        },
        {"action_requests": ["c1"]},
        {"action_requests": [None]},
    ],
)
def test_malformed_interrupts_raise_state_error(data: Any) -> None:
    with pytest.raises(StateError):
        Interrupt.from_dict(data)


# -- parse_decisions -----------------------------------------------------------------------------


def test_dict_decisions_are_parsed_in_order() -> None:
    interrupt = _interrupt(WRITE, WRITE, WRITE)
    parsed = parse_decisions(
        interrupt,
        [
            {"type": "approve"},
            {"type": "edit", "arguments": {"file_path": "/b"}},
            {"type": "reject", "message": "not that file"},
        ],
    )
    assert parsed == (
        Approve(),
        Edit(arguments={"file_path": "/b"}),
        Reject(message="not that file"),
    )


def test_dataclass_decisions_pass_through() -> None:
    decisions = (Approve(), Edit(arguments={"x": 1}), Reject())
    assert parse_decisions(_interrupt(WRITE, WRITE, WRITE), list(decisions)) == decisions


def test_a_tuple_of_decisions_is_accepted() -> None:
    assert parse_decisions(_interrupt(WRITE), (Approve(),)) == (Approve(),)


def test_dicts_and_dataclasses_can_be_mixed() -> None:
    parsed = parse_decisions(_interrupt(WRITE, RUN), [Approve(), {"type": "reject"}])
    assert parsed == (Approve(), Reject())


def test_reject_message_is_optional() -> None:
    assert parse_decisions(_interrupt(RUN), [{"type": "reject"}]) == (Reject(message=None),)


def test_no_pending_calls_take_no_decisions() -> None:
    assert parse_decisions(_interrupt(), []) == ()


@pytest.mark.parametrize("count", [0, 1, 3])
def test_wrong_count_says_what_is_expected(count: int) -> None:
    with pytest.raises(InvalidDecision) as info:
        parse_decisions(_interrupt(WRITE, RUN), [{"type": "approve"}] * count)
    message = str(info.value)
    assert "expected 2" in message
    assert f"got {count}" in message
    assert "write_file" in message
    assert "run" in message


@pytest.mark.parametrize("decision", [{"type": "edit", "arguments": {"cmd": "rm"}}, Edit({"a": 1})])
def test_disallowed_decision_type_names_the_allowed_ones(decision: Any) -> None:
    with pytest.raises(InvalidDecision) as info:
        parse_decisions(_interrupt(WRITE, RUN), [Approve(), decision])
    message = str(info.value)
    assert "decision 1" in message
    assert "'run'" in message
    assert "'edit' is not allowed" in message
    assert "approve, reject" in message


def test_allowed_types_pass_for_a_restricted_request() -> None:
    assert parse_decisions(_interrupt(RUN), [{"type": "approve"}]) == (Approve(),)


@pytest.mark.parametrize(
    "decision",
    [
        {"type": "edit"},
        {"type": "edit", "arguments": None},
        {"type": "edit", "arguments": ["a", 1]},
        {"type": "edit", "arguments": "file_path=/b"},
        Edit(arguments="file_path=/b"),  # type: ignore[arg-type]
    ],
)
def test_malformed_edit_asks_for_arguments_as_an_object(decision: Any) -> None:
    with pytest.raises(InvalidDecision, match="arguments") as info:
        parse_decisions(_interrupt(WRITE, WRITE), [Approve(), decision])
    assert "decision 1" in str(info.value)


@pytest.mark.parametrize(
    "decision",
    [{"type": "reject", "message": 3}, Reject(message=["no"])],  # type: ignore[arg-type]
)
def test_reject_message_must_be_a_string(decision: Any) -> None:
    with pytest.raises(InvalidDecision, match="message"):
        parse_decisions(_interrupt(WRITE), [decision])


@pytest.mark.parametrize("kind", ["maybe", "APPROVE", None, 1])
def test_unknown_type_lists_the_known_ones(kind: Any) -> None:
    with pytest.raises(InvalidDecision) as info:
        parse_decisions(_interrupt(WRITE), [{"type": kind}])
    message = str(info.value)
    assert "decision 0" in message
    for known in ("approve", "edit", "reject"):
        assert known in message


def test_missing_type_is_rejected() -> None:
    with pytest.raises(InvalidDecision, match="approve"):
        parse_decisions(_interrupt(WRITE), [{"message": "hm"}])


def test_unknown_fields_are_named() -> None:
    with pytest.raises(InvalidDecision, match="reason") as info:
        parse_decisions(_interrupt(WRITE), [{"type": "approve", "reason": "looks fine"}])
    assert "decision 0" in str(info.value)


@pytest.mark.parametrize("decision", ["approve", 1, None, ["approve"], ("approve",)])
def test_non_decision_items_are_rejected(decision: Any) -> None:
    with pytest.raises(InvalidDecision, match="decision 0"):
        parse_decisions(_interrupt(WRITE), [decision])


@pytest.mark.parametrize(
    "decisions",
    [
        {"type": "approve"},
        Approve(),
        None,
        42,
        (d for d in [Approve()]),
        # Strings are sequences, but never a list of decisions; the message must not talk about
        # counting characters.
        "approve",
        "a",
        b"a",
    ],
)
def test_non_list_input_asks_for_a_list(decisions: Any) -> None:
    with pytest.raises(InvalidDecision, match="list"):
        parse_decisions(_interrupt(WRITE), decisions)


def test_invalid_decision_is_a_sagents_error_but_not_a_state_error() -> None:
    assert issubclass(InvalidDecision, SagentsError)
    assert not issubclass(InvalidDecision, StateError)


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "approve", "arguments": {"path": "/x"}},
        {"type": "reject", "arguments": {}},
        {"type": "approve", "message": "fine"},
        {"type": "edit", "arguments": {}, "message": "m"},
    ],
)
def test_fields_of_another_decision_type_are_refused_not_dropped(raw: dict[str, Any]) -> None:
    with pytest.raises(InvalidDecision, match="only an? "):
        parse_decisions(_interrupt(WRITE), [raw])
