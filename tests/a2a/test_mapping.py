"""The translation between sagents and A2A, without a server: a run's events as task updates,
an interrupt as input-required, and the replies that answer it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from a2a.helpers import get_data_parts, new_data_part
from a2a.types import Message, Part, Role, TaskArtifactUpdateEvent, TaskState
from langchain_core.messages import AIMessage, AIMessageChunk

from sagents import (
    ActionRequest,
    Answer,
    Approve,
    Interrupt,
    InvalidDecision,
    Question,
    Reject,
    Respond,
    Status,
)
from sagents.a2a import decisions_from_reply
from sagents.a2a._mapping import RunMapper, input_required, interrupt_ids, user_text
from sagents.events import (
    AgentShutdown,
    LLMDeltas,
    LLMMessage,
    StatusChanged,
    ToolExecutionStarted,
)

APPROVAL = Interrupt(
    action_requests=(
        ActionRequest(tool_call_id="c1", name="write_file", arguments={"file_path": "/a"}),
    )
)


def _question(question: Question, *, respond: bool = True) -> Interrupt:
    allowed = ("answer", "respond", "reject") if respond else ("answer", "reject")
    return Interrupt(
        kind="question",
        action_requests=(
            ActionRequest(
                tool_call_id="q1",
                name="ask_user",
                arguments={},
                allowed_decisions=allowed,  # type: ignore[arg-type]
                questions=(question,),
            ),
        ),
    )


def reply(text: str | None = None, data: Any = None) -> Message:
    parts = [] if text is None else [Part(text=text)]
    if data is not None:
        parts.append(new_data_part(data))
    return Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=parts)


def _texts(message: Message) -> str:
    return "\n".join(p.text for p in message.parts if p.HasField("text"))


# -- replies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["approve", "Yes", " ok! ", "APPROVED."])
def test_an_approving_word_approves(text: str) -> None:
    assert decisions_from_reply(APPROVAL, reply(text)) == [Approve()]


@pytest.mark.parametrize(
    ("text", "reason"),
    [("reject", None), ("No", None), ("reject: not that file", "not that file")],
)
def test_a_rejecting_word_rejects_with_what_follows_as_the_reason(
    text: str, reason: str | None
) -> None:
    assert decisions_from_reply(APPROVAL, reply(text)) == [Reject(message=reason)]


@pytest.mark.parametrize("text", ["maybe", "yes, but elsewhere", ""])
def test_text_that_decides_nothing_is_refused(text: str) -> None:
    with pytest.raises(InvalidDecision):
        decisions_from_reply(APPROVAL, reply(text))


def test_text_is_the_result_where_a_call_allows_respond() -> None:
    interrupt = Interrupt(
        action_requests=(
            ActionRequest(
                tool_call_id="c1",
                name="lookup",
                arguments={},
                allowed_decisions=("approve", "respond"),
            ),
        )
    )
    assert decisions_from_reply(interrupt, reply("use 42")) == [Respond(message="use 42")]


def test_a_data_part_gives_the_decisions_with_whole_numbers_as_ints() -> None:
    data = {"decisions": [{"type": "edit", "arguments": {"file_path": "/b", "lines": 3}}]}
    (decision,) = decisions_from_reply(APPROVAL, reply("ignored", data))
    assert decision == {"type": "edit", "arguments": {"file_path": "/b", "lines": 3}}
    assert isinstance(decision["arguments"]["lines"], int)  # type: ignore[index]
    with pytest.raises(InvalidDecision):
        decisions_from_reply(APPROVAL, reply(data={"decisions": "approve"}))


def test_a_choice_is_matched_case_insensitively() -> None:
    question = Question(question="Which?", type="single_choice", choices=("basic", "pro"))
    assert decisions_from_reply(_question(question), reply("PRO")) == [Answer(answers=["pro"])]
    # Not a choice: the reply in words, where respond is allowed; refused where it is not.
    assert decisions_from_reply(_question(question), reply("neither")) == [
        Respond(message="neither")
    ]
    with pytest.raises(InvalidDecision):
        decisions_from_reply(_question(question, respond=False), reply("neither"))


def test_several_choices_are_separated_by_commas() -> None:
    question = Question(question="Which?", type="multiple_choice", choices=("a", "b", "c"))
    assert decisions_from_reply(_question(question), reply("a, C")) == [
        Answer(answers=[["a", "c"]])
    ]


def test_free_text_is_the_answer() -> None:
    question = Question(question="Why?")
    assert decisions_from_reply(_question(question), reply("no")) == [Answer(answers=["no"])]


def test_approvals_and_questions_at_once_need_a_data_part() -> None:
    mixed = Interrupt(
        action_requests=(
            *APPROVAL.action_requests,
            *_question(Question(question="Why?")).action_requests,
        )
    )
    with pytest.raises(InvalidDecision, match="data part"):
        decisions_from_reply(mixed, reply("approve"))


# -- a run's events ----------------------------------------------------------------------------


def test_events_before_the_run_starts_are_not_the_tasks() -> None:
    mapper = RunMapper("t", "c")
    assert mapper.map(StatusChanged(status=Status.IDLE)) == []
    assert mapper.map(LLMDeltas(deltas=[AIMessageChunk(content="old")])) == []
    assert mapper.map(StatusChanged(status=Status.RUNNING)) == []
    assert not mapper.ended


def test_streamed_text_is_an_artifact_replaced_by_the_whole_message() -> None:
    mapper = RunMapper("t", "c", running=True)
    first = mapper.map(LLMDeltas(deltas=[AIMessageChunk(content="Hel")]))
    second = mapper.map(LLMDeltas(deltas=[AIMessageChunk(content="lo")]))
    whole = mapper.map(LLMMessage(message=AIMessage(content="Hello")))
    chunks = [*first, *second, *whole]
    assert all(isinstance(c, TaskArtifactUpdateEvent) for c in chunks)
    assert len({c.artifact.artifact_id for c in chunks}) == 1  # type: ignore[union-attr]
    assert [(c.append, c.last_chunk) for c in chunks] == [  # type: ignore[union-attr]
        (False, False),
        (True, False),
        (False, True),
    ]
    assert [_texts(c.artifact) for c in chunks] == ["Hel", "lo", "Hello"]  # type: ignore[arg-type, union-attr]
    # The next model message is another artifact.
    (next_message,) = mapper.map(LLMMessage(message=AIMessage(content="Bye")))
    assert next_message.artifact.artifact_id != chunks[0].artifact.artifact_id  # type: ignore[union-attr]


def test_the_end_of_the_run_completes_the_task_with_the_answer() -> None:
    mapper = RunMapper("t", "c", running=True)
    (working,) = mapper.map(
        ToolExecutionStarted(tool_call_id="1", name="ls", arguments={"path": "/"})
    )
    assert working.status.state == TaskState.TASK_STATE_WORKING  # type: ignore[union-attr]
    assert _texts(working.status.message) == 'Calling ls {"path": "/"}'  # type: ignore[union-attr]
    (event,) = get_data_parts(working.status.message.parts)  # type: ignore[union-attr]
    assert event["type"] == "tool_execution_started"
    mapper.map(LLMMessage(message=AIMessage(content="All done.")))
    (done,) = mapper.map(StatusChanged(status=Status.IDLE))
    assert done.status.state == TaskState.TASK_STATE_COMPLETED  # type: ignore[union-attr]
    assert _texts(done.status.message) == "All done."  # type: ignore[union-attr]
    assert mapper.state == TaskState.TASK_STATE_COMPLETED
    assert mapper.map(StatusChanged(status=Status.RUNNING)) == []  # ended: nothing more


@pytest.mark.parametrize(
    ("event", "state"),
    [
        (StatusChanged(status=Status.ERROR, data="boom"), TaskState.TASK_STATE_FAILED),
        (StatusChanged(status=Status.CANCELLED), TaskState.TASK_STATE_CANCELED),
        (StatusChanged(status=Status.PAUSED), TaskState.TASK_STATE_FAILED),
        (AgentShutdown(reason="inactivity"), TaskState.TASK_STATE_FAILED),
    ],
)
def test_how_a_run_can_end(event: Any, state: TaskState) -> None:
    mapper = RunMapper("t", "c", running=True)
    (update,) = mapper.map(event)
    assert update.status.state == state  # type: ignore[union-attr]
    assert mapper.state == state


def test_an_interrupt_requires_input_and_names_its_calls() -> None:
    mapper = RunMapper("t", "c", running=True)
    (update,) = mapper.map(StatusChanged(status=Status.INTERRUPTED, data=APPROVAL))
    assert update.status.state == TaskState.TASK_STATE_INPUT_REQUIRED  # type: ignore[union-attr]
    text = _texts(update.status.message)  # type: ignore[union-attr]
    assert 'write_file {"file_path": "/a"}' in text
    assert '"approve"' in text
    assert interrupt_ids(update.status.message) == ("c1",)  # type: ignore[union-attr]
    again = input_required("t", "c", APPROVAL, problem="not a decision")
    assert _texts(again.status.message).startswith("Your reply could not be used: not a decision")


def test_a_message_becomes_conversation_text() -> None:
    message = reply("Look at this", {"rows": 2})
    message.parts.append(Part(raw=b"abc", filename="a.bin", media_type="application/x"))
    text = user_text(message)
    assert text.startswith("Look at this\n```json\n")
    assert '"rows": 2\n' in text  # a whole number stays whole
    assert text.endswith("[attached a.bin, application/x: 3 bytes, not included]")
