"""Soak: thousands of conversations cycling start → turns → inactivity → restore (issue 16).

    python -m bench.soak --agents 10000 --minutes 10 --out docs/soak/
    python -m bench.soak --minutes 2 --db sqlite          # SqlPersistence on a temporary file
    python -m bench.soak --minutes 5 --diagnose           # + objects by type (--tracemalloc 8)
    python -m bench.soak --replot docs/soak/soak-<stamp>.json   # draw a result's plot again

Not run in CI. One :class:`~sagents.Runtime`, one :class:`~sagents.SessionConfig` whose agent and
display persistence is one store, a short real-time inactivity timeout, and a scripted
zero-latency model whose every turn calls a tool (user message → tool call → tool result →
answer: four messages, two model calls). A fixed pool of driver tasks (``--concurrency``) keeps
picking conversations among ``--agents`` with a seeded RNG, never one already in flight, and
visits it the way a web request does: ``Session.ensure_running`` (which starts a new
conversation, restores an expired one from the store, or finds it running), then one to
``--turns-per-visit`` messages, each awaited until the agent is idle again, with a little think
time in between. Between visits a conversation usually outlives its inactivity timeout, so the
runtime keeps starting, restoring, running and expiring agents for the whole run.

Every ``--sample`` seconds the script records the process RSS (``/proc/self/statm``), the
interpreter's allocated memory blocks (``sys.getallocatedblocks()``: the live heap, which RSS
follows with the allocator's lag), the asyncio tasks (all of them, and the runtime's: all minus
the driver's own), the running agents (``runtime.agent_count()``), the store's size, the process
CPU time, the time spent in the cyclic collector, the event loop's lateness and the counters.
It writes ``soak-<stamp>.json`` and ``soak-<stamp>.png`` into ``--out`` and prints a summary.
After the load the agents are left to expire, and the script reports what is left (agents,
units, tasks by name). ``--diagnose`` adds object counts by type before the load, after the
warm-up and after that drain, and ``--tracemalloc N`` the allocations that grew.

Choices:

* **The store is capped, not subtracted.** Messages accumulate in the store by design, so an
  uncapped run would show RSS climbing for a reason that is not a leak. Estimating the store's
  bytes to report RSS net of it would be a guess (``sys.getsizeof`` misses allocator overhead and
  sharing); instead a conversation that has reached ``--reset-after`` turns is deleted with
  ``Session.delete`` at the end of a visit (its next visit starts it afresh), the way a user
  starts a new chat, which exercises deletion too. At 100–250 turns/s over 10,000 conversations
  a conversation is visited every minute or two, so an empty store would take most of a
  10-minute run to fill up to its cap; the store is therefore **pre-filled** before the clock
  starts: each conversation gets the number of turns drawn from the long-run distribution of
  this visit pattern (a Markov chain over 0 … reset-after − 1 stored turns), copied from a
  template conversation run through the runtime (its state rows, display rows and a released
  lease). The store's size is sampled and plotted to show that it stays level.
* **The tool is made once** (see :class:`SoakFactory`); ``--plain-tool`` measures the path where
  ``Agent`` wraps a function for every conversation.
* **No ``gc.collect()`` before samples** unless ``--gc`` is given (the summary says which): the
  RSS is what a service would see, collector and allocator behaviour included.
* **Flat** means, after the warm-up (``--warmup``, default one minute): the least-squares RSS
  slope over the second half of the rest of the run is at most ``FLAT_RSS_PERCENT_PER_HOUR`` of
  the mean RSS per hour (the slope over the whole of it is reported too: the allocator's
  settling in the first minutes weighs on it), and the runtime's task count stays bounded (its
  maximum over the last third of the run is at most 1.25× that of the first third, plus 10).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import dataclasses
import functools
import gc
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.tools import tool

from sagents import (
    Agent,
    AgentNotRunning,
    Runtime,
    Session,
    SessionConfig,
    SessionOptions,
    SingleFactoryRouter,
    Status,
    telemetry,
)
from sagents.events import StatusChanged
from sagents.execution import Reply, ScriptedChatModel, ToolCall
from sagents.persistence import MemoryPersistence, StateSnapshot
from sagents.session import FactoryConfig

__all__ = ["main", "soak"]

ROOT = Path(__file__).resolve().parent.parent
#: The RSS slope after the warm-up, in percent of the mean RSS per hour, that still counts as flat.
FLAT_RSS_PERCENT_PER_HOUR = 5.0
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TELEMETRY_ID = "bench-soak"


def rss_bytes() -> int:
    """The process's resident set size now (Linux: ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


class _MallInfo2(ctypes.Structure):
    # The layout of glibc's struct mallinfo2.
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.cache
def _mallinfo2() -> Any:
    try:
        function = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return None
    function.restype = _MallInfo2
    return function


def malloc_bytes() -> tuple[int, int]:
    """glibc malloc's bytes in use (mmapped chunks included) and free inside its heaps, summed
    over its arenas; (-1, -1) without glibc. Python's small objects live in pymalloc's own
    arenas and are not in these; larger blocks (dict tables, long lists and strings, C
    extensions' buffers) are. Free bytes that grow while those in use do not is fragmentation.
    """
    function = _mallinfo2()
    if function is None:
        return -1, -1
    info = function()
    return info.uordblks + info.hblkhd, info.fordblks


# -- the agents -------------------------------------------------------------------------------


