"""A tour of the agent lifecycle: start, time out, lose viewers, stop, save, fail, observe.

    python examples/lifecycle_tour.py              # a few seconds of real time
    python examples/lifecycle_tour.py --scale 0.2  # every timeout five times shorter

It follows the "Agent Lifecycle Management" chapter section by section, in its order, and runs
fully offline: the agents talk to ``ScriptedChatModel``s (real langchain chat models that answer
from a script), so no API key and no server are needed. Timeouts are shortened to fractions of a
second (inactivity 1 s, presence grace period 0.5 s, auto-save interval 0.3 s) so the whole tour
takes a few seconds; in an application they would be minutes.

``main()`` returns a :class:`TourReport` of what happened (statuses, shutdown reasons, saves,
telemetry events, ...), which ``tests/test_lifecycle_tour.py`` checks on virtual time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage

from sagents import (
    Agent,
    AgentNotRunning,
    Approve,
    AutoSave,
    InvalidTransition,
    LocalPresence,
    PresenceTracking,
    RetryPolicy,
    Runtime,
    State,
    Status,
    Todo,
    TodoStatus,
    telemetry,
)
from sagents.events import AgentShutdown, Event, LLMDeltas, StateRestored, StatusChanged
from sagents.execution import Fail, Reply, ScriptedChatModel, ToolCall, demo_model
from sagents.middleware import FileSystem, HumanInTheLoop, TodoList
from sagents.runtime import AgentHandle, Subscription

Write = Callable[[str], None]

#: Headings, in the order of the chapter.
SECTIONS = (
    "Process lifecycle and statuses",
    "Starting an agent: basic start",
    "Start with options",
    "Start from persisted state",
    "Inactivity timeout",
    "Presence-based shutdown",
    "Manual shutdown and cancel",
    "State export and import",
    "Auto-save",
    "Supervision",
    "Coordinator pattern",
    "Health checks",
    "Telemetry",
)

#: The telemetry events of the chapter: the agent, execution and LLM ones.
TELEMETRY_EVENTS = tuple(e for e in telemetry.EVENTS if e[1] in ("agent", "execution", "llm"))

#: Longest wait for one expected event before the tour gives up (a bug, not a slow agent).
WAIT_LIMIT = 30.0


@dataclass
class TourReport:
    """What the tour saw, for checks (and curiosity).

    Attributes:
        sections: headings printed, in order.
        statuses: every status an agent was seen in.
        shutdown_reasons: ``AgentShutdown.reason`` of every shutdown the tour listened to.
        facts: named observations, one per claim the tour makes (see each section).
        saved_messages: ``(conversation_id, message type, text)`` given to ``save_new_message``.
        saves: ``(agent_id, trigger, message_count)`` of every auto-save, labelled by the tour.
        telemetry: the telemetry events received in the telemetry section, in order.
    """

    sections: list[str] = field(default_factory=list)
    statuses: set[Status] = field(default_factory=set)
    shutdown_reasons: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    saved_messages: list[tuple[str | None, str, str]] = field(default_factory=list)
    saves: list[tuple[str, str, int]] = field(default_factory=list)
    telemetry: list[tuple[tuple[str, ...], dict[str, Any]]] = field(default_factory=list)


class Tour:
    """Prints the tour and records what it sees."""

    def __init__(self, write: Write) -> None:
        self.write = write
        self.report = TourReport()

    def section(self, title: str) -> None:
        number = len(self.report.sections) + 1
        self.report.sections.append(title)
        self.write("")
        self.write(f"== {number}. {title} ==")

    def say(self, text: str) -> None:
        self.write(f"   {text}")

    def fact(self, name: str, value: Any) -> Any:
        self.report.facts[name] = value
        return value

    def saw(self, event: Event) -> None:
        match event:
            case StatusChanged(status=status):
                self.report.statuses.add(status)
            case AgentShutdown(reason=reason):
                self.report.shutdown_reasons.append(reason)
            case _:
                pass

    async def wait_for(self, events: Subscription, match: Callable[[Event], bool]) -> Event:
        """Consume ``events`` until one matches (recording statuses and shutdowns on the way)."""
        async with asyncio.timeout(WAIT_LIMIT):
            async for event in events:
                self.saw(event)
                if match(event):
                    return event
        raise RuntimeError("the agent's event stream ended before the expected event")

    async def until_status(self, events: Subscription, *statuses: Status) -> StatusChanged:
        event = await self.wait_for(
            events, lambda e: isinstance(e, StatusChanged) and e.status in statuses
        )
        assert isinstance(event, StatusChanged)
        return event

    async def until_shutdown(self, events: Subscription) -> AgentShutdown:
        event = await self.wait_for(events, lambda e: isinstance(e, AgentShutdown))
        assert isinstance(event, AgentShutdown)
        return event

    async def status(self, handle: AgentHandle) -> Status:
        status = await handle.get_status()
        self.report.statuses.add(status)
        return status


class Saves:
    """An auto-save callback that remembers what it saved (an application writes a database)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, int]] = []  # (agent_id, message_count)
        self.latest: dict[str, dict[str, Any]] = {}
        self._changed = asyncio.Condition()

    async def __call__(self, agent_id: str, state: dict[str, Any]) -> None:
        async with self._changed:
            self.entries.append((agent_id, len(state["messages"])))
            self.latest[agent_id] = state
            self._changed.notify_all()

    def count(self, agent_id: str) -> int:
        return sum(1 for saved, _ in self.entries if saved == agent_id)

    async def wait(self, agent_id: str, count: int) -> None:
        """Wait until ``agent_id`` has been saved ``count`` times."""
        async with asyncio.timeout(WAIT_LIMIT), self._changed:
            await self._changed.wait_for(lambda: self.count(agent_id) >= count)


