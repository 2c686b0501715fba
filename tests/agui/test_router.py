"""The AG-UI endpoint of the web demo (``sagents/agui/_router.py``, mounted at ``/agui``),
driven over HTTP with httpx: the stream of a run, interrupts and their resume, the refusals.

The offline scripted model walks the demo's scenario for each message: plan three todos, write
notes (an approval), read them back, tick the todos, answer.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from langchain_core.messages import BaseMessage, ToolMessage

from sagents import Agent, Runtime, SessionConfig, SessionOptions, SingleFactoryRouter, Status
from sagents.agui import agui_router
from sagents.execution._demo_model import demo_model
from sagents.middleware import AskUserQuestion
from sagents.testing import Reply, ScriptedChatModel, ToolCall
from sagents.web import DemoFactory
from sagents.web._identity import COOKIE_NAME
from tests.agui.conftest import AguiClient, Demo, Run
from tests.web.conftest import wait_until


def args_of(run: Run, name: str) -> dict[str, Any]:
    """The streamed arguments of the run's call to ``name``."""
    (call_id,) = [e["toolCallId"] for e in run.of("TOOL_CALL_START") if e["toolCallName"] == name]
    text = "".join(e["delta"] for e in run.of("TOOL_CALL_ARGS") if e["toolCallId"] == call_id)
    return dict(json.loads(text))


def todo_statuses(state: dict[str, Any]) -> list[str]:
    return [t["status"] for t in state["todos"]]


def apply(state: dict[str, Any], run: Run) -> dict[str, Any]:
    """The state a client holds after ``run`` (snapshots and top-level-or-nested patches)."""
    for event in run.events:
        if event["type"] == "STATE_SNAPSHOT":
            state = json.loads(json.dumps(event["snapshot"]))
        elif event["type"] == "STATE_DELTA":
            for op in event["delta"]:
                keys = op["path"].split("/")[1:]
                target = state
                for key in keys[:-1]:
                    target = target[key]
                if op["op"] == "remove":
                    del target[keys[-1]]
                else:
                    target[keys[-1]] = op["value"]
    return state


async def test_a_turn_streams_its_answer_stops_for_approval_and_resumes(
    demo: Demo, agui: AguiClient
) -> None:
    first = await agui.say("Otters")
    assert first.status == 200
    assert first.types()[:3] == ["RUN_STARTED", "MESSAGES_SNAPSHOT", "STATE_SNAPSHOT"]
    assert first.events[0]["threadId"] == agui.thread_id
    snapshot = first.events[1]["messages"]
    assert snapshot == [{"id": agui.messages[0]["id"], "role": "user", "content": "Otters"}]
    assert first.events[2]["snapshot"] == {"todos": [], "metadata": {}, "files": []}
    # Streamed: the first reply arrives in several pieces.
    starts = first.of("TEXT_MESSAGE_START")
    pieces = [
        e for e in first.of("TEXT_MESSAGE_CONTENT") if e["messageId"] == starts[0]["messageId"]
    ]
    assert len(pieces) > 1
    assert "".join(p["delta"] for p in pieces) == "Let me plan how to research 'Otters'."
    names = [e["toolCallName"] for e in first.of("TOOL_CALL_START")]
    assert names == ["write_todos", "write_todos", "write_file"]
    assert args_of(first, "write_file")["file_path"] == "/notes/otters.md"
    state = apply({}, first)
    assert todo_statuses(state) == ["in_progress", "pending", "pending"]
    # The write waits for a person: the run ends on the protocol's interrupt outcome.
    assert first.last["type"] == "RUN_FINISHED"
    (interrupt,) = first.interrupts()
    write_call = next(e for e in first.of("TOOL_CALL_START") if e["toolCallName"] == "write_file")
    assert interrupt["id"] == interrupt["toolCallId"] == write_call["toolCallId"]
    assert interrupt["reason"] == "human_approval"
    agent_id = demo.services.agent_id(agui.thread_id)
    assert await demo.services.runtime.get_status(agent_id) is Status.INTERRUPTED

    second = await agui.approve_all(first)
    assert second.status == 200
    results = {e["toolCallId"]: e["content"] for e in second.of("TOOL_CALL_RESULT")}
    assert results[interrupt["id"]] == "Created /notes/otters.md (4 lines)."
    assert second.text().endswith("All done: my notes on 'Otters' are saved and reviewed.")
    assert second.last["outcome"] == {"type": "success"}
    assert second.last["usage"][0]["model"] == "scripted"
    state = apply(state, second)
    assert todo_statuses(state) == ["completed"] * 3
    assert state["files"] == ["/notes/otters.md"]
    # The conversation is the demo's: listed for this identity, titled after the message.
    listed = (await agui.client.get("/api/conversations")).json()["conversations"]
    assert [(c["id"], c["title"]) for c in listed] == [(agui.thread_id, "Otters")]