def lookup(key: str) -> str:
    """Look a key up in the soak's pretend directory."""
    return f"value of {key}"


#: ``lookup`` as a langchain tool, made once.
LOOKUP = tool(lookup)


def respond(messages: list[BaseMessage], latency: float = 0.0) -> Reply:
    """A user message gets a ``lookup`` call; the tool's result gets a short answer.

    ``latency`` is awaited before each streamed chunk (a tool call streams in four or so).
    """
    if isinstance(messages[-1], HumanMessage):
        key = f"k{len(messages)}"
        return Reply(tool_calls=[ToolCall(name="lookup", args={"key": key})], delay=latency)
    return Reply(text=f"Found it after {len(messages)} messages.", delay=latency)


class SoakFactory:
    """Builds each conversation's agent: one shared model and tool, as a service's factory does.

    The tool is a ``BaseTool`` made once: given a plain function, ``Agent`` builds a new tool
    and pydantic schema for every conversation (about 4 ms each, which would dominate this load)
    and misses its bind cache. ``plain_tool`` measures that path instead.
    """

    def __init__(self, latency: float, plain_tool: bool) -> None:
        self.model = ScriptedChatModel(
            responder=functools.partial(respond, latency=latency), record_prompts=False
        )
        self.tool: Any = lookup if plain_tool else LOOKUP

    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        return Agent(agent_id=agent_id, model=self.model, tools=[self.tool]), SessionOptions()


# -- what is counted --------------------------------------------------------------------------


@dataclass(slots=True)
class Counters:
    """What the driver and the telemetry have seen so far (cumulative)."""

    turns: int = 0
    visits: int = 0
    fresh_starts: int = 0
    restores: int = 0
    found_running: int = 0
    resets: int = 0
    #: A visit's agent expired between ``ensure_running`` and its message (retried next visit).
    expired_under_visit: int = 0
    errors: int = 0
    stops: collections.Counter[str] = field(default_factory=collections.Counter)
    crashes: int = 0
    persistence_errors: int = 0
    error_types: collections.Counter[str] = field(default_factory=collections.Counter)
    error_samples: list[str] = field(default_factory=list)

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        self.error_types[type(exc).__name__] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(f"{type(exc).__name__}: {exc}"[:500])

    def on_telemetry(
        self, event: tuple[str, ...], measurements: Any, metadata: dict[str, Any], _: Any
    ) -> None:
        if event[-1] == "stop" and event[1] == "agent":
            self.stops[str(metadata.get("reason"))] += 1
        elif event[-1] == "crash":
            self.crashes += 1
        elif event[1] == "persistence":
            self.persistence_errors += 1


class GcPauses:
    """The cyclic collector's pauses, through ``gc.callbacks`` (they explain loop lateness)."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.longest = [0.0, 0.0, 0.0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        generation = info["generation"]
        self.collections[generation] += 1
        self.longest[generation] = max(self.longest[generation], took)
        self.seconds[generation] += took


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One measurement; ``t`` in seconds since the load started."""

    t: float
    cpu_seconds: float
    rss_bytes: int
    tasks: int
    runtime_tasks: int
    agents: int
    in_flight: int
    turns: int
    restores: int
    fresh_starts: int
    resets: int
    errors: int
    store_size: int
    store_conversations: int
    loop_lag_ms: float
    #: ``sys.getallocatedblocks()``: memory blocks the interpreter has allocated and not freed.
    #: Flat blocks under a rising RSS point at the allocator (fragmentation), not at live objects.
    allocated_blocks: int
    #: Wall seconds spent in the cyclic collector so far.
    gc_seconds: float
    #: See :func:`malloc_bytes`.
    malloc_in_use_bytes: int = -1  # -1: not measured (no glibc, or an older result file)
    malloc_free_bytes: int = -1


class TurnFailed(Exception):
    """A turn ended in another status than idle, or its subscription ended first."""


async def _settled(events: AsyncIterator[Any]) -> Status | None:
    """The status a run ends in (after it was seen running); None if the events end first."""
    running = False
    async for event in events:
        if isinstance(event, StatusChanged):
            if event.status is Status.RUNNING:
                running = True
            elif running:
                return event.status
    return None


def stored_turns_distribution(reset_after: int, turns_per_visit: int) -> list[float]:
    """The long-run probability that a conversation holds 0 … ``reset_after - 1`` stored turns
    between visits, when a visit adds 1 … ``turns_per_visit`` turns (uniformly) and one that
    reaches ``reset_after`` is reset to none."""
    p = [1.0] + [0.0] * (reset_after - 1)
    for _ in range(2_000):
        q = [0.0] * reset_after
        for length, weight in enumerate(p):
            for added in range(1, turns_per_visit + 1):
                after = length + added
                q[0 if after >= reset_after else after] += weight / turns_per_visit
        p = [(a + b) / 2 for a, b in zip(p, q, strict=True)]  # damped: no periodic chain
    return p


# -- the driver -------------------------------------------------------------------------------