def client_view(reason: str) -> str:
    """What a UI shows after ``AgentShutdown`` (the chapter's ``handle_info`` clause)."""
    match reason:
        case "inactivity" | "no_viewers":
            return "inactive (restart on the next user action)"
        case "manual":
            return "stopped"
        case _:
            return f"stopped ({reason})"


def publish_report(title: str) -> str:
    """Publish the report with this title."""
    return f"published {title!r}"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def text_of(message: BaseMessage) -> str:
    return message.text if message.text else str(message.content)


def scripted(*replies: Reply | Fail) -> ScriptedChatModel:
    return ScriptedChatModel(script=list(replies))


NO_RETRY = RetryPolicy(max_attempts=1)


async def main(write: Write = print, *, scale: float = 1.0) -> TourReport:
    """Run the tour; every timeout is multiplied by ``scale``.

    Args:
        write: where each output line goes.
        scale: factor applied to the tour's timeouts (1.0: inactivity 1 s, grace 0.5 s, ...).

    Returns:
        What the tour observed.
    """
    tour = Tour(write)
    inactivity = 1.0 * scale
    grace = 0.5 * scale
    save_interval = 0.3 * scale
    stream_delay = 0.05 * scale
    loop = asyncio.get_running_loop()

    async with Runtime() as runtime:
        await _lifecycle(tour, runtime)
        await _basic_start(tour, runtime)
        await _start_with_options(tour, runtime)
        await _start_from_persisted_state(tour, runtime)
        await _inactivity_timeout(tour, runtime, inactivity, loop)
        await _presence(tour, runtime, grace, loop)
        await _manual_shutdown(tour, runtime, stream_delay)
        await _export_import(tour, runtime)
        await _auto_save(tour, runtime, save_interval, loop)
        await _supervision(tour, runtime)
        _coordinator(tour)
        await _health_checks(tour, runtime)
        await _telemetry(tour, runtime)
        tour.fact("left_running", runtime.list_running_agents())

    tour.write("")
    seen = ", ".join(sorted(tour.report.statuses))
    tour.write(f"Tour complete: {len(tour.report.sections)} sections; statuses seen: {seen}.")
    return tour.report


# -- 1 ----------------------------------------------------------------------------------------

STATUS_MEANING = {
    Status.IDLE: "ready, not executing",
    Status.RUNNING: "executing (LLM call or tools)",
    Status.INTERRUPTED: "waiting for human approval",
    Status.CANCELLED: "execution was cancelled by the user",
    Status.ERROR: "execution failed",
    Status.PAUSED: "infrastructure pause (node drain), continued after a restart",
}


