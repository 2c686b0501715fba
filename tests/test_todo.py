"""Tests for ``sagents._todo``: todo validation, id generation and the JSON form (X22)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagents._errors import SagentsError, StateError
from sagents._todo import Todo, TodoStatus


def test_defaults_to_pending_with_a_generated_id() -> None:
    todo = Todo(content="write tests")
    assert todo.status is TodoStatus.PENDING
    assert isinstance(todo.id, str)
    assert todo.id


def test_generated_ids_are_unique() -> None:
    ids = {Todo(content="x").id for _ in range(500)}
    assert len(ids) == 500


def test_given_id_is_kept() -> None:
    assert Todo(content="x", id="t-1").id == "t-1"


@pytest.mark.parametrize("status", list(TodoStatus))
def test_status_strings_become_the_enum(status: TodoStatus) -> None:
    todo = Todo(content="x", status=status.value)  # type: ignore[arg-type]
    assert todo.status is status
    assert todo.status == status.value


def test_statuses_are_the_four_of_the_spec() -> None:
    assert {s.value for s in TodoStatus} == {"pending", "in_progress", "completed", "cancelled"}


@pytest.mark.parametrize("content", ["", "   ", "\n\t", None, 3, ["x"]])
def test_content_must_be_a_non_empty_string(content: Any) -> None:
    with pytest.raises(StateError, match="content"):
        Todo(content=content)


@pytest.mark.parametrize("todo_id", ["", None, 7])
def test_id_must_be_a_non_empty_string(todo_id: Any) -> None:
    with pytest.raises(StateError, match="id"):
        Todo(content="x", id=todo_id)


@pytest.mark.parametrize("status", ["done", "PENDING", "", None, 1])
def test_unknown_status_lists_the_allowed_ones(status: Any) -> None:
    with pytest.raises(StateError) as info:
        Todo(content="x", status=status)
    message = str(info.value)
    for allowed in ("pending", "in_progress", "completed", "cancelled"):
        assert allowed in message


def test_state_error_is_a_sagents_error() -> None:
    with pytest.raises(SagentsError):
        Todo(content="")


def test_todo_is_frozen() -> None:
    todo = Todo(content="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        todo.status = TodoStatus.COMPLETED  # type: ignore[misc]


def test_todo_requires_keywords() -> None:
    with pytest.raises(TypeError):
        Todo("x")  # type: ignore[call-arg]


# -- JSON form -----------------------------------------------------------------------------------


def test_to_dict_is_plain_json() -> None:
    todo = Todo(content="ship ☃", status=TodoStatus.IN_PROGRESS, id="t1")
    data = todo.to_dict()
    assert data == {"id": "t1", "content": "ship ☃", "status": "in_progress"}
    assert type(data["status"]) is str
    assert json.loads(json.dumps(data)) == data


def test_from_dict_generates_a_missing_id() -> None:
    first = Todo.from_dict({"content": "x"})
    second = Todo.from_dict({"content": "x"})
    assert first.id
    assert first.id != second.id
    assert first.status is TodoStatus.PENDING


def test_from_dict_treats_a_null_id_as_missing() -> None:
    todo = Todo.from_dict({"content": "x", "id": None, "status": "completed"})
    assert todo.id
    assert todo.status is TodoStatus.COMPLETED


def test_from_dict_defaults_status_to_pending() -> None:
    assert Todo.from_dict({"content": "x", "id": "a"}).status is TodoStatus.PENDING


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("write tests", "object"),
        (["content", "x"], "object"),
        (None, "object"),
        ({}, "content"),
        ({"status": "pending"}, "content"),
        ({"content": "x", "priority": "high"}, "priority"),
        ({"content": "x", "status": "done"}, "status"),
        ({"content": "", "id": "a"}, "content"),
        ({"content": "x", "id": ""}, "id"),
        ({"content": "x", "id": 5}, "id"),
    ],
)
def test_from_dict_rejects_invalid_todos(data: Any, fragment: str) -> None:
    with pytest.raises(StateError, match=fragment):
        Todo.from_dict(data)


todos = st.builds(
    Todo,
    content=st.text(min_size=1).filter(str.strip),
    status=st.sampled_from(TodoStatus),
    id=st.text(min_size=1),
)


@given(todos)
def test_round_trip(todo: Todo) -> None:
    assert Todo.from_dict(todo.to_dict()) == todo
    assert Todo.from_dict(json.loads(json.dumps(todo.to_dict()))) == todo
