"""A stateful property test of one agent server: statuses, commands, timers, restarts.

Rules covered: L1–L8 (statuses and commands), L13 and L46 (restart from the auto-saved state),
L14 (every new message saved, in order), L20–L23 (inactivity), L30–L34 (presence), L40–L43
(stop), E1–E3 (the main event stream).

Hypothesis drives ONE agent in a :class:`Runtime` through random sequences of messages (run or
not), ``execute``, ``cancel``, ``resume`` (valid and invalid decisions), ``stop``, ``touch``,
``get_state`` / ``export_state``, commands on the stopped agent, viewers joining and leaving,
virtual time passing, and restarts from the state saved at shutdown, while a scripted model
answers each call as the example decided: a plain reply, a slow streamed reply, a call to an
unprotected tool, a call to a protected tool (an interrupt), a failure, or a failure in the middle
of a slow stream.

How it runs: hypothesis' state machines are synchronous, so each example owns an
``asyncio.Runner`` on a looptime loop (virtual time starting at 0) and every step runs one small
coroutine on it. After each coroutine the loop is *settled*: everything ready at the current
virtual time runs, and no time passes. Between two steps the agent is therefore quiescent — a run
in progress is waiting for its model's next chunk — which keeps the model below exact: a command
is judged against the status observed at the previous step. The price is that a command never
lands in the few loop iterations in which a run finishes, so the ``race`` rule puts one there on
purpose (a message, then a cancel or a stop 0–6 loop iterations later, unsettled); the tests
after the machine pin the bugs it found.

The model is observational where the outcome depends on the script (which status a run ends in,
when a timer fires within a step): it checks that what happened is allowed, with lower and upper
bounds for timers, and it predicts exactly what each command must do.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import hypothesis
import looptime
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr

from sagents import Agent, AgentNotRunning, InvalidDecision, InvalidTransition, State, Status
from sagents.events import AgentShutdown, Event, StatusChanged, SubscriptionOverflow
from sagents.execution import Fail, Reply, RetryPolicy, ScriptedChatModel, ToolCall
from sagents.middleware import HumanInTheLoop
from sagents.runtime import (
    AgentHandle,
    AutoSave,
    LocalPresence,
    PendingSubscription,
    PresenceTracking,
    Publisher,
    Runtime,
    Subscription,
)

from .conftest import make_agent, statuses

T = TypeVar("T")

AGENT_ID = "agent-sm"
TOPIC = "conversation:sm"
KEYS = ("alice", "bob")
TOL = 1e-6  # looptime's resolution
IDLE_LIKE = frozenset({Status.IDLE, Status.CANCELLED, Status.ERROR})
# The status machine of L1–L7b, written out independently of the server.
NEXT: dict[Status, frozenset[Status]] = {
    Status.IDLE: frozenset({Status.RUNNING}),
    Status.CANCELLED: frozenset({Status.RUNNING}),
    Status.ERROR: frozenset({Status.RUNNING}),
    Status.RUNNING: frozenset({Status.IDLE, Status.INTERRUPTED, Status.ERROR, Status.CANCELLED}),
    Status.INTERRUPTED: frozenset({Status.RUNNING, Status.IDLE}),  # resume / dismissed (L7b)
}
COMMAND_ERRORS = (AgentNotRunning, InvalidTransition, InvalidDecision)


# Async tools: a sync tool runs in a worker thread, whose end the loop cannot settle on.
async def ping() -> str:
    """Ping."""
    return "pong"


async def delete(path: str) -> str:
    """Delete a path."""
    return f"deleted {path}"


async def settle() -> None:
    """Run everything that is ready at the current virtual time; no time passes.

    looptime only moves the clock when nothing is ready, so ``sleep(0)`` never advances it. The
    loop's ``_ready`` queue and ``_scheduled`` heap are CPython implementation details; reading
    them is the only exact way to tell "quiescent", and a bounded loop turns a surprise into a
    failure instead of a hang.
    """
    loop: Any = asyncio.get_running_loop()
    for _ in range(10_000):
        await asyncio.sleep(0)
        scheduled = loop._scheduled
        due = bool(scheduled) and scheduled[0].when() <= loop.time()
        if not loop._ready and not due:
            return
    raise AssertionError("the event loop never settled")


class TrackedModel(BaseChatModel):
    """Streams what a :class:`ScriptedChatModel` says, counting the calls in flight, so a second
    concurrent run would show. (A wrapper, not a subclass: a pydantic subclass would have to
    resolve the parent's string annotations in this module.)"""

    scripted: Any
    _in_flight: int = PrivateAttr(default=0)
    _most_in_flight: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "tracked"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, Any]:
        return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise AssertionError("the agent streams (Agent.stream=True)")

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        self._in_flight += 1
        self._most_in_flight = max(self._most_in_flight, self._in_flight)
        try:
            async for chunk in self.scripted._astream(messages, stop, run_manager, **kwargs):
                yield chunk
        finally:
            # A cancelled run throws CancelledError through this frame, so this runs at once.
            self._in_flight -= 1