async def _lifecycle(tour: Tour, runtime: Runtime) -> None:
    tour.section(SECTIONS[0])
    tour.say("Created -> Running -> Shutdown, with Interrupted on the side while a human decides.")
    tour.say("An agent server has exactly one status at a time:")
    for status, meaning in STATUS_MEANING.items():
        tour.say(f"  {status.value:<12} {meaning}")
    agent = Agent(agent_id="lifecycle", model=scripted(Reply(text="Hello there!")))
    handle = await runtime.start_agent(agent, State(messages=[HumanMessage("Hi")]))
    first = await tour.status(handle)
    tour.say(f"created: {handle.agent_id!r} starts {first.value}")
    transitions = [first]
    async with handle.subscribe() as events:
        await handle.execute()
        transitions.append((await tour.until_status(events, Status.RUNNING)).status)
        transitions.append((await tour.until_status(events, Status.IDLE)).status)
        await handle.stop()
        await tour.until_shutdown(events)
    tour.say(f"one run: {' -> '.join(s.value for s in transitions)}")
    tour.say(
        "stopped: the server left the registry "
        f"(get_status -> {await runtime.get_status('lifecycle')})"
    )
    tour.say("interrupted, cancelled and error appear in sections 4, 7 and 10.")
    tour.fact("lifecycle_transitions", transitions)


# -- 2 ----------------------------------------------------------------------------------------


async def _basic_start(tour: Tour, runtime: Runtime) -> None:
    tour.section(SECTIONS[1])
    agent = Agent(agent_id="my-agent", model=demo_model(), middleware=[TodoList(), FileSystem()])
    state = State(messages=[HumanMessage("Hello")])
    handle = await runtime.start_agent(agent, initial_state=state)
    tour.say("runtime.start_agent(agent, initial_state=state) returned once 'my-agent' was")
    tour.say(f"registered: running agents = {runtime.list_running_agents()}")
    info = await handle.info()
    tour.say(
        f"status {info.status.value}, {info.message_count} message, default inactivity "
        f"timeout {info.inactivity_remaining:.0f} s (no pubsub needed: subscribers get"
    )
    tour.say("events directly from handle.subscribe())")
    async with handle.subscribe() as events:
        await handle.execute()
        await tour.until_status(events, Status.IDLE)
    final = await handle.get_state()
    tour.say(
        f"ran with TodoList + FileSystem: {len(final.messages)} messages, "
        f"{len(final.todos)} todos, last: {text_of(final.messages[-1])!r}"
    )
    tour.fact("default_inactivity_timeout", info.inactivity_remaining)
    tour.fact("basic_start_messages", len(final.messages))
    await handle.stop()


# -- 3 ----------------------------------------------------------------------------------------


async def _start_with_options(tour: Tour, runtime: Runtime) -> None:
    tour.section(SECTIONS[2])
    presence = LocalPresence()
    saves = Saves()

    async def save_message(conversation_id: str | None, message: BaseMessage) -> None:
        tour.report.saved_messages.append((conversation_id, message.type, text_of(message)))

    viewer = await presence.track("conversation:123", "user-1", {"joined_at": _now()})
    agent = Agent(agent_id="conversation-123", model=scripted(Reply(text="I can help with that.")))
    handle = await runtime.start_agent(
        agent,
        inactivity_timeout=3600.0,
        presence=PresenceTracking(presence=presence, topic="conversation:123", grace_period=5.0),
        auto_save=AutoSave(callback=saves, interval=30.0),
        conversation_id="123",
        save_new_message=save_message,
    )
    tour.say("started with inactivity_timeout=3600.0, presence (topic 'conversation:123'),")
    tour.say("auto_save (every 30 s), conversation_id='123' and save_new_message")
    async with handle.subscribe() as events:
        await handle.add_message("What can you do?")  # appends and runs
        await tour.until_status(events, Status.IDLE)
        info = await handle.info()
        tour.say(
            f"agent_info: conversation_id={info.conversation_id!r}, "
            f"viewers={info.viewer_count}, inactivity in {info.inactivity_remaining:.0f} s"
        )
        for conversation_id, kind, text in tour.report.saved_messages:
            tour.say(f"save_new_message({conversation_id!r}, {kind}: {text!r})")
        await handle.stop()
        await tour.until_shutdown(events)
    tour.say(f"auto-saved {saves.count('conversation-123')} times (after the run, before stop)")
    await presence.untrack("conversation:123", "user-1", viewer)
    tour.fact("options_info", info)
    tour.fact("options_saves", saves.count("conversation-123"))


