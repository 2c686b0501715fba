"""W4 concurrency: C concurrent conversations × T turns with a model that awaits 10 ms per call.

The ideal wall time is ``T × 2 calls × latency`` (0.1 s for 5 turns at 10 ms): everything above
it is CPU the system spends per turn, serialised on one core. The cyclic garbage collector's
share is measured with ``gc.callbacks`` (collector on, as deployed).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from bench._measure import GcTimer, summary, timed
from bench._model import make_model
from bench._systems import open_system

__all__ = ["run"]


async def run(system_name: str, params: dict[str, Any]) -> dict[str, Any]:
    n, turns, latency, reps = (
        params["conversations"],
        params["turns"],
        params["latency"],
        params["reps"],
    )
    walls, rates, gc_seconds, cpus = [], [], [], []
    async with open_system(system_name, make_model(latency=latency)) as system:
        warm = await system.conversation("warm-up", stream=False)
        await warm.turn("warm")
        await warm.aclose()
        if params.get("gc") == "freeze":
            gc.collect()
            gc.freeze()

        async def conversation(rep: int, c: int) -> None:
            conv = await system.conversation(f"w4-{rep}-{c}", stream=False)
            for i in range(turns):
                await conv.turn(f"hello {i}")
            await conv.aclose()

        for rep in range(reps):
            with GcTimer() as gc_timer, timed() as clock:
                await asyncio.gather(*(conversation(rep, c) for c in range(n)))
            walls.append(clock.wall)
            cpus.append(clock.cpu)
            rates.append(n * turns / clock.wall)
            gc_seconds.append(gc_timer.seconds)
    return {
        "conversations": n,
        "turns": turns,
        "ideal_seconds": turns * 2 * latency,
        "wall_seconds": summary(walls),
        "cpu_seconds": summary(cpus),
        "turns_per_second": summary(rates),
        "gc_seconds": summary(gc_seconds),
    }
