"""From sagents events to AG-UI events (``sagents/agui/_mapping.py``), with the protocol
package's own types: every event built here is encoded by its ``EventEncoder`` and read back
through its ``Event`` model."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ag_ui.core import (
    AssistantMessage,
    BaseEvent,
    Event,
    MessagesSnapshotEvent,
    RunErrorEvent,
    RunFinishedEvent,
    StateDeltaEvent,
    SystemMessage,
    TextMessageContentEvent,
    ToolCallArgsEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    ToolMessage,
    UserMessage,
)
from ag_ui.encoder import EventEncoder
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
)
from langchain_core.messages import SystemMessage as LangchainSystemMessage
from langchain_core.messages import ToolMessage as LangchainToolMessage
from pydantic import TypeAdapter

from sagents import State, Status
from sagents._interrupt import QUESTION_DECISIONS, ActionRequest, Interrupt, Question
from sagents._todo import Todo
from sagents.agui import EventMapper, agui_interrupts, agui_messages, default_state_view
from sagents.agui._mapping import json_patch, response_schema, text_of
from sagents.events import (
    AgentReset,
    AgentShutdown,
    FileChanged,
    LLMDeltas,
    LLMMessage,
    LLMTokenUsage,
    StatusChanged,
    SubscriptionOverflow,
    TodosUpdated,
    ToolCallIdentified,
    ToolExecutionCompleted,
    ToolExecutionFailed,
)

_events: TypeAdapter[Any] = TypeAdapter(Event)


def wire(events: list[BaseEvent]) -> list[dict[str, Any]]:
    """The events as a client reads them: SSE from the package's encoder, parsed back through
    the package's ``Event`` union (which refuses what the protocol does not define)."""
    encoder = EventEncoder()
    out = []
    for event in events:
        frame = encoder.encode(event)
        assert frame.startswith("data: ")
        assert frame.endswith("\n\n")
        data = json.loads(frame.removeprefix("data: "))
        assert type(_events.validate_python(data)) is type(event)
        out.append(data)
    return out


def types(events: list[BaseEvent]) -> list[str]:
    return [e["type"] for e in wire(events)]


def chunk(text: str = "", *, calls: list[dict[str, Any]] | None = None, id: str = "m1") -> Any:
    return AIMessageChunk(
        content=text,
        id=id,
        tool_call_chunks=[{"type": "tool_call_chunk", **c} for c in calls or []],
    )


def mapper() -> EventMapper:
    m = EventMapper(thread_id="t1", run_id="r1")
    m.expect_run()
    return m


APPROVAL = Interrupt(
    action_requests=(
        ActionRequest(
            tool_call_id="c2",
            name="write_file",
            arguments={"file_path": "/a.md", "content": "x"},
        ),
    )
)
QUESTION = Interrupt(
    kind="question",
    action_requests=(
        ActionRequest(
            tool_call_id="q1",
            name="ask_user",
            arguments={},
            allowed_decisions=QUESTION_DECISIONS,
            questions=(
                Question(question="Which colour?", type="single_choice", choices=("red", "blue")),
                Question(question="Anything else?"),
            ),
        ),
    ),
)


# -- the streamed message ----------------------------------------------------------------------