# -- 4 ----------------------------------------------------------------------------------------


async def _start_from_persisted_state(tour: Tour, runtime: Runtime) -> None:
    tour.section(SECTIONS[3])
    tour.say("Session.start (the Coordinator's path) restores conversations for you; these are")
    tour.say("the raw building blocks: export_state, persist, start_agent(agent, saved).")
    model = scripted(
        Reply(
            text="I will publish it.",
            tool_calls=[ToolCall(name="publish_report", args={"title": "Q3 roadmap"})],
        ),
        Reply(text="Published the Q3 roadmap."),
    )

    def build_agent() -> Agent:
        # The configuration always comes from code; only the state comes from storage.
        return Agent(
            agent_id="conv-7",
            model=model,
            tools=[publish_report],
            middleware=[TodoList(), HumanInTheLoop(interrupt_on={"publish_report": True})],
            retry=NO_RETRY,
        )

    state = State(
        messages=[HumanMessage("Please publish the Q3 roadmap.")],
        todos=[Todo(content="Publish the roadmap", status=TodoStatus.IN_PROGRESS)],
        metadata={"topic": "roadmap"},
    )
    database: dict[str, str] = {}
    handle = await runtime.start_agent(build_agent(), state)
    async with handle.subscribe() as events:
        await handle.execute()
        await tour.until_status(events, Status.INTERRUPTED)
        database["conv-7"] = json.dumps(await runtime.export_state("conv-7"))
        await handle.stop()
        await tour.until_shutdown(events)
    tour.say(
        f"interrupted awaiting approval of publish_report; saved {len(database['conv-7'])} "
        "bytes of JSON and stopped"
    )

    saved = json.loads(database["conv-7"])
    handle = await runtime.start_agent(build_agent(), initial_state=saved)
    restored = await handle.export_state()
    equal = tour.fact("persisted_state_restored_equal", restored == saved)
    info = await handle.info()
    tour.say(
        f"restarted from it: state equal = {equal}, status {info.status.value}, "
        f"has_interrupt={info.has_interrupt}, {info.todo_count} todo, "
        f"metadata topic={restored['metadata']['topic']!r}"
    )
    tour.report.statuses.add(info.status)
    async with handle.subscribe() as events:
        await handle.resume([Approve()])
        await tour.until_status(events, Status.IDLE)
    final = await handle.get_state()
    tour.say(f"approved after the restart: {text_of(final.messages[-1])!r}")
    tour.fact("resumed_after_restart", text_of(final.messages[-1]))
    await handle.stop()


# -- 5 ----------------------------------------------------------------------------------------


async def _inactivity_timeout(
    tour: Tour, runtime: Runtime, timeout: float, loop: asyncio.AbstractEventLoop
) -> None:
    tour.section(SECTIONS[4])
    saves = Saves()
    agent = Agent(agent_id="idle-agent", model=scripted(Reply(text="ok")))
    forever = await runtime.start_agent(
        Agent(agent_id="forever", model=scripted()), inactivity_timeout=None
    )
    handle = await runtime.start_agent(
        agent,
        State(messages=[HumanMessage("remember me")]),
        inactivity_timeout=timeout,
        auto_save=AutoSave(callback=saves, interval=None),
    )
    tour.say(f"'idle-agent' has inactivity_timeout={timeout}; 'forever' has None (disabled)")
    async with handle.subscribe() as events:
        await asyncio.sleep(timeout * 0.3)
        await handle.get_state()  # reading the state is activity: the timer restarts
        read_at = loop.time()
        remaining = (await handle.info()).inactivity_remaining
        tour.say(
            f"read the state after {timeout * 0.3:.1f} s: the timer restarts "
            f"({remaining:.1f} s left)"
        )
        shutdown = await tour.until_shutdown(events)
        quiet = loop.time() - read_at
    tour.say(
        f"AgentShutdown(reason={shutdown.reason!r}) after {quiet:.1f} s without activity;"
        f" the client shows: {client_view(shutdown.reason)}"
    )
    tour.say(
        f"saved before shutting down ({plural(saves.count('idle-agent'), 'save')}); "
        f"running agents now: {runtime.list_running_agents()}"
    )
    forever_status = await tour.status(forever)
    tour.say(f"'forever' is still {forever_status.value}")
    again = await runtime.start_agent(agent, saves.latest["idle-agent"])
    restored = len((await again.get_state()).messages)
    tour.say(f"next user action: restarted from the save with {restored} message, no loss")
    tour.fact("inactivity_after", quiet)
    tour.fact("inactivity_saves", saves.count("idle-agent"))
    tour.fact("inactivity_restart_messages", restored)
    tour.fact("forever_status", forever_status)
    await again.stop()
    await forever.stop()


