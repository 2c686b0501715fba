"""Conversations over A2A, end to end: an ``a2a-sdk`` client against the app on uvicorn.

A context is a conversation and a task one run: a message streams its run to ``completed``; an
approval or a question waits as ``input-required`` and the next message on the task answers it;
cancel cancels the run; the conversation keeps its state across tasks and across a stop.
"""

from __future__ import annotations

import asyncio
import contextlib

from a2a.helpers import get_data_parts
from a2a.types import CancelTaskRequest, GetTaskRequest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from sagents import Session, Status
from tests.a2a.conftest import (
    CANCELED,
    COMPLETED,
    FAILED,
    INPUT_REQUIRED,
    REJECTED,
    WORKING,
    Served,
    request,
    text_of,
)


def _interrupt(update: object) -> dict[str, object]:
    """The interrupt an input-required update carries as data."""
    (event,) = get_data_parts(update.status.message.parts)  # type: ignore[attr-defined]
    assert event["type"] == "status_changed"
    assert event["status"] == "interrupted"
    interrupt = event["data"]
    assert isinstance(interrupt, dict)
    return interrupt


async def test_a_message_streams_its_run_to_completed(demo: Served) -> None:
    # The demo plans, then writes its notes, which waits for approval.
    first = await demo.send("sagents", context_id="ctx-stream")
    assert first.states[0] == WORKING
    assert first.final.status.state == INPUT_REQUIRED
    assert any(t.startswith("Calling write_todos") for t in first.status_texts())
    # The text of each model message is an artifact, streamed in chunks, then replaced whole.
    chunks = first.artifact_updates()
    assert any(c.append for c in chunks)
    closing = [c for c in chunks if c.last_chunk]
    assert [text_of(c.artifact) for c in closing] == [
        "Let me plan how to research 'sagents'.",
        "I researched it; now I will save my notes.",
    ]
    assert all(not c.append for c in closing)
    # The pending call is described in words and carried as data.
    asked = text_of(first.final.status.message)
    assert "Waiting for your approval" in asked
    assert "write_file" in asked
    interrupt = _interrupt(first.final)
    assert interrupt["kind"] == "human_approval"
    assert [r["name"] for r in interrupt["action_requests"]] == ["write_file"]  # type: ignore[index, union-attr]

    answered = await demo.send("approve", context_id="ctx-stream", task_id=first.task_id)
    assert answered.task_id == first.task_id  # one run, one task
    assert answered.final.status.state == COMPLETED
    final = "All done: my notes on 'sagents' are saved and reviewed."
    assert text_of(answered.final.status.message) == final
    assert any(t == "write_file finished" for t in answered.status_texts())

    task = await demo.client.get_task(GetTaskRequest(id=first.task_id))
    assert task.status.state == COMPLETED
    assert text_of(task.artifacts[-1]) == final
    assert text_of(task.artifacts[0]) == "Let me plan how to research 'sagents'."


async def test_a_rejection_in_a_data_part_completes_without_the_call(demo: Served) -> None:
    first = await demo.send("sagents", context_id="ctx-reject")
    assert first.final.status.state == INPUT_REQUIRED
    decisions = {"decisions": [{"type": "reject", "message": "not now"}]}
    answered = await demo.send(data=decisions, context_id="ctx-reject", task_id=first.task_id)
    assert answered.final.status.state == COMPLETED
    assert text_of(answered.final.status.message).startswith("Understood, I did not save")
    state = await demo.runtime.agent(demo.config.agent_id_for("ctx-reject")).get_state()
    written = [m for m in state.messages if isinstance(m, ToolMessage) and m.name == "write_file"]
    assert [m.status for m in written] == ["error"]


async def test_a_reply_that_decides_nothing_keeps_the_task_waiting(demo: Served) -> None:
    first = await demo.send("sagents", context_id="ctx-unclear")
    unclear = await demo.send("maybe later", context_id="ctx-unclear", task_id=first.task_id)
    assert unclear.final.status.state == INPUT_REQUIRED
    assert "could not be used" in text_of(unclear.final.status.message)
    agent = demo.runtime.agent(demo.config.agent_id_for("ctx-unclear"))
    assert await agent.get_status() is Status.INTERRUPTED

    answered = await demo.send("yes", context_id="ctx-unclear", task_id=first.task_id)
    assert answered.final.status.state == COMPLETED


async def test_a_question_is_answered_by_the_next_message(script: Served) -> None:
    asked = await script.send("ask me", context_id="ctx-question")
    assert asked.final.status.state == INPUT_REQUIRED
    assert "Which plan?" in text_of(asked.final.status.message)
    assert _interrupt(asked.final)["kind"] == "question"

    answered = await script.send("PRO", context_id="ctx-question", task_id=asked.task_id)
    assert answered.final.status.state == COMPLETED
    assert text_of(answered.final.status.message).endswith("Answer: pro")


async def test_cancel_cancels_the_running_task(script: Served) -> None:
    task_id = None
    cancelled = None
    async with contextlib.aclosing(
        script.client.send_message(request("wait", context_id="ctx-cancel"))
    ) as stream:
        async for response in stream:
            if response.HasField("task"):
                task_id = response.task.id
            if not response.HasField("status_update"):
                continue
            update = response.status_update
            assert update.status.state != COMPLETED
            if text_of(update.status.message).startswith("Calling wait_for_release"):
                assert task_id is not None
                cancelled = await script.client.cancel_task(CancelTaskRequest(id=task_id))
    assert cancelled is not None, "the tool never started"
    assert cancelled.status.state == CANCELED
    task = await script.client.get_task(GetTaskRequest(id=task_id))
    assert task.status.state == CANCELED

    agent = script.runtime.agent(script.config.agent_id_for("ctx-cancel"))
    assert await agent.get_status() is Status.CANCELLED
    assert not script.factory.release.is_set()  # the tool was cancelled, never released
    # The conversation carries on after the cancelled run.
    after = await script.send("hello", context_id="ctx-cancel")
    assert text_of(after.final.status.message) == "echo 2: hello"


