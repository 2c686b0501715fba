"""Tests for ``sagents.middleware._ask_user``: the model asks the user (issue 15, item 1).

The ``ask_user`` call pauses the run with an interrupt of kind ``"question"``; ``resume`` answers
it and the tool result carries the answers; invalid answers are refused with the interrupt kept;
the question survives export and a new server like an approval, and can be dismissed.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from sagents import (
    Agent,
    Answer,
    Approve,
    Done,
    Interrupted,
    InvalidDecision,
    InvalidMiddleware,
    Question,
    Reject,
    Respond,
    RetryPolicy,
    State,
    Status,
)
from sagents.events import DisplayMessageUpdated, StatusChanged
from sagents.execution import CollectingSink
from sagents.middleware import AskUserQuestion, HumanInTheLoop, SubAgent, SubAgentSpec
from sagents.persistence import MemoryPersistence
from sagents.runtime import PendingSubscription, Runtime
from sagents.testing import Reply, ScriptedChatModel, ToolCall

DATABASE = {
    "question": "Which database should I use?",
    "choices": ["PostgreSQL", "SQLite"],
    "recommended": "PostgreSQL",
}
FEATURES = {
    "question": "Which features do you want?",
    "type": "multiple_choice",
    "choices": ["auth", "billing", "search"],
}
NAME = {"question": "What is the project called?"}
QUESTIONS = [DATABASE, FEATURES, NAME]
GOOD = ["PostgreSQL", ["auth", "search"], "Atlas"]


def ask(*questions: dict[str, Any], call_id: str = "ask-1") -> ToolCall:
    return ToolCall(name="ask_user", args={"questions": list(questions)}, id=call_id)


class Recorder:
    """A responder that keeps every prompt: turn ``i`` answers with ``script[i]``."""

    def __init__(self, *script: Reply) -> None:
        self.script = list(script)
        self.prompts: list[list[BaseMessage]] = []

    def __call__(self, messages: list[BaseMessage]) -> Reply:
        self.prompts.append(list(messages))
        index = len(self.prompts) - 1
        return self.script[index] if index < len(self.script) else Reply(text="thanks")


def agent(*script: Reply, **kwargs: Any) -> tuple[Agent, Recorder]:
    recorder = Recorder(*script)
    kwargs.setdefault("middleware", [AskUserQuestion()])
    built = Agent(
        agent_id=kwargs.pop("agent_id", "asker"),
        model=ScriptedChatModel(responder=recorder, record_prompts=False),
        retry=RetryPolicy(max_attempts=1),
        **kwargs,
    )
    return built, recorder


def start() -> State:
    return State(messages=[HumanMessage("set up my project")])


async def asked(*questions: dict[str, Any]) -> tuple[Agent, Recorder, Interrupted]:
    built, recorder = agent(Reply(tool_calls=[ask(*(questions or QUESTIONS))]))
    result = await built.run(start())
    assert isinstance(result, Interrupted), result
    return built, recorder, result


def tool_results(state: State) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in state.messages if isinstance(m, ToolMessage)}


def assert_history_valid(messages: list[BaseMessage]) -> None:
    calls = [c["id"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    results = [m.tool_call_id for m in messages if isinstance(m, ToolMessage)]
    assert Counter(results) == Counter(calls)


# -- asking -----------------------------------------------------------------------------------


def test_the_middleware_gives_the_ask_user_tool_and_says_when_to_use_it() -> None:
    built, _ = agent()
    assert "ask_user" in built.all_tools
    assert "ask_user" in built.system_prompt
    quiet, _ = agent(middleware=[AskUserQuestion(system_prompt=None)])
    assert "ask_user" in quiet.all_tools
    assert "ask_user" not in (quiet.system_prompt or "")


async def test_asking_interrupts_with_a_question_interrupt() -> None:
    _, recorder, result = await asked()

    interrupt = result.interrupt
    assert interrupt.kind == "question"
    assert result.state.interrupt == interrupt
    [request] = interrupt.action_requests
    assert request.tool_call_id == "ask-1"
    assert request.name == "ask_user"
    assert request.allowed_decisions == ("answer", "respond", "reject")
    assert request.questions == (
        Question(
            question="Which database should I use?",
            type="single_choice",  # inferred: choices were given
            choices=("PostgreSQL", "SQLite"),
            recommended="PostgreSQL",
        ),
        Question(
            question="Which features do you want?",
            type="multiple_choice",
            choices=("auth", "billing", "search"),
        ),
        Question(question="What is the project called?", type="free_text"),
    )
    # The call waits: no result yet, and the model was asked once.
    assert tool_results(result.state) == {}
    assert len(recorder.prompts) == 1


async def test_answers_become_the_tool_result_and_the_run_goes_on() -> None:
    built, recorder, result = await asked()
    sink = CollectingSink()

    done = await built.resume(result.state, [Answer(GOOD)], sink=sink)

    assert isinstance(done, Done)
    assert done.state.interrupt is None
    answer = tool_results(done.state)["ask-1"]
    assert answer.status != "error"
    text = str(answer.content)
    assert "Which database should I use?\n   Answer: PostgreSQL" in text
    assert 'Answer: ["auth", "search"]' in text
    assert "Answer: Atlas" in text
    assert answer.artifact == {
        "answers": [
            {"question": "Which database should I use?", "answer": "PostgreSQL"},
            {"question": "Which features do you want?", "answer": ["auth", "search"]},
            {"question": "What is the project called?", "answer": "Atlas"},
        ]
    }
    # The model read the answers on its next call.
    assert recorder.prompts[-1][-1].content == answer.content
    assert_history_valid(done.state.messages)


async def test_answers_in_their_json_form() -> None:
    built, _, result = await asked()
    done = await built.resume(result.state, [{"type": "answer", "answers": GOOD}])
    assert isinstance(done, Done)
    assert "Atlas" in str(tool_results(done.state)["ask-1"].content)


async def test_a_choice_question_may_allow_an_answer_of_the_user_s_own() -> None:
    other = {**DATABASE, "allow_other": True}
    built, _, result = await asked(other)
    done = await built.resume(result.state, [Answer(["MariaDB"])])
    assert isinstance(done, Done)
    assert "Answer: MariaDB" in str(tool_results(done.state)["ask-1"].content)


async def test_the_user_may_reply_in_words_or_decline() -> None:
    built, _, result = await asked()

    replied = await built.resume(result.state, [Respond("Pick what you think is best.")])
    assert isinstance(replied, Done)
    text = str(tool_results(replied.state)["ask-1"].content)
    assert "Pick what you think is best." in text

    declined = await built.resume(result.state, [Reject(message="not now")])
    assert isinstance(declined, Done)
    result_message = tool_results(declined.state)["ask-1"]
    assert "declined to answer: not now" in str(result_message.content)


# -- the middleware's options -------------------------------------------------------------


async def test_a_question_of_a_kind_not_allowed_is_the_model_s_to_fix() -> None:
    only_text = AskUserQuestion(response_types=["free_text"])
    built, _ = agent(
        Reply(tool_calls=[ask(DATABASE)]),
        Reply(tool_calls=[ask(NAME, call_id="ask-2")]),
        middleware=[only_text],
    )
    assert "Only ask free_text questions here." in (only_text.system_prompt() or "")
    assert "(free text)" in only_text.tools()[0].description
    result = await built.run(start())
    error = tool_results(result.state)["ask-1"]
    assert error.status == "error"
    assert "a single_choice question is not allowed here; ask it as free_text" in str(error.content)
    assert isinstance(result, Interrupted)  # asked again, as free text
    [request] = result.interrupt.action_requests
    assert request.questions == (Question(question=NAME["question"], type="free_text"),)


@pytest.mark.parametrize("forced", [True, False])
async def test_allow_other_can_be_forced_on_every_choice_question(forced: bool) -> None:
    asking = {**FEATURES, "allow_other": not forced}
    built, _ = agent(
        Reply(tool_calls=[ask(DATABASE, asking, NAME)]),
        middleware=[AskUserQuestion(allow_other=forced)],
    )
    result = await built.run(start())
    assert isinstance(result, Interrupted)
    [request] = result.interrupt.action_requests
    assert request.questions is not None
    assert [q.allow_other for q in request.questions] == [forced, forced, False]


async def test_without_allow_cancel_the_user_must_answer_or_reply() -> None:
    built, _ = agent(
        Reply(tool_calls=[ask(*QUESTIONS)]), middleware=[AskUserQuestion(allow_cancel=False)]
    )
    result = await built.run(start())
    assert isinstance(result, Interrupted)
    [request] = result.interrupt.action_requests
    assert request.allowed_decisions == ("answer", "respond")
    with pytest.raises(InvalidDecision, match="'reject' is not allowed"):
        await built.resume(result.state, [Reject(message="not now")])
    answered = await built.resume(result.state, [Answer(GOOD)])
    assert isinstance(answered, Done)


@pytest.mark.parametrize("kinds", [[], ["yes_no"], ["free_text", "essay"]])
def test_response_types_must_be_kinds_of_question(kinds: list[str]) -> None:
    with pytest.raises(InvalidMiddleware, match="response_types"):
        AskUserQuestion(response_types=kinds)  # type: ignore[arg-type]


BAD_ANSWERS = [
    pytest.param([Answer(GOOD[:2])], "expected 3 answer", id="too-few"),
    pytest.param([Answer(["MySQL", *GOOD[1:]])], "'MySQL' is not one of the choices", id="choice"),
    pytest.param([Answer([GOOD[0], "auth", GOOD[2]])], "list of choices", id="multi-not-list"),
    pytest.param([Answer([GOOD[0], [], GOOD[2]])], "at least one", id="multi-empty"),
    pytest.param([Answer([GOOD[0], ["auth", "auth"], GOOD[2]])], "twice", id="multi-twice"),
    pytest.param([Answer([GOOD[0], ["auth", "x"], GOOD[2]])], "'x'", id="multi-unknown"),
    pytest.param([Answer([*GOOD[:2], "  "])], "non-empty text", id="blank-text"),
    pytest.param([Answer([*GOOD[:2], 7])], "non-empty text", id="text-not-str"),
    pytest.param([Answer([*GOOD[:2], "x" * 10_001])], "longer than", id="text-too-long"),
    pytest.param([Answer("PostgreSQL")], "must be a list", id="answers-a-string"),
    pytest.param([{"type": "answer"}], "must be a list", id="answers-missing"),
    pytest.param([{"type": "answer", "answers": GOOD, "message": "x"}], "only a", id="extra"),
    pytest.param([Approve()], "'approve' is not allowed", id="approve"),
    pytest.param([{"type": "respond", "message": ""}], "respond", id="respond-empty"),
    pytest.param([Answer(GOOD), Answer(GOOD)], "expected 1 decision", id="two-decisions"),
]


@pytest.mark.parametrize(("decisions", "match"), BAD_ANSWERS)
async def test_invalid_answers_are_refused_and_the_question_stays(
    decisions: Any, match: str
) -> None:
    built, recorder, result = await asked()
    before = result.state.to_dict()
    sink = CollectingSink()

    with pytest.raises(InvalidDecision, match=match) as refused:
        await built.resume(result.state, decisions, sink=sink)

    assert "decision" in str(refused.value)
    assert sink.events == []
    assert sink.states == []
    assert result.state.to_dict() == before
    assert len(recorder.prompts) == 1
    # And a valid answer afterwards goes through.
    done = await built.resume(result.state, [Answer(GOOD)])
    assert isinstance(done, Done)


@pytest.mark.parametrize(
    ("question", "problem"),
    [
        ({"question": "One?", "type": "single_choice", "choices": ["only"]}, "two choices"),
        ({**DATABASE, "recommended": "MySQL"}, "recommended"),
        ({"question": "Dup?", "choices": ["a", "a"]}, "distinct"),
        ({"question": "  "}, "non-empty"),
        ({"question": "Long?", "choices": ["x" * 501, "y"]}, "longer than 500"),
    ],
)
async def test_malformed_questions_are_the_model_s_to_fix(
    question: dict[str, Any], problem: str
) -> None:
    built, recorder = agent(Reply(tool_calls=[ask(question)]))
    result = await built.run(start())

    assert isinstance(result, Done)  # no interrupt: the model got an error and answered
    error = tool_results(result.state)["ask-1"]
    assert error.status == "error"
    assert problem in str(error.content)
    assert "call ask_user again" in str(error.content)
    assert len(recorder.prompts) == 2


async def test_too_many_questions_are_refused_by_the_schema() -> None:
    built, _ = agent(Reply(tool_calls=[ask(*[NAME] * 11)]))
    result = await built.run(start())
    assert isinstance(result, Done)
    assert tool_results(result.state)["ask-1"].status == "error"


async def test_parallel_questions_are_one_interrupt_with_a_decision_each() -> None:
    built, recorder = agent(
        Reply(tool_calls=[ask(DATABASE, call_id="a1"), ask(NAME, FEATURES, call_id="a2")])
    )
    result = await built.run(start())
    assert isinstance(result, Interrupted)
    assert result.interrupt.kind == "question"
    assert [r.tool_call_id for r in result.interrupt.action_requests] == ["a1", "a2"]

    with pytest.raises(InvalidDecision, match="decision 1 for 'ask_user'"):
        await built.resume(result.state, [Answer(["SQLite"]), Answer(["Atlas", ["nope"]])])

    done = await built.resume(result.state, [Answer(["SQLite"]), Reject()])
    assert isinstance(done, Done)
    results = tool_results(done.state)
    assert "Answer: SQLite" in str(results["a1"].content)
    assert "declined" in str(results["a2"].content)
    assert len(recorder.prompts) == 2  # the model ran once more, after both


async def test_an_approval_in_the_same_turn_comes_first_then_the_question() -> None:
    deleted: list[str] = []

    def delete(path: str) -> str:
        """Delete a path."""
        deleted.append(path)
        return f"deleted {path}"

    built, _ = agent(
        Reply(
            tool_calls=[
                ToolCall(name="delete", args={"path": "/tmp"}, id="d1"),
                ask(NAME),
            ]
        ),
        tools=[delete],
        middleware=[AskUserQuestion(), HumanInTheLoop(interrupt_on={"delete": True})],
    )
    first = await built.run(start())
    assert isinstance(first, Interrupted)
    assert first.interrupt.kind == "human_approval"
    assert [r.name for r in first.interrupt.action_requests] == ["delete"]

    second = await built.resume(first.state, [Approve()])
    assert isinstance(second, Interrupted)
    assert deleted == ["/tmp"]
    assert second.interrupt.kind == "question"
    assert [r.name for r in second.interrupt.action_requests] == ["ask_user"]

    done = await built.resume(second.state, [Answer(["Atlas"])])
    assert isinstance(done, Done)
    assert_history_valid(done.state.messages)


async def test_a_sub_agent_s_question_reaches_the_parent_and_the_answer_flows_back() -> None:
    helper = SubAgentSpec(
        name="helper",
        description="Asks the user.",
        model=ScriptedChatModel(
            script=[Reply(tool_calls=[ask(DATABASE, call_id="sub-ask")]), Reply(text="chosen")]
        ),
        middleware=[AskUserQuestion()],
    )
    task = ToolCall(name="task", args={"instructions": "ask", "task_name": "helper"}, id="t1")
    built, _ = agent(Reply(tool_calls=[task]), middleware=[SubAgent(subagents=[helper])])

    result = await built.run(start())
    assert isinstance(result, Interrupted)
    assert result.interrupt.kind == "sub_agent"
    [request] = result.interrupt.action_requests
    assert request.questions[0].question == DATABASE["question"]  # the page can show the form

    with pytest.raises(InvalidDecision, match="not one of the choices"):
        await built.resume(result.state, [Answer(["Oracle"])])
    done = await built.resume(result.state, [Answer(["SQLite"])])
    assert isinstance(done, Done)
    assert tool_results(done.state)["t1"].content == "chosen"


def test_questions_round_trip_through_the_state() -> None:
    question = Question(
        question="Which?", type="multiple_choice", choices=("a", "b"), allow_other=True
    )
    assert Question.from_dict(question.to_dict()) == question


# -- through a server -----------------------------------------------------------------------


async def until(events: Any, *statuses: Status) -> list[Any]:
    seen = []
    async for event in events:
        seen.append(event)
        if isinstance(event, StatusChanged) and event.status in statuses:
            return seen
    raise AssertionError(f"no {statuses}")


@pytest.mark.looptime
async def test_a_server_waits_for_answers_and_refuses_invalid_ones() -> None:
    store = MemoryPersistence()
    built, _ = agent(Reply(tool_calls=[ask(*QUESTIONS)]))
    async with Runtime() as runtime:
        events = PendingSubscription()
        handle = await runtime.start_agent(
            built,
            start(),
            initial_subscribers=[events],
            conversation_id="c1",
            display_message_persistence=store,
        )
        await handle.execute()
        seen = await until(events, Status.INTERRUPTED)
        interrupted = seen[-1]
        assert interrupted.data.kind == "question"
        assert interrupted.to_json()["data"]["action_requests"][0]["questions"][1]["type"] == (
            "multiple_choice"
        )
        assert (await handle.info()).has_interrupt

        with pytest.raises(InvalidDecision, match="not one of the choices"):
            await handle.resume([{"type": "answer", "answers": ["Oracle", ["auth"], "x"]}])
        assert await handle.get_status() is Status.INTERRUPTED
        assert (await handle.get_state()).interrupt == interrupted.data

        await handle.resume([{"type": "answer", "answers": GOOD}])
        seen = await until(events, Status.IDLE)
        updates = [e.display_message for e in seen if isinstance(e, DisplayMessageUpdated)]
        decisions = [u["metadata"].get("decision") for u in updates if u["type"] == "tool_call"]
        assert {"type": "answer", "answers": GOOD} in decisions
        state = await handle.get_state()
        assert "Atlas" in str(tool_results(state)["ask-1"].content)
        await events.aclose()


@pytest.mark.looptime
async def test_a_question_survives_export_and_a_new_server_and_can_be_dismissed() -> None:
    built, recorder = agent(Reply(tool_calls=[ask(DATABASE)]))
    async with Runtime() as runtime:
        events = PendingSubscription()
        handle = await runtime.start_agent(built, start(), initial_subscribers=[events])
        await handle.execute()
        await until(events, Status.INTERRUPTED)
        await events.aclose()
        exported = await handle.export_state()
        await handle.stop()

        # A new server from the exported state: still waiting for the same question.
        again = await runtime.start_agent(built, State.from_dict(exported))
        assert await again.get_status() is Status.INTERRUPTED
        pending = (await again.get_state()).interrupt
        assert pending is not None
        assert pending.action_requests[0].questions[0].choices == ("PostgreSQL", "SQLite")

        async with again.subscribe() as more:
            await again.dismiss_interrupt()
            seen = await until(more, Status.IDLE)
        assert [e.status for e in seen if isinstance(e, StatusChanged)] == [Status.IDLE]
        state = await again.get_state()
        dismissed = tool_results(state)["ask-1"]
        assert dismissed.status == "error"
        assert "dismissed" in str(dismissed.content)
        assert_history_valid(state.messages)
        assert len(recorder.prompts) == 1  # nothing ran
