"""Running one tool call (``_tools.py``): whatever a tool raises is that call's error result.

"Whatever" includes ``BaseException``: ``SystemExit`` and ``KeyboardInterrupt`` (which asyncio
would carry out of the event loop, ending the process), ``GeneratorExit`` and custom subclasses
(which used to end the run without a result), and a ``CancelledError`` the tool raised by itself
(which used to look like a cancel nobody asked for). A real cancellation of the run still
propagates, and wins over whatever the tool does with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool, tool

from sagents import (
    Agent,
    Done,
    RetryPolicy,
    State,
)
from sagents.events import ToolExecutionFailed
from sagents.execution import CollectingSink, Reply, Run, ToolCall
from sagents.testing import ScriptedChatModel
from tests.execution.conftest import Odd, in_a_loop_of_its_own


def hello() -> State:
    return State(messages=[HumanMessage("hello")])


def agent_calling(*tools: Any, **kwargs: Any) -> Agent:
    """An agent whose model calls each tool once (call ids ``c0``, ``c1``…), then answers
    "recovered"."""
    names = [t.name if isinstance(t, BaseTool) else t.__name__ for t in tools]
    calls = [ToolCall(name=name, args={}, id=f"c{i}") for i, name in enumerate(names)]
    model = ScriptedChatModel(script=[Reply(tool_calls=calls), Reply(text="recovered")])
    kwargs.setdefault("retry", RetryPolicy(max_attempts=1))
    return Agent(agent_id="a", model=model, tools=tools, **kwargs)


def results(state: State) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in state.messages if isinstance(m, ToolMessage)}


# -- every way of writing a tool ------------------------------------------------------------------


def _tool_kinds(error: BaseException) -> dict[str, Any]:
    """One tool named ``boom`` raising ``error``, for every way a tool can be written."""

    async def boom_async() -> str:
        """Boom."""
        raise error

    def boom_sync() -> str:  # runs in a worker thread
        """Boom."""
        raise error

    @tool("boom")
    async def decorated() -> str:
        """Boom."""
        raise error

    class AsyncTool(BaseTool):
        name: str = "boom"
        description: str = "Boom."

        def _run(self) -> str:
            raise NotImplementedError

        async def _arun(self) -> str:
            raise error

    class SyncTool(BaseTool):  # BaseTool runs _run in a thread, from langchain's own task
        name: str = "boom"
        description: str = "Boom."

        def _run(self) -> str:
            raise error

    return {
        "async function": StructuredTool.from_function(coroutine=boom_async, name="boom"),
        "sync function": StructuredTool.from_function(func=boom_sync, name="boom"),
        "@tool": decorated,
        "BaseTool._arun": AsyncTool(),
        "BaseTool._run": SyncTool(),
    }


KINDS = list(_tool_kinds(ValueError()))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt()], ids=type)
def test_a_tool_raising_system_exit_or_keyboard_interrupt_fails_its_call_not_the_process(
    kind: str, error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    agent = agent_calling(_tool_kinds(error)[kind])

    with caplog.at_level(logging.WARNING, logger="sagents.execution"):
        result = in_a_loop_of_its_own(lambda: agent.run(hello()))

    assert isinstance(result, Done)
    assert result.state.messages[-1].content == "recovered"
    message = results(result.state)["c0"]
    assert message.status == "error"
    assert f"tool 'boom' failed: {type(error).__name__}" in str(message.content)
    assert any(
        f"tool 'boom' raised {type(error).__name__}" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("error", [Odd("odd"), GeneratorExit(), asyncio.CancelledError()], ids=type)
async def test_a_tool_raising_another_base_exception_fails_its_call_and_the_run_goes_on(
    kind: str, error: BaseException
) -> None:
    agent = agent_calling(_tool_kinds(error)[kind])
    sink = CollectingSink()

    result = await agent.run(hello(), sink=sink)

    assert isinstance(result, Done)
    message = results(result.state)["c0"]
    assert message.status == "error"
    assert type(error).__name__ in str(message.content)
    assert [e.tool_call_id for e in sink.of_type(ToolExecutionFailed)] == ["c0"]  # type: ignore[attr-defined]


async def test_a_tool_awaiting_a_job_someone_else_cancelled_fails_its_call_only() -> None:
    # The realistic stray CancelledError: nobody cancelled the run, the tool's job was.
    async def fetch() -> str:
        """Fetch."""
        job: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        job.cancel()
        return await job

    result = await agent_calling(fetch).run(hello())

    assert isinstance(result, Done)
    content = str(results(result.state)["c0"].content)
    assert "raised CancelledError, though the run was not cancelled" in content


def test_parallel_tools_failing_in_every_way_each_get_their_own_result() -> None:
    def leave() -> str:
        """Exit."""
        raise SystemExit(1)

    async def stray() -> str:
        """Stray cancel."""
        raise asyncio.CancelledError

    async def odd() -> str:
        """Odd."""
        raise Odd("odd")

    def fine() -> str:
        """Fine."""
        return "fine"

    agent = agent_calling(leave, stray, odd, fine)

    result = in_a_loop_of_its_own(lambda: agent.run(hello()))

    assert isinstance(result, Done)
    by_id = results(result.state)
    assert [by_id[f"c{i}"].status for i in range(4)] == ["error", "error", "error", "success"]
    assert by_id["c3"].content == "fine"


async def test_a_tool_raising_timeout_error_itself_is_its_failure_not_a_timeout() -> None:
    # With no deadline at all this used to crash the step (formatting the absent timeout).
    async def call_api() -> str:
        """Call an API."""
        raise TimeoutError("the API did not answer")

    for tool_timeout in (None, 30.0):
        result = await agent_calling(call_api, tool_timeout=tool_timeout).run(hello())
        assert isinstance(result, Done)
        content = str(results(result.state)["c0"].content)
        assert "failed: TimeoutError: the API did not answer" in content
        assert "timed out after" not in content


async def test_a_tool_whose_result_cannot_be_read_fails_its_call() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    class Opaque(BaseTool):
        name: str = "opaque"
        description: str = "Returns an odd object."

        def _run(self) -> Any:
            raise NotImplementedError

        async def _arun(self) -> Any:
            return Unprintable()

    result = await agent_calling(Opaque()).run(hello())

    assert isinstance(result, Done)
    assert "RuntimeError: no text" in str(results(result.state)["c0"].content)


# -- a real cancellation still propagates -----------------------------------------------------


async def _cancel_while_tool_runs(
    behaviour: Callable[[], Awaitable[str]],
) -> tuple[Run, asyncio.Task[Any]]:
    started = asyncio.Event()

    async def stubborn() -> str:
        """Stubborn."""
        started.set()
        return await behaviour()

    run = Run(agent_calling(stubborn), hello())
    task = asyncio.create_task(run.execute())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return run, task


async def test_a_cancel_of_the_run_wins_over_what_the_tool_raises_on_its_way_out() -> None:
    async def cleanup_fails() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None
        return "unreachable"

    run, task = await _cancel_while_tool_runs(cleanup_fails)

    assert task.cancelled()
    message = results(run.state)["c0"]
    assert "Cancelled" in str(message.content)  # settled as cancelled, not as a failure
    assert run.state.pending_tool_calls() == []


async def test_a_cancel_the_tool_swallows_still_stops_the_run_and_keeps_its_result() -> None:
    async def swallows() -> str:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return "finished anyway"

    run, task = await _cancel_while_tool_runs(swallows)

    assert task.cancelled()
    assert results(run.state)["c0"].content == "finished anyway"
    assert not [m for m in run.state.messages if isinstance(m, AIMessage) and m.content]


# -- tools see what they saw before containment --------------------------------------------------


async def test_contained_tools_still_get_their_config_and_run_manager() -> None:
    seen: list[tuple[str, bool, bool]] = []

    class AsyncTool(BaseTool):
        name: str = "async_tool"
        description: str = "Async."

        def _run(self) -> str:
            raise NotImplementedError

        async def _arun(
            self,
            config: RunnableConfig,
            run_manager: AsyncCallbackManagerForToolRun | None = None,
        ) -> str:
            seen.append((self.name, isinstance(config, dict), run_manager is not None))
            return "ok"

    class SyncTool(BaseTool):
        name: str = "sync_tool"
        description: str = "Sync."

        def _run(
            self, config: RunnableConfig, run_manager: CallbackManagerForToolRun | None = None
        ) -> str:
            seen.append((self.name, isinstance(config, dict), run_manager is not None))
            return "ok"

    result = await agent_calling(AsyncTool(), SyncTool()).run(hello())

    assert isinstance(result, Done)
    assert sorted(seen) == [("async_tool", True, True), ("sync_tool", True, True)]
