"""Todos: the agent's visible plan, kept in ``State.todos``."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sagents._errors import StateError, shown

__all__ = ["Todo", "TodoStatus"]


class TodoStatus(StrEnum):
    """Where a todo stands."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


def _new_todo_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True, slots=True, kw_only=True)
class Todo:
    """One item of the agent's todo list; ``id`` is generated when not given."""

    content: str
    status: TodoStatus = TodoStatus.PENDING
    id: str = field(default_factory=_new_todo_id)

    def __post_init__(self) -> None:
        if not isinstance(self.content, str) or not self.content.strip():
            raise StateError("Todo.content must be a non-empty string")
        if not isinstance(self.id, str) or not self.id:
            raise StateError("Todo.id must be a non-empty string")
        try:
            status = TodoStatus(self.status)
        except ValueError:
            allowed = ", ".join(s.value for s in TodoStatus)
            raise StateError(f"Todo.status {shown(self.status)} is not one of: {allowed}") from None
        object.__setattr__(self, "status", status)

    def to_dict(self) -> dict[str, str]:
        """The JSON form: ``{"id", "content", "status"}``."""
        return {"id": self.id, "content": self.content, "status": self.status.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Todo:
        """Build a todo from its JSON form; a missing ``id`` is generated.

        Raises:
            StateError: the data is not a valid todo.
        """
        if not isinstance(data, Mapping):
            raise StateError(f"a todo must be an object, got {type(data).__name__}")
        unknown = set(data) - {"id", "content", "status"}
        if unknown:
            names = ", ".join(sorted(shown(k, 40) for k in unknown)[:5])
            raise StateError(f"unknown todo field(s): {names}")
        if "content" not in data:
            raise StateError("a todo needs 'content'")
        todo_id = data.get("id")
        if todo_id is None:
            return cls(content=data["content"], status=data.get("status", TodoStatus.PENDING))
        return cls(content=data["content"], status=data.get("status", "pending"), id=todo_id)
