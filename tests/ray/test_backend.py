"""The Ray backend on one machine: one local Ray for the module, two hosts per test.

What a client of the cluster sees must be what an in-process runtime gives: handles, events
with their sequence numbers, replay after a reconnect, sessions with durable approvals, one
agent per id however many callers start it, and clear errors when a host is gone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import ToolMessage

ray = pytest.importorskip("ray")


from sagents import (  # noqa: E402
    Agent,
    AgentAlreadyRunning,
    AgentNotRunning,
    AgentUnavailable,
    ConfigurationError,
    Runtime,
    SagentsError,
    Session,
    SessionConfig,
    SessionOptions,
    SingleFactoryRouter,
    Status,
    get_tool_context,
)
from sagents.events import (  # noqa: E402
    AgentShutdown,
    Event,
    LLMDeltas,
    LLMMessage,
    NodeTransferred,
    NodeTransferring,
    StatusChanged,
    SubscriptionOverflow,
)
from sagents.execution import Reply, ToolCall  # noqa: E402
from sagents.middleware import FileSystem, HumanInTheLoop  # noqa: E402
from sagents.persistence.sql import SqlPersistence, sqlite_url  # noqa: E402
from sagents.ray import RayBackend, RayPresence  # noqa: E402
from sagents.session import FactoryConfig  # noqa: E402
from sagents.testing import ScriptedChatModel  # noqa: E402
from tests.runtime.conftest import until_status  # noqa: E402
from tests.session import test_session  # noqa: E402
from tests.session.test_session import delete, respond  # noqa: E402
from tests.web.conftest import wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(120)

# Functions and classes of test modules travel to the hosts by value (the hosts cannot import
# them).
for _module in (sys.modules[__name__], test_session):
    ray.cloudpickle.register_pickle_by_value(_module)


@pytest.fixture
async def runtime(namespace: str) -> AsyncIterator[Runtime]:
    backend = RayBackend(hosts=2, host_cpus=0, namespace=namespace, stop_hosts=True)
    async with Runtime(backend=backend) as runtime:
        yield runtime


def echo_agent(agent_id: str) -> Agent:
    return Agent(agent_id=agent_id, model=ScriptedChatModel(responder=respond))


class Factory:
    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        agent = Agent(
            agent_id=agent_id,
            model=ScriptedChatModel(responder=respond, record_prompts=False),
            tools=[delete],
            middleware=[HumanInTheLoop(interrupt_on={"delete": True})],
        )
        return agent, SessionOptions()


def session_config(db: Path) -> SessionConfig:
    store = SqlPersistence(sqlite_url(db), create_tables=True)
    return SessionConfig(
        factory_router=SingleFactoryRouter(Factory()),
        agent_persistence=store,
        display_message_persistence=store,
        inactivity_timeout=None,
    )


@pytest.fixture
async def config(tmp_path: Path) -> AsyncIterator[SessionConfig]:
    config = session_config(tmp_path / "sagents.db")
    yield config
    assert isinstance(config.agent_persistence, SqlPersistence)
    await config.agent_persistence.aclose()


async def test_an_agent_runs_on_a_host_and_streams_its_events(runtime: Runtime) -> None:
    handle = await runtime.start_agent(echo_agent("a1"), inactivity_timeout=None)
    assert runtime.list_running_agents() == ["a1"]
    async with handle.subscribe() as events:
        await handle.add_message("hi")
        seen = await until_status(events, Status.IDLE)
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    state = await handle.get_state()
    assert [m.content for m in state.messages] == ["hi", "echo: hi"]
    info = await runtime.agent_info("a1")
    assert info is not None
    assert info.status is Status.IDLE
    assert info.message_count == 2
    agent = await handle.get_agent()  # the host's copy of the configuration
    assert agent.agent_id == "a1"
    assert isinstance(agent.model, ScriptedChatModel)
    with pytest.raises(AgentAlreadyRunning):
        await runtime.start_agent(echo_agent("a1"))
    await handle.stop()
    with pytest.raises(AgentNotRunning):
        await handle.get_state()
    assert await runtime.agent_info("a1") is None


async def test_a_thousand_agents_spread_over_the_hosts(runtime: Runtime) -> None:
    ids = [f"agent-{i}" for i in range(1000)]
    await asyncio.gather(
        *(runtime.start_agent(echo_agent(i), inactivity_timeout=None) for i in ids)
    )
    backend = runtime.backend
    assert isinstance(backend, RayBackend)
    # Each start returned once this process's directory mirror had it: no waiting here.
    assert runtime.agent_count() == 1000
    assert sorted(runtime.list_running_agents()) == sorted(ids)
    expected = {i for i in ids if i.startswith("agent-99")}
    assert set(runtime.list_agents_matching("agent-99*")) == expected
    per_host = await backend.hosts()
    assert sorted(per_host.values()) == [500, 500]
    await runtime.agent("agent-7").add_message("hello")
    await asyncio.gather(*(runtime.stop(i) for i in ids))
    assert runtime.agent_count() == 0


def whoami() -> str:
    """Who asks."""
    data = get_tool_context().tool_context
    return f"{data.get('user')}@{data.get('tenant')}"


async def test_tools_on_a_host_read_the_caller_s_tool_context(runtime: Runtime) -> None:
    turns = [Reply(tool_calls=[ToolCall(name="whoami", args={})]), Reply(text="ok")]
    agent = Agent(agent_id="a1", model=ScriptedChatModel(script=turns * 2), tools=[whoami])
    handle = await runtime.start_agent(
        agent, tool_context={"user": "ann", "tenant": "acme"}, inactivity_timeout=None
    )
    async with handle.subscribe() as events:
        await handle.add_message("first")
        await until_status(events, Status.IDLE)
        await handle.add_message("second", tool_context={"user": "bob"})
        await until_status(events, Status.IDLE)
    state = await handle.get_state()
    results = [m.content for m in state.messages if isinstance(m, ToolMessage)]
    assert results == ["ann@acme", "bob@acme"]


async def test_agents_sharing_files_run_on_the_host_that_holds_them(runtime: Runtime) -> None:
    # Two hosts each with the scope open would each keep their own view of its files.
    await runtime.start_agent(echo_agent("solo"), inactivity_timeout=None)
    team = [f"team-{i}" for i in range(8)]
    await asyncio.gather(
        *(
            runtime.start_agent(echo_agent(i), inactivity_timeout=None, filesystem_scope="team")
            for i in team
        )
    )
    nodes = {info.agent_id: info.node for info in await runtime.agent_infos()}
    assert set(nodes) == {"solo", *team}
    assert len({nodes[i] for i in team}) == 1
    assert all(node is not None and node.startswith("sagents-host-") for node in nodes.values())
    info = await runtime.agent("team-3").info()
    assert info.node == nodes["team-3"]


def reader(messages: list[Any]) -> Reply:
    """Reads the file the user names, then says what it holds."""
    last = messages[-1]
    if isinstance(last, ToolMessage):
        return Reply(text=f"it says: {last.content}")
    return Reply(tool_calls=[ToolCall(name="read_file", args={"file_path": str(last.content)})])


async def test_a_scope_s_files_are_reached_from_any_process(runtime: Runtime) -> None:
    team = runtime.filesystem("team")  # a proxy: where the files are open is asked at first use
    with pytest.raises(SagentsError, match="no filesystem server runs for scope 'team'"):
        await team.list("/")
    agent = Agent(
        agent_id="librarian",
        model=ScriptedChatModel(responder=reader),
        middleware=[FileSystem()],
    )
    handle = await runtime.start_agent(agent, inactivity_timeout=None, filesystem_scope="team")
    await team.write("/notes/plan.md", "ship on friday")
    assert await team.list("/") == ["/notes/plan.md"]
    assert (await team.stat("/notes/plan.md")).size == len("ship on friday")
    # The agent, on its host, reads what this process wrote: one store, not a copy.
    async with handle.subscribe() as events:
        await handle.add_message("/notes/plan.md")
        await until_status(events, Status.IDLE)
    state = await handle.get_state()
    assert state.messages[-1].content == "it says: " + "     1\tship on friday"
    await team.move("/notes/plan.md", "/plan.md")
    assert await team.exists("/plan.md")
    assert not await team.exists("/notes/plan.md")
    await handle.stop()
    with pytest.raises(SagentsError, match="no filesystem server runs"):
        await team.read("/plan.md")  # its host let the scope go with its last agent


def _unreadable() -> None:
    raise RuntimeError("this scope cannot be read on a host")


class UnreadableScope:
    """A scope that pickles but cannot be unpickled where the hosts are."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _unreadable, ()


