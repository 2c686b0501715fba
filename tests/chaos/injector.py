"""The seeded fault injector of the chaos suite (issue 16), and the faulty world it drives.

Every fault is decided by a ``random.Random`` seeded from the run's seed, so a failing run is
reproduced by its seed. The decisions are not drawn from one global stream in call order — the
order in which a thousand agents reach their tools depends on scheduling, and one extra call
anywhere would shift every later decision — but from one stream **per agent, per round and per
call site** (``f"{seed}:{round}:{agent}:{site}"``): an agent's n-th model call in a round gets
the same fate whatever the other agents did.

Each round, each agent gets a :class:`Plan`:

- ``clean`` agents get no fault at all: they are the control group of "crashes are confined";
- ``faulty`` agents get a fault at each call site with probability ``rate`` (tools raise
  ``Exception`` and every kind of ``BaseException``, or hang past ``tool_timeout``; model calls
  fail, transiently or not, or raise a ``BaseException``; middleware hooks raise; saves and
  display writes fail or stall; the rates of saves and display writes are weighted down, as
  they happen several times a turn), may have a subscriber that never reads, may be stopped by
  their user in the middle of a turn, and may have their server crashed up to
  ``max_restarts`` times;
- ``doomed`` agents are faulty agents whose server is then crashed ``max_restarts + 1`` times in
  a row: the restart intensity must stop them, and only them.

The faulty world is made of real components: one :class:`~sagents.execution.ScriptedChatModel`
whose responder decides each reply, two real async tools and a real :class:`Middleware`, shared
by every agent (one binding of the model to the tools, as a service would have), and
:class:`ChaosStore`, a :class:`~sagents.persistence.MemoryPersistence` whose writes fail or stall
on demand. The model, tools and middleware find the calling agent's plan in a context variable
set in the ``context`` each agent is started with — so they also check that the runtime carries
an agent's context into every run, tool and hook, restarts included.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool

from sagents import PersistenceFailed
from sagents.execution import Fail, Middleware, Reply, ScriptedChatModel, ToolCall
from sagents.persistence import Lease, MemoryPersistence, StateSnapshot

__all__ = [
    "CURRENT",
    "PERSISTENCE_FAULTS",
    "SITE_FAULTS",
    "SITE_WEIGHT",
    "ChaosBaseException",
    "ChaosStore",
    "ContextLost",
    "Fault",
    "Injector",
    "LoopClock",
    "Plan",
    "Profile",
    "Site",
    "World",
]


class ChaosBaseException(BaseException):
    """Not an ``Exception``: slips past every ``except Exception`` on its way up."""


class Site(enum.StrEnum):
    """Where a per-call fault is decided."""

    TOOL = "tool"
    MODEL = "model"
    MIDDLEWARE = "middleware"
    SAVE = "save_state"
    DISPLAY = "display"


class Fault(enum.StrEnum):
    """Every kind of fault the suite injects (the summary counts them by kind)."""

    TOOL_EXCEPTION = "tool raises Exception"
    TOOL_SYSTEM_EXIT = "tool raises SystemExit"
    TOOL_KEYBOARD_INTERRUPT = "tool raises KeyboardInterrupt"
    TOOL_GENERATOR_EXIT = "tool raises GeneratorExit"
    TOOL_BASE_EXCEPTION = "tool raises a custom BaseException"
    TOOL_CANCELLED = "tool raises CancelledError"
    TOOL_HANG = "tool hangs past tool_timeout"
    MODEL_ERROR = "model fails mid-stream"
    MODEL_TRANSIENT = "model fails transiently (retried)"
    MODEL_CLIENT_RAISES = "model client raises"
    MODEL_BASE_EXCEPTION = "model raises a BaseException mid-stream"
    MIDDLEWARE_EXCEPTION = "middleware hook raises Exception"
    MIDDLEWARE_BASE_EXCEPTION = "middleware hook raises BaseException"
    SAVE_FAILS = "save_state fails"
    SAVE_FAILS_AFTER_WRITE = "save_state fails after writing"
    SAVE_STALLS = "save_state stalls"
    DISPLAY_FAILS = "display append fails"
    DISPLAY_STALLS = "display append stalls"
    SUBSCRIBER_STALLS = "subscriber never reads"
    SERVER_CRASH = "agent server crashes"


SITE_FAULTS: dict[Site, tuple[Fault, ...]] = {
    Site.TOOL: (
        Fault.TOOL_EXCEPTION,
        Fault.TOOL_SYSTEM_EXIT,
        Fault.TOOL_KEYBOARD_INTERRUPT,
        Fault.TOOL_GENERATOR_EXIT,
        Fault.TOOL_BASE_EXCEPTION,
        Fault.TOOL_CANCELLED,
        Fault.TOOL_HANG,
    ),
    Site.MODEL: (
        Fault.MODEL_ERROR,
        Fault.MODEL_TRANSIENT,
        Fault.MODEL_CLIENT_RAISES,
        Fault.MODEL_BASE_EXCEPTION,
    ),
    Site.MIDDLEWARE: (Fault.MIDDLEWARE_EXCEPTION, Fault.MIDDLEWARE_BASE_EXCEPTION),
    Site.SAVE: (Fault.SAVE_FAILS, Fault.SAVE_FAILS_AFTER_WRITE, Fault.SAVE_STALLS),
    Site.DISPLAY: (Fault.DISPLAY_FAILS, Fault.DISPLAY_STALLS),
}

#: The fault rate at each site, relative to the injector's: display rows are written several
#: times a turn, and every write that fails or stalls loosens what can be checked of its agent.
SITE_WEIGHT: dict[Site, float] = {Site.SAVE: 0.5, Site.DISPLAY: 0.25}

#: How many times the recorder tries a display write before dropping it.
_DISPLAY_ATTEMPTS = 3

PERSISTENCE_FAULTS = frozenset(SITE_FAULTS[Site.SAVE] + SITE_FAULTS[Site.DISPLAY])
_HOLDS_SAVES = frozenset((*SITE_FAULTS[Site.SAVE], Fault.DISPLAY_STALLS))


class Profile(enum.StrEnum):
    CLEAN = "clean"
    FAULTY = "faulty"
    DOOMED = "doomed"


@dataclass(eq=False)
class Plan:
    """One agent's fate for one round: its profile, the planned faults, its own random streams.

    Attributes:
        crash_after: the turns (0-based) after which its server is crashed.
        stop_during: the turn during which its user stops it (then starts it again from what
            storage holds, as a session would), or None.
        stalled_subscriber: it gets a subscriber that never reads (and a small queue).
        watched: it gets a durable subscription that reads everything (``runtime.watch``).
        injected: the faults injected into this agent this round, by kind.
    """

    injector: Injector
    round: int
    index: int
    profile: Profile
    crash_after: frozenset[int] = frozenset()
    stop_during: int | None = None
    stalled_subscriber: bool = False
    watched: bool = False
    injected: Counter[Fault] = field(default_factory=Counter)
    _streams: dict[str, random.Random] = field(default_factory=dict)

    def rng(self, stream: str) -> random.Random:
        """This agent's random stream named ``stream`` for this round (deterministic)."""
        rng = self._streams.get(stream)
        if rng is None:
            seed = f"{self.injector.seed}:{self.round}:{self.index}:{stream}"
            rng = self._streams[stream] = random.Random(seed)
        return rng

    @property
    def faulty(self) -> bool:
        return self.profile is not Profile.CLEAN

    @property
    def crashes(self) -> int:
        """How many times its server is crashed this round."""
        if self.profile is Profile.DOOMED:
            return self.injector.max_restarts + 1
        return len(self.crash_after)

    def draw(self, site: Site) -> Fault | None:
        """Whether this call at ``site`` fails, and how (never for a clean agent)."""
        if not self.faulty or not self.injector.armed(site):
            return None
        rng = self.rng(site.value)
        if rng.random() >= self.injector.rate * SITE_WEIGHT.get(site, 1.0):
            return None
        fault = rng.choice(SITE_FAULTS[site])
        self.note(fault)
        return fault

    def note(self, fault: Fault) -> None:
        """Count ``fault`` as injected into this agent."""
        self.injected[fault] += 1
        self.injector.counts[fault] += 1

    @property
    def persistence_faults(self) -> bool:
        """Whether a save or a display write of this agent failed or stalled this round."""
        return any(fault in PERSISTENCE_FAULTS for fault in self.injected)

    @property
    def save_faults(self) -> bool:
        """Whether a state save of this agent failed or stalled this round, or a display write
        stalled (the state save waits behind it: rows are written before the state)."""
        return any(fault in _HOLDS_SAVES for fault in self.injected)