class Soak:
    """The load, the samples and the counters of one run."""

    def __init__(self, args: argparse.Namespace, runtime: Runtime, store: Any) -> None:
        self.args = args
        self.runtime = runtime
        self.store = store
        self.config = SessionConfig(
            factory_router=SingleFactoryRouter(SoakFactory(args.latency, args.plain_tool)),
            agent_persistence=store,
            display_message_persistence=store,
            inactivity_timeout=args.inactivity,
        )
        self.rng = random.Random(args.seed)
        self.ids = [f"c{i:05d}" for i in range(args.agents)]
        self.lengths = [0] * args.agents  # turns stored per conversation since its last reset
        self.in_flight: set[int] = set()
        self.counters = Counters()
        self.gc_pauses = GcPauses()
        self.samples: list[Sample] = []
        self.workers: set[asyncio.Task[None]] = set()
        self.started = 0.0
        self.cpu_started = 0.0
        self.deadline = 0.0

    def _store_size(self) -> int:
        """Stored messages plus display rows (memory), or the database files' bytes (SQLite)."""
        if isinstance(self.store, MemoryPersistence):
            records = self.store._records.values()
            return sum(len(r.messages) + len(r.display) for r in records)
        path = Path(self.args.db_path)
        return sum(
            p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists()
        )  # the -wal file holds what is not checkpointed yet

    def sample(self, lag: float = 0.0) -> Sample:
        if self.args.gc:
            gc.collect()
        rss = rss_bytes()
        in_use, free = malloc_bytes()
        tasks = asyncio.all_tasks()
        ours = len(self.workers & tasks) + 1  # the workers and the task sampling
        c = self.counters
        sample = Sample(
            t=round(time.monotonic() - self.started, 3),
            cpu_seconds=round(time.process_time() - self.cpu_started, 3),
            rss_bytes=rss,
            tasks=len(tasks),
            runtime_tasks=len(tasks) - ours,
            agents=self.runtime.agent_count(),
            in_flight=len(self.in_flight),
            turns=c.turns,
            restores=c.restores,
            fresh_starts=c.fresh_starts,
            resets=c.resets,
            errors=c.errors,
            store_size=self._store_size(),
            store_conversations=(
                len(self.store._records) if isinstance(self.store, MemoryPersistence) else -1
            ),
            loop_lag_ms=round(lag * 1e3, 2),
            allocated_blocks=sys.getallocatedblocks(),
            gc_seconds=round(sum(self.gc_pauses.seconds), 3),
            malloc_in_use_bytes=in_use,
            malloc_free_bytes=free,
        )
        self.samples.append(sample)
        return sample

    async def prefill(self) -> int:
        """Store every conversation's long-run share of turns (see the module docstring); return
        how many turns were stored."""
        args, store = self.args, self.store
        most = args.reset_after - 1
        if most < 1:
            return 0
        template = "soak-template"
        session = await Session.ensure_running(self.runtime, self.config, template)
        async with session.events as events:
            for turn in range(most):
                await session.handle.add_message(f"message {turn}")
                if await _settled(events) is not Status.IDLE:
                    raise TurnFailed("the template conversation failed")
        await Session.stop(self.runtime, self.config, template)
        stored = await store.load_state(None, template)
        rows = await store.list_display_messages(None, template, limit=10_000)
        await store.delete_conversation(None, template)
        if stored is None or len(stored.state.messages) % most or len(rows) % most:
            raise RuntimeError("the template conversation does not hold whole turns")
        messages, per_turn = stored.state.messages, len(rows) // most
        weights = stored_turns_distribution(args.reset_after, args.turns_per_visit)
        lengths = self.rng.choices(range(args.reset_after), weights, k=len(self.ids))

        async def fill(index: int) -> None:
            length = lengths[index]
            if not length:
                return
            conversation_id = self.ids[index]
            state = stored.state.replace(messages=messages[: length * len(messages) // most])
            await store.save_state(
                None, conversation_id, StateSnapshot(state=state, version=stored.version)
            )
            copies = [
                dataclasses.replace(
                    row, conversation_id=conversation_id, id=None, sequence=None, created_at=None
                )
                for row in rows[: length * per_turn]
            ]
            await store.append_display_messages(None, conversation_id, copies)
            # A conversation that has run holds a released lease row, as if its agent had run.
            lease = await store.acquire_lease(None, conversation_id, "soak-prefill", 60.0)
            await store.release_lease(None, conversation_id, lease)
            self.lengths[index] = length

        for start in range(0, len(self.ids), 100):
            await asyncio.gather(*(fill(i) for i in range(start, min(start + 100, len(self.ids)))))
        return sum(lengths)

    def _pick(self) -> int:
        while True:
            index = self.rng.randrange(len(self.ids))
            if index not in self.in_flight:
                return index

    async def worker(self) -> None:
        while time.monotonic() < self.deadline:
            index = self._pick()
            self.in_flight.add(index)
            try:
                await self.visit(index)
            except Exception as exc:
                self.counters.error(exc)
            finally:
                self.in_flight.discard(index)

    async def visit(self, index: int) -> None:
        """One request's worth of work on conversation ``index``."""
        args, c = self.args, self.counters
        conversation_id = self.ids[index]
        session = await Session.ensure_running(self.runtime, self.config, conversation_id)
        c.visits += 1
        if session.restored:
            c.restores += 1
        elif session.started:
            c.fresh_starts += 1
        else:
            c.found_running += 1
        async with session.events as events:
            for turn in range(self.rng.randint(1, args.turns_per_visit)):
                if turn:
                    await asyncio.sleep(self.rng.uniform(0.0, args.think))
                try:
                    await session.handle.add_message(f"message {turn}")
                except AgentNotRunning:
                    c.expired_under_visit += 1
                    return
                async with asyncio.timeout(args.turn_timeout):
                    status = await _settled(events)
                if status is not Status.IDLE:
                    raise TurnFailed(f"{conversation_id}: the turn ended with {status}")
                c.turns += 1
                self.lengths[index] += 1
        if self.lengths[index] >= args.reset_after:
            await Session.delete(self.runtime, self.config, conversation_id)
            self.lengths[index] = 0
            c.resets += 1

    async def run(self) -> None:
        """The load for ``--minutes``, sampled every ``--sample`` seconds."""
        args = self.args
        self.started = time.monotonic()
        self.cpu_started = time.process_time()
        self.deadline = self.started + args.minutes * 60
        self.sample()
        async with asyncio.TaskGroup() as group:
            for _ in range(args.concurrency):
                self.workers.add(group.create_task(self.worker()))
            planned = self.started
            printed = self.started
            while True:
                planned += args.sample
                if planned > self.deadline:
                    break
                await asyncio.sleep(max(0.0, planned - time.monotonic()))
                sample = self.sample(lag=max(0.0, time.monotonic() - planned))
                if time.monotonic() - printed >= 60:
                    printed = time.monotonic()
                    print(_progress(sample), flush=True)
        self.workers.clear()


def _progress(s: Sample) -> str:
    return (
        f"[{s.t / 60:5.1f} min] RSS {s.rss_bytes / 2**20:7.1f} MiB, tasks {s.tasks:4d} "
        f"(runtime {s.runtime_tasks}), agents {s.agents:5d}, turns {s.turns:,}, "
        f"restores {s.restores:,}, errors {s.errors}"
    )


# -- summary ----------------------------------------------------------------------------------


def _slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 2:
        return 0.0
    xs, ys = zip(*points, strict=True)
    return statistics.linear_regression(xs, ys).slope * 3600


def _median_rss(samples: Iterable[Sample]) -> float | None:
    values = [s.rss_bytes for s in samples]
    return statistics.median(values) / 2**20 if values else None


def summarize(soak: Soak, drained: dict[str, Any]) -> dict[str, Any]:
    args, c, samples = soak.args, soak.counters, soak.samples
    end = samples[-1].t
    warmup = min(args.warmup, end / 2)
    steady = [s for s in samples if s.t >= warmup]
    rss_slope = _slope_per_hour([(s.t, s.rss_bytes / 2**20) for s in steady])
    rss_mean = statistics.fmean(s.rss_bytes for s in steady) / 2**20
    third = (end - warmup) / 3
    first = [s.runtime_tasks for s in steady if s.t < warmup + third] or [0]
    last = [s.runtime_tasks for s in steady if s.t >= end - third] or [0]
    tasks_bounded = max(last) <= 1.25 * max(first) + 10

    def cpu_ms_per_turn(part: list[Sample]) -> float | None:
        if len(part) < 2 or part[-1].turns == part[0].turns:
            return None
        cpu = part[-1].cpu_seconds - part[0].cpu_seconds
        return 1e3 * cpu / (part[-1].turns - part[0].turns)

    head = [s for s in steady if s.t <= warmup + third]
    tail = [s for s in steady if s.t >= end - third]
    rss_percent = 100 * rss_slope / rss_mean
    # Allocators settle: RSS follows the peak of the live heap and steps up during the first
    # minutes before it levels off, which a fit over the whole window reads as growth. Growth
    # that continues shows in the second half as well; the verdict reads that half.
    late = [s for s in steady if s.t >= (warmup + end) / 2]
    late_slope = _slope_per_hour([(s.t, s.rss_bytes / 2**20) for s in late])
    late_percent = 100 * late_slope / rss_mean
    blocks_mean = statistics.fmean(s.allocated_blocks for s in steady)

    def gc_share(part: list[Sample]) -> float | None:
        if len(part) < 2 or part[-1].t == part[0].t:
            return None
        return (part[-1].gc_seconds - part[0].gc_seconds) / (part[-1].t - part[0].t)

    return {
        "seconds": end,
        "warmup_seconds": warmup,
        "gc_collect_before_samples": args.gc,
        "rss_mib_minute_1": _median_rss(s for s in samples if 60 <= s.t < 120),
        "rss_mib_last_minute": _median_rss(s for s in samples if s.t >= end - 60),
        "rss_mib_mean_after_warmup": rss_mean,
        "rss_mib_max": max(s.rss_bytes for s in samples) / 2**20,
        "rss_slope_mib_per_hour": rss_slope,
        "rss_slope_percent_per_hour": rss_percent,
        "rss_slope_second_half_mib_per_hour": late_slope,
        "rss_slope_second_half_percent_per_hour": late_percent,
        "allocated_blocks_first_after_warmup": steady[0].allocated_blocks,
        "allocated_blocks_last": samples[-1].allocated_blocks,
        "allocated_blocks_slope_percent_per_hour": 100
        * _slope_per_hour([(s.t, s.allocated_blocks) for s in steady])
        / blocks_mean,
        "allocated_blocks_slope_second_half_percent_per_hour": 100
        * _slope_per_hour([(s.t, s.allocated_blocks) for s in late])
        / blocks_mean,
        "malloc_mib_in_use_first_after_warmup": steady[0].malloc_in_use_bytes / 2**20,
        "malloc_mib_in_use_last": samples[-1].malloc_in_use_bytes / 2**20,
        "malloc_mib_free_first_after_warmup": steady[0].malloc_free_bytes / 2**20,
        "malloc_mib_free_last": samples[-1].malloc_free_bytes / 2**20,
        "tasks_min_after_warmup": min(s.tasks for s in steady),
        "tasks_max_after_warmup": max(s.tasks for s in steady),
        "runtime_tasks_min_after_warmup": min(s.runtime_tasks for s in steady),
        "runtime_tasks_max_after_warmup": max(s.runtime_tasks for s in steady),
        "runtime_tasks_max_first_third": max(first),
        "runtime_tasks_max_last_third": max(last),
        "runtime_tasks_slope_per_hour": _slope_per_hour([(s.t, s.runtime_tasks) for s in steady]),
        "agents_min_after_warmup": min(s.agents for s in steady),
        "agents_max_after_warmup": max(s.agents for s in steady),
        "store_size_first_after_warmup": steady[0].store_size,
        "store_size_last": samples[-1].store_size,
        "store_conversations_first_after_warmup": steady[0].store_conversations,
        "store_conversations_last": samples[-1].store_conversations,
        "loop_lag_ms_max": max(s.loop_lag_ms for s in samples),
        "gc_collections_by_generation": soak.gc_pauses.collections,
        "gc_longest_pause_s_by_generation": soak.gc_pauses.longest,
        "gc_seconds_by_generation": soak.gc_pauses.seconds,
        "turns": c.turns,
        "turns_per_second": c.turns / end if end else 0.0,
        "cpu_ms_per_turn_first_third": cpu_ms_per_turn(head),
        "cpu_ms_per_turn_last_third": cpu_ms_per_turn(tail),
        "cpu_share": samples[-1].cpu_seconds / end if end else 0.0,
        "visits": c.visits,
        "fresh_starts": c.fresh_starts,
        "restores": c.restores,
        "found_running": c.found_running,
        "resets": c.resets,
        "expired_under_visit": c.expired_under_visit,
        "errors": c.errors,
        "error_types": dict(c.error_types),
        "agent_stops_by_reason": dict(c.stops),
        "agent_crashes": c.crashes,
        "persistence_errors": c.persistence_errors,
        "after_drain": drained,
        "gc_share_of_wall_first_third": gc_share(head),
        "gc_share_of_wall_last_third": gc_share(tail),
        "flat_rss": late_percent <= FLAT_RSS_PERCENT_PER_HOUR,
        "bounded_tasks": tasks_bounded,
    }


def render_summary(summary: dict[str, Any], args: argparse.Namespace) -> str:
    s = summary
    d = s["after_drain"]
    store_unit = "stored messages + display rows" if args.db == "memory" else "database bytes"
    lines = [
        f"soak: {args.agents:,} conversations, {args.concurrency} in flight, {args.db} store, "
        f"inactivity {args.inactivity:g} s, {s['seconds'] / 60:.1f} min "
        f"(warm-up {s['warmup_seconds']:.0f} s)",
        "RSS sampled "
        + ("after gc.collect()" if s["gc_collect_before_samples"] else "without gc.collect()")
        + (f"; tracemalloc on ({args.tracemalloc} frames)" if args.tracemalloc else ""),
        f"RSS minute 1:         {_mib(s['rss_mib_minute_1'])}",
        f"RSS last minute:      {_mib(s['rss_mib_last_minute'])} (max {s['rss_mib_max']:,.1f})",
        f"RSS slope:            {s['rss_slope_mib_per_hour']:+,.1f} MiB/h after the warm-up "
        f"({s['rss_slope_percent_per_hour']:+.2f}% of {s['rss_mib_mean_after_warmup']:,.1f} MiB "
        f"per hour); over its second half {s['rss_slope_second_half_mib_per_hour']:+,.1f} MiB/h "
        f"({s['rss_slope_second_half_percent_per_hour']:+.2f}%/h; flat: <= "
        f"{FLAT_RSS_PERCENT_PER_HOUR:g}%) -> " + ("FLAT" if s["flat_rss"] else "GROWING"),
        f"allocated blocks:     {s['allocated_blocks_first_after_warmup']:,} after warm-up, "
        f"{s['allocated_blocks_last']:,} at the end (slope "
        f"{s['allocated_blocks_slope_percent_per_hour']:+.2f}%/h, second half "
        f"{s['allocated_blocks_slope_second_half_percent_per_hour']:+.2f}%/h)",
        f"glibc malloc:         in use {s['malloc_mib_in_use_first_after_warmup']:,.1f} → "
        f"{s['malloc_mib_in_use_last']:,.1f} MiB, free in its heaps "
        f"{s['malloc_mib_free_first_after_warmup']:,.1f} → {s['malloc_mib_free_last']:,.1f} MiB "
        "(after warm-up → end)",
        f"tasks after warm-up:  {s['tasks_min_after_warmup']}–{s['tasks_max_after_warmup']} "
        f"(runtime's: {s['runtime_tasks_min_after_warmup']}–"
        f"{s['runtime_tasks_max_after_warmup']}; max first third "
        f"{s['runtime_tasks_max_first_third']}, last third "
        f"{s['runtime_tasks_max_last_third']}) -> "
        + ("BOUNDED" if s["bounded_tasks"] else "GROWING"),
        f"running agents:       {s['agents_min_after_warmup']:,}–{s['agents_max_after_warmup']:,}",
        f"store ({store_unit}): pre-filled with {s['prefilled_turns']:,} turns; "
        f"{s['store_size_first_after_warmup']:,} after warm-up, "
        f"{s['store_size_last']:,} at the end"
        + (
            f" (conversations stored: {s['store_conversations_first_after_warmup']:,} after "
            f"warm-up, {s['store_conversations_last']:,} at the end)"
            if args.db == "memory"
            else ""
        ),
        f"turns:                {s['turns']:,} ({s['turns_per_second']:,.0f}/s), "
        f"{s['visits']:,} visits; CPU {_ms(s['cpu_ms_per_turn_first_third'])} per turn in the "
        f"first third, {_ms(s['cpu_ms_per_turn_last_third'])} in the last "
        f"(process CPU {100 * s['cpu_share']:.0f}% of one core)",
        f"starts:               {s['restores']:,} restores, {s['fresh_starts']:,} fresh, "
        f"{s['found_running']:,} found running, {s['resets']:,} conversations reset",
        "agent stops:          "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(s["agent_stops_by_reason"].items())),
        f"errors:               {s['errors']} {s['error_types'] or ''}; crashes "
        f"{s['agent_crashes']}, persistence errors {s['persistence_errors']}, "
        f"expired under a visit {s['expired_under_visit']}",
        f"event loop lateness:  max {s['loop_lag_ms_max']:,.0f} ms",
        f"cyclic GC:            {_share(s['gc_share_of_wall_first_third'])} of the wall time in "
        f"the first third, {_share(s['gc_share_of_wall_last_third'])} in the last; "
        + ", ".join(
            f"gen {g}: {n:,} in {t:.1f} s (longest {1e3 * m:,.0f} ms)"
            for g, (n, t, m) in enumerate(
                zip(
                    s["gc_collections_by_generation"],
                    s["gc_seconds_by_generation"],
                    s["gc_longest_pause_s_by_generation"],
                    strict=True,
                )
            )
        ),
        f"after drain ({d['seconds']:.1f} s): {d['agents']} agents, {d['runtime_tasks']} runtime "
        f"tasks ({', '.join(d['runtime_task_names'])}), {d['units']} units, "
        f"RSS {d['rss_mib']:,.1f} MiB ({d['rss_mib_after_gc']:,.1f} after gc.collect())",
    ]
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} ms"


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f} MiB"