async def test_a_host_that_cannot_say_whether_it_has_a_scope_is_not_taken_for_no(
    runtime: Runtime,
) -> None:
    with pytest.raises(AgentUnavailable, match="did not say whether it has them open"):
        await runtime.filesystem(UnreadableScope()).list("/")


async def test_a_subscriber_resumes_from_its_last_seq(runtime: Runtime) -> None:
    handle = await runtime.start_agent(echo_agent("a1"), inactivity_timeout=None)
    events = handle.subscribe()
    await handle.add_message("one")
    first = await until_status(events, Status.IDLE)
    await events.aclose()
    await handle.add_message("two")  # published while nobody listens
    async with handle.subscribe(after_seq=first[-1].seq) as resumed:
        second = await until_status(resumed, Status.IDLE)
    # No gap, no duplicate: as in one process, the replay keeps a finished message whole and
    # drops its streamed deltas (their seqs are skipped, never reused).
    assert second[0].seq == first[-1].seq + 1
    seqs = [e.seq for e in second]
    assert seqs == sorted(set(seqs))
    assert any(isinstance(e, LLMMessage) and e.message.content == "echo: two" for e in second)
    await handle.stop()


async def test_sessions_with_a_durable_approval(runtime: Runtime, config: SessionConfig) -> None:
    session = await Session.ensure_running(runtime, config, "c1")
    assert session.started
    assert not session.restored
    await session.handle.add_message("please delete it")
    await until_status(session.events, Status.INTERRUPTED)
    await session.events.aclose()
    assert await Session.stop(runtime, config, "c1")
    assert not Session.is_running(runtime, config, "c1")
    # Restarted from storage (on whichever host), the approval still waits.
    resumed = await Session.resume(runtime, config, "c1", [{"type": "approve"}])
    assert resumed.restored
    async with resumed.events as events:  # the resumed run, from the restarted agent's start
        await until_status(events, Status.IDLE)
    state = await resumed.handle.get_state()
    assert state.messages[-1].content == "done: deleted /tmp/x"
    assert await Session.delete(runtime, config, "c1")
    assert not Session.is_running(runtime, config, "c1")


