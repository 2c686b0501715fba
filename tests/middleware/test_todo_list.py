"""Tests for ``sagents.middleware._todo_list``: the ``write_todos`` tool through full runs (X22)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from sagents import Agent, Done, State, Todo, TodoStatus
from sagents.events import TodosUpdated, ToolCallIdentified, ToolExecutionFailed
from sagents.execution import CollectingSink, Reply, ScriptedChatModel, ToolCall
from sagents.middleware import TodoList

# -- helpers ----------------------------------------------------------------------------------


def _write(call_id: str, todos: Sequence[dict[str, Any]], *, merge: bool | None = None) -> ToolCall:
    args: dict[str, Any] = {"todos": list(todos)}
    if merge is not None:
        args["merge"] = merge
    return ToolCall(name="write_todos", args=args, id=call_id)


def _agent(*turns: Sequence[ToolCall], base_system_prompt: str = "") -> Agent:
    """An agent whose model makes one turn per entry of ``turns``, then says "done"."""
    script = [Reply(text=f"turn {i}", tool_calls=list(calls)) for i, calls in enumerate(turns)]
    model = ScriptedChatModel(script=[*script, Reply(text="done")])
    return Agent(
        agent_id="todo-agent",
        model=model,
        middleware=[TodoList],
        base_system_prompt=base_system_prompt,
    )


async def _run(agent: Agent, state: State | None = None) -> tuple[State, CollectingSink]:
    sink = CollectingSink()
    start = state if state is not None else State(messages=[HumanMessage("plan it")])
    result = await agent.run(start, sink=sink)
    assert isinstance(result, Done), result
    return result.state, sink


def _tool_result(state: State, call_id: str) -> ToolMessage:
    [message] = [
        m for m in state.messages if isinstance(m, ToolMessage) and m.tool_call_id == call_id
    ]
    return message


def _pairs(todos: Sequence[Todo]) -> list[tuple[str, TodoStatus]]:
    return [(t.content, t.status) for t in todos]


def _todo_events(sink: CollectingSink) -> list[TodosUpdated]:
    return [e for e in sink.events if isinstance(e, TodosUpdated)]


# -- replacing and merging --------------------------------------------------------------------


async def test_write_todos_replaces_the_list_by_default() -> None:
    agent = _agent(
        [_write("call_1", [{"content": "old one"}, {"content": "old two"}])],
        [
            _write(
                "call_2",
                [{"content": "new one", "status": "in_progress"}, {"content": "new two"}],
                merge=False,
            )
        ],
    )

    state, _ = await _run(agent)

    assert _pairs(state.todos) == [
        ("new one", TodoStatus.IN_PROGRESS),
        ("new two", TodoStatus.PENDING),
    ]
    result = _tool_result(state, "call_2")
    assert result.status == "success"
    assert "new one" in result.text
    assert "old one" not in result.text


async def test_merge_updates_by_id_and_appends_new_todos() -> None:
    agent = _agent(
        [
            _write(
                "call_1",
                [
                    {"id": "a", "content": "research"},
                    {"id": "b", "content": "draft"},
                    {"id": "c", "content": "review"},
                ],
            )
        ],
        [
            _write(
                "call_2",
                [
                    {"id": "b", "content": "draft v2", "status": "completed"},
                    {"id": "d", "content": "publish"},
                    {"content": "celebrate", "status": "cancelled"},
                ],
                merge=True,
            )
        ],
    )

    state, _ = await _run(agent)

    assert [(t.id, t.content, t.status) for t in state.todos[:4]] == [
        ("a", "research", TodoStatus.PENDING),
        ("b", "draft v2", TodoStatus.COMPLETED),
        ("c", "review", TodoStatus.PENDING),
        ("d", "publish", TodoStatus.PENDING),
    ]
    assert len(state.todos) == 5
    appended = state.todos[4]
    assert (appended.content, appended.status) == ("celebrate", TodoStatus.CANCELLED)
    assert appended.id not in {"a", "b", "c", "d"}
    assert "Merged 3 todo(s)" in _tool_result(state, "call_2").text


async def test_missing_ids_are_generated_unique_and_reported_to_the_model() -> None:
    agent = _agent([_write("call_1", [{"content": "one"}, {"content": "two"}, {"content": "3"}])])

    state, _ = await _run(agent)

    ids = [t.id for t in state.todos]
    assert all(ids)
    assert len(set(ids)) == 3
    # The model needs the ids to update the todos later with merge=true.
    text = _tool_result(state, "call_1").text
    assert all(f"(id: {todo_id})" in text for todo_id in ids)


async def test_model_can_update_a_todo_through_its_generated_id() -> None:
    def second_turn(messages: list[Any]) -> Reply:
        # Read the generated id back from the first tool result, as a real model would.
        result = next(m for m in messages if isinstance(m, ToolMessage))
        todo_id = result.text.split("(id: ")[1].split(")")[0]
        return Reply(
            tool_calls=[
                _write(
                    "call_2",
                    [{"id": todo_id, "content": "one", "status": "completed"}],
                    merge=True,
                )
            ]
        )

    model = ScriptedChatModel(
        script=[
            Reply(tool_calls=[_write("call_1", [{"content": "one"}])]),
            second_turn,
            Reply(text="done"),
        ]
    )
    agent = Agent(agent_id="todo-agent", model=model, middleware=[TodoList()])

    state, _ = await _run(agent)

    assert _pairs(state.todos) == [("one", TodoStatus.COMPLETED)]


# -- TodosUpdated -------------------------------------------------------------------------------


async def test_todos_updated_carries_the_full_list_once_per_change() -> None:
    agent = _agent(
        [_write("call_1", [{"id": "a", "content": "one"}, {"id": "b", "content": "two"}])],
        [_write("call_2", [{"id": "a", "content": "one", "status": "completed"}], merge=True)],
    )

    state, sink = await _run(agent)

    events = _todo_events(sink)
    assert len(events) == 2
    assert all(e.agent_id == "todo-agent" for e in events)
    assert _pairs(events[0].todos) == [("one", TodoStatus.PENDING), ("two", TodoStatus.PENDING)]
    # The second event holds the whole list, not just the todo that changed.
    assert events[1].todos == state.todos
    assert _pairs(events[1].todos) == [
        ("one", TodoStatus.COMPLETED),
        ("two", TodoStatus.PENDING),
    ]


async def test_writing_the_same_list_again_emits_no_todos_updated() -> None:
    todos = [{"id": "a", "content": "one", "status": "in_progress"}]
    agent = _agent([_write("call_1", todos)], [_write("call_2", todos)])

    state, sink = await _run(agent)

    assert len(_todo_events(sink)) == 1
    assert _tool_result(state, "call_2").status == "success"


async def test_todos_updated_event_round_trips_through_json() -> None:
    agent = _agent([_write("call_1", [{"id": "a", "content": "one", "status": "completed"}])])

    _, sink = await _run(agent)

    [event] = _todo_events(sink)
    data = json.loads(json.dumps(event.to_json()))
    assert data["type"] == "todos_updated"
    assert data["todos"] == [{"id": "a", "content": "one", "status": "completed"}]


# -- invalid todos ------------------------------------------------------------------------------

_VALID = [{"id": "keep", "content": "existing", "status": "in_progress"}]


@pytest.mark.parametrize(
    ("todos", "merge", "expected"),
    [
        pytest.param([{"content": ""}], False, "Todo.content", id="empty-content"),
        pytest.param([{"content": "   "}], True, "Todo.content", id="blank-content-merge"),
        pytest.param(
            [{"content": "x", "status": "done"}], False, "todos.0.status", id="bad-status"
        ),
        pytest.param([{"content": "x", "status": None}], True, "todos.0.status", id="null-status"),
        pytest.param([{"status": "pending"}], False, "todos.0.content", id="missing-content"),
        pytest.param(
            [{"id": "d", "content": "x"}, {"id": "d", "content": "y"}],
            False,
            "share an id",
            id="duplicate-ids",
        ),
        pytest.param(
            [{"id": "keep", "content": "x"}, {"id": "keep", "content": "y"}],
            True,
            "share an id",
            id="duplicate-ids-merge",
        ),
        pytest.param([{"id": "", "content": "x"}], False, "Todo.id", id="empty-id"),
        pytest.param("not a list", False, "valid list", id="todos-not-a-list"),
    ],
)
async def test_invalid_todos_give_an_error_result_and_change_nothing(
    todos: Any, merge: bool, expected: str
) -> None:
    model = ScriptedChatModel(
        script=[
            Reply(tool_calls=[_write("call_1", _VALID)]),
            Reply(
                tool_calls=[
                    ToolCall(name="write_todos", args={"todos": todos, "merge": merge}, id="bad")
                ]
            ),
            Reply(text="sorry"),
        ]
    )
    agent = Agent(agent_id="todo-agent", model=model, middleware=[TodoList])

    state, sink = await _run(agent)

    result = _tool_result(state, "bad")
    assert result.status == "error"
    assert expected in result.text
    assert [t.to_dict() for t in state.todos] == _VALID
    # Only the first, valid write was announced.
    assert len(_todo_events(sink)) == 1
    failures = [e for e in sink.events if isinstance(e, ToolExecutionFailed)]
    assert [(e.tool_call_id, e.name) for e in failures] == [("bad", "write_todos")]
    # The run went on: the model saw the error and answered.
    assert isinstance(state.messages[-1], AIMessage)
    assert state.messages[-1].text == "sorry"


async def test_an_invalid_todo_rejects_the_whole_write() -> None:
    agent = _agent(
        [_write("call_1", [{"content": "fine"}, {"content": "bad", "status": "maybe"}])],
    )

    state, sink = await _run(agent)

    assert state.todos == []
    assert _tool_result(state, "call_1").status == "error"
    assert _todo_events(sink) == []


# -- system prompt ------------------------------------------------------------------------------


async def test_system_prompt_includes_the_todo_section_after_the_base_prompt() -> None:
    agent = _agent([], base_system_prompt="You are a planner.")

    await _run(agent)

    assert agent.system_prompt.startswith("You are a planner.\n\n## Todo list")
    assert isinstance(agent.model, ScriptedChatModel)
    [first] = agent.model.prompts
    assert isinstance(first[0], SystemMessage)
    assert first[0].text == agent.system_prompt
    assert "write_todos" in first[0].text


def test_custom_system_prompt_replaces_the_default_section() -> None:
    model = ScriptedChatModel(script=[])
    agent = Agent(agent_id="a", model=model, middleware=[TodoList(system_prompt="Plan well.")])

    assert agent.system_prompt == "Plan well."
    assert "write_todos" in agent.all_tools


# -- parallel calls -----------------------------------------------------------------------------


async def test_parallel_write_todos_calls_apply_in_call_order() -> None:
    agent = _agent(
        [
            _write("call_1", [{"id": "a", "content": "one"}, {"id": "b", "content": "two"}]),
            _write(
                "call_2",
                [{"id": "a", "content": "one", "status": "completed"}, {"id": "c", "content": "3"}],
                merge=True,
            ),
        ]
    )

    state, sink = await _run(agent)

    # call_2 merged into what call_1 wrote; the other order would have lost "b" and "c".
    assert [(t.id, t.status) for t in state.todos] == [
        ("a", TodoStatus.COMPLETED),
        ("b", TodoStatus.PENDING),
        ("c", TodoStatus.PENDING),
    ]
    assert _tool_result(state, "call_1").status == "success"
    assert _tool_result(state, "call_2").status == "success"
    events = _todo_events(sink)
    assert events
    assert events[-1].todos == state.todos


async def test_parallel_replace_after_merge_wins() -> None:
    agent = _agent(
        [
            _write("call_1", [{"id": "x", "content": "merged"}], merge=True),
            _write("call_2", [{"id": "y", "content": "replacement"}], merge=False),
        ]
    )

    state, _ = await _run(agent)

    assert [t.id for t in state.todos] == ["y"]


async def test_parallel_write_todos_results_describe_only_their_own_change() -> None:
    agent = _agent(
        [
            _write("call_1", [{"id": "a", "content": "one"}, {"id": "b", "content": "two"}]),
            _write("call_2", [{"id": "c", "content": "three"}], merge=True),
        ]
    )

    state, _ = await _run(agent)

    assert [t.id for t in state.todos] == ["a", "b", "c"]
    # Each result describes what that call wrote, never a list that does not exist.
    assert "Todo list replaced (0/2 completed)" in _tool_result(state, "call_1").text
    merged = _tool_result(state, "call_2").text
    assert "Merged 1 todo(s)" in merged
    assert "three" in merged
    assert "one" not in merged


# -- persistence --------------------------------------------------------------------------------


async def test_todos_survive_state_to_dict_and_from_dict() -> None:
    agent = _agent(
        [
            _write(
                "call_1",
                [
                    {"id": "a", "content": "one", "status": "completed"},
                    {"content": "two", "status": "in_progress"},
                    {"content": "three", "status": "cancelled"},
                    {"content": "four"},
                ],
            )
        ]
    )
    state, _ = await _run(agent)

    restored = State.from_dict(json.loads(json.dumps(state.to_dict())))

    assert restored.todos == state.todos
    assert restored == state


async def test_restored_todos_can_be_merged_in_a_later_run() -> None:
    first, _ = await _run(_agent([_write("call_1", [{"id": "a", "content": "one"}])]))
    restored = State.from_dict(json.loads(json.dumps(first.to_dict())))

    later = _agent(
        [_write("call_2", [{"id": "a", "content": "one", "status": "completed"}], merge=True)]
    )
    state, _ = await _run(later, restored.append(HumanMessage("finish it")))

    assert _pairs(state.todos) == [("one", TodoStatus.COMPLETED)]


@pytest.mark.parametrize(
    ("display_text", "shown"), [(None, "Write todos"), ("Planning", "Planning")]
)
async def test_what_uis_show_for_a_write_todos_call(display_text: str | None, shown: str) -> None:
    model = ScriptedChatModel(
        script=[
            Reply(tool_calls=[_write("call_1", [{"id": "a", "content": "one"}])]),
            Reply(text="done"),
        ]
    )
    agent = Agent(
        agent_id="todo-agent", model=model, middleware=[TodoList(display_text=display_text)]
    )
    _, sink = await _run(agent)
    [identified] = [e for e in sink.events if isinstance(e, ToolCallIdentified)]
    assert identified.display_text == shown