class Recorder:
    """An ``initial_subscribers`` entry: the main-channel events of one server instance."""

    def __init__(self) -> None:
        self.subscription: Subscription | None = None

    def attach(self, publisher: Publisher) -> None:
        assert self.subscription is None, "a recorder serves one server instance"
        self.subscription = publisher.subscribe("main")

    def drain(self) -> list[Event]:
        assert self.subscription is not None, "the server never attached its initial subscriber"
        events: list[Event] = []
        while (event := self.subscription.get_nowait()) is not None:
            events.append(event)
        return events


@dataclass
class Instance:
    """What the model knows about one server instance, from its event stream."""

    recorder: Recorder
    started_at: float
    status: Status
    seq: int = 0
    shutdown: AgentShutdown | None = None
    # Bounds on when the last StatusChanged happened: after the step before it was seen, and by
    # the step in which it was seen (events carry no timestamps).
    status_after: float = 0.0
    status_by: float = 0.0


Behaviour = tuple[Any, ...]
_SLOW = st.tuples(st.just("slow"), st.integers(2, 4), st.sampled_from([0.5, 1.0, 2.0, 4.0]))
_PROTECTED = st.tuples(st.just("protected"), st.integers(1, 2), st.booleans())
# Weighted towards slow replies (so commands meet a running agent) and protected calls.
BEHAVIOURS: st.SearchStrategy[Behaviour] = st.one_of(
    st.tuples(st.just("reply")),
    _SLOW,
    _SLOW,
    st.tuples(st.just("ping")),
    _PROTECTED,
    _PROTECTED,
    _PROTECTED,
    st.tuples(st.just("fail")),
    st.tuples(st.just("slow_fail"), st.sampled_from([1.0, 3.0])),
)
# How the model answers the next calls; given with each command that may start a run.
PLANS = st.lists(BEHAVIOURS, min_size=1, max_size=2)
VALID_DECISIONS = ("approve", "reject", "edit")
INVALID_DECISIONS = ("too_many", "too_few", "unknown_type", "arguments_on_approve")


def decisions_for(kind: str, pending: int) -> list[dict[str, Any]]:
    match kind:
        case "approve":
            return [{"type": "approve"}] * pending
        case "reject":
            return [{"type": "reject", "message": "no"}] * pending
        case "edit":
            return [{"type": "edit", "arguments": {"path": "/edited"}}] * pending
        case "too_many":
            return [{"type": "approve"}] * (pending + 1)
        case "too_few":
            return [{"type": "approve"}] * (pending - 1)
        case "unknown_type":
            return [{"type": "maybe"}] * pending
        case "arguments_on_approve":
            return [{"type": "approve", "arguments": {}}] * pending
    raise AssertionError(kind)


def humans(messages: list[BaseMessage]) -> list[Any]:
    return [m.content for m in messages if isinstance(m, HumanMessage)]


def saved_humans(saved: dict[str, Any]) -> list[Any]:
    return humans(State.from_dict(saved).messages)


def check_history(messages: list[BaseMessage], *, allow_pending: bool) -> None:
    """Every tool call is answered before the conversation moves on (a valid provider history)."""
    pending: set[str] = set()
    for index, message in enumerate(messages):
        if isinstance(message, ToolMessage):
            assert message.tool_call_id in pending, f"message {index} answers no pending call"
            pending.discard(message.tool_call_id)
            continue
        assert not pending, f"message {index} ({type(message).__name__}) skips calls {pending}"
        if isinstance(message, AIMessage):
            pending = {call["id"] for call in message.tool_calls if call["id"]}
    assert allow_pending or not pending, f"unanswered tool calls {pending}"