def test_streamed_text_and_tool_calls_open_and_close_in_protocol_order() -> None:
    m = mapper()
    out = m.map(StatusChanged(status=Status.RUNNING))
    out += m.map(LLMDeltas(deltas=[chunk("Let me "), chunk("plan.")]))
    out += m.map(
        LLMDeltas(
            deltas=[
                chunk(calls=[{"name": "write_todos", "args": "", "id": "c1", "index": 0}]),
                chunk(calls=[{"name": None, "args": '{"todos": ', "id": None, "index": 0}]),
                chunk(calls=[{"name": None, "args": "[]}", "id": None, "index": 0}]),
            ]
        )
    )
    message = AIMessage(
        content="Let me plan.",
        id="m1",
        tool_calls=[{"name": "write_todos", "args": {"todos": []}, "id": "c1"}],
    )
    out += m.map(LLMMessage(message=message))
    out += m.map(ToolExecutionCompleted(tool_call_id="c1", name="write_todos", result="Merged"))
    assert types(out) == [
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",  # closed before the tool call opens
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",  # at the complete message
        "TOOL_CALL_RESULT",
    ]
    events = wire(out)
    assert {e.get("messageId") for e in events[:4]} == {"m1"}  # the model message's own id
    assert events[4]["parentMessageId"] == "m1"
    assert events[4]["toolCallName"] == "write_todos"
    assert "".join(e["delta"] for e in events if e["type"] == "TOOL_CALL_ARGS") == '{"todos": []}'
    assert events[-1] == {
        "type": "TOOL_CALL_RESULT",
        "messageId": "result-c1",
        "toolCallId": "c1",
        "content": "Merged",
        "role": "tool",
    }


def test_a_model_that_does_not_stream_is_sent_whole_at_its_complete_message() -> None:
    m = mapper()
    message = AIMessage(
        content=[{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}],
        id="m9",
        tool_calls=[{"name": "read_file", "args": {"file_path": "/a"}, "id": "c9"}],
    )
    out = m.map(LLMMessage(message=message))
    assert types(out) == [
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
    ]
    assert isinstance(out[1], TextMessageContentEvent)
    assert out[1].delta == "Hello there"
    assert isinstance(out[4], ToolCallArgsEvent)
    assert json.loads(out[4].delta) == {"file_path": "/a"}


def test_a_tool_call_no_chunk_named_is_sent_at_the_complete_message() -> None:
    m = mapper()
    out = m.map(LLMDeltas(deltas=[chunk("Hi")]))
    message = AIMessage(content="Hi", id="m1", tool_calls=[{"name": "ls", "args": {}, "id": "c5"}])
    out += m.map(LLMMessage(message=message))
    assert types(out) == [
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
    ]
    # Announced once only, also when the call's chunks come after an identification event.
    m2 = mapper()
    out = m2.map(LLMDeltas(deltas=[chunk("Hi")]))
    out += m2.map(ToolCallIdentified(tool_call_id="c5", name="ls", display_text="List"))
    out += m2.map(LLMDeltas(deltas=[chunk(calls=[{"name": "ls", "args": "{}", "id": "c5"}])]))
    out += m2.map(LLMMessage(message=message))
    assert types(out).count("TOOL_CALL_START") == 1
    assert types(out).count("TOOL_CALL_END") == 1


def test_text_after_a_tool_call_opens_a_new_text_message() -> None:
    m = mapper()
    out = m.map(LLMDeltas(deltas=[chunk("A")]))
    out += m.map(LLMDeltas(deltas=[chunk(calls=[{"name": "ls", "args": "{}", "id": "c1"}])]))
    out += m.map(LLMDeltas(deltas=[chunk("B")]))
    out += m.map(LLMMessage(message=AIMessage(content="AB", id="m1")))
    starts = [e["messageId"] for e in wire(out) if e["type"] == "TEXT_MESSAGE_START"]
    assert starts == ["m1", "m1-1"]
    ends = [e["messageId"] for e in wire(out) if e["type"] == "TEXT_MESSAGE_END"]
    assert ends == ["m1", "m1-1"]


def test_a_new_model_message_closes_the_previous_one() -> None:
    m = mapper()
    out = m.map(LLMDeltas(deltas=[chunk("one", id="a")]))
    out += m.map(LLMDeltas(deltas=[chunk("two", id="b")]))
    assert types(out) == [
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
    ]


