"""The caller's data for tools (``tool_context``) and messages queued by tools
(``ToolContext.queue_message``), issue 15 item 5, through the public API."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from sagents import InvalidOption, Status, get_tool_context
from sagents.events import FollowUpsLimited, MessageQueued, StatusChanged
from sagents.execution import Reply, Run, ScriptedChatModel, ToolCall
from sagents.middleware import HumanInTheLoop, SubAgent, SubAgentSpec
from sagents.runtime import Runtime

from .conftest import make_agent, start_saved, statuses, until_status, user

pytestmark = pytest.mark.looptime


@tool
def whoami() -> str:
    """Who asks, and for which tenant."""
    data = get_tool_context().tool_context
    return f"{data.get('user')}@{data.get('tenant')}"


def whoami_turns(count: int) -> list[Reply]:
    turns: list[Reply] = []
    for _ in range(count):
        turns += [Reply(tool_calls=[ToolCall(name="whoami", args={})]), Reply(text="ok")]
    return turns


def tool_results(messages: list[BaseMessage]) -> list[str]:
    return [str(m.content) for m in messages if isinstance(m, ToolMessage)]


async def test_tools_read_the_start_option_and_each_message_s_context(runtime: Runtime) -> None:
    agent = make_agent(whoami_turns(4), tools=[whoami])
    handle = await runtime.start_agent(
        agent, tool_context={"user": "ann", "tenant": "acme"}, inactivity_timeout=None
    )
    async with handle.subscribe() as events:
        await handle.add_message("first")
        await until_status(events, Status.IDLE)
        await handle.add_message("second", tool_context={"user": "bob"})
        await until_status(events, Status.IDLE)
        await handle.add_message("third")  # no context of its own: the last one stays
        await until_status(events, Status.IDLE)
        await handle.add_message("fourth", tool_context={"tenant": "globex"})
        await until_status(events, Status.IDLE)
    state = await handle.get_state()
    # A message's context replaces the previous message's, over the start option's.
    assert tool_results(state.messages) == ["ann@acme", "bob@acme", "bob@acme", "ann@globex"]


async def test_a_queued_message_s_context_applies_from_its_follow_up_turn(
    runtime: Runtime,
) -> None:
    agent = make_agent(whoami_turns(2), tools=[whoami])
    handle = await runtime.start_agent(agent, tool_context={"user": "ann"}, inactivity_timeout=None)
    async with handle.subscribe() as events:
        await handle.add_message("first")
        # Queued while the first run is in progress (its model call has not finished).
        await handle.add_message("second", tool_context={"user": "bob"})
        seen = await until_status(events, Status.IDLE)
    state = await handle.get_state()
    assert tool_results(state.messages) == ["ann@None", "bob@None"]
    assert statuses(seen) == [Status.RUNNING, Status.IDLE]  # one follow-up, no idle between
    [queued] = [e for e in seen if isinstance(e, MessageQueued)]  # a UI shows it pending
    assert queued.message is not None
    assert (queued.message.content, queued.queued, queued.from_tool) == ("second", 1, False)


def ask_then_tell(messages: list[BaseMessage]) -> Reply:
    results = tool_results(messages)
    return (
        Reply(text=results[-1]) if results else Reply(tool_calls=[ToolCall(name="whoami", args={})])
    )


async def test_a_sub_agent_s_tools_read_the_parent_s_context(runtime: Runtime) -> None:
    helper = SubAgentSpec(
        name="helper",
        description="Finds out who asks.",
        model=ScriptedChatModel(responder=ask_then_tell),
        tools=[whoami],
    )
    task = ToolCall(name="task", args={"instructions": "who?", "task_name": "helper"})
    agent = make_agent(
        [Reply(tool_calls=[task]), Reply(text="done")], middleware=[SubAgent([helper])]
    )
    handle = await runtime.start_agent(agent, tool_context={"user": "ann"}, inactivity_timeout=None)
    async with handle.subscribe() as events:
        await handle.add_message("ask the helper", tool_context={"tenant": "acme"})
        await until_status(events, Status.IDLE)
    assert tool_results((await handle.get_state()).messages) == ["ann@acme"]


async def test_a_bad_tool_context_is_refused_clearly(runtime: Runtime) -> None:
    with pytest.raises(InvalidOption, match="tool_context must be a dict"):
        await runtime.start_agent(make_agent(), tool_context=["user"])  # type: ignore[arg-type]
    handle = await runtime.start_agent(make_agent(), inactivity_timeout=None)
    with pytest.raises(InvalidOption, match="tool_context must be a dict"):
        await handle.add_message("hi", tool_context="ann")  # type: ignore[arg-type]
    assert (await handle.get_state()).messages == []  # nothing was added


# -- queue_message --------------------------------------------------------------------------


def queuing_tool(display: Any) -> Any:
    @tool
    def activate(command: str) -> str:
        """Start a command whose instructions arrive as the next message."""
        queued = get_tool_context().queue_message(
            f"Instructions for {command}: list three steps.", display=display
        )
        return "the instructions arrive next" if queued else "no server: inline instructions"

    return activate


def activate_script() -> list[Reply]:
    return [
        Reply(tool_calls=[ToolCall(name="activate", args={"command": "deploy"})]),
        Reply(text="Starting deploy."),
        Reply(text="1. build 2. test 3. ship"),
    ]


@pytest.mark.parametrize(
    ("display", "shown"),
    [
        (False, None),
        (True, "Instructions for deploy: list three steps."),
        ("Running the deploy checklist", "Running the deploy checklist"),
    ],
)
async def test_a_message_queued_by_a_tool_is_the_next_turn(
    runtime: Runtime, display: Any, shown: str | None
) -> None:
    agent = make_agent(activate_script(), tools=[queuing_tool(display)])
    handle, store = await start_saved(runtime, agent)
    async with handle.subscribe() as events:
        await handle.add_message("deploy it")
        seen = await until_status(events, Status.IDLE)
    assert statuses(seen) == [Status.RUNNING, Status.IDLE]  # the follow-up said no idle
    [queued] = [e for e in seen if isinstance(e, MessageQueued)]
    assert queued.from_tool
    assert (None if queued.message is None else queued.message.content) == shown
    state = await handle.get_state()
    kinds = [(type(m).__name__, str(m.content)) for m in state.messages]
    assert kinds[2:] == [
        ("ToolMessage", "the instructions arrive next"),
        ("AIMessage", "Starting deploy."),
        ("HumanMessage", "Instructions for deploy: list three steps."),
        ("AIMessage", "1. build 2. test 3. ship"),
    ]
    await handle.stop()  # its saves are written
    rows = await store.list_display_messages("team", "c1")
    users = [r.content["text"] for r in rows if r.type == "user"]
    assert users == ["deploy it"] + ([] if shown is None else [shown])
    stored = await store.load_state("team", "c1")
    assert stored is not None
    assert "Instructions for deploy" in str(stored.state.messages[4].content)  # the model's


async def test_a_queued_message_waits_for_the_decision_that_continues_its_run(
    runtime: Runtime,
) -> None:
    ran: list[str] = []

    @tool
    def delete(path: str) -> str:
        """Delete a file."""
        ran.append(path)
        return f"deleted {path}"

    script = [
        Reply(
            tool_calls=[
                ToolCall(name="activate", args={"command": "cleanup"}),
                ToolCall(name="delete", args={"path": "/tmp/x"}),
            ]
        ),
        Reply(text="Cleaned."),
        Reply(text="Steps listed."),
    ]
    agent = make_agent(
        script,
        tools=[queuing_tool(False), delete],
        middleware=[HumanInTheLoop(interrupt_on={"delete": True})],
    )
    handle = await runtime.start_agent(agent, inactivity_timeout=None)
    async with handle.subscribe() as events:
        await handle.add_message("clean up")
        await until_status(events, Status.INTERRUPTED)
        waiting = await handle.get_state()
        assert not any("Instructions" in str(m.content) for m in waiting.messages)
        await handle.resume([{"type": "approve"}])
        seen = await until_status(events, Status.IDLE)
    assert ran == ["/tmp/x"]
    assert statuses(seen) == [Status.RUNNING, Status.IDLE]
    messages = (await handle.get_state()).messages
    assert isinstance(messages[-3], AIMessage)
    assert messages[-3].content == "Cleaned."
    assert isinstance(messages[-2], HumanMessage)
    assert "Instructions for cleanup" in str(messages[-2].content)
    assert messages[-1].content == "Steps listed."


async def test_queued_tool_messages_count_against_max_follow_ups(runtime: Runtime) -> None:
    # A tool that queues on every call would loop forever; max_follow_ups stops it.
    script = [Reply(tool_calls=[ToolCall(name="activate", args={"command": "again"})])] * 3
    agent = make_agent(
        [item for call in script for item in (call, Reply(text="next"))],
        tools=[queuing_tool(False)],
    )
    handle = await runtime.start_agent(agent, max_follow_ups=2, inactivity_timeout=None)
    async with handle.subscribe() as events:
        await handle.add_message("go")
        seen = await until_status(events, Status.IDLE)
    assert [e.status for e in seen if isinstance(e, StatusChanged)] == [
        Status.RUNNING,
        Status.IDLE,
    ]
    # Said, not only logged: the last queued message got no answer.
    [limited] = [e for e in seen if isinstance(e, FollowUpsLimited)]
    assert (limited.max_follow_ups, limited.added) == (2, 1)
    messages = (await handle.get_state()).messages
    humans = [m for m in messages if isinstance(m, HumanMessage)]
    # The first run and two follow-ups ran; the third queued message was only added.
    assert len(humans) == 4
    assert isinstance(messages[-1], HumanMessage)


async def test_queue_message_outside_an_agent_server_says_so() -> None:
    agent = make_agent(activate_script()[:2], tools=[queuing_tool(False)])
    result = await Run(agent, user("deploy it")).execute()
    assert tool_results(list(result.state.messages)) == ["no server: inline instructions"]
