"""Tests for ``sagents.events``: the event classes and their stable JSON form (events.md)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from sagents import events
from sagents._errors import SagentsError
from sagents._interrupt import ActionRequest, Interrupt, Question
from sagents._state import State
from sagents._status import Status
from sagents._todo import Todo, TodoStatus
from sagents.events import (
    AgentReset,
    AgentShutdown,
    AgentStateUpdate,
    ChainError,
    ConversationTitleGenerated,
    DisplayMessageSaved,
    DisplayMessageUpdated,
    Event,
    FileChanged,
    FollowUpsLimited,
    LLMDeltas,
    LLMError,
    LLMMessage,
    LLMTokenUsage,
    MessageQueued,
    MiddlewareAction,
    NodeTransferred,
    NodeTransferring,
    RunHalted,
    SaveFailed,
    SaveRefused,
    StateRestored,
    StatusChanged,
    SubAgentActivity,
    SubscriptionOverflow,
    TodosUpdated,
    ToolCallIdentified,
    ToolExecutionCompleted,
    ToolExecutionFailed,
    ToolExecutionStarted,
    event_types,
    from_json,
)

_INTERRUPT = Interrupt(
    action_requests=(
        ActionRequest(
            tool_call_id="c1",
            name="write_file",
            arguments={"file_path": "/notes.md", "content": "# hi ☃"},
        ),
        ActionRequest(
            tool_call_id="c2",
            name="run",
            arguments={"cmd": "ls"},
            allowed_decisions=("approve", "reject"),
        ),
    )
)
_QUESTION_INTERRUPT = Interrupt(
    kind="question",
    action_requests=(
        ActionRequest(
            tool_call_id="c3",
            name="ask_user",
            arguments={"questions": [{"question": "Which database?"}]},
            allowed_decisions=("answer", "respond", "reject"),
            questions=(
                Question(
                    question="Which database?",
                    type="single_choice",
                    choices=("PostgreSQL", "SQLite"),
                    recommended="PostgreSQL",
                ),
            ),
        ),
    ),
)
_TODOS = [
    Todo(content="plan", status=TodoStatus.COMPLETED, id="t1"),
    Todo(content="write", status=TodoStatus.IN_PROGRESS, id="t2"),
]
_AI = AIMessage(
    "Let me write that down.",
    id="m1",
    tool_calls=[{"name": "write_file", "args": {"file_path": "/notes.md"}, "id": "c1"}],
    usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
    response_metadata={"model_name": "scripted"},
)
_STATE = State(
    agent_id="a1",
    messages=[
        SystemMessage("be brief"),
        HumanMessage([{"type": "text", "text": "take notes"}]),
        _AI,
        ToolMessage("ok", tool_call_id="c1", name="write_file", artifact={"bytes": 6}),
    ],
    todos=_TODOS,
    metadata={"conversation_title": "Notes"},
    interrupt=_INTERRUPT,
)
_COMMON: dict[str, Any] = {"agent_id": "a1", "seq": 7}

# One sample per registered event type, keyed by its JSON name. A new event type that is not
# added here fails ``test_samples_cover_every_event_type``.
SAMPLES: dict[str, Event] = {
    "status_changed": StatusChanged(status=Status.INTERRUPTED, data=_INTERRUPT, **_COMMON),
    "llm_deltas": LLMDeltas(
        deltas=[
            AIMessageChunk(content="Let me ", id="m1"),
            AIMessageChunk(
                content="",
                id="m1",
                tool_call_chunks=[
                    {"name": "write_file", "args": '{"file_pa', "id": "c1", "index": 0}
                ],
            ),
        ],
        **_COMMON,
    ),
    "llm_message": LLMMessage(message=_AI, **_COMMON),
    "llm_token_usage": LLMTokenUsage(
        usage={
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "input_token_details": {"cache_read": 2},
        },
        **_COMMON,
    ),
    "chain_error": ChainError(error="model unavailable after 3 attempts", **_COMMON),
    "tool_call_identified": ToolCallIdentified(
        tool_call_id="c1", name="write_file", display_text="Writing /notes.md", **_COMMON
    ),
    "tool_execution_started": ToolExecutionStarted(
        tool_call_id="c1", name="write_file", arguments={"file_path": "/notes.md"}, **_COMMON
    ),
    "tool_execution_completed": ToolExecutionCompleted(
        tool_call_id="c1", name="write_file", result={"ok": True, "lines": [1, 2]}, **_COMMON
    ),
    "tool_execution_failed": ToolExecutionFailed(
        tool_call_id="c1", name="write_file", error="timed out after 30s", **_COMMON
    ),
    "todos_updated": TodosUpdated(todos=_TODOS, **_COMMON),
    "state_restored": StateRestored(state=_STATE, **_COMMON),
    "display_message_saved": DisplayMessageSaved(
        display_message={"id": 3, "role": "assistant", "text": "Done ✓"}, **_COMMON
    ),
    "display_message_updated": DisplayMessageUpdated(
        display_message={"id": "r1", "type": "tool_call", "status": "completed"}, **_COMMON
    ),
    "save_refused": SaveRefused(
        reason="owned_elsewhere", error="conversation 'c' runs on host-b:12:ab12", **_COMMON
    ),
    "agent_shutdown": AgentShutdown(reason="inactivity", metadata={"idle_seconds": 300}, **_COMMON),
    "node_transferring": NodeTransferring(from_node="n1", to_node="n2", **_COMMON),
    "node_transferred": NodeTransferred(from_node="n1", to_node="n2", **_COMMON),
    "subscription_overflow": SubscriptionOverflow(dropped=12, **_COMMON),
    "conversation_title_generated": ConversationTitleGenerated(title="Trip to Lisbon", **_COMMON),
    "file_changed": FileChanged(
        path="/notes/plan.md", change="moved", previous_path="/plan.md", **_COMMON
    ),
    "run_halted": RunHalted(reason="the budget is spent", **_COMMON),
    "agent_reset": AgentReset(files="clear", **_COMMON),
    "message_queued": MessageQueued(
        message=HumanMessage("and in French?"), queued=2, from_tool=False, **_COMMON
    ),
    "follow_ups_limited": FollowUpsLimited(max_follow_ups=10, added=1, **_COMMON),
    "agent_state_update": AgentStateUpdate(state=_STATE, **_COMMON),
    "middleware_action": MiddlewareAction(
        middleware="conversation_title", data={"title": "Notes"}, **_COMMON
    ),
    "llm_error": LLMError(error="429 rate limited", attempt=2, **_COMMON),
    "persistence_error": SaveFailed(operation="save_state", error="database is locked", **_COMMON),
    "sub_agent_activity": SubAgentActivity(
        sub_agent_id="a1-sub-1",
        tool_call_id="c1",
        activity="completed",
        data="the answer",
        **_COMMON,
    ),
}

# Further instances worth a round trip: the other shapes of ``StatusChanged.data`` and defaults.
EXTRA_SAMPLES: list[Event] = [
    StatusChanged(status=Status.IDLE, **_COMMON),
    StatusChanged(status=Status.RUNNING),
    StatusChanged(status=Status.ERROR, data="max_runs exceeded (50 model calls)", **_COMMON),
    StatusChanged(status=Status.CANCELLED, data=None, **_COMMON),
    ToolExecutionCompleted(tool_call_id="c1", result="plain text", **_COMMON),
    ToolExecutionCompleted(tool_call_id="c1", **_COMMON),
    AgentShutdown(reason="a custom reason"),
    MiddlewareAction(middleware="m", data=[1, "two", None], **_COMMON),
    TodosUpdated(todos=[], **_COMMON),
    StateRestored(state=State(), **_COMMON),
    LLMDeltas(deltas=[], **_COMMON),
    AgentReset(**_COMMON),
    StatusChanged(status=Status.INTERRUPTED, data=_QUESTION_INTERRUPT, **_COMMON),
    FileChanged(path="/notes.md", change="created", **_COMMON),
    MessageQueued(queued=1, from_tool=True, **_COMMON),  # a tool's hidden message
]


def _json_round_trip(event: Event) -> Event:
    return from_json(json.loads(json.dumps(event.to_json())))


def test_samples_cover_every_event_type() -> None:
    registered = event_types()
    assert set(SAMPLES) == set(registered), "add a sample for every new event type"
    for name, sample in SAMPLES.items():
        assert type(sample) is registered[name]


def test_registry_is_keyed_by_the_json_name() -> None:
    for name, cls in event_types().items():
        assert cls.type == name
        assert issubclass(cls, Event)
        assert cls is not Event


def test_event_types_returns_a_copy() -> None:
    event_types().clear()
    assert len(event_types()) == len(SAMPLES)


def test_every_public_event_class_is_registered() -> None:
    public = {
        getattr(events, name)
        for name in events.__all__
        if isinstance(getattr(events, name), type)
        and issubclass(getattr(events, name), Event)
        and getattr(events, name) is not Event
    }
    assert public == set(event_types().values())


@pytest.mark.parametrize("name", sorted(event_types()))
def test_event_round_trips_through_json(name: str) -> None:
    assert name in SAMPLES, f"no sample for event type {name!r}"
    event = SAMPLES[name]
    data = event.to_json()
    assert data["type"] == name
    assert data["agent_id"] == "a1"
    assert data["seq"] == 7
    encoded = json.dumps(data)
    assert json.loads(encoded) == data, "to_json() must already be plain JSON"
    back = from_json(json.loads(encoded))
    assert type(back) is type(event)
    assert back == event
    assert back.to_json() == data


@pytest.mark.parametrize("event", EXTRA_SAMPLES, ids=lambda e: type(e).__name__)
def test_more_shapes_round_trip(event: Event) -> None:
    assert _json_round_trip(event) == event


def test_round_trip_rebuilds_rich_values() -> None:
    status = _json_round_trip(SAMPLES["status_changed"])
    assert isinstance(status, StatusChanged)
    assert status.status is Status.INTERRUPTED
    assert isinstance(status.data, Interrupt)

    deltas = _json_round_trip(SAMPLES["llm_deltas"])
    assert isinstance(deltas, LLMDeltas)
    assert all(type(d) is AIMessageChunk for d in deltas.deltas)

    message = _json_round_trip(SAMPLES["llm_message"])
    assert isinstance(message, LLMMessage)
    assert type(message.message) is AIMessage
    assert message.message.tool_calls[0]["id"] == "c1"

    todos = _json_round_trip(SAMPLES["todos_updated"])
    assert isinstance(todos, TodosUpdated)
    assert all(isinstance(t, Todo) for t in todos.todos)

    restored = _json_round_trip(SAMPLES["state_restored"])
    assert isinstance(restored, StateRestored)
    assert restored.state == _STATE


def test_status_serialises_as_its_value() -> None:
    data = StatusChanged(status=Status.ERROR, data="boom").to_json()
    assert data["status"] == "error"
    assert type(data["status"]) is str


def test_defaults_for_agent_id_and_seq() -> None:
    event = ChainError(error="x")
    assert event.agent_id == ""
    assert event.seq == 0


# -- match ---------------------------------------------------------------------------------------


def _describe(event: Event) -> str:
    match event:
        case StatusChanged(status=Status.INTERRUPTED, data=Interrupt(action_requests=requests)):
            return f"interrupted:{len(requests)}"
        case StatusChanged(status=Status.ERROR, data=str(reason)):
            return f"error:{reason}"
        case StatusChanged(status=status):
            return f"status:{status}"
        case LLMDeltas(deltas=[first, *_]):
            return f"delta:{first.content}"
        case ToolExecutionFailed(tool_call_id=call_id, error=error):
            return f"failed:{call_id}:{error}"
        case LLMError(attempt=attempt) if attempt > 1:
            return f"retry:{attempt}"
        case AgentShutdown(reason="inactivity" | "no_viewers" as reason):
            return f"idle-stop:{reason}"
        case Event(agent_id=agent_id, seq=seq):
            return f"other:{agent_id}:{seq}"
    return "unreachable"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (SAMPLES["status_changed"], "interrupted:2"),
        (StatusChanged(status=Status.ERROR, data="boom"), "error:boom"),
        (StatusChanged(status=Status.IDLE), "status:idle"),
        (SAMPLES["llm_deltas"], "delta:Let me "),
        (SAMPLES["tool_execution_failed"], "failed:c1:timed out after 30s"),
        (SAMPLES["llm_error"], "retry:2"),
        (LLMError(error="x", attempt=1, seq=3), "other::3"),
        (SAMPLES["agent_shutdown"], "idle-stop:inactivity"),
        (SAMPLES["node_transferred"], "other:a1:7"),
    ],
)
def test_match_with_keyword_patterns(event: Event, expected: str) -> None:
    assert _describe(event) == expected


# -- channels ------------------------------------------------------------------------------------


def test_debug_channel_classes() -> None:
    debug = {cls for cls in event_types().values() if cls.channel == "debug"}
    assert debug == {
        AgentStateUpdate,
        MiddlewareAction,
        LLMError,
        SaveFailed,
        SubAgentActivity,
    }


def test_every_other_class_is_on_main() -> None:
    for cls in event_types().values():
        assert cls.channel in ("main", "debug")
    main = {cls for cls in event_types().values() if cls.channel == "main"}
    assert len(main) == len(event_types()) - 5
    assert StatusChanged in main
    assert SubscriptionOverflow in main


def test_channel_and_type_are_not_fields() -> None:
    for cls in event_types().values():
        names = {f.name for f in dataclasses.fields(cls)}
        assert "type" not in names
        assert "channel" not in names
        assert {"agent_id", "seq"} <= names


# -- from_json errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"type": "no_such_event", "agent_id": "a1", "seq": 1},
        {"type": None},
        {"type": "event"},
        {"agent_id": "a1", "seq": 1},
        {"type": "StatusChanged", "status": "idle"},
    ],
)
def test_from_json_rejects_unknown_types(data: dict[str, Any]) -> None:
    with pytest.raises(SagentsError, match="unknown event type"):
        from_json(data)


@pytest.mark.parametrize(
    "data",
    [
        # A required field is missing.
        {"type": "chain_error", "agent_id": "a1", "seq": 1},
        {"type": "tool_call_identified", "tool_call_id": "c1", "name": "ls"},
        # A field that cannot be decoded.
        {"type": "llm_message", "message": "hello"},
        {"type": "todos_updated", "todos": [{"content": "x", "status": "done"}]},
        {"type": "state_restored", "state": {"version": 99}},
        {"type": "status_changed", "status": "sleeping"},
    ],
)
def test_from_json_rejects_malformed_events_with_sagents_error(data: dict[str, Any]) -> None:
    with pytest.raises(SagentsError):
        from_json(data)


# -- immutability --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_events_are_frozen(name: str) -> None:
    event = SAMPLES[name]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.seq = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.agent_id = "other"  # type: ignore[misc]
    # Slots: no stray attributes either.
    with pytest.raises((AttributeError, TypeError)):
        event.extra = 1  # type: ignore[attr-defined]
    assert event.seq == 7


def test_events_stamped_with_replace_are_new_objects() -> None:
    # How a server stamps ``seq`` onto an event the loop emitted with seq=0.
    event = ChainError(agent_id="a1", error="x")
    stamped = dataclasses.replace(event, seq=42)
    assert stamped.seq == 42
    assert event.seq == 0


def test_events_require_keyword_arguments() -> None:
    with pytest.raises(TypeError):
        ChainError("a1", 1, "x")  # type: ignore[call-arg]


def test_the_old_name_of_save_failed_still_works_with_a_warning() -> None:
    import sagents.events

    with pytest.warns(DeprecationWarning, match="SaveFailed"):
        old = sagents.events.PersistenceError
    assert old is SaveFailed