def test_a_failed_tool_call_is_a_result_marked_as_an_error() -> None:
    m = mapper()
    (result,) = m.map(ToolExecutionFailed(tool_call_id="c1", name="ls", error="boom"))
    assert isinstance(result, ToolCallResultEvent)
    assert result.content == "boom"
    assert result.metadata == {"sagents": {"status": "error"}}
    (structured,) = m.map(ToolExecutionCompleted(tool_call_id="c2", result={"n": 1}))
    assert isinstance(structured, ToolCallResultEvent)
    assert structured.content == '{"n": 1}'


# -- state -------------------------------------------------------------------------------------


def test_todos_and_files_become_state_deltas_against_what_the_client_holds() -> None:
    m = mapper()
    snapshot = m.state_snapshot({"todos": [], "metadata": {}, "files": ["/a.md"]})
    assert wire([snapshot])[0]["snapshot"] == {"todos": [], "metadata": {}, "files": ["/a.md"]}
    todos = [Todo(id="t1", content="Plan", status="in_progress")]
    (delta,) = m.map(TodosUpdated(todos=todos))
    assert isinstance(delta, StateDeltaEvent)
    assert wire([delta])[0]["delta"] == [
        {"op": "replace", "path": "/todos", "value": [todos[0].to_dict()]}
    ]
    (files,) = m.map(FileChanged(path="/b.md", change="created"))
    assert wire([files])[0]["delta"] == [
        {"op": "replace", "path": "/files", "value": ["/a.md", "/b.md"]}
    ]
    (moved,) = m.map(FileChanged(path="/c.md", change="moved", previous_path="/a.md"))
    assert wire([moved])[0]["delta"][0]["value"] == ["/b.md", "/c.md"]
    assert m.map(FileChanged(path="/b.md", change="modified")) == []  # the list is the same
    (deleted,) = m.map(FileChanged(path="/b.md", change="deleted"))
    assert wire([deleted])[0]["delta"][0]["value"] == ["/c.md"]
    # The end of the run: only what changed since.
    (end,) = m.state_update(
        {"todos": [todos[0].to_dict()], "metadata": {"title": "x"}, "files": ["/c.md"]}
    )
    assert wire([end])[0]["delta"] == [{"op": "add", "path": "/metadata/title", "value": "x"}]
    assert (
        m.state_update(
            {"todos": [todos[0].to_dict()], "metadata": {"title": "x"}, "files": ["/c.md"]}
        )
        == []
    )


def test_state_changes_are_ignored_for_keys_the_view_does_not_hold() -> None:
    m = mapper()
    m.state_snapshot({"metadata": {}})
    assert m.map(TodosUpdated(todos=[])) == []
    assert m.map(FileChanged(path="/b.md", change="created")) == []


def test_json_patch_compares_objects_key_by_key_and_escapes_pointers() -> None:
    old = {"a": 1, "gone": True, "n": {"x": [1], "a/b~c": 1}, "same": {"k": "v"}}
    new = {"a": 2, "n": {"x": [1, 2], "a/b~c": 2, "new": None}, "same": {"k": "v"}}
    assert json_patch(old, new) == [
        {"op": "remove", "path": "/gone"},
        {"op": "replace", "path": "/a", "value": 2},
        {"op": "replace", "path": "/n/x", "value": [1, 2]},
        {"op": "replace", "path": "/n/a~1b~0c", "value": 2},
        {"op": "add", "path": "/n/new", "value": None},
    ]
    assert json_patch({"a": 1}, {"a": True}) == [{"op": "replace", "path": "/a", "value": True}]
    assert json_patch([1], [1]) == []


def test_the_default_state_view_holds_todos_and_metadata() -> None:
    state = State(
        todos=[Todo(id="t", content="Do", status="pending")],
        metadata={"conversation_title": {"title": "Otters"}},
    )
    assert default_state_view(state) == {
        "todos": [{"id": "t", "content": "Do", "status": "pending"}],
        "metadata": {"conversation_title": {"title": "Otters"}},
    }