# -- plot -------------------------------------------------------------------------------------


def plot(
    samples: list[Sample], args: argparse.Namespace, summary: dict[str, Any], path: Path
) -> None:
    """RSS; allocated blocks and the store's size; tasks and running agents; turns/s,
    restores/s and CPU per turn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.t / 60 for s in samples]
    warmup = summary["warmup_seconds"] / 60
    fig, (ax_rss, ax_heap, ax_tasks, ax_rate) = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    title = (
        f"Soak: {args.agents:,} conversations ({args.db} store, inactivity {args.inactivity:g} s, "
        f"{args.concurrency} in flight, {summary['seconds'] / 60:.0f} min)\n"
        f"RSS slope after the warm-up {summary['rss_slope_mib_per_hour']:+,.1f} MiB/h "
        f"({summary['rss_slope_percent_per_hour']:+.1f}%/h), over its second half "
        f"{summary['rss_slope_second_half_mib_per_hour']:+,.1f} MiB/h "
        f"({summary['rss_slope_second_half_percent_per_hour']:+.1f}%/h)\n"
        f"runtime tasks {summary['runtime_tasks_min_after_warmup']}–"
        f"{summary['runtime_tasks_max_after_warmup']} after the warm-up; {summary['turns']:,} "
        f"turns, {summary['restores']:,} restores, {summary['errors']} errors"
    )
    fig.suptitle(title, fontsize=10)
    for ax in (ax_rss, ax_heap, ax_tasks, ax_rate):
        ax.axvspan(0, warmup, color="#eee", label="_warm-up")
        ax.grid(alpha=0.3)
    ax_rss.plot(minutes, [s.rss_bytes / 2**20 for s in samples], color="#26a", label="RSS")
    steady = [s for s in samples if s.t >= summary["warmup_seconds"]]
    if len(steady) > 1:
        fit = statistics.linear_regression(
            [s.t for s in steady], [s.rss_bytes / 2**20 for s in steady]
        )
        ends = (steady[0].t, steady[-1].t)
        ax_rss.plot(
            [t / 60 for t in ends],
            [fit.intercept + fit.slope * t for t in ends],
            "--",
            color="#d62",
            label="fit after warm-up",
        )
    if samples[0].malloc_in_use_bytes >= 0:
        ax_rss.plot(
            minutes,
            [s.malloc_in_use_bytes / 2**20 for s in samples],
            color="#2a2",
            lw=0.8,
            label="glibc malloc: in use",
        )
        ax_rss.plot(
            minutes,
            [s.malloc_free_bytes / 2**20 for s in samples],
            color="#a2a",
            lw=0.8,
            label="glibc malloc: free in its heaps",
        )
    ax_rss.set_ylabel("MiB")
    ax_rss.set_ylim(bottom=0)
    ax_rss.legend(loc="lower right", fontsize=8)
    ax_heap.plot(
        minutes,
        [s.allocated_blocks / 1e6 for s in samples],
        color="#26a",
        label="allocated blocks (sys.getallocatedblocks)",
    )
    ax_heap.set_ylabel("million blocks")
    ax_heap.set_ylim(bottom=0)
    store = ax_heap.twinx()
    store.plot(minutes, [s.store_size for s in samples], color="#999", lw=0.8, label="store")
    store.set_ylabel("stored messages + display rows" if args.db == "memory" else "db bytes")
    store.set_ylim(bottom=0)
    lines = ax_heap.get_legend_handles_labels()
    more = store.get_legend_handles_labels()
    ax_heap.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=8)
    ax_tasks.plot(minutes, [s.tasks for s in samples], label="asyncio tasks (all)")
    ax_tasks.plot(minutes, [s.runtime_tasks for s in samples], label="runtime's tasks")
    ax_tasks.plot(minutes, [s.agents for s in samples], label="running agents")
    ax_tasks.set_ylabel("count")
    ax_tasks.set_ylim(bottom=0)
    ax_tasks.legend(loc="lower right", fontsize=8)
    pairs = list(itertools.pairwise(samples))
    mids = [(a.t + b.t) / 120 for a, b in pairs]
    ax_rate.plot(mids, [(b.turns - a.turns) / (b.t - a.t) for a, b in pairs], label="turns/s")
    ax_rate.plot(
        mids, [(b.restores - a.restores) / (b.t - a.t) for a, b in pairs], label="restores/s"
    )
    ax_rate.set_ylabel("per second")
    ax_rate.set_xlabel("minutes")
    ax_rate.set_ylim(bottom=0)
    cpu = ax_rate.twinx()
    per_turn = [(m, a, b) for m, (a, b) in zip(mids, pairs, strict=True) if b.turns > a.turns]
    cpu.plot(
        [m for m, _, _ in per_turn],
        [1e3 * (b.cpu_seconds - a.cpu_seconds) / (b.turns - a.turns) for _, a, b in per_turn],
        color="#999",
        lw=0.8,
        label="process CPU ms per turn",
    )
    cpu.set_ylabel("CPU ms per turn")
    cpu.set_ylim(bottom=0)
    lines = ax_rate.get_legend_handles_labels()
    more = cpu.get_legend_handles_labels()
    ax_rate.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- diagnosis --------------------------------------------------------------------------------


def _objects_by_type() -> collections.Counter[str]:
    gc.collect()
    return collections.Counter(
        f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()
    )


class Diagnosis:
    """With ``--diagnose``: what the load left behind.

    Objects are counted by type (after ``gc.collect()``, about a second at 10,000
    conversations) before the load, at the end of the warm-up and after the drain. With
    ``--tracemalloc N`` (N frames; it slows the load many times over), tracemalloc runs from
    before the store is pre-filled, and its snapshot at the end of the warm-up is compared with
    the one after the drain, so the store's churn nets out and what remains is what the steady
    state accumulated and still holds with no agent running.
    """

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self.types: list[collections.Counter[str]] = []
        self.snapshots: list[tracemalloc.Snapshot] = []

    def trace(self) -> None:
        """Before the store is pre-filled."""
        if self.frames:
            tracemalloc.start(self.frames)

    def checkpoint(self) -> None:
        """Before the load, at the end of the warm-up, after the drain."""
        if self.frames and self.types:
            self.snapshots.append(tracemalloc.take_snapshot())
        self.types.append(_objects_by_type())

    def finish(self) -> dict[str, Any]:
        self.checkpoint()
        tracemalloc.stop()
        if len(self.types) < 3:
            return {}
        before, warm, after = self.types

        def grown(since: collections.Counter[str]) -> list[tuple[str, int]]:
            change = {k: after[k] - since.get(k, 0) for k in after | since}
            return sorted(change.items(), key=lambda kv: kv[1], reverse=True)[:25]

        top = []
        if len(self.snapshots) == 2:
            filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
            first, last = (snapshot.filter_traces(filters) for snapshot in self.snapshots)
            growth = sorted(last.compare_to(first, "traceback"), key=lambda st: -st.size_diff)
            for stat in growth[:20]:
                frames = [f"{f.filename}:{f.lineno}" for f in stat.traceback[-10:]]
                top.append(
                    {"size_diff": stat.size_diff, "count_diff": stat.count_diff, "frames": frames}
                )
        return {
            "objects_total": {
                "before": before.total(),
                "warm": warm.total(),
                "after": after.total(),
            },
            "objects_grown_since_load_start": grown(before),
            "objects_grown_since_warmup": grown(warm),
            "tracemalloc_growth_since_warmup": top,
        }


# -- main -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _store(args: argparse.Namespace) -> AsyncIterator[Any]:
    if args.db == "memory":
        yield MemoryPersistence()
        return
    from sagents.persistence.sql import SqlPersistence, sqlite_url

    with tempfile.TemporaryDirectory(prefix="sagents-soak-") as folder:
        args.db_path = str(Path(folder) / "soak.db")
        async with SqlPersistence(sqlite_url(args.db_path), create_tables=True) as store:
            yield store


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak; return everything the JSON file holds."""
    from bench._report import machine_info

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    diagnosis = Diagnosis(args.tracemalloc)
    async with _store(args) as store, Runtime() as runtime:
        runner = Soak(args, runtime, store)
        telemetry.attach_many(
            _TELEMETRY_ID,
            [
                ("sagents", "agent", "stop"),
                ("sagents", "agent", "crash"),
                ("sagents", "persistence", "error"),
            ],
            runner.counters.on_telemetry,
        )
        try:
            if args.diagnose:
                diagnosis.trace()
            prefilled = await runner.prefill()
            print(f"store pre-filled with {prefilled:,} turns", flush=True)
            if args.diagnose:
                diagnosis.checkpoint()
                warmup = asyncio.get_running_loop().call_later(args.warmup, diagnosis.checkpoint)
            gc.callbacks.append(runner.gc_pauses.callback)
            try:
                await runner.run()
            finally:
                gc.callbacks.remove(runner.gc_pauses.callback)
            drained = await _drain(runner)
            diagnosed = diagnosis.finish() if args.diagnose else {}
            if args.diagnose:
                warmup.cancel()
        finally:
            telemetry.detach(_TELEMETRY_ID)
    summary = summarize(runner, drained)
    summary["prefilled_turns"] = prefilled
    return {
        "stamp": stamp,
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": machine_info(),
        "summary": summary,
        "error_samples": runner.counters.error_samples,
        "diagnosis": diagnosed,
        "samples": [asdict(s) for s in runner.samples],
    }