async def test_cancel_stops_the_model_mid_stream(script: Served) -> None:
    cancelled = None
    chunks: list[str] = []
    async with contextlib.aclosing(
        script.client.send_message(request("stream it", context_id="ctx-cancel-stream"))
    ) as stream:
        async for response in stream:
            if response.HasField("artifact_update") and cancelled is None:
                update = response.artifact_update
                chunks.append(text_of(update.artifact))
                cancelled = await script.client.cancel_task(CancelTaskRequest(id=update.task_id))
            if response.HasField("status_update"):
                assert response.status_update.status.state != COMPLETED
    assert chunks == ["one "]  # the model was waiting after its first chunk
    assert cancelled is not None
    assert cancelled.status.state == CANCELED
    agent = script.runtime.agent(script.config.agent_id_for("ctx-cancel-stream"))
    assert await agent.get_status() is Status.CANCELLED
    assert not script.factory.release.is_set()
    state = await agent.get_state()
    assert not any(isinstance(m, AIMessage) for m in state.messages)  # no answer was kept


async def test_cancel_dismisses_what_a_waiting_task_asked(script: Served) -> None:
    asked = await script.send("ask me", context_id="ctx-cancel-question")
    assert asked.final.status.state == INPUT_REQUIRED
    cancelled = await script.client.cancel_task(CancelTaskRequest(id=asked.task_id))
    assert cancelled.status.state == CANCELED
    agent = script.runtime.agent(script.config.agent_id_for("ctx-cancel-question"))
    assert await agent.get_status() is Status.IDLE
    assert (await agent.get_state()).interrupt is None


async def test_the_context_is_one_conversation_across_tasks(script: Served) -> None:
    first = await script.send("hello", context_id="ctx-memory")
    second = await script.send("again", context_id="ctx-memory")
    assert first.task_id != second.task_id
    assert text_of(first.final.status.message) == "echo 1: hello"
    assert text_of(second.final.status.message) == "echo 2: again"
    state = await script.runtime.agent(script.config.agent_id_for("ctx-memory")).get_state()
    assert [type(m) for m in state.messages] == [HumanMessage, AIMessage] * 2
    other = await script.send("hello", context_id="ctx-other")
    assert text_of(other.final.status.message) == "echo 1: hello"


async def test_a_stopped_conversation_is_restored_by_the_next_message(script: Served) -> None:
    await script.send("hello", context_id="ctx-restore")
    agent_id = script.config.agent_id_for("ctx-restore")
    assert await Session.stop(script.runtime, script.config, "ctx-restore")
    assert await script.runtime.get_status(agent_id) is None

    again = await script.send("again", context_id="ctx-restore")
    assert again.final.status.state == COMPLETED
    assert text_of(again.final.status.message) == "echo 2: again"  # the history came back
    assert await script.runtime.get_status(agent_id) is Status.IDLE


async def test_an_approval_survives_the_agent_stopping(demo: Served) -> None:
    first = await demo.send("sagents", context_id="ctx-durable")
    assert first.final.status.state == INPUT_REQUIRED
    await demo.runtime.stop(demo.config.agent_id_for("ctx-durable"))

    answered = await demo.send("approve", context_id="ctx-durable", task_id=first.task_id)
    assert answered.final.status.state == COMPLETED
    assert text_of(answered.final.status.message).startswith("All done")


async def test_a_new_message_dismisses_an_earlier_tasks_question(demo: Served) -> None:
    first = await demo.send("sagents", context_id="ctx-stale")
    second = await demo.send("asyncio", context_id="ctx-stale")  # no task id: a new run
    assert second.final.status.state == INPUT_REQUIRED
    assert _interrupt(second.final) != _interrupt(first.final)

    stale = await demo.send("approve", context_id="ctx-stale", task_id=first.task_id)
    assert stale.final.status.state == REJECTED
    assert "no longer pending" in text_of(stale.final.status.message)

    answered = await demo.send("approve", context_id="ctx-stale", task_id=second.task_id)
    assert text_of(answered.final.status.message) == (
        "All done: my notes on 'asyncio' are saved and reviewed."
    )


async def test_a_busy_conversation_rejects_a_second_task(script: Served) -> None:
    running = asyncio.create_task(script.send("wait", context_id="ctx-busy"))
    try:
        await script.factory.waiting.wait()
        busy = await script.send("hello", context_id="ctx-busy")
        assert busy.final.status.state == REJECTED
        assert "already running" in text_of(busy.final.status.message)
        script.factory.release.set()
        done = await running
    finally:
        script.factory.release.set()
        await asyncio.gather(running, return_exceptions=True)
    assert done.final.status.state == COMPLETED
    assert text_of(done.final.status.message) == "done: released"


async def test_a_failed_run_fails_the_task(script: Served) -> None:
    failed = await script.send("fail now", context_id="ctx-fail")
    assert failed.final.status.state == FAILED
    assert "the model broke" in text_of(failed.final.status.message)
    agent = script.runtime.agent(script.config.agent_id_for("ctx-fail"))
    assert await agent.get_status() is Status.ERROR
