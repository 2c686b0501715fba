"""Display rows middleware write or shape (Sagents' ``save_synthetic_message_from`` and
``transform_display_message``): a row no message stands behind, written in order with the
others and broadcast; a message shown otherwise than the model has it; the plan inline."""

from __future__ import annotations

import logging

import pytest
from langchain_core.messages import AIMessage, BaseMessage

from sagents import Middleware, SagentsError, State, Status
from sagents.events import DisplayMessageSaved
from sagents.execution import Reply, ToolCall, get_middleware_context
from sagents.execution._middleware_context import MiddlewareContext
from sagents.middleware import TodoList
from sagents.runtime import Runtime

from .conftest import make_agent, start_saved, until_status

pytestmark = pytest.mark.looptime


class Notices(Middleware):
    """Notes each model call in the transcript, for the user only."""

    def __init__(self) -> None:
        self.written: list[bool] = []

    async def after_model(self, state: State) -> None:
        ctx = get_middleware_context()
        self.written.append(
            ctx.save_display_message(
                "notice", {"text": f"model call {len(self.written) + 1}"}, metadata={"by": "me"}
            )
        )


async def test_a_middleware_writes_a_row_no_message_stands_behind(runtime: Runtime) -> None:
    notices = Notices()
    agent = make_agent([Reply(text="hello")], middleware=[notices])
    handle, store = await start_saved(runtime, agent)
    async with handle.subscribe() as events:
        await handle.add_message("hi")
        seen = await until_status(events, Status.IDLE)
        await handle.stop()  # its display rows are written first, then the stream ends
        seen += [event async for event in events]
    assert notices.written == [True]
    rows = await store.list_display_messages("team", "c1")
    assert [r.type for r in rows] == ["user", "assistant", "notice"]  # in the order written
    notice = rows[2]
    assert notice.content == {"text": "model call 1"}
    assert notice.metadata == {"by": "me"}
    assert notice.state_version is not None
    saved = [e.display_message for e in seen if isinstance(e, DisplayMessageSaved)]
    assert [m["type"] for m in saved] == ["user", "assistant", "notice"]
    state = await store.load_state("team", "c1")
    assert state is not None
    assert "model call" not in str([m.content for m in state.state.messages])  # not the model's


async def test_without_a_display_persistence_nothing_is_written(runtime: Runtime) -> None:
    notices = Notices()
    handle = await runtime.start_agent(
        make_agent([Reply(text="hello")], middleware=[notices]), inactivity_timeout=None
    )
    async with handle.subscribe() as events:
        await handle.add_message("hi")
        await until_status(events, Status.IDLE)
    assert notices.written == [False]


async def test_a_row_must_be_json() -> None:
    ctx = MiddlewareContext("plain")  # no agent server: nothing to write to
    with pytest.raises(SagentsError, match="must be JSON"):
        ctx.save_display_message("notice", {"when": object()})
    with pytest.raises(SagentsError, match="non-empty"):
        ctx.save_display_message(" ", {})
    assert ctx.save_display_message("notice", {"text": "no server"}) is False


class Signed(Middleware):
    """Shows every assistant message signed, and marks it; the model's copy is untouched."""

    def transform_display_message(self, message: BaseMessage) -> BaseMessage | None:
        if isinstance(message, AIMessage) and message.content:
            return message.model_copy(update={"content": f"{message.content} — the bot"})
        return None


class Broken(Middleware):
    def transform_display_message(self, message: BaseMessage) -> BaseMessage | None:
        raise RuntimeError("oops")


async def test_transform_display_message_shapes_the_rows_not_the_state(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_agent([Reply(text="hello")], middleware=[Broken(), Signed()])
    handle, store = await start_saved(runtime, agent)
    with caplog.at_level(logging.ERROR, logger="sagents.persistence"):
        async with handle.subscribe() as events:
            await handle.add_message("hi")
            await until_status(events, Status.IDLE)
        await handle.stop()
    rows = await store.list_display_messages("team", "c1")
    assert [(r.type, r.content["text"]) for r in rows] == [
        ("user", "hi"),
        ("assistant", "hello — the bot"),  # the failing hook skipped, the next one applied
    ]
    stored = await store.load_state("team", "c1")
    assert stored is not None
    assert stored.state.messages[-1].content == "hello"
    assert "Broken.transform_display_message failed" in caplog.text


async def test_todo_list_inline_writes_each_changed_plan(runtime: Runtime) -> None:
    plan = [{"id": "a", "content": "Research"}, {"id": "b", "content": "Write"}]
    done = [{"id": "a", "content": "Research", "status": "completed"}]
    script = [
        Reply(tool_calls=[ToolCall(name="write_todos", args={"todos": plan})]),
        Reply(tool_calls=[ToolCall(name="write_todos", args={"todos": done, "merge": True})]),
        Reply(tool_calls=[ToolCall(name="write_todos", args={"todos": done, "merge": True})]),
        Reply(text="done"),
    ]
    agent = make_agent(script, middleware=[TodoList(inline=True)], tools=[])
    handle, store = await start_saved(runtime, agent)
    async with handle.subscribe() as events:
        await handle.add_message("plan it")
        await until_status(events, Status.IDLE)
        await handle.stop()
    rows = await store.list_display_messages("team", "c1")
    snapshots = [
        [(t["id"], t["status"]) for t in r.content["todos"]] for r in rows if r.type == "todos"
    ]
    assert snapshots == [  # the third write changed nothing: no row
        [("a", "pending"), ("b", "pending")],
        [("a", "completed"), ("b", "pending")],
    ]
    assert all(r.content_type == "json" for r in rows if r.type == "todos")
