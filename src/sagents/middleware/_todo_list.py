"""``TodoList``: the agent keeps a visible plan with the ``write_todos`` tool.

Todos live in ``State.todos`` (not in metadata) because every UI shows them. The tool validates
the whole list before anything changes, and its change is applied by the loop after the turn
(``ToolContext.update_state``), so two parallel ``write_todos`` calls apply in call order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from sagents._errors import StateError
from sagents._state import State
from sagents._todo import Todo, TodoStatus
from sagents.execution._middleware import Middleware
from sagents.execution._middleware_context import get_middleware_context
from sagents.execution._tool_context import get_tool_context

__all__ = ["TodoList"]

_PROMPT = """\
## Todo list
For any task with three or more steps, keep a todo list with the `write_todos` tool so the user
can follow your plan. Each todo has `content` and a `status` (pending, in_progress, completed,
cancelled). Keep exactly one todo in_progress while you work, and mark todos completed as soon as
they are done. `merge=false` replaces the whole list; `merge=true` updates todos by `id` and
appends the ones without a known id."""


class TodoInput(BaseModel):
    """One todo as the model writes it."""

    content: str = Field(description="What to do, as a short imperative sentence.")
    status: Literal["pending", "in_progress", "completed", "cancelled"] = "pending"
    id: str | None = Field(default=None, description="Keep the id to update an existing todo.")


class WriteTodosArgs(BaseModel):
    todos: list[TodoInput] = Field(description="The todos to write.")
    merge: bool = Field(
        default=False,
        description="false: replace the whole list. true: update todos by id, append new ones.",
    )


def merge_todos(current: Sequence[Todo], incoming: Sequence[Todo]) -> list[Todo]:
    """Update ``current`` by id with ``incoming``; todos with unknown ids are appended."""
    by_id = {todo.id: todo for todo in incoming}
    merged = [by_id.pop(todo.id, todo) for todo in current]
    return merged + [todo for todo in incoming if todo.id in by_id]


class TodoList(Middleware):
    """Gives the model the ``write_todos(todos, merge=False)`` tool.

    Args:
        system_prompt: what the model is told about planning.
        display_text: what UIs show for a ``write_todos`` call (``ToolCallIdentified`` and
            the tool call's display row); None: the tool's name, humanised.
        inline: also write each changed list into the conversation's transcript, as a
            display-only row of type ``"todos"`` (``{"todos": [...]}``, content type
            ``json``): the plan as it was at each point, for a UI that shows it inline. Needs
            a display persistence; the model never sees these rows.
    """

    key = "todo_list"

    def __init__(
        self,
        *,
        system_prompt: str = _PROMPT,
        display_text: str | None = None,
        inline: bool = False,
    ) -> None:
        self._prompt = system_prompt
        self.inline = inline
        self._tool = StructuredTool.from_function(
            coroutine=self._write_todos,
            name="write_todos",
            description=(
                "Write the todo list. merge=false replaces it; merge=true updates by id and "
                "appends new todos."
            ),
            args_schema=WriteTodosArgs,
            metadata={"display_text": display_text} if display_text else None,
        )

    def system_prompt(self) -> str | None:
        return self._prompt

    def tools(self) -> Sequence[BaseTool]:
        return (self._tool,)

    async def _write_todos(self, todos: list[TodoInput], merge: bool = False) -> str:
        try:
            incoming = [
                Todo(content=t.content, status=TodoStatus(t.status))
                if t.id is None
                else Todo(content=t.content, status=TodoStatus(t.status), id=t.id)
                for t in todos
            ]
        except StateError as exc:
            raise ValueError(f"invalid todo: {exc}; nothing was changed") from None
        ids = [t.id for t in incoming]
        if len(set(ids)) != len(ids):
            raise ValueError("two todos share an id; nothing was changed")

        show = get_middleware_context().save_display_message if self.inline else None

        def apply(state: State) -> State:
            new = merge_todos(state.todos, incoming) if merge else incoming
            if show is not None and new != state.todos:
                show("todos", {"todos": [todo.to_dict() for todo in new]}, content_type="json")
            return state.replace(todos=new)

        get_tool_context().update_state(apply)
        # Describe only what this call wrote: parallel calls of one turn apply after the turn, so
        # a full-list preview computed here could describe a list that never exists.
        lines = "\n".join(f"- [{t.status.value}] {t.content} (id: {t.id})" for t in incoming)
        if merge:
            return f"Merged {len(incoming)} todo(s) into the list:\n{lines}"
        done = sum(t.status is TodoStatus.COMPLETED for t in incoming)
        return f"Todo list replaced ({done}/{len(incoming)} completed):\n{lines}"