class Injector:
    """Decides every fault of a chaos run from its seed.

    Args:
        seed: the run's seed (printed on failure; ``SAGENTS_CHAOS_SEED`` replays it).
        rate: probability that a call of a faulty agent fails.
        max_restarts: the runtime's restart intensity (doomed agents are crashed once more).
    """

    def __init__(self, seed: int, *, rate: float, max_restarts: int) -> None:
        self.seed = seed
        self.rate = rate
        self.max_restarts = max_restarts
        self.counts: Counter[Fault] = Counter()
        self._disarmed: set[Site] = set()

    def plan(self, round_: int, index: int, *, turns: int) -> Plan:
        """The fate of agent ``index`` in round ``round_``."""
        rng = random.Random(f"{self.seed}:{round_}:{index}:plan")
        roll = rng.random()
        profile = Profile.CLEAN if roll < 0.3 else Profile.DOOMED if roll < 0.4 else Profile.FAULTY
        crash_after: frozenset[int] = frozenset()
        stop_during: int | None = None
        stalled = False
        if profile is Profile.FAULTY:
            crashes = 0 if rng.random() < 0.6 else rng.randint(1, self.max_restarts)
            crash_after = frozenset(rng.sample(range(turns), min(crashes, turns)))
            stalled = rng.random() < 0.25
            if rng.random() < 0.15:
                stop_during = rng.randrange(turns)
        watched = not stalled and rng.random() < 0.3
        return Plan(
            injector=self,
            round=round_,
            index=index,
            profile=profile,
            crash_after=crash_after,
            stop_during=stop_during,
            stalled_subscriber=stalled,
            watched=watched,
        )

    def armed(self, site: Site) -> bool:
        return site not in self._disarmed

    def disarm(self, *sites: Site) -> None:
        """Stop injecting faults at ``sites`` (e.g. persistence, before the final saves)."""
        self._disarmed.update(sites)

    def rearm(self) -> None:
        self._disarmed.clear()