# -- 6 ----------------------------------------------------------------------------------------


async def _browser_tab(
    presence: LocalPresence, topic: str, user: str, opened: asyncio.Event, close: asyncio.Event
) -> None:
    """One connection: tracked while this task lives, removed automatically when it ends."""
    await presence.track(topic, user, {"joined_at": _now()})
    opened.set()
    await close.wait()


async def _presence(
    tour: Tour, runtime: Runtime, grace: float, loop: asyncio.AbstractEventLoop
) -> None:
    tour.section(SECTIONS[5])
    presence = LocalPresence()
    topic = "conversation:42"
    saves = Saves()
    tabs: list[tuple[asyncio.Task[None], asyncio.Event]] = []

    async def open_tab() -> None:
        opened, close = asyncio.Event(), asyncio.Event()
        tab = asyncio.create_task(_browser_tab(presence, topic, "alice", opened, close))
        tabs.append((tab, close))
        await opened.wait()

    async def close_tab() -> None:
        task, close = tabs.pop()
        close.set()
        await task

    await open_tab()
    agent = Agent(agent_id="conversation-42", model=scripted(Reply(text="Here is the answer.")))
    handle = await runtime.start_agent(
        agent,
        presence=PresenceTracking(presence=presence, topic=topic, grace_period=grace),
        auto_save=AutoSave(callback=saves, interval=None),
        inactivity_timeout=None,
    )
    tour.say(f"alice views {topic!r}; the agent tracks it with grace_period={grace}")
    async with handle.subscribe() as events:
        await handle.add_message("Tell me something")
        await tour.until_status(events, Status.IDLE)
        await asyncio.sleep(grace * 1.2)
        stayed = await tour.status(handle)
        tour.say(f"idle with 1 viewer, {grace * 1.2:.2f} s later: still {stayed.value}")

        await close_tab()
        await asyncio.sleep(grace * 0.4)
        await open_tab()  # a page refresh: back within the grace period
        await asyncio.sleep(grace * 0.8)
        refreshed = await tour.status(handle)
        tour.say(
            f"alice refreshed the page (gone {grace * 0.4:.2f} s < grace), "
            f"{grace * 1.2:.2f} s later: still {refreshed.value}"
        )

        await close_tab()  # the tab closes: its connection is untracked automatically
        left_at = loop.time()
        tour.say(
            f"alice closed the tab: viewers={await presence.count(topic)}, grace period starts"
        )
        shutdown = await tour.until_shutdown(events)
        after = loop.time() - left_at
    tour.say(
        f"AgentShutdown(reason={shutdown.reason!r}) {after:.2f} s later, state saved "
        f"first ({plural(saves.count('conversation-42'), 'save')}); the client shows: "
        f"{client_view(shutdown.reason)}"
    )
    tour.fact("presence_stayed", (stayed, refreshed))
    tour.fact("presence_shutdown_after", after)
    tour.fact("presence_saves", saves.count("conversation-42"))


# -- 7 ----------------------------------------------------------------------------------------


