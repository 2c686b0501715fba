"""An A2A server of real conversations, served by uvicorn on 127.0.0.1, and an ``a2a-sdk``
client talking to it.

Two factories: the web demo's (``demo_model`` with ``write_file`` under HumanInTheLoop: plan,
write under approval, answer) and a small scripted one whose replies depend on the user's
message (echo with a count of the user's messages, a question, a tool and a model call that
wait until the test releases them, a model failure).
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from a2a.client import Client, ClientConfig, ClientFactory
from a2a.helpers import new_data_part
from a2a.types import (
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    TaskState,
)
from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import PrivateAttr

from sagents import Agent, RetryPolicy, Runtime, SessionConfig, SessionOptions
from sagents.a2a import a2a_app, build_agent_card
from sagents.execution import _scripted_model, demo_model
from sagents.middleware import AskUserQuestion, FileSystem, HumanInTheLoop, TodoList
from sagents.persistence import MemoryPersistence
from sagents.session import FactoryConfig, SingleFactoryRouter
from sagents.testing import Fail, Reply, ScriptedChatModel, ToolCall

QUESTION = {
    "question": "Which plan?",
    "type": "single_choice",
    "choices": ["basic", "pro"],
    "recommended": "pro",
}


class DemoFactory:
    """The web demo's agent: todos, files, and ``write_file`` waiting for approval."""

    def __init__(self) -> None:
        self.model = demo_model()

    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        agent = Agent(
            agent_id=agent_id,
            model=self.model,
            name="demo",
            middleware=[
                TodoList(),
                FileSystem(),
                HumanInTheLoop(interrupt_on={"write_file": True}),
            ],
        )
        return agent, SessionOptions()


class GatedModel(ScriptedChatModel):
    """Streams the first chunk of a reply to a message starting with "stream", then waits for
    :attr:`release` before the rest: a model call in progress, for as long as the test wants."""

    _release: asyncio.Event = PrivateAttr(default_factory=asyncio.Event)

    @property
    def release(self) -> asyncio.Event:
        return self._release

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        gated = isinstance(messages[-1], HumanMessage) and str(messages[-1].content).startswith(
            "stream"
        )
        async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
            yield chunk
            if gated:
                gated = False
                await self._release.wait()


# The inherited fields are annotated with names of the scripted model's module.
GatedModel.model_rebuild(_types_namespace=vars(_scripted_model))


def _respond(messages: list[BaseMessage]) -> Reply | Fail:
    humans = [m for m in messages if isinstance(m, HumanMessage)]
    text = str(humans[-1].content) if humans else ""
    last = messages[-1]
    if isinstance(last, ToolMessage):
        return Reply(text=f"done: {last.content}")
    if text.startswith("wait"):
        return Reply(text="Waiting.", tool_calls=[ToolCall(name="wait_for_release", args={})])
    if text.startswith("ask"):
        return Reply(tool_calls=[ToolCall(name="ask_user", args={"questions": [QUESTION]})])
    if text.startswith("stream"):
        return Reply(text="one two three four five six seven eight nine", chunk_size=4)
    if text.startswith("fail"):
        return Fail(error=RuntimeError("the model broke"))
    return Reply(text=f"echo {len(humans)}: {text}")


class ScriptFactory:
    """Echo, questions, a tool and a model call that wait for :attr:`release`, failures."""

    def __init__(self) -> None:
        self.model = GatedModel(responder=_respond, record_prompts=False)
        self.release = self.model.release
        self.waiting = asyncio.Event()

    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        release, waiting = self.release, self.waiting

        async def wait_for_release() -> str:
            """Wait until the test releases the call."""
            waiting.set()
            await release.wait()
            return "released"

        agent = Agent(
            agent_id=agent_id,
            model=self.model,
            name="script",
            tools=[wait_for_release],
            middleware=[AskUserQuestion()],
            tool_timeout=None,
            retry=RetryPolicy(max_attempts=1),
        )
        return agent, SessionOptions()


