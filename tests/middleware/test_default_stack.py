"""Tests for sagents/middleware/_default_stack.py: the standard stack in one call."""

from __future__ import annotations

import pytest
from langchain_core.messages import BaseMessage, ToolMessage

from sagents import Agent, ConfigurationError, Runtime, Status
from sagents.middleware import (
    DEFAULT_STACK,
    ConversationTitle,
    FileSystem,
    HumanInTheLoop,
    MemoryFileStore,
    PatchToolCalls,
    SubAgent,
    Summarization,
    TodoList,
    default_middleware,
    is_summary,
)
from sagents.testing import Reply, ScriptedChatModel, ToolCall
from tests.runtime.conftest import until_status


def model() -> ScriptedChatModel:
    return ScriptedChatModel(responder=lambda messages: Reply(text="ok"))


def kinds(stack: list[object]) -> list[type]:
    return [type(m) for m in stack]


def test_the_stack_in_its_order() -> None:
    m = model()
    stack = default_middleware(m)
    assert kinds(stack) == [TodoList, FileSystem, SubAgent, Summarization, PatchToolCalls]
    assert kinds(stack) == list(DEFAULT_STACK)
    summarization = stack[3]
    assert isinstance(summarization, Summarization)
    assert default_middleware(m)[0] is not stack[0]  # fresh instances each call


def test_drop_replace_and_add() -> None:
    files = FileSystem(store=MemoryFileStore())
    approval = HumanInTheLoop(interrupt_on={"write_file": True})
    title = ConversationTitle(model())
    stack = default_middleware(
        model(), exclude={SubAgent}, replace=[files], extra=[approval, title]
    )
    assert kinds(stack) == [
        TodoList,
        FileSystem,
        Summarization,
        HumanInTheLoop,
        ConversationTitle,
        PatchToolCalls,  # still last: it sees the history as the model will
    ]
    assert stack[1] is files
    assert stack[3] is approval
    without_patching = default_middleware(model(), exclude={PatchToolCalls}, extra=[approval])
    assert kinds(without_patching)[-1] is HumanInTheLoop


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"exclude": {HumanInTheLoop}}, "HumanInTheLoop is not in the stack"),
        ({"replace": [HumanInTheLoop(interrupt_on={"x": True})]}, "pass it in extra"),
        ({"replace": [TodoList(), TodoList()]}, "TodoList is replaced twice"),
        ({"exclude": {TodoList}, "replace": [TodoList()]}, "both excluded and replaced"),
    ],
)
def test_what_cannot_be_done_is_said(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        default_middleware(model(), **options)  # type: ignore[arg-type]


def _plan_then_write(messages: list[BaseMessage]) -> Reply:
    done = {m.name for m in messages if isinstance(m, ToolMessage)}
    if not done:
        todos = [{"id": "1", "content": "Write it", "status": "in_progress"}]
        return Reply(tool_calls=[ToolCall(name="write_todos", args={"todos": todos})])
    if "write_file" not in done:
        args = {"file_path": "/plan.md", "content": "the plan"}
        return Reply(tool_calls=[ToolCall(name="write_file", args=args)])
    return Reply(text="done")


async def test_an_agent_with_the_stack_plans_and_writes() -> None:
    m = ScriptedChatModel(responder=_plan_then_write)
    agent = Agent(agent_id="stacked", model=m, middleware=default_middleware(m))
    names = set(agent.all_tools)
    assert {"write_todos", "write_file", "read_file", "glob", "grep", "task"} <= names
    async with Runtime() as runtime:
        handle = await runtime.start_agent(agent, inactivity_timeout=None)
        async with handle.subscribe() as events:
            await handle.add_message("plan and write")
            await until_status(events, Status.IDLE)
        state = await handle.get_state()
    assert [t.content for t in state.todos] == ["Write it"]
    [written] = [m for m in state.messages if isinstance(m, ToolMessage) and m.name == "write_file"]
    assert written.status == "success"
    assert state.messages[-1].content == "done"


def test_with_no_model_the_summaries_are_the_agent_s() -> None:
    stack = default_middleware()
    assert kinds(stack) == list(DEFAULT_STACK)
    summarization = stack[3]
    assert isinstance(summarization, Summarization)
    assert summarization.model is None  # the agent's own model writes them


def _summarize_or_answer(messages: list[BaseMessage]) -> Reply:
    if "summar" in str(messages[0].content).lower() and len(messages) == 2:
        return Reply(text="the gist so far")  # the summary request: its prompt and transcript
    return Reply(text="ok")


async def test_summarization_without_a_model_writes_with_the_agent_s() -> None:
    m = ScriptedChatModel(responder=_summarize_or_answer)
    agent = Agent(
        agent_id="self-summarizing",
        model=m,
        middleware=[Summarization(max_messages=4, messages_to_keep=2)],
    )
    async with Runtime() as runtime:
        handle = await runtime.start_agent(agent, inactivity_timeout=None)
        async with handle.subscribe() as events:
            for turn in range(4):
                await handle.add_message(f"message {turn}")
                await until_status(events, Status.IDLE)
        state = await handle.get_state()
    assert any(is_summary(message) for message in state.messages)
    assert any("the gist so far" in str(message.content) for message in state.messages)
