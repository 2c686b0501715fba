"""Tests for ``sagents.middleware._patch_tool_calls``: dangling tool calls get a result (X27).

The real-client test (a ChatOpenAI request that a fake OpenAI server rejects without the patch)
is in ``tests/providers/test_openai_client.py``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from sagents import Agent, Done, State
from sagents.events import MiddlewareAction
from sagents.execution import CollectingSink, Reply, RetryPolicy, ScriptedChatModel
from sagents.middleware._patch_tool_calls import (
    DEFAULT_PATCH_MESSAGE,
    PatchToolCalls,
    find_dangling_tool_calls,
)


def call(call_id: str, name: str = "ping") -> dict[str, Any]:
    return {"name": name, "args": {}, "id": call_id, "type": "tool_call"}


def ai(*ids: str) -> AIMessage:
    return AIMessage(content="", tool_calls=[call(i) for i in ids])


def result(call_id: str, content: str = "pong") -> ToolMessage:
    return ToolMessage(content=content, tool_call_id=call_id, name="ping")


def patch(messages: list[BaseMessage]) -> State | None:
    return PatchToolCalls().patch(State(messages=messages))


def ids(messages: list[BaseMessage]) -> list[str]:
    """A readable shape of a history: H, A(ids), T(id) with a * for synthetic results."""
    out = []
    for m in messages:
        if isinstance(m, ToolMessage):
            out.append(f"T({m.tool_call_id}{'*' if m.content == DEFAULT_PATCH_MESSAGE else ''})")
        elif isinstance(m, AIMessage):
            out.append(f"A({','.join(c['id'] or '' for c in m.tool_calls)})")
        else:
            out.append(m.type[0].upper())
    return out


# -- unit ------------------------------------------------------------------------------------


def test_a_valid_history_is_left_alone() -> None:
    history: list[BaseMessage] = [
        SystemMessage("sys"),
        HumanMessage("hi"),
        ai("a", "b"),
        result("b"),
        result("a"),
        AIMessage("done"),
        HumanMessage("again"),
    ]
    assert patch(history) is None
    assert find_dangling_tool_calls(history) == []


def test_dangling_calls_are_answered_right_after_their_turn_not_at_the_end() -> None:
    history: list[BaseMessage] = [
        HumanMessage("hi"),
        ai("a", "b", "c"),
        result("b"),
        HumanMessage("are you there?"),
    ]
    state = patch(history)
    assert state is not None
    assert ids(state.messages) == ["H", "A(a,b,c)", "T(b)", "T(a*)", "T(c*)", "H"]
    synthetic = state.messages[3]
    assert isinstance(synthetic, ToolMessage)
    assert synthetic.status == "error"
    assert synthetic.name == "ping"
    # the original messages are the same objects, in the same order
    kept = [m for m in state.messages if m.content != DEFAULT_PATCH_MESSAGE]
    assert all(a is b for a, b in zip(kept, history, strict=True))


def test_every_dangling_turn_is_patched_in_one_pass() -> None:
    history: list[BaseMessage] = [
        HumanMessage("1"),
        ai("a"),
        HumanMessage("2"),
        ai("b"),
        result("b"),
        AIMessage("ok"),
        HumanMessage("3"),
        ai("c"),
    ]
    state = patch(history)
    assert state is not None
    assert ids(state.messages) == [
        *["H", "A(a)", "T(a*)"],
        *["H", "A(b)", "T(b)", "A()"],
        *["H", "A(c)", "T(c*)"],
    ]


def test_a_result_outside_the_turn_does_not_count() -> None:
    # A provider only accepts results directly after their assistant message.
    history: list[BaseMessage] = [ai("a"), HumanMessage("x"), result("a")]
    state = patch(history)
    assert state is not None
    assert ids(state.messages) == ["A(a)", "T(a*)", "H", "T(a)"]


def test_invalid_tool_calls_are_answered_too() -> None:
    # A call whose JSON arguments did not parse is not run by the loop, but provider clients
    # still send it back (langchain-openai does), so it needs a result as well.
    broken = AIMessage(
        content="",
        invalid_tool_calls=[
            {"name": "ping", "args": '{"x": ', "id": "bad", "error": "bad json", "type": "x"}
        ],
    )
    state = patch([HumanMessage("hi"), broken, HumanMessage("well?")])
    assert state is not None
    assert [type(m).__name__ for m in state.messages] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "HumanMessage",
    ]
    assert state.messages[2].tool_call_id == "bad"  # type: ignore[attr-defined]


def test_calls_without_an_id_cannot_be_answered_and_are_skipped() -> None:
    message = AIMessage(content="", tool_calls=[{"name": "ping", "args": {}, "id": None}])
    assert patch([message, HumanMessage("x")]) is None


async def test_custom_message_and_other_state_fields_are_kept() -> None:
    state = State(messages=[ai("a"), HumanMessage("x")], metadata={"k": 1}, agent_id="z")
    patched = await PatchToolCalls(message="gone").before_model(state)
    assert patched is not None
    assert patched.messages[1].content == "gone"
    assert patched.metadata == {"k": 1}
    assert patched.agent_id == "z"
    assert len(state.messages) == 2  # the input state is untouched


def test_key_and_name() -> None:
    mw = PatchToolCalls()
    assert mw.key == "patch_tool_calls"
    assert mw.name == "PatchToolCalls"
    assert mw.overrides("before_model")
    assert not mw.overrides("after_model")


async def test_in_a_run_the_model_sees_the_patched_history_and_the_patch_is_reported() -> None:
    model = ScriptedChatModel(script=[Reply(text="sorry about that")])
    agent = Agent(
        agent_id="a",
        model=model,
        middleware=[PatchToolCalls()],
        retry=RetryPolicy(max_attempts=1),
    )
    state = State(messages=[HumanMessage("do it"), ai("c1", "c2"), HumanMessage("well?")])
    sink = CollectingSink()
    outcome = await agent.run(state, sink=sink)
    assert isinstance(outcome, Done)
    assert ids(model.prompts[0]) == ["H", "A(c1,c2)", "T(c1*)", "T(c2*)", "H"]
    # the patch is kept in the state, before the reply
    assert ids(outcome.state.messages) == ["H", "A(c1,c2)", "T(c1*)", "T(c2*)", "H", "A()"]
    actions = sink.of_type(MiddlewareAction)
    assert len(actions) == 1
    assert isinstance(actions[0], MiddlewareAction)
    assert actions[0].middleware == "PatchToolCalls"
    assert actions[0].data == {
        "patched": [
            {"tool_call_id": "c1", "name": "ping"},
            {"tool_call_id": "c2", "name": "ping"},
        ]
    }


async def test_a_valid_history_reports_nothing() -> None:
    model = ScriptedChatModel(script=[Reply(text="hi")])
    agent = Agent(agent_id="a", model=model, middleware=[PatchToolCalls])
    sink = CollectingSink()
    await agent.run(State(messages=[HumanMessage("hi")]), sink=sink)
    assert sink.of_type(MiddlewareAction) == []


# -- property --------------------------------------------------------------------------------


@st.composite
def histories(draw: st.DrawFn) -> list[BaseMessage]:
    """Histories of human turns and tool-calling turns whose results are present or missing,
    shuffled within their block, possibly ending on a turn with no results at all."""
    messages: list[BaseMessage] = [HumanMessage("start")]
    for counter in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["human", "text", "tools"]))
        if kind == "human":
            messages.append(HumanMessage(f"h{counter}"))
        elif kind == "text":
            messages.append(AIMessage(f"t{counter}"))
        else:
            n = draw(st.integers(1, 4))
            call_ids = [f"c{counter}_{i}" for i in range(n)]
            messages.append(ai(*call_ids))
            answered = [i for i in call_ids if draw(st.booleans())]
            messages.extend(result(i) for i in draw(st.permutations(answered)))
    return messages


@settings(max_examples=200, deadline=None)
@given(histories())
def test_property_every_call_gets_exactly_one_result_in_place(history: list[BaseMessage]) -> None:
    state = PatchToolCalls().patch(State(messages=history))
    patched = history if state is None else state.messages

    # nothing else changed: removing the synthetic results gives back the input, object by object
    originals = [m for m in patched if m.content != DEFAULT_PATCH_MESSAGE]
    assert len(originals) == len(history)
    assert all(a is b for a, b in zip(originals, history, strict=True))

    # every call has exactly one result, in the tool block right after its assistant message
    for index, message in enumerate(patched):
        if isinstance(message, AIMessage) and message.tool_calls:
            block: list[str] = []
            for after in patched[index + 1 :]:
                if not isinstance(after, ToolMessage):
                    break
                block.append(after.tool_call_id)
            assert sorted(block) == sorted(c["id"] for c in message.tool_calls)

    # the patch is needed exactly when something was dangling, and is idempotent
    dangling = find_dangling_tool_calls(history)
    assert (state is None) == (not dangling)
    assert PatchToolCalls().patch(State(messages=patched)) is None


def test_a_long_valid_history_needs_no_patch() -> None:
    history: list[BaseMessage] = []
    for i in range(1_000):
        history += [HumanMessage("q"), ai(f"x{i}"), result(f"x{i}"), AIMessage("a")]
    assert PatchToolCalls().patch(State(messages=history)) is None