async def test_concurrent_starts_from_two_processes_give_one_agent(
    runtime: Runtime, namespace: str, ray_cluster: str, config: SessionConfig
) -> None:
    store = config.agent_persistence
    assert isinstance(store, SqlPersistence)
    db = store.engine.url.database
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        import ray
        sys.path.insert(0, {str(Path(__file__).parent.parent.parent)!r})
        from tests.ray import test_backend as t
        from sagents import Runtime, Session
        from sagents.ray import RayBackend

        async def main():
            ray.init(address={ray_cluster!r}, namespace="sagents-tests", log_to_driver=False)
            backend = RayBackend(hosts=2, host_cpus=0, namespace={namespace!r})
            async with Runtime(backend=backend) as runtime:
                config = t.session_config(__import__("pathlib").Path({db!r}))
                sessions = await asyncio.gather(
                    *(Session.start(runtime, config, "shared") for _ in range(10))
                )
                print(sum(s.started for s in sessions))

        asyncio.run(main())
        """
    )
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    here = await asyncio.gather(*(Session.start(runtime, config, "shared") for _ in range(10)))
    out, err = await other.communicate()
    assert other.returncode == 0, err.decode()[-2000:]
    started = sum(s.started for s in here) + int(out.decode().split()[-1])
    assert started == 1
    assert runtime.agent_count() == 1
    assert runtime.list_running_agents() == ["conversation-shared"]


async def test_a_dead_host_fails_calls_clearly_and_its_agents_restart_elsewhere(
    runtime: Runtime, config: SessionConfig
) -> None:
    session = await Session.ensure_running(runtime, config, "c1")
    await session.handle.add_message("hello")
    await until_status(session.events, Status.IDLE)
    await saved(config, "c1", 2)  # saving follows the turn (the durability bound)
    backend = runtime.backend
    assert isinstance(backend, RayBackend)
    host = backend.host_of("conversation-c1")
    assert host is not None
    ray.kill(ray.get_actor(host, namespace=backend.namespace))

    async def until_unreachable() -> None:
        # ray.kill only asks: a call right after it may still be answered; then every call
        # fails with AgentUnavailable, never a hang.
        for _ in range(100):
            await asyncio.wait_for(session.handle.get_state(), 10)
            await asyncio.sleep(0.05)

    with pytest.raises(AgentUnavailable):
        await until_unreachable()
    with pytest.raises(AgentUnavailable):  # after the events received before the loss
        await drain(session.events)
    # The directory forgot the dead host: the conversation comes back elsewhere, whole, at
    # once (the dead host's ownership lease, 30 s by default, is taken over).
    again = await Session.ensure_running(runtime, config, "c1")
    assert again.started
    assert again.restored
    assert backend.host_of("conversation-c1") != host
    state = await again.handle.get_state()
    assert [m.content for m in state.messages] == ["hello", "echo: hello"]
    await again.events.aclose()


async def test_a_reader_that_falls_behind_overflows_as_in_one_process(namespace: str) -> None:
    backend = RayBackend(
        hosts=1, host_cpus=0, namespace=namespace, stop_hosts=True, stream_window=8
    )
    async with Runtime(backend=backend) as runtime:
        handle = await runtime.start_agent(echo_agent("a1"), inactivity_timeout=None)
        slow = handle.subscribe()
        everything: list[Event] = []
        async with handle.subscribe() as events:
            for turn in range(5):
                await handle.add_message(f"turn {turn}")
                everything += await until_status(events, Status.IDLE)
        seen = [event async for event in slow]
        # What it held, in order and without gaps, then one marker, then the end.
        assert isinstance(seen[-1], SubscriptionOverflow)
        kept = seen[:-1]
        assert [e.seq for e in kept] == list(range(1, len(kept) + 1))
        assert 0 < len(kept) <= 8
        marker = seen[-1]
        assert marker.seq == kept[-1].seq
        assert marker.dropped > 0
        assert slow.dropped == marker.dropped
        # Resumed after the marker, it misses nothing (the replay buffer keeps a streamed
        # message whole rather than its deltas: a seq gap that loses nothing).
        rest: list[Event] = []
        async with handle.subscribe(after_seq=marker.seq) as resumed:
            while not rest or rest[-1].seq < everything[-1].seq:
                rest.append(await anext(resumed))
        wanted = [e.seq for e in everything if e.seq > marker.seq and type(e) is not LLMDeltas]
        assert [e.seq for e in rest if type(e) is not LLMDeltas] == wanted


async def drain(events: Any) -> None:
    async with asyncio.timeout(30):
        async for _ in events:
            pass


async def test_agent_shutdown_ends_a_remote_subscription(runtime: Runtime) -> None:
    handle = await runtime.start_agent(echo_agent("a1"), inactivity_timeout=None)
    async with handle.subscribe() as events:
        await handle.stop()
        last = [event async for event in events][-1]
    assert isinstance(last, AgentShutdown)
    assert last.reason == "manual"


async def test_a_call_made_after_subscribe_has_its_events_seen(runtime: Runtime) -> None:
    # As in one process: subscribe() returns at once, and the events of any later call reach
    # the subscription (its host attaches it before this process's next call runs).
    ids = [f"a{i}" for i in range(300)]
    handles = await asyncio.gather(
        *(runtime.start_agent(echo_agent(i), inactivity_timeout=None) for i in ids)
    )

    async def turn(handle: Any) -> list[Event]:
        async with handle.subscribe() as events:
            await handle.add_message("hi")
            return await asyncio.wait_for(until_status(events, Status.IDLE), 30)

    seen = await asyncio.gather(*(turn(h) for h in handles))
    assert all(isinstance(events[0], StatusChanged) for events in seen)
    await asyncio.gather(*(h.stop() for h in handles))


async def test_a_drained_host_s_agents_come_back_elsewhere(
    runtime: Runtime, config: SessionConfig
) -> None:
    backend = runtime.backend
    assert isinstance(backend, RayBackend)
    sessions = [await Session.ensure_running(runtime, config, f"c{i}") for i in range(4)]
    for session in sessions:
        await session.handle.add_message("hello")
        await until_status(session.events, Status.IDLE)
    host = backend.host_of("conversation-c0")
    assert host is not None
    on_host = [s for s in sessions if backend.host_of(s.agent_id) == host]

    moved = await backend.drain(host)

    assert sorted(moved) == sorted(s.agent_id for s in on_host)
    assert not any(backend.host_of(s.agent_id) == host for s in sessions)
    events = [event async for event in sessions[0].events]
    transferring = [e for e in events if isinstance(e, NodeTransferring)]
    assert [(e.from_node, e.to_node != host) for e in transferring] == [(host, True)]
    assert isinstance(events[-1], AgentShutdown)
    assert events[-1].reason == "node_transfer"
    # Its next use starts it on the host it was placed on, from storage, and says so.
    again = await Session.ensure_running(runtime, config, "c0")
    assert again.restored
    assert backend.host_of("conversation-c0") == transferring[0].to_node
    seen = []
    async for event in again.events:
        seen.append(event)
        if isinstance(event, NodeTransferred):
            break
    assert (seen[-1].from_node, seen[-1].to_node) == (host, transferring[0].to_node)
    state = await again.handle.get_state()
    assert [m.content for m in state.messages] == ["hello", "echo: hello"]
    await again.events.aclose()
    for session in sessions[1:]:
        await session.events.aclose()


async def test_presence_counts_viewers_across_processes(namespace: str) -> None:
    # Two RayPresence objects stand for two processes (web workers): one board.
    worker_a, worker_b = RayPresence(namespace=namespace), RayPresence(namespace=namespace)
    counts: list[int] = []
    unsubscribe = worker_b.subscribe("conversation:c1", counts.append)
    ref = await worker_a.track("conversation:c1", "alice", {"tab": 1})
    await worker_a.track("conversation:c1", "alice", {"tab": 2})
    assert await worker_b.count("conversation:c1") == 1
    assert await worker_b.list("conversation:c1") == {"alice": [{"tab": 1}, {"tab": 2}]}
    await wait_until(lambda: _async(counts[-1:] == [1]))
    await worker_a.untrack("conversation:c1", "alice", ref)
    assert await worker_b.count("conversation:c1") == 1  # its other tab stays
    await worker_a.untrack("conversation:c1", "alice")
    await wait_until(lambda: _async(counts[-1:] == [0]))
    unsubscribe()
    await worker_a.aclose()
    await worker_b.aclose()


async def test_a_viewer_anywhere_keeps_an_agent_on_a_host_alive(
    runtime: Runtime, namespace: str, config: SessionConfig
) -> None:
    presence = RayPresence(namespace=namespace)
    watched = dataclasses.replace(config, presence=presence, grace_period=0.2)
    ref = await presence.track("conversation:c1", "alice")
    session = await Session.ensure_running(runtime, watched, "c1")
    await session.handle.add_message("hello")
    await until_status(session.events, Status.IDLE)
    await asyncio.sleep(0.5)  # past the grace period: the viewer keeps it
    assert Session.is_running(runtime, watched, "c1")
    await presence.untrack("conversation:c1", "alice", ref)
    shutdown = [e async for e in session.events][-1]
    assert isinstance(shutdown, AgentShutdown)
    assert shutdown.reason == "no_viewers"
    await presence.aclose()


async def _async(value: bool) -> bool:
    return value


async def saved(config: SessionConfig, conversation_id: str, messages: int) -> None:
    """Wait until the store holds ``conversation_id`` with ``messages`` messages."""
    store = config.agent_persistence
    assert isinstance(store, SqlPersistence)

    async def holds() -> bool:
        stored = await store.load_state(None, conversation_id)
        return stored is not None and len(stored.state.messages) == messages

    await wait_until(holds)


async def test_a_watch_follows_an_agent_across_restarts_and_hosts(runtime: Runtime) -> None:
    async with runtime.watch("a1") as watch:
        assert watch.pending
        handle = await runtime.start_agent(echo_agent("a1"), inactivity_timeout=None)
        await handle.add_message("one")
        first = await asyncio.wait_for(until_status(watch, Status.IDLE), 30)
        assert first[0].seq == 1  # from the instance's start
        await handle.stop()
        ended = await asyncio.wait_for(watch.__anext__(), 30)
        assert isinstance(ended, AgentShutdown)
        again = await runtime.start_agent(echo_agent("a1"), inactivity_timeout=None)
        await again.add_message("two")
        second = await asyncio.wait_for(until_status(watch, Status.IDLE), 30)
        assert second[0].seq == 1  # the next instance, from its start
        assert any(isinstance(e, LLMMessage) and e.message.content == "echo: two" for e in second)
        await again.stop()


def _collector(_host: Any) -> tuple[tuple[int, ...], int]:
    import gc

    return gc.get_threshold(), gc.get_freeze_count()


async def test_hosts_tune_their_own_collector_unless_told_not_to(namespace: str) -> None:
    tuned = RayBackend(hosts=1, host_cpus=0, namespace=namespace, stop_hosts=True)
    async with Runtime(backend=tuned):
        [name] = list(await tuned.hosts())
        host = ray.get_actor(name, namespace=namespace)
        thresholds, frozen = await host.__ray_call__.remote(_collector)
        assert thresholds == (100_000, 20, 100)
        assert frozen > 0  # what the start-up made is out of the collector's way
    left = RayBackend(
        hosts=1, host_cpus=0, namespace=f"{namespace}-b", stop_hosts=True, host_gc_thresholds=None
    )
    async with Runtime(backend=left):
        [name] = list(await left.hosts())
        host = ray.get_actor(name, namespace=f"{namespace}-b")
        assert await host.__ray_call__.remote(_collector) == ((700, 10, 10), 0)


@pytest.mark.parametrize("thresholds", [(1, 2), (1, 2, -3), [700, 10, 10], (1.5, 2, 3)])
def test_host_gc_thresholds_are_three_ints_or_none(thresholds: Any) -> None:
    with pytest.raises(ConfigurationError, match="host_gc_thresholds"):
        RayBackend(host_gc_thresholds=thresholds)