#: The plan of the agent whose run, tool or hook is executing (set in its start context).
CURRENT: contextvars.ContextVar[Plan] = contextvars.ContextVar("chaos_plan")


class ContextLost(Exception):
    """A run, tool or hook executed without its agent's context variables (a runtime defect)."""


class World:
    """The model, tools and middleware every agent of a chaos run shares.

    Args:
        hang: how long a hanging tool sleeps (well past the agents' ``tool_timeout``).
    """

    def __init__(self, *, hang: float) -> None:
        self.hang = hang
        self.context_lost = 0
        self.model = ScriptedChatModel(responder=self._respond, record_prompts=False)
        world = self

        async def lookup(query: str) -> str:
            """Look a fact up."""
            return await world._tool("lookup", query)

        async def compute(x: int) -> str:
            """Compute a number."""
            return await world._tool("compute", str(x))

        # Made into tools once: every agent then shares one binding of the model to them.
        self.tools: Sequence[BaseTool] = (
            StructuredTool.from_function(coroutine=lookup),
            StructuredTool.from_function(coroutine=compute),
        )
        self.middleware = ChaosMiddleware(self)

    def plan(self) -> Plan:
        plan = CURRENT.get(None)
        if plan is None:
            self.context_lost += 1
            raise ContextLost("the agent's start context did not reach this call")
        return plan

    def _respond(self, messages: list[BaseMessage]) -> Reply | Fail:
        plan = self.plan()
        rng = plan.rng("model behaviour")
        match plan.draw(Site.MODEL):
            case Fault.MODEL_ERROR:
                return Fail(
                    error=ValueError("injected: the provider refused"), text="par", after_chunks=1
                )
            case Fault.MODEL_TRANSIENT:
                return Fail(error=ConnectionError("injected: connection reset"))
            case Fault.MODEL_CLIENT_RAISES:
                raise RuntimeError("injected: a bug in the model client")
            case Fault.MODEL_BASE_EXCEPTION:
                error = rng.choice(
                    (SystemExit(2), KeyboardInterrupt(), ChaosBaseException("model"))
                )
                return Fail(error=error, text="par", after_chunks=1)
        delay = rng.choice((0.0, 0.0, 0.02, 0.3))
        if isinstance(messages[-1], HumanMessage) and rng.random() < 0.6:
            calls = [
                ToolCall(name="lookup", args={"query": f"q{rng.randrange(100)}"})
                if rng.random() < 0.5
                else ToolCall(name="compute", args={"x": rng.randrange(100)})
                for _ in range(rng.randint(1, 2))
            ]
            return Reply(text="Let me check.", tool_calls=calls, delay=delay)
        done = sum(isinstance(m, ToolMessage) for m in messages)
        return Reply(text=f"ok: {done} tool results so far", delay=delay)

    async def _tool(self, name: str, argument: str) -> str:
        plan = self.plan()
        rng = plan.rng("tool behaviour")
        fault = plan.draw(Site.TOOL)
        await asyncio.sleep(rng.choice((0.0, 0.01, 0.1)))
        match fault:
            case None:
                return f"{name}({argument}) = 42"
            case Fault.TOOL_EXCEPTION:
                raise ValueError(f"injected: {name} failed")
            case Fault.TOOL_SYSTEM_EXIT:
                raise SystemExit(3)
            case Fault.TOOL_KEYBOARD_INTERRUPT:
                raise KeyboardInterrupt
            case Fault.TOOL_GENERATOR_EXIT:
                raise GeneratorExit
            case Fault.TOOL_BASE_EXCEPTION:
                raise ChaosBaseException(f"injected: {name}")
            case Fault.TOOL_CANCELLED:
                raise asyncio.CancelledError  # by the tool itself: nobody cancelled it
            case Fault.TOOL_HANG:
                await asyncio.sleep(self.hang)
                return "too late"
        raise AssertionError(f"not a tool fault: {fault}")


