"""The systems under test, behind one small interface.

Every system runs the same :class:`~bench._model.FakeToolModel` and the same ``echo`` tool:

- ``raw``: a plain asyncio loop calling the langchain-core model and tool directly, the floor
  for anything built on langchain-core;
- ``raw-actor``: the same turn run by the least an asyncio actor needs (a mailbox task per
  conversation, the run in a task of its own so that it can be cancelled, and each message and
  status change sent to a subscriber queue that the caller reads until ``idle``): the floor of
  any runtime with one server per conversation and a live event stream;
- ``langgraph``, ``langgraph-memory``, ``langgraph-sqlite``: ``langchain.agents.create_agent``
  with no checkpointer (the caller carries the history), ``InMemorySaver``, ``AsyncSqliteSaver``;
- ``sagents``, ``sagents-sqlite``, ``sagents-postgres``: one agent server per conversation with
  no persistence, or saving through :class:`~sagents.persistence.sql.SqlPersistence`;
- ``sagents-ray-1``, ``sagents-ray-2``: ``sagents`` with ``RayBackend(hosts=1 or 2)`` on a
  local Ray of this machine: the agents run on one or two host processes, the conversations
  are driven (and their events streamed back) from the benchmark's process.

A conversation is opened once and then driven turn by turn; ``turn()`` returns when the system
is idle again (for sagents: when the subscriber the conversation holds sees ``idle``, as a web
client would). ``hitl_cycle()`` runs one turn whose ``echo`` call needs approval: interrupt, then
resume with an approval.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage

from bench._model import echo

__all__ = [
    "ALL_SYSTEMS",
    "RAY_SYSTEMS",
    "Conversation",
    "System",
    "postgres_url",
    "open_system",
]

#: The distributed systems (W4 only: they measure using more than one core).
RAY_SYSTEMS = ("sagents-ray-1", "sagents-ray-2")

#: The checkout holding ``bench`` (the Ray hosts import it from there).
_REPOSITORY = str(Path(__file__).resolve().parent.parent)

ALL_SYSTEMS = (
    "raw",
    "raw-actor",
    "langgraph",
    "langgraph-memory",
    "langgraph-sqlite",
    "sagents",
    "sagents-sqlite",
    "sagents-postgres",
)

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def postgres_url() -> str:
    return os.environ.get("SAGENTS_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)


class Conversation(Protocol):
    async def turn(self, text: str) -> None: ...

    async def hitl_cycle(self, text: str) -> None: ...

    async def aclose(self) -> None: ...


class System(Protocol):
    name: str

    async def conversation(self, cid: str, *, stream: bool, hitl: bool = False) -> Conversation:
        """Open conversation ``cid`` (empty history)."""
        ...


# -- raw -------------------------------------------------------------------------------------


@dataclass
class RawConversation:
    model: Any
    stream: bool
    messages: list[BaseMessage] = field(default_factory=list)

    async def _call(self) -> AIMessage:
        if not self.stream:
            reply: AIMessage = await self.model.ainvoke(self.messages)
            return reply
        acc: AIMessageChunk | None = None
        async for chunk in self.model.astream(self.messages):
            acc = chunk if acc is None else acc + chunk
        if acc is None:
            raise RuntimeError("the model streamed nothing")
        return AIMessage(
            content=acc.content, tool_calls=acc.tool_calls, usage_metadata=acc.usage_metadata
        )

    async def _run(self) -> None:
        while True:
            reply = await self._call()
            self.messages.append(reply)
            if not reply.tool_calls:
                return
            for call in reply.tool_calls:
                self.messages.append(await echo.ainvoke(call))

    async def turn(self, text: str) -> None:
        self.messages.append(HumanMessage(text))
        await self._run()

    async def hitl_cycle(self, text: str) -> None:
        # The floor of a human-in-the-loop cycle: stop before the tool, hand control back to
        # the caller (here: return from the model step), then carry on where it stopped.
        self.messages.append(HumanMessage(text))
        reply = await self._call()
        self.messages.append(reply)
        pending = list(reply.tool_calls)
        for call in pending:  # "approved"
            self.messages.append(await echo.ainvoke(call))
        await self._run()

    async def aclose(self) -> None:
        pass


class RawSystem:
    name = "raw"

    def __init__(self, model: BaseChatModel) -> None:
        self.model = model.bind_tools([echo])

    async def conversation(self, cid: str, *, stream: bool, hitl: bool = False) -> Conversation:
        return RawConversation(self.model, stream)


class RawActorConversation:
    """:class:`RawConversation` behind a mailbox task, with events to a subscriber queue."""

    def __init__(self, model: Any, stream: bool) -> None:
        import asyncio

        self.raw = RawConversation(model, stream)
        self.mailbox: asyncio.Queue[tuple[str, asyncio.Future[None]]] = asyncio.Queue()
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.run: asyncio.Task[None] | None = None
        self.server = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        import asyncio

        while True:
            text, done = await self.mailbox.get()
            message = HumanMessage(text)
            self.raw.messages.append(message)
            self.events.put_nowait(("message", message))
            self.run = asyncio.get_running_loop().create_task(self._run())
            done.set_result(None)

    async def _run(self) -> None:
        raw, events = self.raw, self.events
        events.put_nowait(("status", "running"))
        while True:
            reply = await raw._call()
            raw.messages.append(reply)
            events.put_nowait(("message", reply))
            if not reply.tool_calls:
                break
            for call in reply.tool_calls:
                result = await echo.ainvoke(call)
                raw.messages.append(result)
                events.put_nowait(("message", result))
        events.put_nowait(("status", "idle"))

    async def turn(self, text: str) -> None:
        import asyncio

        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.mailbox.put_nowait((text, done))
        await done
        while await self.events.get() != ("status", "idle"):
            pass

    async def hitl_cycle(self, text: str) -> None:
        raise NotImplementedError("raw-actor measures plain turns only")

    async def aclose(self) -> None:
        self.server.cancel()


class RawActorSystem(RawSystem):
    name = "raw-actor"

    async def conversation(self, cid: str, *, stream: bool, hitl: bool = False) -> Conversation:
        return RawActorConversation(self.model, stream)


# -- langgraph -------------------------------------------------------------------------------


class LangGraphConversation:
    def __init__(self, graph: Any, cid: str, *, stream: bool, checkpointed: bool) -> None:
        self.graph = graph
        self.config = {"configurable": {"thread_id": cid}}
        self.stream = stream
        self.checkpointed = checkpointed
        self.messages: list[BaseMessage] = []  # the history, when no checkpointer keeps it

    def _input(self, text: str) -> dict[str, Any]:
        message = HumanMessage(text)
        return {"messages": [message] if self.checkpointed else [*self.messages, message]}

    async def _drive(self, graph_input: Any) -> dict[str, Any]:
        if not self.stream:
            result: dict[str, Any] = await self.graph.ainvoke(graph_input, self.config)
            return result
        last: dict[str, Any] = {}
        async for mode, chunk in self.graph.astream(
            graph_input, self.config, stream_mode=["messages", "values"]
        ):
            if mode == "values":
                last = chunk
        return last

    async def turn(self, text: str) -> None:
        result = await self._drive(self._input(text))
        if not self.checkpointed:
            self.messages = result["messages"]

    async def hitl_cycle(self, text: str) -> None:
        from langgraph.types import Command

        await self._drive(self._input(text))
        result = await self._drive(Command(resume={"decisions": [{"type": "approve"}]}))
        if "__interrupt__" in result:
            raise RuntimeError("langgraph stayed interrupted after the approval")

    async def aclose(self) -> None:
        pass


class LangGraphSystem:
    def __init__(self, name: str, model: BaseChatModel, checkpointer: Any) -> None:
        self.name = name
        self.model = model
        self.checkpointer = checkpointer
        self.db_path: Path | None = None
        self._graphs: dict[bool, Any] = {}

    def graph(self, hitl: bool) -> Any:
        if hitl not in self._graphs:
            from langchain.agents import create_agent
            from langchain.agents.middleware import HumanInTheLoopMiddleware

            middleware = [HumanInTheLoopMiddleware(interrupt_on={"echo": True})] if hitl else []
            self._graphs[hitl] = create_agent(
                self.model, [echo], middleware=middleware, checkpointer=self.checkpointer
            )
        return self._graphs[hitl]

    async def conversation(self, cid: str, *, stream: bool, hitl: bool = False) -> Conversation:
        if hitl and self.checkpointer is None:
            raise ValueError("LangGraph's human-in-the-loop needs a checkpointer")
        return LangGraphConversation(
            self.graph(hitl), cid, stream=stream, checkpointed=self.checkpointer is not None
        )


# -- sagents ---------------------------------------------------------------------------------


class SagentsConversation:
    def __init__(self, handle: Any, subscription: Any) -> None:
        self.handle = handle
        self.subscription = subscription

    async def _until(self, *wanted: Any) -> None:
        from sagents import Status
        from sagents.events import StatusChanged

        async for event in self.subscription:
            if isinstance(event, StatusChanged):
                if event.status in wanted:
                    return
                if event.status is Status.ERROR:
                    raise RuntimeError(f"the agent failed: {event.data}")
        raise RuntimeError("the subscription ended before the turn did")

    async def turn(self, text: str) -> None:
        from sagents import Status

        await self.handle.add_message(text)
        await self._until(Status.IDLE)

    async def hitl_cycle(self, text: str) -> None:
        from sagents import Status

        await self.handle.add_message(text)
        await self._until(Status.INTERRUPTED)
        await self.handle.resume([{"type": "approve"}])
        await self._until(Status.IDLE)

    async def aclose(self) -> None:
        await self.subscription.aclose()
        await self.handle.stop()


class SagentsSystem:
    def __init__(self, name: str, model: BaseChatModel, runtime: Any, store: Any) -> None:
        self.name = name
        self.model = model
        self.runtime = runtime
        self.store = store
        self.db_path: Path | None = None

    def agent(self, cid: str, *, stream: bool = True, hitl: bool = False) -> Any:
        from sagents import Agent
        from sagents.middleware import HumanInTheLoop

        middleware = [HumanInTheLoop(interrupt_on={"echo": True})] if hitl else []
        return Agent(
            agent_id=cid, model=self.model, tools=[echo], middleware=middleware, stream=stream
        )

    def options(self, cid: str) -> dict[str, Any]:
        options: dict[str, Any] = {"inactivity_timeout": None, "conversation_id": cid}
        if self.store is not None:
            options["agent_persistence"] = self.store
        return options

    async def conversation(self, cid: str, *, stream: bool, hitl: bool = False) -> Conversation:
        handle = await self.runtime.start_agent(
            self.agent(cid, stream=stream, hitl=hitl), None, **self.options(cid)
        )
        subscription = handle.subscribe()
        return SagentsConversation(handle, subscription)


# -- opening a system ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_system(name: str, model: BaseChatModel) -> AsyncIterator[Any]:
    """Set up ``name`` (databases in a temporary folder, a runtime...) and tear it down."""
    with tempfile.TemporaryDirectory(prefix="sagents-bench-") as folder:
        path = Path(folder)
        if name == "raw":
            yield RawSystem(model)
        elif name == "raw-actor":
            yield RawActorSystem(model)
        elif name == "langgraph":
            yield LangGraphSystem(name, model, None)
        elif name == "langgraph-memory":
            from langgraph.checkpoint.memory import InMemorySaver

            yield LangGraphSystem(name, model, InMemorySaver())
        elif name == "langgraph-sqlite":
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            async with AsyncSqliteSaver.from_conn_string(str(path / "lg.db")) as saver:
                lg = LangGraphSystem(name, model, saver)
                lg.db_path = path / "lg.db"
                yield lg
        elif name in RAY_SYSTEMS:
            import ray

            from sagents import Runtime
            from sagents.ray import RayBackend

            # The hosts import the benchmark's model and tools as a deployment imports its
            # own code (by reference), rather than receive them by value with each agent: a
            # class sent by value is rebuilt at every agent start.
            ray.init(
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": _REPOSITORY}},
            )
            try:
                backend = RayBackend(
                    hosts=int(name.rsplit("-", 1)[1]), host_cpus=0, stop_hosts=True
                )
                async with Runtime(backend=backend) as runtime:
                    yield SagentsSystem(name, model, runtime, None)
            finally:
                ray.shutdown()
        elif name.startswith("sagents"):
            from sagents import Runtime

            async with contextlib.AsyncExitStack() as stack:
                store = None
                if name == "sagents-sqlite":
                    from sagents.persistence.sql import SqlPersistence, sqlite_url

                    store = SqlPersistence(sqlite_url(path / "sagents.db"), create_tables=True)
                    await stack.enter_async_context(store)
                elif name == "sagents-postgres":
                    store = await stack.enter_async_context(postgres_store())
                runtime = await stack.enter_async_context(Runtime())
                system = SagentsSystem(name, model, runtime, store)
                if name == "sagents-sqlite":
                    system.db_path = path / "sagents.db"
                yield system
        else:
            raise ValueError(f"unknown system {name!r}; choose from {', '.join(ALL_SYSTEMS)}")


@contextlib.asynccontextmanager
async def postgres_store() -> AsyncIterator[Any]:
    """A ``SqlPersistence`` on fresh tables of its own in the benchmark PostgreSQL database."""
    from sagents.persistence.sql import SqlPersistence

    store = SqlPersistence(postgres_url(), table_prefix=f"bench{os.getpid()}_")
    try:
        await store.drop_all()
        await store.create_all()
        yield store
    finally:
        with contextlib.suppress(Exception):
            await store.drop_all()
        await store.aclose()


async def postgres_available() -> bool:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(postgres_url())
    try:
        async with engine.connect() as conn:
            await conn.execute(text("select 1"))
        return True
    except Exception:
        return False
    finally:
        await engine.dispose()
