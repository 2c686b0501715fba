"""W1 turn overhead: one conversation, ``turns`` sequential turns; CPU and wall µs per turn.

Each repetition opens a fresh conversation (so a checkpointer's growing history weighs the same
in every repetition), after one warm-up conversation that is not counted (imports, caches).
Both model paths are measured: ``ainvoke`` (non-streaming) and ``astream`` (streaming).
"""

from __future__ import annotations

from typing import Any

from bench._measure import summary, timed
from bench._model import make_model
from bench._systems import open_system

__all__ = ["run"]


async def run(system_name: str, params: dict[str, Any]) -> dict[str, Any]:
    turns, reps = params["turns"], params["reps"]
    result: dict[str, Any] = {}
    async with open_system(system_name, make_model()) as system:
        for stream in (False, True):
            warm = await system.conversation(f"warm-up-{stream}", stream=stream)
            for i in range(3):
                await warm.turn(f"warm {i}")
            await warm.aclose()
            cpu, wall = [], []
            for rep in range(reps):
                conv = await system.conversation(f"w1-{stream}-{rep}", stream=stream)
                with timed() as clock:
                    for i in range(turns):
                        await conv.turn(f"hello {i}")
                await conv.aclose()
                cpu.append(clock.cpu / turns * 1e6)
                wall.append(clock.wall / turns * 1e6)
            path = "stream" if stream else "invoke"
            result[path] = {"cpu_us": summary(cpu), "wall_us": summary(wall)}
    return result