async def _manual_shutdown(tour: Tour, runtime: Runtime, stream_delay: float) -> None:
    tour.section(SECTIONS[6])
    saves = Saves()
    handle = await runtime.start_agent(
        Agent(agent_id="stop-me", model=scripted()),
        State(messages=[HumanMessage("keep this")]),
        auto_save=AutoSave(callback=saves, interval=None),
    )
    async with handle.subscribe() as events:
        await runtime.stop("stop-me")
        shutdown = await tour.until_shutdown(events)
    tour.say(
        f"runtime.stop('stop-me'): saved ({saves.count('stop-me')}), "
        f"AgentShutdown(reason={shutdown.reason!r}) -> {client_view(shutdown.reason)}"
    )

    handle = await runtime.start_agent(Agent(agent_id="custom", model=scripted()))
    async with handle.subscribe() as events:
        await runtime.stop("custom", reason="maintenance")
        shutdown = await tour.until_shutdown(events)
    tour.say(
        f"runtime.stop('custom', reason='maintenance'): AgentShutdown(reason={shutdown.reason!r})"
    )
    try:
        await runtime.stop("custom")
    except AgentNotRunning as error:
        tour.say(f"stopping it again: AgentNotRunning ({error})")
        tour.fact("stop_twice", type(error).__name__)

    essay = "Supervision trees keep every agent alive and isolated. " * 8
    slow = Agent(
        agent_id="slow-writer",
        model=scripted(Reply(text=essay, chunk_size=12, delay=stream_delay)),
        retry=NO_RETRY,
    )
    handle = await runtime.start_agent(slow)
    async with handle.subscribe() as events:
        await handle.add_message("Write me an essay")
        await tour.wait_for(events, lambda e: isinstance(e, LLMDeltas))
        tour.say("'slow-writer' is streaming its answer... runtime.cancel('slow-writer')")
        await runtime.cancel("slow-writer")
        cancelled = await tour.until_status(events, Status.CANCELLED)
    state = await handle.get_state()
    kept = [f"{m.type}: {text_of(m)!r}" for m in state.messages]
    tour.say(
        f"StatusChanged({cancelled.status.value}); messages kept: {kept} "
        "(the half-streamed answer is dropped)"
    )
    try:
        await handle.cancel()
    except InvalidTransition as error:
        tour.say(f"cancel with nothing running: InvalidTransition ({error})")
        tour.fact("cancel_idle", type(error).__name__)
    tour.fact("cancel_kept_messages", [type(m).__name__ for m in state.messages])
    tour.fact("manual_saves", saves.count("stop-me"))
    await handle.stop()


# -- 8 ----------------------------------------------------------------------------------------


async def _export_import(tour: Tour, runtime: Runtime) -> None:
    tour.section(SECTIONS[7])
    agent = Agent(
        agent_id="notes",
        model=scripted(Reply(text="First answer."), Reply(text="Second answer.")),
    )
    handle = await runtime.start_agent(agent, State(metadata={"owner": "user-42"}))
    async with handle.subscribe() as events:
        await handle.add_message("first question")
        await tour.until_status(events, Status.IDLE)
        exported = await runtime.export_state("notes")
        database = {"notes": json.dumps(exported)}  # MyApp.save_agent_state(...)
        tour.say(
            f"export_state('notes'): version {exported['version']}, keys "
            f"{sorted(exported)}, {len(exported['messages'])} messages, JSON-serialisable"
        )

        await handle.add_message("second question")
        await tour.until_status(events, Status.IDLE)
        tour.say(f"the conversation went on: {(await handle.info()).message_count} messages")

        loaded = State.from_dict(json.loads(database["notes"]))
        await handle.restore_state(loaded)  # import into the running agent
        await tour.wait_for(events, lambda e: isinstance(e, StateRestored))
    now = await handle.export_state()
    equal = tour.fact("import_restored_equal", now == exported)
    tour.say(
        f"imported the saved export (StateRestored): {len(now['messages'])} messages, "
        f"equal to the export = {equal}"
    )
    tour.fact("from_dict_roundtrip", State.from_dict(exported).to_dict() == exported)
    await handle.stop()


# -- 9 ----------------------------------------------------------------------------------------