async def test_a_run_without_input_reports_the_conversation_and_its_pending_approval(
    demo: Demo, agui: AguiClient
) -> None:
    first = await agui.say("Seals")
    # A client that knows nothing of the thread (a reload): the snapshots tell it everything,
    # and the approval is presented again.
    fresh = AguiClient(agui.client, agui.thread_id)
    again = await fresh.post(fresh.body())
    assert again.types()[:3] == ["RUN_STARTED", "MESSAGES_SNAPSHOT", "STATE_SNAPSHOT"]
    # The user's message, the plan (a reply and its result), the reply waiting for approval.
    assert [m["role"] for m in again.events[1]["messages"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert again.interrupts() == first.interrupts()
    assert again.of("TEXT_MESSAGE_START") == []
    # Once it is answered and done, a run without input just says where things stand.
    await agui.approve_all(first)
    idle = await fresh.post(fresh.body())
    assert idle.types() == ["RUN_STARTED", "MESSAGES_SNAPSHOT", "STATE_SNAPSHOT", "RUN_FINISHED"]
    assert idle.last["outcome"] == {"type": "success"}


async def test_a_new_message_does_not_pass_an_open_approval(demo: Demo, agui: AguiClient) -> None:
    first = await agui.say("Walruses")
    other = await agui.say("Something else")  # no resume entry: the approval stays open
    assert other.interrupts() == first.interrupts()
    assert all(m["content"] != "Something else" for m in other.events[1]["messages"])
    state = await demo.services.runtime.agent(demo.services.agent_id(agui.thread_id)).get_state()
    assert [m.content for m in state.messages if m.type == "human"] == ["Walruses"]


async def test_cancelled_entries_dismiss_the_approval(demo: Demo, agui: AguiClient) -> None:
    first = await agui.say("Puffins")
    cancelled = [{"interruptId": i["id"], "status": "cancelled"} for i in first.interrupts()]
    dismissed = await agui.resume(cancelled)
    assert dismissed.last["outcome"] == {"type": "success"}
    handle = demo.services.runtime.agent(demo.services.agent_id(agui.thread_id))
    assert await handle.get_status() is Status.IDLE
    assert (await handle.get_state()).interrupt is None
    # With a new message, the message runs instead (the calls are answered "not approved").
    first = await agui.say("Gannets")
    agui.messages.append({"id": "u-next", "role": "user", "content": "Never mind"})
    cancelled = [{"interruptId": i["id"], "status": "cancelled"} for i in first.interrupts()]
    moved_on = await agui.resume(cancelled)
    assert "Never mind" in [m["content"] for m in moved_on.events[1]["messages"]]
    assert moved_on.text().startswith("Let me plan how to research 'Never mind'.")


async def test_a_rejection_reaches_the_model(demo: Demo, agui: AguiClient) -> None:
    first = await agui.say("Terns")
    (interrupt,) = first.interrupts()
    rejected = await agui.approve_all(first, payload={"approved": False, "message": "not now"})
    results = {e["toolCallId"]: e["content"] for e in rejected.of("TOOL_CALL_RESULT")}
    assert "not now" in results[interrupt["id"]]
    assert "Understood, I did not save the notes" in rejected.text()
    assert rejected.last["outcome"] == {"type": "success"}


async def test_edited_arguments_run_instead_of_the_models(demo: Demo, agui: AguiClient) -> None:
    first = await agui.say("Cormorants")
    edited = dict(args_of(first, "write_file"), file_path="/notes/edited.md")
    second = await agui.approve_all(first, payload={"approved": True, "editedArgs": edited})
    assert apply(apply({}, first), second)["files"] == ["/notes/edited.md"]


async def test_a_decision_that_does_not_fit_is_a_run_error_and_the_approval_stays(
    demo: Demo, agui: AguiClient
) -> None:
    first = await agui.say("Grebes")
    wrong = await agui.approve_all(first, payload={"type": "answer", "answers": ["x"]})
    assert wrong.types()[0] == "RUN_STARTED"
    assert wrong.last["type"] == "RUN_ERROR"
    assert wrong.last["code"] == "invalid_decision"
    handle = demo.services.runtime.agent(demo.services.agent_id(agui.thread_id))
    assert await handle.get_status() is Status.INTERRUPTED
    fine = await agui.approve_all(first)
    assert fine.last["outcome"] == {"type": "success"}


async def test_the_stream_is_a_viewer_while_it_is_open(demo: Demo, agui: AguiClient) -> None:
    topic = demo.services.session_config.presence_topic(agui.thread_id)
    seen: list[int] = []
    body = agui.body(messages=[{"id": "u1", "role": "user", "content": "Loons"}])
    async with agui.client.stream(
        "POST", "/agui", json=body, headers={"Accept": "text/event-stream"}
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"MESSAGES_SNAPSHOT"' in line:
                seen.append(len(await demo.services.presence.list(topic)))
    assert seen == [1]
    assert await demo.services.presence.list(topic) == {}


async def test_refusals_before_the_stream(demo: Demo, agui: AguiClient) -> None:
    ok = agui.body(messages=[{"id": "u1", "role": "user", "content": "Hi"}])
    not_json = await agui.post(json.dumps(ok).encode(), headers={"Content-Type": "text/plain"})
    assert not_json.status == 415
    assert (await agui.post(b'{"threadId": "t"}')).status == 422
    assert (await agui.post(b"[[[")).status == 422
    nul = agui.body(messages=[{"id": "u1", "role": "user", "content": "a\x00b"}])
    assert (await agui.post(nul)).status == 422
    long = agui.body(messages=[{"id": "u1", "role": "user", "content": "x" * 20_001}])
    assert (await agui.post(long)).status == 422
    assert (await agui.post(agui.body(threadId="x" * 256))).status == 422
    cross = await agui.post(ok, headers={"Origin": "http://localhost:3000"})
    assert cross.status == 403
    # Nothing of those reached an agent.
    assert demo.services.runtime.list_running_agents() == []


async def test_another_identitys_thread_is_not_found(demo: Demo, agui: AguiClient) -> None:
    await agui.say("Mine")
    async with demo.client() as other:
        await other.get("/api/me")
        assert other.cookies.get(COOKIE_NAME) != agui.client.cookies.get(COOKIE_NAME)
        stranger = AguiClient(other, agui.thread_id)
        refused = await stranger.say("Let me in")
        assert refused.status == 404
        assert refused.body["error"] == "not_found"


@pytest.mark.parametrize("accept", ["text/event-stream", "*/*"])
async def test_the_answer_is_server_sent_events(demo: Demo, agui: AguiClient, accept: str) -> None:
    body = agui.body(messages=[{"id": "u1", "role": "user", "content": "Hi"}])
    async with agui.client.stream(
        "POST", "/agui", json=body, headers={"Accept": accept}
    ) as response:
        raw = (await response.aread()).decode()
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in raw.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames)
    assert json.loads(frames[-1].removeprefix("data: "))["type"] == "RUN_FINISHED"


@contextlib.asynccontextmanager
async def own_app(factory: Any, **options: Any) -> AsyncIterator[AguiClient]:
    """The router in an app of its own: a runtime from the lifespan, a ``SessionConfig``
    answered per request, one scope for everyone; an AG-UI client on a new thread."""
    config = SessionConfig(factory_router=SingleFactoryRouter(factory))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Runtime() as runtime:
            app.state.runtime = runtime
            yield

    app = FastAPI(lifespan=lifespan)
    router = agui_router(
        lambda request: request.app.state.runtime, lambda request: config, **options
    )
    app.include_router(router, prefix="/agui")
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(lifespan(app))
        transport = httpx.ASGITransport(app=app)
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://app")
        )
        yield AguiClient(client)


async def test_an_app_without_the_demo() -> None:
    async with own_app(DemoFactory(demo_model()), include_files=False) as agui:
        run = await agui.say("Ospreys")
        assert run.status == 200
        assert run.interrupts()
        assert run.events[2]["snapshot"] == {"todos": [], "metadata": {}}
        done = await agui.approve_all(run)
        assert done.last["outcome"] == {"type": "success"}


QUESTIONS = [
    {"question": "Which database?", "choices": ["PostgreSQL", "SQLite"]},
    {"question": "Which features?", "type": "multiple_choice", "choices": ["login", "search"]},
    {"question": "What is it called?"},
]


def asking(messages: list[BaseMessage]) -> Reply:
    last = messages[-1]
    if not isinstance(last, ToolMessage):
        return Reply(
            text="First:", tool_calls=[ToolCall(name="ask_user", args={"questions": QUESTIONS})]
        )
    if not isinstance(last.artifact, dict):
        return Reply(text=f"No answers ({last.content}).")
    database, features, name = (item["answer"] for item in last.artifact["answers"])
    return Reply(text=f"Setting up {name} on {database} with {', '.join(features)}.")


class AskingFactory:
    def create_agent(self, agent_id: str, config: Any) -> tuple[Agent, SessionOptions]:
        model = ScriptedChatModel(responder=asking, record_prompts=False)
        return Agent(agent_id=agent_id, model=model, middleware=[AskUserQuestion()]), (
            SessionOptions()
        )


async def test_a_question_is_an_interrupt_answered_by_the_next_run() -> None:
    async with own_app(AskingFactory()) as agui:
        first = await agui.say("Start a project")
        (interrupt,) = first.interrupts()
        assert interrupt["reason"] == "question"
        assert interrupt["message"] == "Which database?\nWhich features?\nWhat is it called?"
        answer = next(
            option
            for option in interrupt["responseSchema"]["oneOf"]
            if option["properties"]["type"]["const"] == "answer"
        )
        forms = answer["properties"]["answers"]["prefixItems"]
        assert forms[0]["enum"] == ["PostgreSQL", "SQLite"]
        assert forms[1]["items"]["enum"] == ["login", "search"]
        wrong = await agui.approve_all(first, payload=["MySQL", ["login"], "atlas"])
        assert wrong.last["code"] == "invalid_decision"  # not one of the choices: asked again
        answered = await agui.approve_all(first, payload=["PostgreSQL", ["login"], "atlas"])
        assert answered.text() == "Setting up atlas on PostgreSQL with login."
        assert answered.last["outcome"] == {"type": "success"}


async def test_a_client_that_leaves_mid_run_leaves_the_run_going(
    demo: Demo, agui: AguiClient
) -> None:
    services = demo.services
    topic = services.session_config.presence_topic(agui.thread_id)
    agent_id = services.agent_id(agui.thread_id)
    body = agui.body(messages=[{"id": "u1", "role": "user", "content": "Kittiwakes"}])
    async with agui.client.stream(
        "POST", "/agui", json=body, headers={"Accept": "text/event-stream"}
    ) as response:
        async for line in response.aiter_lines():
            if '"TEXT_MESSAGE_CONTENT"' in line:
                break  # the client goes away mid-answer

    # The stream's viewer and subscription go with it; the agent carries on to its approval.
    async def settled() -> bool:
        info = await services.runtime.agent_info(agent_id)
        viewers = await services.presence.list(topic)
        return (
            info is not None
            and info.status is Status.INTERRUPTED
            and not viewers
            and (info.subscriber_count == 0)
        )

    await wait_until(settled)
    fresh = AguiClient(agui.client, agui.thread_id)
    again = await fresh.post(fresh.body())
    assert again.interrupts()
    assert again.events[1]["messages"][-1]["content"].startswith("I researched it")
