"""The middleware context as an agent server provides it: send, spawn, emit, persist."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sagents import Middleware, State, Status, telemetry
from sagents.events import MiddlewareAction
from sagents.execution import Reply, get_middleware_context
from sagents.persistence import MemoryPersistence
from sagents.runtime import PendingSubscription, Runtime

from .conftest import make_agent, until_status, user

pytestmark = pytest.mark.looptime


class Titler(Middleware):
    """Finds a title in the background after the first model call, like ConversationTitle."""

    key = "conversation_title"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.started = 0

    async def after_model(self, state: State) -> None:
        ctx = get_middleware_context()
        if self.key in state.metadata or self.started:
            return
        self.started += 1

        async def find_title() -> None:
            await asyncio.sleep(5)
            if self.fail:
                raise RuntimeError("title model down")
            ctx.send(self.key, "A fine title")

        ctx.spawn(find_title())

    async def handle_message(self, message: Any, state: State) -> State:
        ctx = get_middleware_context()
        ctx.emit(MiddlewareAction(middleware="Titler", data=message))
        ctx.persist("title_generated")
        return state.with_metadata(self.key, {"title": message})


async def test_background_work_reaches_state_events_and_the_conversation_row(
    runtime: Runtime,
) -> None:
    store = MemoryPersistence()
    await store.create_conversation("team", conversation_id="c1")
    agent = make_agent([Reply(text="hello")], middleware=[Titler()])
    events = PendingSubscription(channel="debug")
    handle = await runtime.start_agent(
        agent,
        user(),
        conversation_id="c1",
        scope="team",
        agent_persistence=store,
        initial_subscribers=[events],
    )
    await handle.execute()
    async for event in events:
        if isinstance(event, MiddlewareAction):
            assert event.data == "A fine title"
            assert event.agent_id == "agent-1"
            break
    assert (await handle.get_state()).metadata["conversation_title"] == {"title": "A fine title"}
    for _ in range(10):
        conversation = await store.get_conversation("team", "c1")
        if conversation is not None and conversation.title:
            break
        await asyncio.sleep(0.1)
    assert conversation is not None
    assert conversation.title == "A fine title"
    stored = await store.load_state("team", "c1")
    assert stored is not None
    assert stored.state.metadata["conversation_title"] == {"title": "A fine title"}


async def test_a_failing_background_task_is_logged_and_the_agent_carries_on(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_agent([Reply(text="one"), Reply(text="two")], middleware=[Titler(fail=True)])
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.execute()
    await until_status(events, Status.IDLE)
    await asyncio.sleep(6)
    assert "a middleware background task failed" in caplog.text
    assert await handle.get_status() is Status.IDLE
    assert "conversation_title" not in (await handle.get_state()).metadata


async def test_background_tasks_end_with_the_server(runtime: Runtime) -> None:
    titler = Titler()
    agent = make_agent([Reply(text="hello")], middleware=[titler])
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.execute()
    await until_status(events, Status.IDLE)
    await runtime.stop("agent-1")
    await asyncio.sleep(10)  # the task would have sent by now; its server is gone
    assert titler.started == 1
    assert runtime.agent_count() == 0


async def test_send_to_an_unknown_key_is_logged_not_a_crash(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    class Confused(Middleware):
        async def after_model(self, state: State) -> None:
            get_middleware_context().send("nobody", 1)

    agent = make_agent([Reply(text="hello")], middleware=[Confused()])
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.execute()
    await until_status(events, Status.IDLE)
    await handle.touch()
    assert "message to middleware 'nobody' failed" in caplog.text
    assert await handle.get_status() is Status.IDLE


@pytest.fixture
def middleware_telemetry() -> Any:
    """The middleware telemetry events seen, as ``(event's last part, metadata)``."""
    seen: list[tuple[str, dict[str, Any]]] = []
    names = [
        telemetry.MIDDLEWARE_TASK_SPAWNED,
        telemetry.MIDDLEWARE_TASK_COMPLETED,
        telemetry.MIDDLEWARE_TASK_FAILED,
        telemetry.MIDDLEWARE_MESSAGE_RECEIVED,
    ]

    def record(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        seen.append((f"{event[2]}.{event[3]}", dict(metadata)))

    telemetry.attach_many("middleware-telemetry-test", names, record)
    yield seen
    telemetry.detach("middleware-telemetry-test")


@pytest.mark.parametrize("fail", [False, True])
async def test_background_tasks_and_messages_are_telemetry_events(
    runtime: Runtime, middleware_telemetry: list[tuple[str, dict[str, Any]]], fail: bool
) -> None:
    agent = make_agent([Reply(text="hello")], middleware=[Titler(fail=fail)])
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.execute()
    await until_status(events, Status.IDLE)
    await asyncio.sleep(6)  # the task's five seconds
    kinds = [kind for kind, _ in middleware_telemetry]
    if fail:
        assert kinds == ["task.spawned", "task.failed"]
        assert middleware_telemetry[1][1]["error"] == "RuntimeError: title model down"
    else:  # the message the task sent may be handled before or after the task ends
        assert sorted(kinds) == ["message.received", "task.completed", "task.spawned"]
        seen = dict(middleware_telemetry)
        assert seen["task.completed"]["cancelled"] is False
        assert seen["message.received"] == {
            "agent_id": "agent-1",
            "middleware": "conversation_title",
        }
    assert all(meta["agent_id"] == "agent-1" for _, meta in middleware_telemetry)
    assert await handle.get_status() is Status.IDLE


async def test_a_task_cancelled_with_its_server_completes_as_cancelled(
    runtime: Runtime, middleware_telemetry: list[tuple[str, dict[str, Any]]]
) -> None:
    agent = make_agent([Reply(text="hello")], middleware=[Titler()])
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.execute()
    await until_status(events, Status.IDLE)
    await runtime.stop("agent-1")
    assert [(kind, meta.get("cancelled")) for kind, meta in middleware_telemetry] == [
        ("task.spawned", None),
        ("task.completed", True),
    ]