def test_a_reset_empties_the_messages_and_the_state() -> None:
    m = mapper()
    m.state_snapshot(
        {"todos": [{"id": "t", "content": "Do", "status": "pending"}], "metadata": {"k": 1}}
    )
    out = m.map(AgentReset())
    assert isinstance(out[0], MessagesSnapshotEvent)
    assert out[0].messages == []
    assert [op["path"] for e in wire(out[1:]) for op in e["delta"]] == ["/todos", "/metadata/k"]


# -- the end of a run --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(Status.IDLE, "success"), (Status.CANCELLED, "cancelled"), (Status.PAUSED, "cancelled")],
)
def test_the_status_that_ends_a_run_gives_its_outcome(status: Status, outcome: str) -> None:
    m = mapper()
    m.map(StatusChanged(status=Status.RUNNING))
    assert not m.ended
    m.map(StatusChanged(status=status))
    assert m.ended
    (finished,) = m.finish()
    assert isinstance(finished, RunFinishedEvent)
    data = wire([finished])[0]
    assert data["threadId"] == "t1"
    assert data["runId"] == "r1"
    assert data["outcome"]["type"] == outcome


def test_statuses_before_the_run_starts_do_not_end_it() -> None:
    m = EventMapper(thread_id="t1", run_id="r1")
    m.expect_run()
    # A dismissed approval announces idle before the message it was dismissed for runs.
    m.map(StatusChanged(status=Status.IDLE))
    assert not m.ended
    m.map(StatusChanged(status=Status.RUNNING))
    m.map(StatusChanged(status=Status.IDLE))
    assert m.ended
    already = EventMapper(thread_id="t1", run_id="r1")
    already.expect_run(running=True)  # a run in progress, followed to its end
    already.map(StatusChanged(status=Status.IDLE))
    assert already.ended


def test_an_approval_ends_the_run_with_the_interrupt_outcome() -> None:
    m = mapper()
    m.map(StatusChanged(status=Status.RUNNING))
    m.map(LLMDeltas(deltas=[chunk("Saving")]))  # left open: the finish closes it
    m.map(StatusChanged(status=Status.INTERRUPTED, data=APPROVAL))
    out = m.finish()
    assert types(out) == ["TEXT_MESSAGE_END", "RUN_FINISHED"]
    (interrupt,) = wire(out)[-1]["outcome"]["interrupts"]
    assert interrupt["id"] == "c2"
    assert interrupt["toolCallId"] == "c2"
    assert interrupt["reason"] == "human_approval"
    assert interrupt["message"] == "Allow the call to write_file?"
    assert interrupt["metadata"]["sagents"]["request"]["arguments"] == {
        "file_path": "/a.md",
        "content": "x",
    }
    kinds = [o["properties"]["type"]["const"] for o in interrupt["responseSchema"]["oneOf"]]
    assert kinds == ["approve", "edit", "reject"]
    # The interrupt's JSON form is accepted too (as a status event read back from JSON has it).
    m2 = mapper()
    m2.map(StatusChanged(status=Status.RUNNING))
    m2.map(StatusChanged(status=Status.INTERRUPTED, data=APPROVAL.to_dict()))
    assert wire(m2.finish())[-1]["outcome"]["interrupts"][0]["id"] == "c2"


def test_a_question_is_an_interrupt_of_its_kind_with_a_form_for_its_answers() -> None:
    (interrupt,) = agui_interrupts(QUESTION)
    assert interrupt.reason == "question"
    assert interrupt.message == "Which colour?\nAnything else?"
    schema = response_schema(QUESTION.action_requests[0])
    answer = next(o for o in schema["oneOf"] if o["properties"]["type"]["const"] == "answer")
    items = answer["properties"]["answers"]["prefixItems"]
    assert items[0]["enum"] == ["red", "blue"]
    assert items[1]["type"] == "string"
    assert answer["properties"]["answers"]["minItems"] == 2
    assert [o["properties"]["type"]["const"] for o in schema["oneOf"]] == list(QUESTION_DECISIONS)


