"""W6 lifecycle scale: start N idle agent servers, then let them all expire by inactivity.

Measured: agent configurations built per second (an ``Agent`` per conversation, as a factory
builds them), servers started per second, RSS per agent (configuration and server separately),
then, after moving the loop's clock past the inactivity timeout (:mod:`bench._timeloop`),
shutdowns per second, and what is left: RSS, live objects and tasks compared with before.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from bench._measure import GcTimer, settle, timed
from bench._model import echo, make_model
from bench._timeloop import AdvanceableLoop

__all__ = ["LOOP_FACTORY", "run"]

LOOP_FACTORY = AdvanceableLoop
_TIMEOUT = 3600.0
_GONE_WITHIN = 600.0  # seconds allowed for every task of the expired agents to end


async def run(system_name: str, params: dict[str, Any]) -> dict[str, Any]:
    from sagents import Agent, Runtime, State, telemetry

    if not system_name.startswith("sagents"):
        raise ValueError("W6 measures agent servers: sagents only")
    n = params["agents"]
    loop = asyncio.get_running_loop()
    if not isinstance(loop, AdvanceableLoop):
        raise RuntimeError("W6 needs the AdvanceableLoop (run it through bench._worker)")
    model = make_model()
    async with Runtime() as runtime:
        warm = await runtime.start_agent(Agent(agent_id="warm", model=model, tools=[echo]))
        await warm.stop()
        if params.get("gc") == "threshold":
            # Young collections 140× rarer: fewer full walks of a heap that only grows here.
            gc.set_threshold(100_000, 20, 100)
        before = settle()
        objects_before = len(gc.get_objects())
        tasks_before = len(asyncio.all_tasks())
        with timed() as build:
            agents = [Agent(agent_id=f"a{i}", model=model, tools=[echo]) for i in range(n)]
        built = settle()
        with GcTimer() as gc_timer, timed() as start:
            for agent in agents:
                await runtime.start_agent(agent, State(), inactivity_timeout=_TIMEOUT)
        started = settle()
        objects_per_agent = (len(gc.get_objects()) - objects_before) / n
        if runtime.agent_count() != n:
            raise RuntimeError(f"{runtime.agent_count()} agents running, expected {n}")
        tasks_running = len(asyncio.all_tasks()) - tasks_before
        del agents
        stopped = 0
        all_stopped = asyncio.Event()

        def on_stop(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
            nonlocal stopped
            stopped += 1
            if stopped == n:
                all_stopped.set()

        telemetry.attach("bench-w6", ("sagents", "agent", "stop"), on_stop)
        try:
            loop.advance(_TIMEOUT + 1)
            expire_started = time.perf_counter()
            with timed() as expire:
                await all_stopped.wait()
                # Gone means gone: every unit's supervisor task has ended too.
                deadline = expire_started + _GONE_WITHIN
                while (  # noqa: ASYNC110 - nothing signals "every task has ended"
                    len(asyncio.all_tasks()) > tasks_before and time.perf_counter() < deadline
                ):
                    await asyncio.sleep(0.01)
        finally:
            telemetry.detach("bench-w6")
        gone = time.perf_counter() - expire_started
        after = settle()
        return {
            "agents": n,
            "agent_builds_per_second": n / build.wall,
            "starts_per_second": n / start.wall,
            "start_us": start.wall / n * 1e6,
            "start_gc_seconds": gc_timer.seconds,
            "config_bytes_per_agent": (built - before) / n,
            "server_bytes_per_agent": (started - built) / n,
            "rss_bytes_per_agent": (started - before) / n,
            "tasks_per_agent": tasks_running / n,
            "gc_objects_per_agent": objects_per_agent,
            "expiries_per_second": n / expire.wall,
            "all_gone_seconds": gone,
            "rss_growth_after_expiry_bytes": after - before,
            "objects_left": len(gc.get_objects()) - objects_before,
            "tasks_left": len(asyncio.all_tasks()) - tasks_before,
            "peak_rss_bytes": started,
        }
