"""Tests for the question side of ``sagents._interrupt``: ``Question``, the ``answer`` and
``respond`` decisions, and the JSON an approval keeps (issue 15, items 1 and 6)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sagents import ActionRequest, Answer, Interrupt, InvalidDecision, Question, Respond, State
from sagents._errors import StateError
from sagents._interrupt import parse_decisions

CHOICE = Question(question="Which?", type="single_choice", choices=("a", "b"), recommended="a")
ASKING = ActionRequest(
    tool_call_id="q1",
    name="ask_user",
    arguments={"questions": [CHOICE.to_dict()]},
    allowed_decisions=("answer", "respond", "reject"),
    questions=(CHOICE,),
)
APPROVAL = ActionRequest(tool_call_id="c1", name="write_file", arguments={"file_path": "/a"})


def test_an_approval_s_json_is_unchanged() -> None:
    assert set(APPROVAL.to_dict()) == {
        "tool_call_id",
        "name",
        "arguments",
        "allowed_decisions",
        "description",
    }
    assert APPROVAL.allowed_decisions == ("approve", "edit", "reject")


def test_a_question_interrupt_round_trips_through_a_stored_state() -> None:
    interrupt = Interrupt(action_requests=(ASKING,), kind="question")
    data = json.loads(json.dumps(State(interrupt=interrupt).to_dict()))
    assert data["interrupt"]["action_requests"][0]["questions"] == [
        {
            "question": "Which?",
            "type": "single_choice",
            "choices": ["a", "b"],
            "recommended": "a",
            "allow_other": False,
        }
    ]
    assert State.from_dict(data).interrupt == interrupt


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"question": "Q", "type": "poll"}, "'type'"),
        ({"question": "Q", "choices": "a,b"}, "list of strings"),
        ({"question": "Q", "choices": ["a", 1]}, "non-empty strings"),
        ({"question": "Q", "type": "multiple_choice", "choices": ["a"]}, "two choices"),
        ({"question": "Q", "allow_other": "yes"}, "allow_other"),
        ({"question": "Q", "recommended": 3}, "recommended"),
        ({"question": 3}, "'question'"),
        ({"question": "Q", "colour": "red"}, "unknown question field"),
        ({"question": "Q", "choices": [str(i) for i in range(21)]}, "at most 20"),
        ({"question": "x" * 2001}, "longer than 2000"),
    ],
)
def test_a_malformed_question_is_a_state_error(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(StateError, match=problem):
        Question.from_dict(data)


def test_stored_questions_are_checked_when_a_state_loads() -> None:
    data = ASKING.to_dict()
    data["questions"] = [{"question": "Q", "type": "single_choice", "choices": []}]
    with pytest.raises(StateError, match="two choices"):
        ActionRequest.from_dict(data)
    data["questions"] = "Which?"
    with pytest.raises(StateError, match="questions"):
        ActionRequest.from_dict(data)


def test_a_free_text_question_takes_suggestions_and_any_recommended_text() -> None:
    question = Question(question="Name?", choices=("Atlas",), recommended="Atlas")
    assert not question.is_choice
    [answer] = parse_decisions(
        Interrupt(action_requests=(_asking(question),)), [Answer(["Something else"])]
    )
    assert answer == Answer(answers=["Something else"])


def _asking(*questions: Question) -> ActionRequest:
    return ActionRequest(
        tool_call_id="q",
        name="ask_user",
        arguments={},
        allowed_decisions=("answer",),
        questions=questions,
    )


def test_answers_are_normalised_to_plain_lists() -> None:
    multi = Question(question="Which?", type="multiple_choice", choices=("a", "b"))
    [answer] = parse_decisions(
        Interrupt(action_requests=(_asking(CHOICE, multi),)), [Answer(("a", ("b", "a")))]
    )
    assert answer == Answer(answers=["a", ["b", "a"]])


def test_an_answer_needs_questions() -> None:
    request = ActionRequest(
        tool_call_id="c", name="x", arguments={}, allowed_decisions=("answer", "approve")
    )
    with pytest.raises(InvalidDecision, match="asks no question"):
        parse_decisions(Interrupt(action_requests=(request,)), [Answer(["a"])])


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"type": "answer", "answers": ["a"], "arguments": {}}, "only an edit"),
        ({"type": "approve", "answers": ["a"]}, "only an answer"),
        ({"type": "answer", "message": "a"}, "only a reject or respond"),
        (Answer(["a"], type="respond"), "must have type 'answer'"),  # type: ignore[arg-type]
        (Respond("a", type="answer"), "must have type 'respond'"),  # type: ignore[arg-type]
    ],
)
def test_decision_fields_belong_to_their_type(raw: Any, match: str) -> None:
    with pytest.raises(InvalidDecision, match=match):
        parse_decisions(Interrupt(action_requests=(ASKING,)), [raw])


def test_respond_takes_text() -> None:
    request = ActionRequest(
        tool_call_id="c", name="x", arguments={}, allowed_decisions=("approve", "respond")
    )
    [decision] = parse_decisions(
        Interrupt(action_requests=(request,)), [{"type": "respond", "message": "done already"}]
    )
    assert decision == Respond(message="done already")