def test_a_pending_interrupt_is_presented_again_without_a_run() -> None:
    m = EventMapper(thread_id="t1", run_id="r1")
    out = m.finish(interrupt=APPROVAL)
    assert wire(out)[-1]["outcome"]["type"] == "interrupt"
    assert wire(EventMapper(thread_id="t", run_id="r").finish())[-1]["outcome"] == {
        "type": "success"
    }


def test_a_failed_run_a_stopped_agent_and_an_overflow_are_run_errors() -> None:
    failed = mapper()
    failed.map(StatusChanged(status=Status.RUNNING))
    failed.map(StatusChanged(status=Status.ERROR, data="the model is unreachable"))
    (error,) = failed.finish()
    assert isinstance(error, RunErrorEvent)
    assert (error.code, error.message) == ("run_failed", "the model is unreachable")
    stopped = mapper()
    stopped.map(AgentShutdown(reason="crash"))
    assert stopped.ended
    assert wire(stopped.finish())[-1]["code"] == "agent_stopped"
    behind = mapper()
    behind.map(SubscriptionOverflow(dropped=3))
    assert wire(behind.finish())[-1]["code"] == "overflow"
    assert wire(EventMapper(thread_id="t", run_id="r").error("not_found", "no"))[-1] == {
        "type": "RUN_ERROR",
        "message": "no",
        "code": "not_found",
    }


def test_token_usage_is_summed_per_model_on_the_last_event() -> None:
    m = mapper()
    m.map(StatusChanged(status=Status.RUNNING))
    message = AIMessage(content="x", id="m", response_metadata={"model_name": "gpt"})
    m.map(LLMMessage(message=message))
    for _ in range(2):
        m.map(LLMTokenUsage(usage={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}))
    m.map(StatusChanged(status=Status.IDLE))
    (finished,) = wire(m.finish())
    assert finished["usage"] == [
        {"model": "gpt", "inputTokens": 6, "outputTokens": 4, "totalTokens": 10}
    ]


# -- messages ----------------------------------------------------------------------------------


def test_a_conversation_becomes_protocol_messages_with_stable_ids() -> None:
    messages = [
        LangchainSystemMessage("Be brief", id="s"),
        HumanMessage("Hi", id="u1"),
        AIMessage(
            content="",
            id="a1",
            tool_calls=[{"name": "ls", "args": {"path": "/"}, "id": "c1"}],
        ),
        LangchainToolMessage("boom", tool_call_id="c1", status="error"),
        AIMessage(content="Done"),
    ]
    out = agui_messages(messages)
    assert [type(m) for m in out] == [
        SystemMessage,
        UserMessage,
        AssistantMessage,
        ToolMessage,
        AssistantMessage,
    ]
    assert isinstance(out[2], AssistantMessage)
    assert out[2].content is None
    assert out[2].tool_calls is not None
    assert json.loads(out[2].tool_calls[0].function.arguments) == {"path": "/"}
    assert isinstance(out[3], ToolMessage)
    assert (out[3].id, out[3].tool_call_id, out[3].error) == ("result-c1", "c1", "boom")
    assert out[4].id == "msg-4"  # no id of its own: its position
    snapshot = wire([MessagesSnapshotEvent(messages=out)])[0]
    assert snapshot["messages"][1] == {"id": "u1", "role": "user", "content": "Hi"}


def test_text_of_joins_text_blocks() -> None:
    assert text_of("plain") == "plain"
    assert text_of(["a", {"type": "text", "text": "b"}, {"type": "image_url", "url": "x"}]) == "ab"


def test_tool_call_start_names_its_message() -> None:
    m = mapper()
    out = m.map(
        LLMDeltas(deltas=[chunk(calls=[{"name": "ls", "args": "", "id": "c1", "index": 0}])])
    )
    (start,) = out
    assert isinstance(start, ToolCallStartEvent)
    assert start.parent_message_id == "m1"
