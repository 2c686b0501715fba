"""W3 human-in-the-loop: interrupt before the protected ``echo`` call, resume with approval.

Per repetition: ``cycles`` HITL cycles on a fresh conversation, and as many plain turns on
another one of the same system; the overhead of the interrupt and resume is the difference.
"""

from __future__ import annotations

from typing import Any

from bench._measure import summary, timed
from bench._model import make_model
from bench._systems import open_system

__all__ = ["run"]


async def run(system_name: str, params: dict[str, Any]) -> dict[str, Any]:
    cycles, reps = params["cycles"], params["reps"]
    cycle_us, turn_us, overhead_us = [], [], []
    async with open_system(system_name, make_model()) as system:
        for hitl in (True, False):
            warm = await system.conversation(f"warm-{hitl}", stream=False, hitl=hitl)
            for i in range(3):
                await (warm.hitl_cycle if hitl else warm.turn)(f"warm {i}")
            await warm.aclose()
        for rep in range(reps):
            conv = await system.conversation(f"w3-hitl-{rep}", stream=False, hitl=True)
            with timed() as hitl_clock:
                for i in range(cycles):
                    await conv.hitl_cycle(f"hello {i}")
            await conv.aclose()
            plain = await system.conversation(f"w3-plain-{rep}", stream=False, hitl=False)
            with timed() as turn_clock:
                for i in range(cycles):
                    await plain.turn(f"hello {i}")
            await plain.aclose()
            cycle_us.append(hitl_clock.cpu / cycles * 1e6)
            turn_us.append(turn_clock.cpu / cycles * 1e6)
            overhead_us.append(cycle_us[-1] - turn_us[-1])
    return {
        "cycle_cpu_us": summary(cycle_us),
        "turn_cpu_us": summary(turn_us),
        "overhead_cpu_us": summary(overhead_us),
    }
