"""Tests for ``sagents.middleware._summarization`` and ``_token_counter`` (rule X26)."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from sagents import Agent, Done, State
from sagents._errors import InvalidMiddleware
from sagents.events import MiddlewareAction
from sagents.execution import CollectingSink, Fail, Reply, RetryPolicy, ScriptedChatModel
from sagents.middleware import Summarization, approximate_token_count, is_summary
from sagents.middleware._summarization import safe_cut
from sagents.middleware._token_counter import model_token_counter

# -- histories --------------------------------------------------------------------------------


def tool_turn(turn: int, calls: int, order: Sequence[int], tag: str = "") -> list[BaseMessage]:
    """An AI message making ``calls`` parallel calls, then their results in ``order``."""
    ids = [f"call-{tag}{turn}-{i}" for i in range(calls)]
    ai = AIMessage(
        content=f"turn {turn}: calling {calls} tool(s)",
        tool_calls=[
            {"name": "lookup", "args": {"q": f"q{turn}-{i}"}, "id": i_} for i, i_ in enumerate(ids)
        ],
    )
    results: list[BaseMessage] = [
        ToolMessage(content=f"result {turn}-{i} " + "x" * 40, tool_call_id=ids[i], name="lookup")
        for i in order
    ]
    return [ai, *results]


def long_history(size: int, seed: int) -> list[BaseMessage]:
    """About ``size`` messages: user turns, replies and many (often parallel) tool turns."""
    rng = random.Random(seed)
    messages: list[BaseMessage] = [HumanMessage("Start the investigation.")]
    turn = 0
    while len(messages) < size:
        turn += 1
        kind = rng.random()
        if kind < 0.6:
            calls = rng.choice([1, 1, 2, 3, 4])
            order = list(range(calls))
            rng.shuffle(order)
            messages += tool_turn(turn, calls, order, tag=f"{seed}-")
        elif kind < 0.8:
            messages.append(AIMessage(f"Interim answer {turn}. " + "y" * 60))
        else:
            messages.append(HumanMessage(f"Follow-up question {turn}?"))
    messages.append(HumanMessage("And now?"))
    return messages


def assert_pairs_intact(messages: Sequence[BaseMessage]) -> None:
    """Every result answers a call made earlier; every call has its result."""
    made: set[str] = set()
    answered: set[str] = set()
    for index, message in enumerate(messages):
        if isinstance(message, AIMessage):
            made.update(call["id"] or "" for call in message.tool_calls)
        if isinstance(message, ToolMessage):
            assert message.tool_call_id in made, f"orphan tool result at {index}"
            answered.add(message.tool_call_id)
    assert made <= answered, f"calls without a result: {sorted(made - answered)}"


def summary_model(text: str = "The user investigates; lookups done.") -> ScriptedChatModel:
    return ScriptedChatModel(responder=lambda messages: Reply(text=text))


def make_agent(summarizer: Summarization, reply: str = "done") -> Agent:
    return Agent(
        agent_id="sum-agent",
        model=ScriptedChatModel(responder=lambda messages: Reply(text=reply)),
        middleware=[summarizer],
        retry=RetryPolicy(max_attempts=1),
    )


async def run(agent: Agent, messages: Sequence[BaseMessage]) -> tuple[State, CollectingSink]:
    sink = CollectingSink()
    result = await agent.run(State(messages=list(messages)), sink=sink)
    assert isinstance(result, Done), result
    return result.state, sink


def actions(sink: CollectingSink) -> list[dict[str, Any]]:
    return [e.data for e in sink.events if isinstance(e, MiddlewareAction)]


# -- the 300-message history ------------------------------------------------------------------


@pytest.mark.parametrize("keep", [1, 2, 3, 5, 8, 13, 21, 40])
async def test_a_300_message_history_is_summarised_with_every_tool_pair_intact(keep: int) -> None:
    history = long_history(300, seed=keep)
    assert len(history) >= 300
    assert_pairs_intact(history)
    summarizer_model = summary_model()
    summarizer = Summarization(summarizer_model, threshold=1000, messages_to_keep=keep)
    agent = make_agent(summarizer)

    state, sink = await run(agent, history)

    new_history = state.messages[:-1]  # the last one is the agent's reply
    assert state.messages[-1].text == "done"
    assert is_summary(new_history[0])
    assert "The user investigates" in new_history[0].text
    kept = new_history[1:]
    assert len(kept) >= keep
    assert kept == history[len(history) - len(kept) :]  # the recent messages, verbatim
    assert not isinstance(kept[0], ToolMessage)
    assert_pairs_intact(new_history)
    assert_pairs_intact(state.messages)
    # The agent's model saw the summarised history (after its system prompt, if any).
    agent_model = agent.model
    assert isinstance(agent_model, ScriptedChatModel)
    assert agent_model.prompts[0] == new_history
    assert summarizer_model.calls == 1
    [action] = actions(sink)
    assert action["action"] == "summarized"
    assert action["summarized_messages"] == len(history) - len(kept)
    assert state.metadata["summarization"] == {
        "summaries": 1,
        "summarized_messages": len(history) - len(kept),
    }


async def test_the_summary_model_gets_a_transcript_with_tool_calls_and_results() -> None:
    history = [HumanMessage("Find the weather."), *tool_turn(1, 2, [1, 0]), HumanMessage("Thanks")]
    model = summary_model()
    await run(make_agent(Summarization(model, threshold=1, messages_to_keep=1)), history)

    [prompt] = model.prompts
    system, request = prompt
    assert isinstance(system, SystemMessage)
    assert "[user] Find the weather." in request.text
    assert '[assistant calls tool lookup] {"q": "q1-0"}' in request.text
    assert "[result of tool lookup] result 1-1" in request.text
    assert "Thanks" not in request.text  # kept, not summarised


async def test_below_the_threshold_nothing_changes() -> None:
    history = long_history(40, seed=1)
    model = summary_model()
    summarizer = Summarization(model, threshold=10**6, messages_to_keep=5)
    state, sink = await run(make_agent(summarizer), history)
    assert state.messages[:-1] == history
    assert model.calls == 0
    assert actions(sink) == []


async def test_a_second_summary_folds_the_first_one_in() -> None:
    history = long_history(60, seed=7)
    first_model = summary_model("FIRST SUMMARY")
    state, _ = await run(
        make_agent(Summarization(first_model, threshold=200, messages_to_keep=10)), history
    )
    more = [*state.messages, *long_history(60, seed=8)]
    second_model = summary_model("SECOND SUMMARY")
    summarizer = Summarization(second_model, threshold=200, messages_to_keep=10)
    state2, _ = await run(make_agent(summarizer), more)

    [prompt] = second_model.prompts
    request = prompt[1].text
    assert request.startswith("The summary so far:\nFIRST SUMMARY")
    assert "[user] Summary of the earlier conversation" not in request  # not summarised blindly
    summaries = [m for m in state2.messages if is_summary(m)]
    assert len(summaries) == 1
    assert "SECOND SUMMARY" in summaries[0].text
    assert_pairs_intact(state2.messages)


async def test_the_count_adds_up_over_summaries() -> None:
    summarizer = Summarization(summary_model(), threshold=200, messages_to_keep=10)
    agent = make_agent(summarizer)
    state, _ = await run(agent, long_history(60, seed=3))
    first = state.metadata["summarization"]["summarized_messages"]
    result = await agent.run(state.append(*long_history(60, seed=4)), sink=CollectingSink())
    assert isinstance(result, Done)
    record = result.state.metadata["summarization"]
    assert record["summaries"] == 2
    assert record["summarized_messages"] > first


async def test_leading_system_messages_stay_first() -> None:
    history = [SystemMessage("You are terse."), *long_history(50, seed=2)]
    state, _ = await run(
        make_agent(Summarization(summary_model(), threshold=100, messages_to_keep=4)), history
    )
    assert state.messages[0] == history[0]
    assert is_summary(state.messages[1])


async def test_a_failing_summary_model_keeps_everything_and_reports_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    history = long_history(80, seed=5)
    model = ScriptedChatModel(
        responder=lambda messages: Fail(error=ConnectionError("summary provider down"))
    )
    agent = make_agent(Summarization(model, threshold=100, messages_to_keep=5))
    with caplog.at_level(logging.WARNING, logger="sagents.middleware"):
        state, sink = await run(agent, history)

    assert state.messages[:-1] == history
    assert "summarization" not in state.metadata
    [action] = actions(sink)
    assert action["action"] == "summarization_failed"
    assert "summary provider down" in action["error"]
    assert any("Summarization failed" in r.getMessage() for r in caplog.records)


async def test_an_empty_summary_is_a_failure() -> None:
    history = long_history(80, seed=6)
    agent = make_agent(Summarization(summary_model("   "), threshold=100, messages_to_keep=5))
    state, sink = await run(agent, history)
    assert state.messages[:-1] == history
    assert actions(sink)[0]["action"] == "summarization_failed"


async def test_the_summary_survives_a_state_round_trip() -> None:
    state, _ = await run(
        make_agent(Summarization(summary_model(), threshold=100, messages_to_keep=4)),
        long_history(50, seed=9),
    )
    restored = State.from_dict(state.to_dict())
    assert is_summary(restored.messages[0])
    assert restored.messages == state.messages


async def test_one_unbreakable_tool_turn_is_left_alone() -> None:
    # Everything before the kept messages is one tool turn whose results reach the end.
    history = [HumanMessage("go"), *tool_turn(1, 6, list(range(6)))]
    history.append(HumanMessage("next"))
    model = summary_model()
    # keep=3 wants a cut inside the tool turn: it moves back to the AI message, leaving only the
    # first user message to summarise.
    state, _ = await run(make_agent(Summarization(model, threshold=1, messages_to_keep=3)), history)
    assert is_summary(state.messages[0])
    assert state.messages[1:-1] == history[1:]
    assert_pairs_intact(state.messages)


# -- safe_cut ---------------------------------------------------------------------------------


def test_safe_cut_never_separates_calls_from_results() -> None:
    history = [HumanMessage("a"), *tool_turn(1, 3, [2, 0, 1]), HumanMessage("b")]
    # indices: 0 human, 1 ai, 2-4 results, 5 human
    assert safe_cut(history, 0, 5) == 5
    for wanted in (2, 3, 4, 5 - 0):
        cut = safe_cut(history, 0, wanted)
        assert cut in (1, 5)
        assert cut <= wanted
    assert safe_cut(history, 0, 3) == 1
    assert safe_cut(history, 1, 3) == 1  # nothing safe after start: start
    assert safe_cut(history, 0, 0) == 0
    assert safe_cut(history, 0, 99) == len(history)


def test_safe_cut_matches_a_reused_call_id_to_its_latest_call() -> None:
    # Some models number their calls "call_0", "call_1"... in every turn.
    history = [HumanMessage("a")]
    for _ in range(4):
        history += [*tool_turn(0, 2, [0, 1]), AIMessage("ok")]
    history.append(HumanMessage("b"))
    # indices: 0 human, then per turn: ai, result, result, text (4 messages)
    assert safe_cut(history, 0, 14) == 13
    assert safe_cut(history, 0, 15) == 13
    assert safe_cut(history, 0, 16) == 16


# -- random histories -------------------------------------------------------------------------

_turn = st.one_of(
    st.just(("human", 0, ())),
    st.just(("text", 0, ())),
    st.integers(1, 4).flatmap(
        lambda n: st.tuples(st.just("tools"), st.just(n), st.permutations(range(n)))
    ),
)


def build(turns: Sequence[tuple[str, int, Sequence[int]]], system: bool) -> list[BaseMessage]:
    messages: list[BaseMessage] = [SystemMessage("sys")] if system else []
    messages.append(HumanMessage("first"))
    for index, (kind, calls, order) in enumerate(turns):
        if kind == "human":
            messages.append(HumanMessage(f"user {index} " + "u" * (index % 7) * 10))
        elif kind == "text":
            messages.append(AIMessage(f"reply {index} " + "r" * (index % 5) * 20))
        else:
            messages += tool_turn(index, calls, order)
    messages.append(HumanMessage("last"))
    return messages


@settings(max_examples=150, deadline=None)
@given(
    turns=st.lists(_turn, min_size=0, max_size=40),
    keep=st.integers(1, 30),
    threshold=st.integers(1, 400),
    system=st.booleans(),
    rounds=st.integers(1, 3),
)
async def test_random_histories_keep_every_tool_pair(
    turns: list[tuple[str, int, Sequence[int]]],
    keep: int,
    threshold: int,
    system: bool,
    rounds: int,
) -> None:
    history = build(turns, system)
    summarizer = Summarization(summary_model("S"), threshold=threshold, messages_to_keep=keep)
    agent = make_agent(summarizer)
    state = State(messages=history)
    for round_ in range(rounds):
        before = state.messages
        result = await agent.run(state)
        assert isinstance(result, Done)
        after = result.state.messages[:-1]
        assert_pairs_intact(result.state.messages)
        event("summarised" if after != before else "kept")
        start = 1 if system else 0
        first = start + 1 if is_summary(before[start]) else start
        over = approximate_token_count(before) > threshold
        if over and safe_cut(before, first, len(before) - keep) > first:
            assert after != before  # something could be summarised, so it was
        if after != before:
            assert over
            assert after[:start] == before[:start]
            assert is_summary(after[start])
            assert sum(is_summary(m) for m in after) == 1
            tail = after[start + 1 :]
            assert len(tail) >= keep
            assert tail == before[len(before) - len(tail) :]
            assert not tail or not isinstance(tail[0], ToolMessage)
        state = result.state.append(HumanMessage(f"round {round_}"))


# -- token counting ---------------------------------------------------------------------------


def test_the_approximate_count_covers_text_and_tool_arguments() -> None:
    plain = AIMessage("x" * 400)
    with_call = AIMessage(
        "x" * 400, tool_calls=[{"name": "t", "args": {"data": "y" * 400}, "id": "c"}]
    )
    assert approximate_token_count([plain]) == 100 + 4
    assert approximate_token_count([with_call]) > approximate_token_count([plain]) + 100
    blocks = HumanMessage(content=[{"type": "text", "text": "z" * 80}, "w" * 40])
    assert approximate_token_count([blocks]) == 30 + 4
    assert approximate_token_count([]) == 0


class CountingModel(BaseChatModel):
    """A summary model with its own token counter (as provider classes have)."""

    per_message: int = 1000

    @property
    def _llm_type(self) -> str:
        return "counting"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage("S"))])

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        if self.per_message < 0:
            raise OSError("tokenizer download failed")
        return self.per_message * len(messages)


def test_only_a_model_that_overrides_the_default_has_its_own_counter() -> None:
    assert model_token_counter(summary_model()) is None
    counter = model_token_counter(CountingModel())
    assert counter is not None
    assert counter([HumanMessage("a"), HumanMessage("b")]) == 2000


async def test_the_summary_models_own_counter_decides() -> None:
    history = [HumanMessage("short"), AIMessage("short"), HumanMessage("short")]
    model = CountingModel()
    state, _ = await run(
        make_agent(Summarization(model, threshold=2500, messages_to_keep=1)), history
    )
    assert is_summary(state.messages[0])  # 3000 "tokens" by the model's count
    assert approximate_token_count(history) < 2500


async def test_a_callable_counter_is_used() -> None:
    seen: list[int] = []

    def counter(messages: Sequence[BaseMessage]) -> int:
        seen.append(len(messages))
        return 0

    summarizer = Summarization(
        summary_model(), threshold=1, messages_to_keep=1, token_counter=counter
    )
    history = long_history(30, seed=1)
    state, _ = await run(make_agent(summarizer), history)
    assert seen == [len(history)]
    assert state.messages[:-1] == history


async def test_a_failing_counter_falls_back_to_the_approximation_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = CountingModel(per_message=-1)
    summarizer = Summarization(model, threshold=100, messages_to_keep=3)
    with caplog.at_level(logging.WARNING, logger="sagents.middleware"):
        state, _ = await run(make_agent(summarizer), long_history(50, seed=2))
        await run(make_agent(summarizer), long_history(50, seed=3))
    assert is_summary(state.messages[0])
    failures = [r for r in caplog.records if "token counter failed" in r.getMessage()]
    assert len(failures) == 1


@pytest.mark.parametrize(
    ("options", "word"),
    [
        ({"threshold": 0}, "threshold"),
        ({"messages_to_keep": 0}, "messages_to_keep"),
        ({"threshold": True}, "threshold"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], word: str) -> None:
    with pytest.raises(InvalidMiddleware, match=word):
        Summarization(summary_model(), **options)


def test_a_model_is_required() -> None:
    with pytest.raises(InvalidMiddleware, match="chat model"):
        Summarization("gpt-4o")  # type: ignore[arg-type]