async def _auto_save(
    tour: Tour, runtime: Runtime, interval: float, loop: asyncio.AbstractEventLoop
) -> None:
    tour.section(SECTIONS[8])
    saves = Saves()
    started = loop.time()
    ticker = await runtime.start_agent(
        Agent(agent_id="ticker", model=scripted()),
        State(messages=[HumanMessage("note 1")]),
        auto_save=AutoSave(callback=saves, interval=interval, on_idle=False),
        inactivity_timeout=None,
    )
    await asyncio.sleep(interval * 1.2)
    tour.say(
        f"interval={interval}: no save after one interval: the state it started with is the "
        "one it was given, unchanged"
    )
    await ticker.add_message("note 2", run=False)
    await saves.wait("ticker", 1)
    tour.report.saves.append(("ticker", "interval", saves.entries[-1][1]))
    tour.say(f"after a change: first save at {loop.time() - started:.1f} s")
    await asyncio.sleep(interval * 1.2)
    unchanged = saves.count("ticker")
    tour.say(
        f"one more interval with no change: still {plural(unchanged, 'save')} "
        "(saves happen only if the state changed)"
    )
    await ticker.add_message("note 3", run=False)
    await saves.wait("ticker", 2)
    tour.report.saves.append(("ticker", "interval", saves.entries[-1][1]))
    tour.say(
        f"after another change: saved again at {loop.time() - started:.1f} s "
        f"({saves.entries[-1][1]} messages)"
    )
    tour.fact("interval_unchanged_saves", unchanged)
    await ticker.stop()
    tour.report.saves.append(("ticker", "shutdown", saves.entries[-1][1]))

    worker = await runtime.start_agent(
        Agent(agent_id="worker", model=scripted(Reply(text="Done."))),
        auto_save=AutoSave(callback=saves),  # interval 60 s, on_idle=True: the defaults
    )
    async with worker.subscribe() as events:
        await worker.add_message("do the thing")
        await tour.until_status(events, Status.IDLE)
    await saves.wait("worker", 1)
    tour.report.saves.append(("worker", "on_idle", saves.entries[-1][1]))
    tour.say(f"on_idle: saved when the run completed ({saves.entries[-1][1]} messages)")
    await worker.stop()
    tour.report.saves.append(("worker", "shutdown", saves.entries[-1][1]))
    tour.say(f"before shutdown: stop() saved once more (worker: {saves.count('worker')} saves)")
    tour.fact(
        "auto_save_counts", {"ticker": saves.count("ticker"), "worker": saves.count("worker")}
    )


# -- 10 ---------------------------------------------------------------------------------------


async def _supervision(tour: Tour, runtime: Runtime) -> None:
    tour.section(SECTIONS[9])
    tour.say("Runtime")
    tour.say("└── agents supervisor (one_for_one)")
    tour.say("    └── agent unit per agent id (rest_for_one)")
    tour.say("        ├── AgentServer (transient: restarted after a crash, not after a stop)")
    tour.say("        └── sub-agents supervisor")
    tour.say("Filesystem servers live under their own supervisor, keyed by scope.")
    tour.say("A restarted server loses its in-memory state: restore it from persisted state.")
    tour.say("No public call crashes an agent server (only a bug would), so this tour shows")
    tour.say("isolation with a failing run instead of faking a crash:")
    flaky = await runtime.start_agent(
        Agent(
            agent_id="flaky",
            model=scripted(
                Fail(error=RuntimeError("the model provider is down")),
                Reply(text="Back online."),
            ),
            retry=NO_RETRY,
        )
    )
    steady = await runtime.start_agent(
        Agent(agent_id="steady", model=scripted(Reply(text="All good here.")))
    )
    async with flaky.subscribe() as events:
        await flaky.add_message("hello?")
        failed = await tour.until_status(events, Status.ERROR)
        tour.say(f"'flaky' -> {failed.status.value}: {failed.data}")
        steady_status = await tour.status(steady)
        tour.say(f"'steady' is unaffected: {steady_status.value}")
        async with steady.subscribe() as steady_events:
            await steady.add_message("and you?")
            await tour.until_status(steady_events, Status.IDLE)
        tour.say(f"'steady' ran: {text_of((await steady.get_state()).messages[-1])!r}")
        await flaky.add_message("try again")  # the failed agent is alive and accepts work
        await tour.until_status(events, Status.IDLE)
    recovered = text_of((await flaky.get_state()).messages[-1])
    tour.say(f"'flaky' is still alive and recovers: {recovered!r}")
    tour.fact(
        "supervision", {"failed": failed.status, "steady": steady_status, "recovered": recovered}
    )
    await flaky.stop()
    await steady.stop()


# -- 11 ---------------------------------------------------------------------------------------