class ServerMachine(RuleBasedStateMachine):
    """One agent id, its successive server instances, and a model of what they may do."""

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner(loop_factory=looptime.new_event_loop)
        self.runtime = Runtime()
        self.presence = LocalPresence()
        self.plan: deque[Behaviour] = deque()
        self.counter = itertools.count(1)
        self.full_texts: set[str] = set()  # every complete text the model produced
        self.model = TrackedModel(
            scripted=ScriptedChatModel(responder=self.respond, record_prompts=False)
        )
        self.agent = Agent(
            agent_id=AGENT_ID,
            model=self.model,
            tools=[ping, delete],
            middleware=[HumanInTheLoop(interrupt_on={"delete": True})],
            retry=RetryPolicy(max_attempts=1),
        )
        self.handle = AgentHandle(self.runtime, AGENT_ID)
        self.instances: list[Instance] = []
        self.accepted: list[Any] = []  # contents of every add_message that returned, in order
        self.saves: list[dict[str, Any]] = []  # AutoSave callback arguments
        self.saves_checked = 0
        self.saved_messages: list[BaseMessage] = []  # save_new_message arguments
        self.viewers: dict[str, Any] = {}  # key -> PresenceRef
        self.zero_viewers_since = 0.0
        self.initial_messages = 0  # messages of the first start state (not new, L14)
        self.pending_actions = 0  # action requests of the pending interrupt
        self.queued = 0  # info().queued_messages at the last step
        self.inactivity: float | None = None
        self.grace: float | None = None
        self.interval: float | None = None
        # Bounds on the server's last activity (L21): a touch certainly happened at or after
        # ``activity_after``; nothing that could touch happened after ``activity_by``.
        self.activity_after = 0.0
        self.activity_by = 0.0
        self.now = 0.0
        self.run(self.runtime.start())

    # -- plumbing ------------------------------------------------------------------------------

    def run(self, aw: Awaitable[T]) -> T:
        """Run ``aw`` on this example's loop, settle it, and note the virtual time."""

        async def settled() -> tuple[T, float]:
            result = await aw
            await settle()
            return result, asyncio.get_running_loop().time()

        result, self.now = self.runner.run(settled())
        return result

    def attempt(self, aw: Coroutine[Any, Any, Any]) -> BaseException | None:
        """Run a command; return the command error it raised, if any (anything else fails)."""

        async def attempt() -> BaseException | None:
            try:
                await aw
            except COMMAND_ERRORS as exc:
                return exc
            return None

        return self.run(attempt())

    @property
    def current(self) -> Instance:
        return self.instances[-1]

    @property
    def registered(self) -> bool:
        return bool(self.instances) and self.current.shutdown is None

    @property
    def status(self) -> Status:
        assert self.registered
        return self.current.status

    def options(self, recorder: Recorder) -> dict[str, Any]:
        presence = None
        if self.grace is not None:
            presence = PresenceTracking(
                presence=self.presence, topic=TOPIC, grace_period=self.grace
            )
        return {
            "inactivity_timeout": self.inactivity,
            "presence": presence,
            "auto_save": AutoSave(callback=self.save, interval=self.interval, on_idle=True),
            "save_new_message": self.save_message,
            "initial_subscribers": [recorder],
        }

    async def save(self, agent_id: str, state: dict[str, Any]) -> None:
        assert agent_id == AGENT_ID
        self.saves.append(state)

    async def save_message(self, conversation_id: str | None, message: BaseMessage) -> None:
        self.saved_messages.append(message)

    def respond(self, messages: list[BaseMessage]) -> Reply | Fail:
        """The model: the next planned behaviour, or a plain reply."""
        behaviour = self.plan.popleft() if self.plan else ("reply",)
        n = next(self.counter)
        match behaviour:
            case ("slow", chunks, delay):
                piece = f"slow {n}. "
                self.full_texts.add(piece * chunks)
                return Reply(text=piece * chunks, chunk_size=len(piece), delay=delay)
            case ("ping",):
                return Reply(tool_calls=[ToolCall(name="ping", args={})])
            case ("protected", count, with_ping):
                calls = [ToolCall(name="delete", args={"path": f"/{n}/{i}"}) for i in range(count)]
                if with_ping:
                    calls.append(ToolCall(name="ping", args={}))
                return Reply(tool_calls=calls)
            case ("fail",):
                return Fail(error=ValueError(f"model failure {n}"))
            case ("slow_fail", delay):
                return Fail(
                    error=ValueError(f"stream failure {n}"),
                    text=f"half of answer {n}",
                    after_chunks=2,
                    delay=delay,
                )
        text = f"reply {n}"
        self.full_texts.add(text)
        return Reply(text=text)

    # -- observing the event stream (E1–E3) ------------------------------------------------------

    def step(
        self,
        before: float,
        *,
        stop_reason: str | None = None,
        touched: bool = False,
        may_touch: bool = False,
    ) -> list[Status]:
        """Check the events of the step that started at ``before``; return its new statuses.

        Args:
            before: the virtual time when the step started.
            stop_reason: the reason of a ``stop`` issued in this step (else no manual shutdown).
            touched: the step certainly counted as activity (L21).
            may_touch: the step may have counted as activity (a refused command: L21 does not
                say, so both are accepted).
        """
        if touched:
            self.activity_after = max(self.activity_after, before)
        if touched or may_touch:
            self.activity_by = max(self.activity_by, self.now)
        inst = self.current
        events = inst.recorder.drain()
        new: list[Status] = []
        for event in events:
            assert inst.shutdown is None, f"{event!r} after AgentShutdown (E3)"
            assert not isinstance(event, SubscriptionOverflow), "the recorder fell behind"
            assert event.agent_id == AGENT_ID
            assert event.seq == inst.seq + 1, f"seq {event.seq} after {inst.seq} (E1: no gaps)"
            inst.seq = event.seq
            if isinstance(event, StatusChanged):
                assert event.status in NEXT[inst.status], f"{inst.status} -> {event.status}"
                if inst.status is Status.RUNNING:
                    # The run ended in this step: its end touched the timer (L22).
                    self.activity_after = max(self.activity_after, before)
                self.activity_by = max(self.activity_by, self.now)
                hypothesis.event(f"{inst.status} -> {event.status}")
                inst.status = event.status
                inst.status_after, inst.status_by = before, self.now
                new.append(event.status)
                if event.status is Status.INTERRUPTED:
                    self.pending_actions = len(event.data.action_requests)
                    assert self.pending_actions >= 1
                elif event.status is Status.ERROR:
                    assert isinstance(event.data, str)
                    assert event.data
            elif isinstance(event, AgentShutdown):
                inst.shutdown = event
                hypothesis.event(f"shutdown: {event.reason}")
                self.check_shutdown(inst, before, stop_reason)
        if stop_reason is not None:
            assert inst.shutdown is not None, "stop() returned before AgentShutdown (L40)"
        return new

    def check_shutdown(self, inst: Instance, before: float, stop_reason: str | None) -> None:
        event = inst.shutdown
        assert event is not None
        sub = inst.recorder.subscription
        assert sub is not None
        assert sub.finished, "the subscription outlived AgentShutdown (E3)"
        at_status = event.metadata["status"]
        assert at_status == inst.status.value
        if stop_reason is not None:
            assert event.reason == stop_reason  # L40, L41
        else:
            assert self.now > before, f"{event.reason!r} shutdown while no time passed"
            assert event.reason in ("inactivity", "no_viewers")
        if event.reason == "inactivity":  # L22, L23
            assert self.inactivity is not None
            assert inst.status is not Status.RUNNING
            assert self.now >= self.activity_after + self.inactivity - TOL, "shut down early"
        elif event.reason == "no_viewers":  # L31, L33
            assert self.grace is not None
            assert not self.viewers
            assert inst.status in IDLE_LIKE
            since = max(self.zero_viewers_since, inst.started_at, inst.status_after)
            assert self.now >= since + self.grace - TOL, "grace period cut short"
        # Auto-save ran before the shutdown, with every accepted message in order (L7, L23, L42).
        assert self.saves, "no save before shutdown (L46)"
        assert saved_humans(self.saves[-1]) == self.accepted
        assert (self.saves[-1]["interrupt"] is not None) == (inst.status is Status.INTERRUPTED)
        # L14: each new message (not those of a start state), in order.
        assert humans(self.saved_messages) == self.accepted[self.initial_messages :]

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def the_registry_agrees_with_the_stream(self) -> None:
        if not self.instances:
            return

        async def read() -> tuple[Any, ...]:
            loop = asyncio.get_running_loop()
            return (
                await self.runtime.get_status(AGENT_ID),
                await self.runtime.agent_info(AGENT_ID),
                self.runtime.list_running_agents(),
                loop.time(),
            )

        status, info, running, now = self.runner.run(read())
        assert now == self.now, "reading the status let time pass"
        assert self.model._most_in_flight <= 1, "two model calls at once: two runs (L2, L7)"
        for old in self.instances[:-1]:
            assert old.shutdown is not None
        if not self.registered:
            assert status is None
            assert info is None
            assert running == []
            assert self.model._in_flight == 0
            with pytest.raises(AgentNotRunning):
                self.runtime.agent(AGENT_ID)
            self.queued = 0
            return
        inst = self.current
        assert running == [AGENT_ID]
        assert status is inst.status, f"get_status {status} but the stream says {inst.status}"
        assert info is not None
        assert info.status is status
        # RUNNING iff a run is in progress: between steps a run always waits for its model.
        in_flight = self.model._in_flight
        assert in_flight == (1 if status is Status.RUNNING else 0), f"{status}: {in_flight} calls"
        self.queued = info.queued_messages
        if status is not Status.RUNNING:
            assert info.queued_messages == 0, "messages left queued with no run to take them"
            assert info.has_interrupt == (status is Status.INTERRUPTED)  # L4
        expected_viewers = len(self.viewers) if self.grace is not None else 0
        assert info.viewer_count == expected_viewers
        # The inactivity deadline (L20–L22).
        if self.inactivity is None or status is Status.RUNNING:
            assert info.inactivity_remaining is None
        else:
            assert info.inactivity_remaining is not None
            deadline = self.now + info.inactivity_remaining
            assert deadline >= self.activity_after + self.inactivity - TOL
            assert deadline <= self.activity_by + self.inactivity + TOL
            # Liveness: past the deadline it would have shut down (L23).
            assert self.now < self.activity_by + self.inactivity
        # Liveness of the presence grace period (L31, L33, L34).
        if self.grace is not None and not self.viewers and status in IDLE_LIKE:
            since = max(self.zero_viewers_since, inst.started_at, inst.status_by)
            assert self.now < since + self.grace, "idle with no viewers past the grace period"

    @invariant()
    def saves_never_go_backwards(self) -> None:
        # L48: states only grow (messages are appended), so each save extends the one before.
        # (An edit decision rewrites the arguments of the call it approves, so compare kinds.)
        for earlier, later in itertools.pairwise(self.saves[max(0, self.saves_checked - 1) :]):
            before, after = earlier["messages"], later["messages"]
            assert [m["type"] for m in after[: len(before)]] == [m["type"] for m in before]
            assert saved_humans(later)[: len(saved_humans(earlier))] == saved_humans(earlier)
        self.saves_checked = len(self.saves)

    # -- rules: starting -------------------------------------------------------------------------

    @initialize(
        inactivity=st.sampled_from([None, 60.0, 300.0]),
        grace=st.sampled_from([None, 5.0, 30.0]),
        viewers=st.sets(st.sampled_from(KEYS)),
        interval=st.sampled_from([None, 50.0]),
        first_message=st.booleans(),
    )
    def start(
        self,
        inactivity: float | None,
        grace: float | None,
        viewers: set[str],
        interval: float | None,
        first_message: bool,
    ) -> None:
        self.inactivity, self.grace, self.interval = inactivity, grace, interval
        for key in sorted(viewers):
            self.viewers[key] = self.run(self.presence.track(TOPIC, key, auto_untrack=False))
        state = State(messages=[HumanMessage("m0")]) if first_message else None
        if first_message:
            self.accepted.append("m0")
            self.initial_messages = 1
        self.launch(state, Status.IDLE)

    def launch(self, state: State | dict[str, Any] | None, expected: Status) -> None:
        recorder = Recorder()
        before = self.now
        handle = self.run(self.runtime.start_agent(self.agent, state, **self.options(recorder)))
        assert handle.agent_id == AGENT_ID
        self.instances.append(Instance(recorder=recorder, started_at=self.now, status=expected))
        self.activity_after = self.activity_by = self.now
        assert self.step(before) == []  # a new server says nothing until asked (L1)

    @precondition(lambda self: not self.registered)
    @rule()
    def restart_from_the_saved_state(self) -> None:
        """Start the agent again from the state saved at its shutdown (L13, L24, L46)."""
        previous = self.current
        saved = self.saves[-1]
        # An interrupt survives the restart; cancelled and error do not (they are not state).
        expected = Status.INTERRUPTED if saved["interrupt"] is not None else Status.IDLE
        assert (expected is Status.INTERRUPTED) == (previous.status is Status.INTERRUPTED)
        if expected is Status.INTERRUPTED:
            self.pending_actions = len(saved["interrupt"]["action_requests"])
        self.launch(saved, expected)
        before = self.now
        state = self.run(self.handle.get_state())
        assert state == State.from_dict(saved)
        self.step(before, touched=True)

    # -- rules: commands -------------------------------------------------------------------------
    # Commands run whether or not the agent is up: on a stopped agent each must raise
    # AgentNotRunning and be accepted by nobody (L43).

    def refused(self, aw: Coroutine[Any, Any, Any]) -> None:
        before = self.now
        assert isinstance(self.attempt(aw), AgentNotRunning)
        assert self.step(before) == []

    @rule(run=st.booleans(), plan=PLANS)
    def add_message(self, run: bool, plan: list[Behaviour]) -> None:
        self.plan.extend(plan)
        text = f"m{len(self.accepted)}"
        if not self.registered:
            return self.refused(self.handle.add_message(HumanMessage(text), run=run))
        before, was = self.now, self.status
        error = self.attempt(self.handle.add_message(HumanMessage(text), run=run))
        assert error is None, f"add_message raised {error!r} while {was}"
        self.accepted.append(text)
        new = self.step(before, touched=True)
        if was is Status.RUNNING:
            assert new == []  # queued for a follow-up turn, never a second run (L7)
        elif was is Status.INTERRUPTED:
            expected = [Status.IDLE, Status.RUNNING] if run else [Status.IDLE]  # L7b
            assert new[: len(expected)] == expected
        elif run:
            assert new[:1] == [Status.RUNNING]  # L7
        else:
            assert new == []
        return None

    @rule(plan=PLANS)
    def execute(self, plan: list[Behaviour]) -> None:
        self.plan.extend(plan)
        if not self.registered:
            return self.refused(self.handle.execute())
        before, was = self.now, self.status
        error = self.attempt(self.handle.execute())
        new = self.step(before, touched=error is None, may_touch=True)
        if was in (Status.RUNNING, Status.INTERRUPTED):  # L2: never a second run
            assert isinstance(error, InvalidTransition), repr(error)
            assert new == []
        else:
            assert error is None, repr(error)
            assert new[:1] == [Status.RUNNING]
        return None

    @rule(kind=st.sampled_from(VALID_DECISIONS * 2 + INVALID_DECISIONS), plan=PLANS)
    def resume(self, kind: str, plan: list[Behaviour]) -> None:
        self.plan.extend(plan)
        interrupted = self.registered and self.status is Status.INTERRUPTED
        decisions = decisions_for(kind, self.pending_actions if interrupted else 1)
        if not self.registered:
            return self.refused(self.handle.resume(decisions))
        before = self.now
        error = self.attempt(self.handle.resume(decisions))
        new = self.step(before, touched=error is None, may_touch=True)
        if not interrupted:
            assert isinstance(error, InvalidTransition), repr(error)
            assert new == []
        elif kind in INVALID_DECISIONS:  # L4: a clear error, and the interrupt stays
            assert isinstance(error, InvalidDecision), repr(error)
            assert new == []
        else:
            assert error is None, repr(error)
            assert new[:1] == [Status.RUNNING]
        return None

    @precondition(lambda self: self.registered and self.status is Status.INTERRUPTED)
    @rule(kind=st.sampled_from(VALID_DECISIONS), plan=PLANS)
    def answer_the_interrupt(self, kind: str, plan: list[Behaviour]) -> None:
        """An interrupted agent is usually answered: make that likelier than ``resume`` alone."""
        self.resume(kind, plan)

    @rule(via_runtime=st.booleans())
    def cancel(self, via_runtime: bool) -> None:
        command = self.runtime.cancel(AGENT_ID) if via_runtime else self.handle.cancel()
        if not self.registered:
            return self.refused(command)
        before, was = self.now, self.status
        error = self.attempt(command)
        if was is Status.RUNNING:  # L5
            assert error is None, repr(error)
            assert self.step(before, touched=True) == [Status.CANCELLED]
        else:
            assert isinstance(error, InvalidTransition), repr(error)
            assert self.step(before, may_touch=True) == []
        return None

    @rule(reason=st.sampled_from(["manual", "user_left"]), restart=st.booleans())
    def stop(self, reason: str, restart: bool) -> None:
        if not self.registered:
            return self.refused(self.handle.stop(reason))
        before, was = self.now, self.status
        error = self.attempt(self.handle.stop(reason))
        assert error is None, repr(error)
        new = self.step(before, stop_reason=reason)  # checks the save and AgentShutdown
        assert new == ([Status.CANCELLED] if was is Status.RUNNING else [])  # L42
        if restart:  # as Session.ensure_running would on the next user action
            self.restart_from_the_saved_state()
        return None

    @rule(kind=st.sampled_from(["get_state", "export_state", "touch", "get_status"]))
    def read(self, kind: str) -> None:
        commands: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
            "get_state": self.handle.get_state,
            "export_state": lambda: self.runtime.export_state(AGENT_ID),
            "touch": self.handle.touch,
            "get_status": self.handle.get_status,
        }
        if not self.registered:
            return self.refused(commands[kind]())
        before, was = self.now, self.status
        result = self.run(commands[kind]())
        assert self.step(before, touched=kind != "get_status") == []
        if kind == "get_status":
            assert result is was
        elif kind in ("get_state", "export_state"):
            self.check_state(result if kind == "get_state" else State.from_dict(result), was)
        return None

    def check_state(self, state: State, was: Status) -> None:
        got = humans(state.messages)
        if was is Status.RUNNING:
            # Messages sent during the run wait in the queue, in order (L7).
            assert got == self.accepted[: len(got)]
            assert len(got) + self.queued == len(self.accepted)
        else:
            assert got == self.accepted
        # No half-streamed message is ever stored (L5, L6).
        for message in state.messages:
            if isinstance(message, AIMessage) and message.content:
                assert message.content in self.full_texts, f"partial message {message.content!r}"
        check_history(state.messages, allow_pending=was in (Status.RUNNING, Status.INTERRUPTED))
        if was is Status.INTERRUPTED:
            assert state.interrupt is not None
            assert len(state.interrupt.action_requests) == self.pending_actions
        elif was is not Status.RUNNING:
            assert state.interrupt is None

    @precondition(lambda self: self.registered and self.status in IDLE_LIKE)
    @rule(spins=st.integers(0, 6), command=st.sampled_from(["cancel", "stop"]), plan=PLANS)
    def race(self, spins: int, command: str, plan: list[Behaviour]) -> None:
        """A message starts a run, and ``spins`` loop iterations later (no settling in between)
        a cancel or a stop follows: it may land while the run is finishing."""
        self.plan.extend(plan)
        before = self.now
        text = f"m{len(self.accepted)}"

        async def race() -> BaseException | None:
            await self.handle.add_message(HumanMessage(text))
            for _ in range(spins):
                await asyncio.sleep(0)
            try:
                await (self.handle.cancel() if command == "cancel" else self.handle.stop())
            except InvalidTransition as exc:
                return exc
            return None

        error = self.run(race())
        self.accepted.append(text)
        stop_reason = "manual" if command == "stop" else None
        new = self.step(before, touched=True, stop_reason=stop_reason)
        assert new[:1] == [Status.RUNNING]
        # Whoever won, the run is over: never RUNNING without a run (L2, L5, L22) ...
        assert new[-1] is not Status.RUNNING, f"{command} after {spins} spins: {new}"
        if command == "cancel" and error is not None:
            # ... and a cancel is refused only when the run had already ended.
            assert Status.CANCELLED not in new
        elif command == "stop":
            assert error is None  # stop never refuses a running agent (L42)

    # -- rules: time and viewers -----------------------------------------------------------------

    @rule(
        seconds=st.sampled_from([0.5, 1.0, 2.0, 3.0, 7.0, 20.0, 45.0, 100.0, 400.0]),
        restart=st.booleans(),
    )
    def advance(self, seconds: float, restart: bool) -> None:
        before = self.now
        self.run(asyncio.sleep(seconds))
        assert self.now == pytest.approx(before + seconds)
        self.step(before)
        if restart and not self.registered:
            self.restart_from_the_saved_state()

    @precondition(lambda self: self.grace is not None)
    @rule(key=st.sampled_from(KEYS), join=st.booleans())
    def viewer(self, key: str, join: bool) -> None:
        before = self.now
        if join and key not in self.viewers:
            self.viewers[key] = self.run(self.presence.track(TOPIC, key, auto_untrack=False))
        elif not join and key in self.viewers:
            self.run(self.presence.untrack(TOPIC, key, self.viewers.pop(key)))
            if not self.viewers:
                self.zero_viewers_since = self.now
        assert self.step(before) == []

    # -- the end of an example -------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.registered:
                before = self.now
                self.run(self.runtime.shutdown())  # L54: a graceful stop, saving first
                self.step(before, stop_reason="shutdown")
            else:
                self.run(self.runtime.shutdown())
            assert self.model._in_flight == 0
        finally:
            self.runner.close()


ServerMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestServerStateMachine = ServerMachine.TestCase


# -- regressions first found with this machine -----------------------------------------------------


@pytest.mark.looptime
async def test_cancel_keeps_the_messages_queued_during_the_run(runtime: Runtime) -> None:
    # They used to stay queued, out of the state, and come back after later messages (L5, L7).
    handle = await runtime.start_agent(make_agent(responder=lambda _: Reply(text="x", delay=5.0)))
    await handle.add_message("first")
    await handle.add_message("second")  # queued behind the run
    await handle.cancel()
    assert humans((await handle.get_state()).messages) == ["first", "second"]
    assert (await handle.info()).queued_messages == 0


@pytest.mark.looptime
async def test_a_cancel_racing_the_end_of_a_run_never_leaves_it_running() -> None:
    # It used to leave the agent RUNNING forever, with no run (L2, L5, L22).
    # Cancel after 0, 1, 2, ... loop iterations, so one lands in the iterations in which the
    # run finishes: after the run's last step, before its result is processed.
    for spins in range(40):
        async with Runtime() as runtime:
            agent = make_agent(responder=lambda _: Reply(text="quick"))
            handle = await runtime.start_agent(agent, inactivity_timeout=60.0)
            await handle.add_message("hi")
            for _ in range(spins):
                await asyncio.sleep(0)
            with contextlib.suppress(InvalidTransition):
                await handle.cancel()
            await asyncio.sleep(30.0)  # the run is long over
            assert await handle.get_status() is not Status.RUNNING, f"stuck after {spins} spins"


@pytest.mark.looptime
async def test_a_stop_racing_the_end_of_a_run_reports_how_it_ended() -> None:
    # It used to drop the run's result: no final StatusChanged, AgentShutdown saying "running",
    # and an interrupt in the saved state that the stream never announced (L3, L4, L42, E3).
    for spins in range(30):
        async with Runtime() as runtime:
            events = PendingSubscription()
            agent = make_agent(responder=lambda _: Reply(text="quick"))
            handle = await runtime.start_agent(agent, initial_subscribers=[events])
            await handle.add_message("hi")
            for _ in range(spins):
                await asyncio.sleep(0)
            await handle.stop()
            seen = [event async for event in events]
            shutdown = seen[-1]
            assert isinstance(shutdown, AgentShutdown)
            assert statuses(seen)[-1] is not Status.RUNNING, f"after {spins} spins"
            assert shutdown.metadata["status"] != "running", f"after {spins} spins"