class ChaosMiddleware(Middleware):
    """A middleware whose hooks raise when the agent's plan says so."""

    key = "chaos"

    def __init__(self, world: World) -> None:
        self._world = world

    async def before_model(self, state: Any) -> None:
        self._maybe_raise("before_model")

    async def after_model(self, state: Any) -> None:
        self._maybe_raise("after_model")

    def _maybe_raise(self, hook: str) -> None:
        plan = self._world.plan()
        match plan.draw(Site.MIDDLEWARE):
            case Fault.MIDDLEWARE_EXCEPTION:
                raise RuntimeError(f"injected: a bug in {hook}")
            case Fault.MIDDLEWARE_BASE_EXCEPTION:
                raise plan.rng("middleware behaviour").choice(
                    (
                        SystemExit(1),
                        KeyboardInterrupt(),
                        GeneratorExit(),
                        ChaosBaseException(hook),
                        asyncio.CancelledError(),
                    )
                )


class LoopClock:
    """The memory store's clock on the event loop's time, so that leases expire in virtual
    time as everything else does (its own clock reads the wall clock)."""

    _EPOCH = datetime(2030, 1, 1, tzinfo=UTC)

    def __init__(self) -> None:
        self._last = self._EPOCH

    def now(self) -> datetime:
        now = self._EPOCH + timedelta(seconds=asyncio.get_running_loop().time())
        if now <= self._last:  # never repeats, as the store's own clock guarantees
            now = self._last + timedelta(microseconds=1)
        self._last = now
        return now


