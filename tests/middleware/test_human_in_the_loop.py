"""Tests for ``sagents.middleware._human_in_the_loop``: approval before protected tools (L4, X24).

Runs are driven offline with :class:`ScriptedChatModel`; the tools record every invocation, so
each test can say exactly which calls ran, with which arguments, and how many times.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from sagents import (
    ActionRequest,
    Agent,
    Approve,
    Done,
    Edit,
    Interrupt,
    Interrupted,
    InvalidAgent,
    InvalidDecision,
    InvalidMiddleware,
    InvalidTransition,
    Reject,
    State,
    Status,
    TodoStatus,
)
from sagents.events import ToolExecutionCompleted, ToolExecutionFailed, ToolExecutionStarted
from sagents.execution import (
    CollectingSink,
    Reply,
    ScriptedChatModel,
    ToolCall,
    dismiss_interrupt,
)
from sagents.middleware import HumanInTheLoop, TodoList

ALL = ("approve", "edit", "reject")
DELETE_POLICY = {
    "allowed_decisions": ["approve", "reject"],
    "description": "Deleting files cannot be undone",
}
INTERRUPT_ON: dict[str, Any] = {
    "send_email": True,
    "delete_file": DELETE_POLICY,
    "lookup": False,
}

# -- helpers ----------------------------------------------------------------------------------


class Toolbox:
    """Plain typed tool functions that record each invocation in ``log``."""

    def __init__(self) -> None:
        self.log: list[tuple[str, dict[str, Any]]] = []

    def tools(self) -> list[Callable[..., str]]:
        log = self.log

        def send_email(to: str, body: str = "") -> str:
            """Send an email."""
            log.append(("send_email", {"to": to, "body": body}))
            return f"sent to {to}"

        def delete_file(path: str) -> str:
            """Delete a file."""
            log.append(("delete_file", {"path": path}))
            return f"deleted {path}"

        def lookup(query: str) -> str:
            """Look something up."""
            log.append(("lookup", {"query": query}))
            return f"found {query}"

        return [send_email, delete_file, lookup]

    def count(self, name: str) -> int:
        return sum(1 for tool, _ in self.log if tool == name)


@pytest.fixture
def toolbox() -> Toolbox:
    return Toolbox()


def _send(call_id: str, to: str, body: str = "hi") -> ToolCall:
    return ToolCall(name="send_email", args={"to": to, "body": body}, id=call_id)


def _delete(call_id: str, path: str) -> ToolCall:
    return ToolCall(name="delete_file", args={"path": path}, id=call_id)


def _lookup(call_id: str, query: str) -> ToolCall:
    return ToolCall(name="lookup", args={"query": query}, id=call_id)


def _model(*turns: Sequence[ToolCall]) -> ScriptedChatModel:
    """One model turn per entry of ``turns``, then a final answer "done"."""
    script = [Reply(text=f"turn {i}", tool_calls=list(calls)) for i, calls in enumerate(turns)]
    return ScriptedChatModel(script=[*script, Reply(text="done")])


def _agent(
    toolbox: Toolbox,
    model: ScriptedChatModel,
    interrupt_on: Mapping[str, Any] = INTERRUPT_ON,
) -> Agent:
    return Agent(
        agent_id="hitl-agent",
        model=model,
        tools=toolbox.tools(),
        middleware=[HumanInTheLoop(interrupt_on=interrupt_on)],
    )


def _start() -> State:
    return State(messages=[HumanMessage("do the risky things")])


async def _interrupted(agent: Agent, sink: CollectingSink | None = None) -> Interrupted:
    result = await agent.run(_start(), sink=sink)
    assert isinstance(result, Interrupted), result
    return result


def _tool_messages(state: State) -> list[ToolMessage]:
    return [m for m in state.messages if isinstance(m, ToolMessage)]


def _last_tool_calls(state: State) -> list[dict[str, Any]]:
    ai = [m for m in state.messages if isinstance(m, AIMessage) and m.tool_calls]
    return [dict(call) for call in ai[-1].tool_calls]


def _assert_history_valid(state: State) -> None:
    """Every AI tool call has exactly one tool result, and no result is orphaned."""
    calls = [c["id"] for m in state.messages if isinstance(m, AIMessage) for c in m.tool_calls]
    results = [m.tool_call_id for m in _tool_messages(state)]
    assert Counter(results) == Counter(calls)


# -- configuration ------------------------------------------------------------------------------


def test_valid_configuration_protects_only_the_named_tools() -> None:
    middleware = HumanInTheLoop(
        interrupt_on={
            "send_email": True,
            "delete_file": DELETE_POLICY,
            "lookup": False,
            "edit_only": {"allowed_decisions": ["edit"]},
            "described": {"description": "Needs a second pair of eyes"},
        }
    )

    assert middleware.protects("send_email")
    assert middleware.protects("delete_file")
    assert middleware.protects("edit_only")
    assert middleware.protects("described")
    assert not middleware.protects("lookup")
    assert not middleware.protects("unnamed")
    assert middleware.key == "human_in_the_loop"


def test_empty_configuration_is_rejected() -> None:
    with pytest.raises(InvalidMiddleware, match="at least one tool name") as info:
        HumanInTheLoop(interrupt_on={})

    assert isinstance(info.value, InvalidAgent)
    assert info.value.field == "middleware"


@pytest.mark.parametrize(
    ("policy", "match"),
    [
        pytest.param(None, "must be True, False or a dict", id="none"),
        pytest.param(1, "must be True, False or a dict", id="int-one"),
        pytest.param(0, "must be True, False or a dict", id="int-zero"),
        pytest.param("yes", "must be True, False or a dict", id="string"),
        pytest.param(["approve"], "must be True, False or a dict", id="list"),
        pytest.param({"allowed": ["approve"]}, "unknown key", id="unknown-key"),
        pytest.param(
            {"allowed_decisions": ["approve"], "timeout": 3}, "unknown key", id="extra-key"
        ),
        pytest.param({"allowed_decisions": []}, "non-empty subset", id="empty-decisions"),
        pytest.param(
            {"allowed_decisions": ["approve", "maybe"]}, "non-empty subset", id="unknown-decision"
        ),
        pytest.param({"allowed_decisions": "approve"}, "non-empty subset", id="decisions-string"),
        pytest.param({"allowed_decisions": ["APPROVE"]}, "non-empty subset", id="wrong-case"),
        pytest.param({"description": 3}, "description must be a string", id="bad-description"),
    ],
)
def test_bad_policies_are_rejected_naming_the_tool(policy: Any, match: str) -> None:
    with pytest.raises(InvalidMiddleware, match=match) as info:
        HumanInTheLoop(interrupt_on={"send_email": True, "risky": policy})

    assert "'risky'" in str(info.value)


def test_agent_rejects_the_class_without_configuration(toolbox: Toolbox) -> None:
    with pytest.raises(InvalidMiddleware, match="HumanInTheLoop"):
        Agent(agent_id="a", model=_model(), tools=toolbox.tools(), middleware=[HumanInTheLoop])


def test_agent_revalidates_a_middleware_changed_after_construction(toolbox: Toolbox) -> None:
    middleware = HumanInTheLoop(interrupt_on={"send_email": True})
    middleware.interrupt_on = {"send_email": {"allowed_decisions": ["sometimes"]}}

    with pytest.raises(InvalidMiddleware, match="send_email"):
        Agent(agent_id="a", model=_model(), tools=toolbox.tools(), middleware=[middleware])


def test_agent_rejects_an_emptied_configuration(toolbox: Toolbox) -> None:
    middleware = HumanInTheLoop(interrupt_on={"send_email": True})
    middleware.interrupt_on = {}

    with pytest.raises(InvalidMiddleware, match="at least one tool name"):
        Agent(agent_id="a", model=_model(), tools=toolbox.tools(), middleware=[middleware])


@pytest.mark.parametrize(
    "interrupt_on",
    [
        pytest.param(None, id="none"),
        pytest.param(["send_email"], id="list-of-names"),
        pytest.param("send_email", id="string"),
    ],
)
def test_interrupt_on_that_is_not_a_mapping_is_rejected(interrupt_on: Any) -> None:
    with pytest.raises(InvalidMiddleware):
        HumanInTheLoop(interrupt_on=interrupt_on)


@pytest.mark.parametrize("allowed", [None, 5, True])
def test_non_iterable_allowed_decisions_are_rejected(allowed: Any) -> None:
    with pytest.raises(InvalidMiddleware, match="allowed_decisions"):
        HumanInTheLoop(interrupt_on={"send_email": {"allowed_decisions": allowed}})


def test_non_string_tool_names_are_rejected() -> None:
    with pytest.raises(InvalidMiddleware):
        HumanInTheLoop(interrupt_on={1: True})  # type: ignore[dict-item]


# -- interrupting -------------------------------------------------------------------------------


async def test_no_tool_of_the_turn_runs_before_resume(toolbox: Toolbox) -> None:
    model = _model([_lookup("call_1", "weather"), _send("call_2", "ann@example.com")])
    agent = _agent(toolbox, model)
    sink = CollectingSink()

    result = await _interrupted(agent, sink)

    # Not even the unprotected lookup ran.
    assert toolbox.log == []
    assert _tool_messages(result.state) == []
    assert not [e for e in sink.events if isinstance(e, ToolExecutionStarted | ToolExecutionFailed)]
    assert model.calls == 1
    assert result.status is Status.INTERRUPTED
    assert result.state.interrupt == result.interrupt
    # The AI message with its calls is in the history, waiting for results.
    assert [c["id"] for c in result.state.pending_tool_calls()] == ["call_1", "call_2"]
    assert sink.states[-1] == result.state


async def test_interrupt_lists_every_protected_call_in_call_order(toolbox: Toolbox) -> None:
    agent = _agent(
        toolbox,
        _model(
            [
                _send("call_1", "ann@example.com"),
                _lookup("call_2", "weather"),
                _delete("call_3", "/notes.txt"),
                _send("call_4", "bob@example.com", "second"),
            ]
        ),
    )

    result = await _interrupted(agent)

    assert result.interrupt.kind == "human_approval"
    assert result.interrupt.action_requests == (
        ActionRequest(
            tool_call_id="call_1",
            name="send_email",
            arguments={"to": "ann@example.com", "body": "hi"},
            allowed_decisions=ALL,
            description=None,
        ),
        ActionRequest(
            tool_call_id="call_3",
            name="delete_file",
            arguments={"path": "/notes.txt"},
            allowed_decisions=("approve", "reject"),
            description="Deleting files cannot be undone",
        ),
        ActionRequest(
            tool_call_id="call_4",
            name="send_email",
            arguments={"to": "bob@example.com", "body": "second"},
            allowed_decisions=ALL,
            description=None,
        ),
    )
    # The interrupt data is plain JSON for a UI.
    data = json.loads(json.dumps(result.interrupt.to_dict()))
    assert [r["tool_call_id"] for r in data["action_requests"]] == ["call_1", "call_3", "call_4"]
    assert data["action_requests"][1]["allowed_decisions"] == ["approve", "reject"]


async def test_turns_without_protected_calls_run_straight_through(toolbox: Toolbox) -> None:
    agent = _agent(toolbox, _model([_lookup("call_1", "weather")]))

    result = await agent.run(_start())

    assert isinstance(result, Done)
    assert result.status is Status.IDLE
    assert result.state.interrupt is None
    assert toolbox.log == [("lookup", {"query": "weather"})]


# -- resuming -----------------------------------------------------------------------------------


async def test_parallel_turn_with_mixed_decisions(toolbox: Toolbox) -> None:
    model = _model(
        [
            _send("call_1", "ann@example.com", "original"),
            _lookup("call_2", "weather"),
            _send("call_3", "typo@exampel.com", "draft"),
            _delete("call_4", "/important.txt"),
        ]
    )
    agent = _agent(toolbox, model)
    interrupted = await _interrupted(agent)
    assert [r.tool_call_id for r in interrupted.interrupt.action_requests] == [
        "call_1",
        "call_3",
        "call_4",
    ]
    edited = {"to": "bob@example.com", "body": "final"}
    sink = CollectingSink()

    result = await agent.resume(
        interrupted.state,
        [
            {"type": "approve"},
            {"type": "edit", "arguments": edited},
            {"type": "reject", "message": "keep that file"},
        ],
        sink=sink,
    )

    assert isinstance(result, Done)
    state = result.state
    assert state.interrupt is None
    # Approved with its original arguments, edited with the new ones, rejected not at all, and
    # the unprotected call exactly once (not before the interrupt and again after it).
    assert Counter(json.dumps(entry, sort_keys=True) for entry in toolbox.log) == Counter(
        json.dumps(entry, sort_keys=True)
        for entry in [
            ("send_email", {"to": "ann@example.com", "body": "original"}),
            ("lookup", {"query": "weather"}),
            ("send_email", edited),
        ]
    )
    assert toolbox.count("lookup") == 1
    assert toolbox.count("delete_file") == 0

    # The history shows the arguments the tool really ran with.
    calls = _last_tool_calls(state)
    assert [c["id"] for c in calls] == ["call_1", "call_2", "call_3", "call_4"]
    assert calls[0]["args"] == {"to": "ann@example.com", "body": "original"}
    assert calls[2]["args"] == edited
    assert calls[3]["args"] == {"path": "/important.txt"}

    # Results in call order; the rejection is an error result carrying the user's message.
    results = _tool_messages(state)
    assert [m.tool_call_id for m in results] == ["call_1", "call_2", "call_3", "call_4"]
    assert [m.status for m in results] == ["success", "success", "success", "error"]
    assert results[2].text == "sent to bob@example.com"
    assert "keep that file" in results[3].text
    assert "reject" in results[3].text.lower()
    _assert_history_valid(state)

    # Events: the rejected call never started, and failed; the edited one started with new args.
    started = {e.tool_call_id: e for e in sink.events if isinstance(e, ToolExecutionStarted)}
    assert sorted(started) == ["call_1", "call_2", "call_3"]
    assert started["call_3"].arguments == edited
    failed = [e for e in sink.events if isinstance(e, ToolExecutionFailed)]
    assert [(e.tool_call_id, e.name) for e in failed] == [("call_4", "delete_file")]
    assert "keep that file" in failed[0].error
    completed = {e.tool_call_id for e in sink.events if isinstance(e, ToolExecutionCompleted)}
    assert completed == {"call_1", "call_2", "call_3"}

    # The model's next call saw the edited call and all four results.
    assert model.calls == 2
    prompt = model.prompts[1]
    [ai] = [m for m in prompt if isinstance(m, AIMessage)]
    assert ai.tool_calls[2]["args"] == edited
    assert [m.tool_call_id for m in prompt if isinstance(m, ToolMessage)] == [
        "call_1",
        "call_2",
        "call_3",
        "call_4",
    ]


async def test_decision_objects_work_like_their_json_form(toolbox: Toolbox) -> None:
    agent = _agent(
        toolbox,
        _model([_send("call_1", "ann@example.com"), _send("call_2", "x@example.com")]),
    )
    interrupted = await _interrupted(agent)

    result = await agent.resume(
        interrupted.state, [Edit(arguments={"to": "bob@example.com"}), Reject()]
    )

    assert isinstance(result, Done)
    assert toolbox.log == [("send_email", {"to": "bob@example.com", "body": ""})]
    rejection = _tool_messages(result.state)[1]
    assert rejection.status == "error"
    assert rejection.text == "Rejected by the user: The user rejected this tool call."


async def test_rejecting_every_call_still_continues_the_loop(toolbox: Toolbox) -> None:
    model = _model([_delete("call_1", "/a"), _delete("call_2", "/b")])
    agent = _agent(toolbox, model)
    interrupted = await _interrupted(agent)
    sink = CollectingSink()

    result = await agent.resume(
        interrupted.state, [Reject(message="no"), {"type": "reject"}], sink=sink
    )

    assert isinstance(result, Done)
    assert toolbox.log == []
    assert [m.status for m in _tool_messages(result.state)] == ["error", "error"]
    failed = [e.tool_call_id for e in sink.events if isinstance(e, ToolExecutionFailed)]
    assert sorted(failed) == ["call_1", "call_2"]
    assert model.calls == 2
    assert result.state.messages[-1].text == "done"


async def test_an_edit_with_arguments_the_tool_refuses_becomes_an_error_result(
    toolbox: Toolbox,
) -> None:
    agent = _agent(toolbox, _model([_send("call_1", "ann@example.com")]))
    interrupted = await _interrupted(agent)

    result = await agent.resume(
        interrupted.state, [{"type": "edit", "arguments": {"recipient": "bob"}}]
    )

    assert isinstance(result, Done)
    assert toolbox.log == []
    [message] = _tool_messages(result.state)
    assert message.status == "error"
    assert "invalid arguments" in message.text


async def test_a_protected_write_todos_changes_nothing_until_approved() -> None:
    write = ToolCall(
        name="write_todos",
        args={"todos": [{"content": "ship it", "status": "in_progress"}]},
        id="call_1",
    )
    agent = Agent(
        agent_id="hitl-agent",
        model=_model([write]),
        middleware=[TodoList, HumanInTheLoop(interrupt_on={"write_todos": True})],
    )
    interrupted = await _interrupted(agent)
    assert interrupted.state.todos == []

    result = await agent.resume(interrupted.state, [Approve()])

    assert isinstance(result, Done)
    assert [(t.content, t.status) for t in result.state.todos] == [
        ("ship it", TodoStatus.IN_PROGRESS)
    ]


async def test_a_later_turn_interrupts_again(toolbox: Toolbox) -> None:
    model = _model([_send("call_1", "ann@example.com")], [_delete("call_2", "/old.txt")])
    agent = _agent(toolbox, model)
    first = await _interrupted(agent)

    second = await agent.resume(first.state, [Approve()])

    assert isinstance(second, Interrupted)
    assert second.state.interrupt == second.interrupt
    assert [(r.tool_call_id, r.name) for r in second.interrupt.action_requests] == [
        ("call_2", "delete_file")
    ]
    assert toolbox.log == [("send_email", {"to": "ann@example.com", "body": "hi"})]
    assert [m.tool_call_id for m in _tool_messages(second.state)] == ["call_1"]

    final = await agent.resume(second.state, [Reject(message="not today")])

    assert isinstance(final, Done)
    assert toolbox.count("delete_file") == 0
    assert final.state.messages[-1].text == "done"
    _assert_history_valid(final.state)


# -- decision validation ------------------------------------------------------------------------

# The pending calls below are send_email (any decision) then delete_file (approve or reject).
_BAD_DECISIONS: list[Any] = [
    pytest.param([], "expected 2 decision", id="none-given"),
    pytest.param([{"type": "approve"}], "expected 2 decision", id="too-few"),
    pytest.param([Approve(), Approve(), Approve()], "expected 2 decision", id="too-many"),
    pytest.param(
        [Approve(), {"type": "edit", "arguments": {"path": "/x"}}],
        "'edit' is not allowed",
        id="edit-not-allowed-for-tool",
    ),
    pytest.param([{"type": "edit"}, Approve()], "arguments", id="edit-without-arguments"),
    pytest.param(
        [{"type": "edit", "arguments": "to=bob"}, Approve()], "arguments", id="edit-args-string"
    ),
    pytest.param([Edit(arguments=["bob"]), Approve()], "arguments", id="edit-object-args-list"),  # type: ignore[arg-type]
    pytest.param([{"type": "maybe"}, Approve()], "'maybe'", id="unknown-type"),
    pytest.param([{}, Approve()], "None", id="missing-type"),
    pytest.param([{"type": "approve", "note": "x"}, Approve()], "unknown field", id="extra-field"),
    pytest.param([{"type": "reject", "message": 3}, Approve()], "message", id="reject-msg-int"),
    pytest.param([Approve(), "approve"], "got str", id="decision-is-a-string"),
    pytest.param({"type": "approve"}, "must be a list", id="not-a-list"),
    pytest.param(Approve(), "must be a list", id="single-object"),
]


@pytest.mark.parametrize(("decisions", "match"), _BAD_DECISIONS)
async def test_invalid_decisions_raise_and_keep_the_interrupt(
    toolbox: Toolbox, decisions: Any, match: str
) -> None:
    model = _model([_send("call_1", "ann@example.com"), _delete("call_2", "/a")])
    agent = _agent(toolbox, model)
    interrupted = await _interrupted(agent)
    before = interrupted.state.to_dict()
    sink = CollectingSink()

    with pytest.raises(InvalidDecision, match=match):
        await agent.resume(interrupted.state, decisions, sink=sink)

    # Nothing happened: no tool, no model call, no event, the interrupt is still pending.
    assert toolbox.log == []
    assert model.calls == 1
    assert sink.events == []
    assert sink.states == []
    assert interrupted.state.interrupt == interrupted.interrupt
    assert interrupted.state.to_dict() == before

    # And a valid answer afterwards resumes the run.
    result = await agent.resume(interrupted.state, [Approve(), Reject()])
    assert isinstance(result, Done)
    assert toolbox.log == [("send_email", {"to": "ann@example.com", "body": "hi"})]


async def test_decisions_are_checked_against_each_calls_own_policy(toolbox: Toolbox) -> None:
    interrupt_on = {"send_email": {"allowed_decisions": ["edit"]}, "delete_file": True}
    agent = _agent(
        toolbox, _model([_send("call_1", "a@example.com"), _delete("call_2", "/a")]), interrupt_on
    )
    interrupted = await _interrupted(agent)

    with pytest.raises(InvalidDecision, match="decision 0 for 'send_email'"):
        await agent.resume(interrupted.state, [Approve(), Approve()])

    result = await agent.resume(
        interrupted.state, [Edit(arguments={"to": "b@example.com"}), Edit(arguments={"path": "/b"})]
    )
    assert isinstance(result, Done)
    assert sorted(toolbox.log) == [
        ("delete_file", {"path": "/b"}),
        ("send_email", {"to": "b@example.com", "body": ""}),
    ]


# -- transitions --------------------------------------------------------------------------------


async def test_resume_without_a_pending_interrupt_is_an_invalid_transition(
    toolbox: Toolbox,
) -> None:
    agent = _agent(toolbox, _model([_lookup("call_1", "weather")]))

    with pytest.raises(InvalidTransition, match="no pending interrupt"):
        await agent.resume(_start(), [Approve()])

    done = await agent.run(_start())
    assert isinstance(done, Done)
    with pytest.raises(InvalidTransition, match="no pending interrupt"):
        await agent.resume(done.state, [])


async def test_run_on_a_state_with_a_pending_interrupt_is_an_invalid_transition(
    toolbox: Toolbox,
) -> None:
    model = _model([_send("call_1", "ann@example.com")])
    agent = _agent(toolbox, model)
    interrupted = await _interrupted(agent)

    with pytest.raises(InvalidTransition, match="pending interrupt"):
        await agent.run(interrupted.state)
    with pytest.raises(InvalidTransition, match="pending interrupt"):
        await agent.run(interrupted.state.append(HumanMessage("and another thing")))

    assert toolbox.log == []
    assert model.calls == 1


# -- durability ---------------------------------------------------------------------------------


async def test_interrupt_survives_to_dict_and_resume_works_from_the_restored_state(
    toolbox: Toolbox,
) -> None:
    agent = _agent(
        toolbox,
        _model(
            [_send("call_1", "ann@example.com"), _lookup("call_2", "q"), _delete("call_3", "/a")]
        ),
    )
    interrupted = await _interrupted(agent)

    stored = json.dumps(interrupted.state.to_dict())
    restored = State.from_dict(json.loads(stored))

    assert restored == interrupted.state
    assert restored.interrupt == interrupted.interrupt
    assert isinstance(restored.interrupt, Interrupt)
    assert restored.interrupt.action_requests[1].allowed_decisions == ("approve", "reject")
    assert restored.interrupt.action_requests[1].description == "Deleting files cannot be undone"

    # A new process: the same configuration built again from code, with a fresh model.
    fresh = Toolbox()
    rebuilt = _agent(fresh, ScriptedChatModel(script=[Reply(text="done")]))
    with pytest.raises(InvalidTransition):
        await rebuilt.run(restored)
    with pytest.raises(InvalidDecision):
        await rebuilt.resume(restored, [Approve(), {"type": "edit", "arguments": {"path": "/b"}}])

    result = await rebuilt.resume(
        restored, [Edit(arguments={"to": "bob@example.com", "body": "hey"}), Approve()]
    )

    assert isinstance(result, Done)
    assert sorted(fresh.log) == [
        ("delete_file", {"path": "/a"}),
        ("lookup", {"query": "q"}),
        ("send_email", {"to": "bob@example.com", "body": "hey"}),
    ]
    assert _last_tool_calls(result.state)[0]["args"] == {"to": "bob@example.com", "body": "hey"}
    _assert_history_valid(result.state)


# -- dismissing ---------------------------------------------------------------------------------


async def test_dismiss_interrupt_answers_every_pending_call(toolbox: Toolbox) -> None:
    model = _model([_send("call_1", "ann@example.com"), _lookup("call_2", "weather")])
    agent = _agent(toolbox, model)
    interrupted = await _interrupted(agent)

    state, results = dismiss_interrupt(interrupted.state)

    assert state.interrupt is None
    assert state.pending_tool_calls() == []
    assert [(m.tool_call_id, m.name, m.status) for m in results] == [
        ("call_1", "send_email", "error"),
        ("call_2", "lookup", "error"),
    ]
    assert all(m.text == "Not run: not approved: the user sent a new message" for m in results)
    assert state.messages[-2:] == results
    _assert_history_valid(state)
    assert toolbox.log == []

    # The conversation goes on from a valid history; nothing of the old turn runs.
    result = await agent.run(state.append(HumanMessage("never mind")))

    assert isinstance(result, Done)
    assert toolbox.log == []
    assert model.calls == 2
    assert isinstance(model.prompts[1][-1], HumanMessage)


async def test_dismiss_interrupt_with_a_custom_reason_and_without_interrupt(
    toolbox: Toolbox,
) -> None:
    agent = _agent(toolbox, _model([_delete("call_1", "/a")]))
    interrupted = await _interrupted(agent)

    _, [message] = dismiss_interrupt(interrupted.state, "the session expired")

    assert message.text == "Not run: the session expired"
    assert message.status == "error"

    plain = _start()
    assert dismiss_interrupt(plain) == (plain, [])


async def test_a_dismissed_state_survives_to_dict(toolbox: Toolbox) -> None:
    agent = _agent(toolbox, _model([_send("call_1", "ann@example.com")]))
    interrupted = await _interrupted(agent)
    state, _ = dismiss_interrupt(interrupted.state)

    restored = State.from_dict(json.loads(json.dumps(state.to_dict())))

    assert restored == state
    assert restored.interrupt is None


# -- review follow-ups -----------------------------------------------------------------------------


def test_a_misspelled_tool_name_is_refused_when_the_agent_is_built() -> None:
    def write_file(file_path: str) -> str:
        """Write."""
        return file_path

    with pytest.raises(InvalidMiddleware, match=r"\['write_flie'\]"):
        Agent(
            agent_id="a",
            model=ScriptedChatModel(script=[]),
            tools=[write_file],
            middleware=[HumanInTheLoop(interrupt_on={"write_flie": True})],
        )


async def test_allowed_decisions_come_out_in_canonical_order() -> None:
    middleware = HumanInTheLoop(
        interrupt_on={"send_email": {"allowed_decisions": {"reject", "approve"}}}
    )
    call = {"name": "send_email", "args": {}, "id": "call-1"}
    interrupt = await middleware.after_model(State(messages=[AIMessage("", tool_calls=[call])]))
    assert isinstance(interrupt, Interrupt)
    assert interrupt.action_requests[0].allowed_decisions == ("approve", "reject")