def _coordinator(tour: Tour) -> None:
    tour.section(SECTIONS[10])
    tour.say("Applications with many conversations use sagents.Session (start / ensure_running)")
    tour.say("behind a generated Coordinator: idempotent start, factory, state load, presence and")
    tour.say("subscriber wiring. It comes later in the documentation; this tour uses the raw")
    tour.say("runtime calls it is built on.")


# -- 12 ---------------------------------------------------------------------------------------


async def _health_checks(tour: Tour, runtime: Runtime) -> None:
    tour.section(SECTIONS[11])
    for agent_id, conversation_id in (
        ("conversation-1", "1"),
        ("conversation-2", "2"),
        ("user-42", None),
    ):
        await runtime.start_agent(
            Agent(agent_id=agent_id, model=scripted()), conversation_id=conversation_id
        )
    first = runtime.agent("conversation-1")  # a handle looked up in the registry (whereis)
    await first.add_message("hi", run=False)
    status = await runtime.get_status("conversation-1")
    info = await runtime.agent_info("conversation-1")
    assert info is not None
    running = runtime.list_running_agents()
    count = runtime.agent_count()
    matching = runtime.list_agents_matching("conversation-*")
    tour.say(f"get_status('conversation-1') -> {status}")
    tour.say(
        f"agent_info('conversation-1') -> agent_id={info.agent_id!r}, status="
        f"{info.status.value}, message_count={info.message_count}, has_interrupt="
        f"{info.has_interrupt}, uptime={info.uptime:.3f} s"
    )
    tour.say(f"list_running_agents() -> {running}")
    tour.say(f"agent_count() -> {count}")
    tour.say(f"list_agents_matching('conversation-*') -> {matching}")
    missing = await runtime.get_status("conversation-9")
    tour.say(f"get_status('conversation-9') -> {missing} (not running)")
    tour.fact(
        "health",
        {
            "status": status,
            "info": info,
            "running": running,
            "count": count,
            "matching": matching,
            "missing": missing,
        },
    )
    for agent_id in running:
        await runtime.stop(agent_id)


# -- 13 ---------------------------------------------------------------------------------------


async def _telemetry(tour: Tour, runtime: Runtime) -> None:
    tour.section(SECTIONS[12])

    def handler(
        event: tuple[str, ...],
        measurements: Mapping[str, Any],
        metadata: Mapping[str, Any],
        config: Any,
    ) -> None:
        tour.report.telemetry.append((event, dict(metadata)))
        details = [f"agent_id={metadata.get('agent_id')}"]
        details += [f"{k}={metadata[k]}" for k in ("status", "reason", "attempt") if k in metadata]
        if "total_tokens" in measurements:
            details.append(f"tokens={measurements['total_tokens']}")
        tour.say(f"[{config}] {'.'.join(event):<28} {', '.join(details)}")

    telemetry.attach_many("lifecycle-tour", TELEMETRY_EVENTS, handler, config="telemetry")
    try:
        model = scripted(
            Fail(error=TimeoutError("the provider timed out")),  # retried: llm.error
            Reply(tool_calls=[ToolCall(name="publish_report", args={"title": "Weekly"})]),
            Reply(text="Published the weekly report."),
        )
        agent = Agent(
            agent_id="observed",
            model=model,
            tools=[publish_report],
            middleware=[HumanInTheLoop(interrupt_on={"publish_report": True})],
            retry=RetryPolicy(max_attempts=2, initial_delay=0.0, jitter=False),
        )
        handle = await runtime.start_agent(agent)
        async with handle.subscribe() as events:
            await handle.add_message("Publish the weekly report")
            await tour.until_status(events, Status.INTERRUPTED)
            await handle.resume([Approve()])
            await tour.until_status(events, Status.IDLE)
            await handle.stop()
            await tour.until_shutdown(events)
    finally:
        telemetry.detach("lifecycle-tour")
    names = {".".join(event[1:]) for event, _ in tour.report.telemetry}
    tour.say(
        f"received {len(tour.report.telemetry)} events of {len(names)} kinds; agent.crash "
        "is only emitted when a server dies abnormally, which did not happen"
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every timeout")
    args = parser.parse_args()
    asyncio.run(main(scale=args.scale))