class ChaosStore(MemoryPersistence):
    """``MemoryPersistence`` whose state saves and display appends fail or stall on demand.

    Each write consults the plan of the conversation's agent (registered with
    :meth:`register`); reads, leases and every other call behave as the memory store does (the
    leases it hands out are noted, for :meth:`unreleased_leases`).

    Args:
        stall: how long a stalled write hangs before it completes (past ``shutdown_timeout``).
    """

    def __init__(self, *, stall: float) -> None:
        super().__init__()
        self.clock = self._clock = LoopClock()
        self.stall = stall
        self._plans: dict[str, Plan] = {}
        # Per conversation, the loop time until which its writes were in trouble: the end of a
        # stall, or the moment a save failed.
        self._trouble: dict[str, float] = {}
        self._failed_in_a_row: Counter[str] = Counter()  # display appends
        self._dropped: set[str] = set()
        # Per conversation, its latest lease as handed out: scope, token, whether released.
        self._leases: dict[str, tuple[Any, int, bool]] = {}

    def register(self, conversation_id: str, plan: Plan) -> None:
        self._plans[conversation_id] = plan

    def _draw(self, conversation_id: str, site: Site) -> Fault | None:
        plan = self._plans.get(conversation_id)
        fault = None if plan is None else plan.draw(site)
        if site is Site.DISPLAY:
            if fault is Fault.DISPLAY_FAILS:
                self._failed_in_a_row[conversation_id] += 1
                if self._failed_in_a_row[conversation_id] >= _DISPLAY_ATTEMPTS:
                    self._dropped.add(conversation_id)
            else:
                self._failed_in_a_row[conversation_id] = 0
        if fault is not None:
            now = asyncio.get_running_loop().time()
            until = now + self.stall if fault in (Fault.SAVE_STALLS, Fault.DISPLAY_STALLS) else now
            self._trouble[conversation_id] = max(self._trouble.get(conversation_id, now), until)
        return fault

    def display_dropped(self, conversation_id: str) -> bool:
        """Whether display appends of the conversation failed often enough in a row for the
        recorder to drop one (as it does after three attempts)."""
        return conversation_id in self._dropped

    def troubled_since(self, conversation_id: str, moment: float) -> bool:
        """Whether a state save of the conversation failed, or one of its writes stalled (the
        state save waits behind it), at ``moment`` or later."""
        return self._trouble.get(conversation_id, -1.0) >= moment

    def unreleased_leases(self) -> list[str]:
        """The conversations whose latest lease was never released (as the memory store
        releases one: the call names its scope and its token)."""
        return [cid for cid, (_, _, released) in self._leases.items() if not released]

    async def acquire_lease(
        self, scope: Any, conversation_id: str, owner: str, ttl: float, *, create: bool = True
    ) -> Lease:
        lease = await super().acquire_lease(scope, conversation_id, owner, ttl, create=create)
        self._leases[conversation_id] = (scope, lease.token, False)
        return lease

    async def release_lease(self, scope: Any, conversation_id: str, lease: Lease) -> None:
        await super().release_lease(scope, conversation_id, lease)
        if self._leases.get(conversation_id, (None, None, None))[:2] == (scope, lease.token):
            self._leases[conversation_id] = (scope, lease.token, True)

    async def save_state(self, scope: Any, conversation_id: str, snapshot: StateSnapshot) -> bool:
        fault = self._draw(conversation_id, Site.SAVE)
        if fault is Fault.SAVE_FAILS:
            raise PersistenceFailed("injected: the database is down")
        if fault is Fault.SAVE_STALLS:
            await asyncio.sleep(self.stall)
        written = await super().save_state(scope, conversation_id, snapshot)
        if fault is Fault.SAVE_FAILS_AFTER_WRITE:
            raise PersistenceFailed("injected: the connection dropped after the commit")
        return written

    async def append_display_messages(
        self, scope: Any, conversation_id: str, messages: Sequence[Any]
    ) -> Any:
        fault = self._draw(conversation_id, Site.DISPLAY)
        if fault is Fault.DISPLAY_FAILS:
            raise PersistenceFailed("injected: the database is down")
        if fault is Fault.DISPLAY_STALLS:
            await asyncio.sleep(self.stall)
        return await super().append_display_messages(scope, conversation_id, messages)