async def _drain(runner: Soak) -> dict[str, Any]:
    """Let every agent expire by inactivity; report what is left."""
    runtime = runner.runtime
    started = time.monotonic()
    give_up = started + runner.args.inactivity + 30
    while runtime.agent_count() and time.monotonic() < give_up:  # noqa: ASYNC110 - measuring
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)  # the last saves and stops finish
    rss = rss_bytes()
    gc.collect()
    left = asyncio.all_tasks() - {asyncio.current_task()}
    return {
        "seconds": time.monotonic() - started,
        "agents": runtime.agent_count(),
        "runtime_tasks": len(left),
        "runtime_task_names": sorted(task.get_name() for task in left),
        "units": len(runtime._units),
        "rss_mib": rss / 2**20,
        "rss_mib_after_gc": rss_bytes() / 2**20,
    }


def print_diagnosis(diagnosis: dict[str, Any]) -> None:
    totals = diagnosis["objects_total"]
    print(
        f"objects tracked by the GC: {totals['before']:,} before the load, {totals['warm']:,} "
        f"after the warm-up, {totals['after']:,} after the drain"
    )
    for key in ("objects_grown_since_load_start", "objects_grown_since_warmup"):
        print(key.replace("_", " ") + ":")
        for name, count in diagnosis[key][:12]:
            print(f"  {count:+9,}  {name}")
    if diagnosis["tracemalloc_growth_since_warmup"]:
        print("tracemalloc, largest growth from the end of the warm-up to after the drain:")
    for stat in diagnosis["tracemalloc_growth_since_warmup"][:10]:
        print(f"  {stat['size_diff'] / 1024:+10,.0f} KiB {stat['count_diff']:+8,} blocks")
        for frame in stat["frames"][-6:]:
            print(f"      {frame}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--agents", type=int, default=10_000, help="conversations")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "soak")
    parser.add_argument("--db", choices=["memory", "sqlite"], default="memory")
    parser.add_argument("--concurrency", type=int, default=200, help="conversations in flight")
    parser.add_argument("--inactivity", type=float, default=2.0, help="inactivity timeout (s)")
    parser.add_argument("--turns-per-visit", type=int, default=3, help="at most, per visit")
    parser.add_argument("--latency", type=float, default=0.0, help="s per streamed chunk")
    parser.add_argument("--think", type=float, default=0.2, help="max s between a visit's turns")
    parser.add_argument("--reset-after", type=int, default=4, help="turns before a reset")
    parser.add_argument("--turn-timeout", type=float, default=60.0, help="s; then an error")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds left out of fits")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--plain-tool", action="store_true", help="pass the tool as a function (wrapped per agent)"
    )
    parser.add_argument("--gc", action="store_true", help="gc.collect() before each sample")
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="objects by type before the load, after the warm-up and after the drain",
    )
    parser.add_argument(
        "--replot",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="only draw the plot of these result files again",
    )
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="with --diagnose: tracemalloc growth by traceback (slows the load many times)",
    )
    args = parser.parse_args(argv)
    if args.agents <= args.concurrency:
        parser.error("--agents must be larger than --concurrency")
    if args.tracemalloc and not args.diagnose:
        parser.error("--tracemalloc goes with --diagnose")
    args.db_path = None
    return args


def replot(data: Path) -> Path:
    """Draw the plot of a result file again (``--replot soak-<stamp>.json``); return its path."""
    result = json.loads(data.read_text())
    args = argparse.Namespace(**result["args"])
    samples = [Sample(**s) for s in result["samples"]]
    picture = data.with_suffix(".png")
    plot(samples, args, result["summary"], picture)
    return picture


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.replot:
        for data in args.replot:
            print(f"wrote {replot(data)}")
        return
    result = asyncio.run(soak(args))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = out / f"soak-{result['stamp']}.json"
    data.write_text(json.dumps(result, indent=1) + "\n")
    picture = out / f"soak-{result['stamp']}.png"
    samples = [Sample(**s) for s in result["samples"]]
    plot(samples, args, result["summary"], picture)
    print(render_summary(result["summary"], args))
    for line in result["error_samples"][:5]:
        print(f"  error: {line}")
    if result["diagnosis"]:
        print_diagnosis(result["diagnosis"])
    print(f"wrote {data} and {picture}")


if __name__ == "__main__":
    main()