@dataclass
class Served:
    """A running A2A server and a client of it."""

    runtime: Runtime
    config: SessionConfig
    store: MemoryPersistence
    factory: Any
    client: Client
    base_url: str
    http: httpx.AsyncClient

    async def send(
        self,
        text: str | None = None,
        *,
        context_id: str,
        task_id: str | None = None,
        data: Any = None,
    ) -> Exchange:
        """Send a message and stream its updates until the server ends the stream."""
        exchange = Exchange()
        async for response in self.client.send_message(
            request(text, context_id=context_id, task_id=task_id, data=data)
        ):
            exchange.responses.append(response)
        return exchange


@dataclass
class Exchange:
    """What one streamed message brought back."""

    responses: list[StreamResponse] = field(default_factory=list)

    @property
    def task_id(self) -> str:
        for r in self.responses:
            if r.HasField("task"):
                return r.task.id
            if r.HasField("status_update"):
                return r.status_update.task_id
        raise AssertionError("no task in the stream")

    @property
    def states(self) -> list[int]:
        return [r.status_update.status.state for r in self.responses if r.HasField("status_update")]

    @property
    def final(self) -> Any:
        """The last status update."""
        updates = [r.status_update for r in self.responses if r.HasField("status_update")]
        assert updates, "no status update in the stream"
        return updates[-1]

    def status_texts(self) -> list[str]:
        return [
            p.text
            for r in self.responses
            if r.HasField("status_update")
            for p in r.status_update.status.message.parts
            if p.HasField("text")
        ]

    def artifact_updates(self) -> list[Any]:
        return [r.artifact_update for r in self.responses if r.HasField("artifact_update")]


def request(
    text: str | None,
    *,
    context_id: str,
    task_id: str | None = None,
    data: Any = None,
) -> SendMessageRequest:
    parts = []
    if text is not None:
        parts.append(Part(text=text))
    if data is not None:
        parts.append(new_data_part(data))
    message = Message(
        role=Role.ROLE_USER,
        message_id=uuid.uuid4().hex,
        context_id=context_id,
        task_id=task_id,
        parts=parts,
    )
    return SendMessageRequest(message=message)


def text_of(message: Any) -> str:
    return "\n".join(p.text for p in message.parts if p.HasField("text"))


INPUT_REQUIRED = TaskState.TASK_STATE_INPUT_REQUIRED
COMPLETED = TaskState.TASK_STATE_COMPLETED
CANCELED = TaskState.TASK_STATE_CANCELED
FAILED = TaskState.TASK_STATE_FAILED
REJECTED = TaskState.TASK_STATE_REJECTED
WORKING = TaskState.TASK_STATE_WORKING


async def _serve(factory: Any) -> AsyncIterator[Served]:
    # The socket listens before the server runs: a client connecting early waits in the
    # backlog instead of the test polling for the server to be up.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    store = MemoryPersistence()
    config = SessionConfig(
        factory_router=SingleFactoryRouter(factory),
        agent_persistence=store,
        display_message_persistence=store,
    )
    runtime = Runtime()
    card = await build_agent_card(
        config, url=f"{base_url}/", name="Test agent", description="Conversations over A2A."
    )
    app = a2a_app(runtime, config, card, manage_runtime=True)
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", lifespan="on", ws="none", timeout_graceful_shutdown=1
        )
    )
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    http = httpx.AsyncClient(timeout=30.0)
    try:
        client = await ClientFactory(
            ClientConfig(streaming=True, httpx_client=http)
        ).create_from_url(base_url)
        yield Served(
            runtime=runtime,
            config=config,
            store=store,
            factory=factory,
            client=client,
            base_url=base_url,
            http=http,
        )
    finally:
        if isinstance(factory, ScriptFactory):
            factory.release.set()  # nothing may stay blocked in a tool
        await http.aclose()
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def demo() -> AsyncIterator[Served]:
    async for served in _serve(DemoFactory()):
        yield served


@pytest.fixture
async def script() -> AsyncIterator[Served]:
    async for served in _serve(ScriptFactory()):
        yield served
