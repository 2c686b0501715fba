"""From AG-UI input to what the agent does (``sagents/agui/_input.py``): new messages, resume
entries and the protocol's coverage rule."""

from __future__ import annotations

from typing import Any

import pytest
from ag_ui.core import ResumeEntry, RunAgentInput
from langchain_core.messages import AIMessage, HumanMessage

from sagents import State
from sagents._errors import InvalidDecision
from sagents._interrupt import QUESTION_DECISIONS, ActionRequest, Interrupt, Question
from sagents.agui import CANCELLED_MESSAGE, decision_from_entry, plan_run
from sagents.agui._input import UnsupportedInput, user_texts

WRITE = ActionRequest(tool_call_id="c1", name="write_file", arguments={"file_path": "/a"})
DELETE = ActionRequest(tool_call_id="c2", name="delete_file", arguments={"file_path": "/b"})
ASK = ActionRequest(
    tool_call_id="q1",
    name="ask_user",
    arguments={},
    allowed_decisions=QUESTION_DECISIONS,
    questions=(Question(question="Which?", type="single_choice", choices=("a", "b")),),
)
HISTORY = [HumanMessage("Hi", id="u1"), AIMessage("Hello", id="a1")]


def run_input(messages: list[dict[str, Any]], resume: list[dict[str, Any]] | None = None) -> Any:
    return RunAgentInput.model_validate(
        {"threadId": "t", "runId": "r", "messages": messages, "resume": resume}
    )


def user(id: str, content: Any) -> dict[str, Any]:
    return {"id": id, "role": "user", "content": content}


def entry(id: str, payload: Any = None, status: str = "resolved") -> ResumeEntry:
    return ResumeEntry(interrupt_id=id, status=status, payload=payload)  # type: ignore[arg-type]


def test_new_messages_are_the_users_at_the_end_that_the_agent_has_not_seen() -> None:
    messages = [
        user("u1", "Hi"),
        {"id": "a1", "role": "assistant", "content": "Hello"},
        user("u2", "More"),
        user("u3", [{"type": "text", "text": "and "}, {"type": "text", "text": "more"}]),
    ]
    plan = plan_run(run_input(messages), State(messages=HISTORY))
    assert [(m.id, m.content) for m in plan.messages] == [("u2", "More"), ("u3", "and more")]
    assert plan.runs
    assert plan.decisions is None
    # A client that knows nothing of the conversation sends only its new message.
    plan = plan_run(run_input([user("u9", "New")]), State(messages=HISTORY))
    assert [m.id for m in plan.messages] == ["u9"]
    # A client that sends what the agent has already: nothing new, nothing runs.
    plan = plan_run(run_input([user("u1", "Hi")]), State(messages=HISTORY))
    assert plan.messages == []
    assert not plan.runs


def test_a_message_that_is_not_text_is_refused() -> None:
    image = {"type": "image", "source": {"type": "url", "value": "https://x/y.png"}}
    with pytest.raises(UnsupportedInput, match="only text"):
        user_texts(run_input([user("u1", [image])]))


def test_resume_entries_become_one_decision_per_pending_call_in_order() -> None:
    state = State(messages=HISTORY, interrupt=Interrupt(action_requests=(WRITE, DELETE)))
    resume = [
        {"interruptId": "c2", "status": "resolved", "payload": {"type": "reject", "message": "no"}},
        {"interruptId": "c1", "status": "resolved", "payload": {"type": "approve"}},
        {"interruptId": "elsewhere", "status": "resolved"},  # ignored, with a warning
    ]
    plan = plan_run(run_input([user("u1", "Hi")], resume), state)
    assert plan.decisions == [{"type": "approve"}, {"type": "reject", "message": "no"}]
    assert plan.messages == []
    assert plan.runs


def test_an_uncovered_interrupt_stays_open_and_nothing_runs() -> None:
    state = State(messages=HISTORY, interrupt=Interrupt(action_requests=(WRITE, DELETE)))
    resume = [{"interruptId": "c1", "status": "resolved", "payload": {"type": "approve"}}]
    plan = plan_run(run_input([user("u5", "Do it")], resume), state)
    assert plan.still_open
    assert not plan.runs
    assert plan.messages == []  # the new message is not taken while the approval is open
    assert plan_run(run_input([user("u5", "Do it")]), state).still_open


def test_cancelled_entries_dismiss_or_give_way_to_a_new_message() -> None:
    state = State(messages=HISTORY, interrupt=Interrupt(action_requests=(WRITE,)))
    cancelled = [{"interruptId": "c1", "status": "cancelled"}]
    plan = plan_run(run_input([user("u1", "Hi")], cancelled), state)
    assert plan.dismiss
    assert not plan.runs
    plan = plan_run(run_input([user("u6", "Something else")], cancelled), state)
    assert not plan.dismiss
    assert [m.id for m in plan.messages] == ["u6"]
    assert plan.decisions is None
    # Some cancelled, some decided: the cancelled calls are rejected.
    two = State(messages=HISTORY, interrupt=Interrupt(action_requests=(WRITE, DELETE)))
    mixed = [*cancelled, {"interruptId": "c2", "status": "resolved", "payload": True}]
    plan = plan_run(run_input([user("u1", "Hi")], mixed), two)
    assert plan.decisions == [{"type": "reject", "message": CANCELLED_MESSAGE}, {"type": "approve"}]


@pytest.mark.parametrize(
    ("payload", "decision"),
    [
        (None, {"type": "approve"}),
        (True, {"type": "approve"}),
        (False, {"type": "reject"}),
        ("approve", {"type": "approve"}),
        (
            {"type": "edit", "arguments": {"file_path": "/c"}},
            {"type": "edit", "arguments": {"file_path": "/c"}},
        ),
        ({"approved": True}, {"type": "approve"}),
        ({"approved": True, "editedArgs": {"x": 1}}, {"type": "edit", "arguments": {"x": 1}}),
        ({"approved": False, "reason": "no"}, {"type": "reject", "message": "no"}),
        ({"approved": False}, {"type": "reject"}),
    ],
)
def test_approval_payloads(payload: Any, decision: dict[str, Any]) -> None:
    assert decision_from_entry(WRITE, entry("c1", payload)) == decision


@pytest.mark.parametrize(
    ("payload", "decision"),
    [
        ("a", {"type": "answer", "answers": ["a"]}),
        (["b"], {"type": "answer", "answers": ["b"]}),
        ({"answers": ["a"]}, {"type": "answer", "answers": ["a"]}),
        ({"type": "respond", "message": "later"}, {"type": "respond", "message": "later"}),
    ],
)
def test_question_payloads(payload: Any, decision: dict[str, Any]) -> None:
    assert decision_from_entry(ASK, entry("q1", payload)) == decision


@pytest.mark.parametrize("payload", [42, "maybe", {"yes": 1}, {"approved": "yes"}])
def test_a_payload_that_is_no_decision_is_refused(payload: Any) -> None:
    with pytest.raises(InvalidDecision, match="responseSchema"):
        decision_from_entry(WRITE, entry("c1", payload))
