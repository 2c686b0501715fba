"""W7 fan-out: one agent streaming D deltas to S subscribers.

The model records the moment it produces each delta (``perf_counter``); each subscriber records
the moment it receives it. Latency is the difference, per (delta, subscriber); events/s is D
over the time from the first delta to the last delivery. ``raw`` is the floor: the same
langchain-core stream put into one ``asyncio.Queue`` per subscriber by a plain loop. LangGraph has
no subscribers (one ``astream`` consumer per run), so it has no row.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from bench._measure import summary
from bench._model import make_model

__all__ = ["run"]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _raw_once(deltas: int, subscribers: int) -> tuple[list[float], float]:
    # The floor: the same langchain-core stream, put into one asyncio.Queue per subscriber.
    from langchain_core.messages import HumanMessage

    model = make_model(chunks=deltas, always_text=True)
    produced = [0.0] * deltas
    model.on_delta = produced.__setitem__
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in range(subscribers)]
    latencies: list[float] = []

    async def consume(queue: asyncio.Queue[Any]) -> None:
        while (chunk := await queue.get()) is not None:
            latencies.append(time.perf_counter() - produced[int(chunk.content.split()[0])])

    consumers = [asyncio.create_task(consume(q)) for q in queues]
    async for chunk in model.astream([HumanMessage("stream")]):
        for queue in queues:
            queue.put_nowait(chunk)
    for queue in queues:
        queue.put_nowait(None)
    await asyncio.gather(*consumers)
    return latencies, time.perf_counter() - produced[0]


async def _sagents_once(
    runtime: Any, agent_id: str, deltas: int, subscribers: int
) -> tuple[list[float], float]:
    from sagents import Agent, Status
    from sagents.events import LLMDeltas, StatusChanged

    model = make_model(chunks=deltas, always_text=True)
    produced = [0.0] * deltas
    model.on_delta = produced.__setitem__
    handle = await runtime.start_agent(
        Agent(agent_id=agent_id, model=model, stream=True),
        None,
        inactivity_timeout=None,
        queue_size=deltas + 100,
    )
    latencies: list[float] = []
    subs = [handle.subscribe() for _ in range(subscribers)]

    async def consume(sub: Any) -> None:
        async with sub:
            async for event in sub:
                if isinstance(event, LLMDeltas):
                    now = time.perf_counter()
                    for chunk in event.deltas:
                        latencies.append(now - produced[int(chunk.content.split()[0])])
                elif isinstance(event, StatusChanged) and event.status is Status.IDLE:
                    return

    consumers = [asyncio.create_task(consume(s)) for s in subs]
    await handle.add_message("stream")
    await asyncio.gather(*consumers)
    wall = time.perf_counter() - produced[0]
    await handle.stop()
    return latencies, wall


async def run(system_name: str, params: dict[str, Any]) -> dict[str, Any]:
    deltas, reps = params["deltas"], params["reps"]
    result: dict[str, Any] = {"deltas": deltas}
    runtime_cm: Any = None
    if system_name.startswith("sagents"):
        from sagents import Runtime

        runtime_cm = Runtime()
        await runtime_cm.start()
    try:
        for subscribers in params["subscribers"]:
            p50, p99, rates = [], [], []
            for rep in range(reps + 1):  # the first is a warm-up
                if runtime_cm is None:
                    latencies, wall = await _raw_once(deltas, subscribers)
                else:
                    latencies, wall = await _sagents_once(
                        runtime_cm, f"w7-{subscribers}-{rep}", deltas, subscribers
                    )
                if len(latencies) != deltas * subscribers:
                    raise RuntimeError(
                        f"{len(latencies)} deliveries, expected {deltas * subscribers}"
                    )
                if rep == 0:
                    continue
                p50.append(statistics.median(latencies) * 1e6)
                p99.append(_percentile(latencies, 0.99) * 1e6)
                rates.append(deltas / wall)
            result[str(subscribers)] = {
                "p50_us": summary(p50),
                "p99_us": summary(p99),
                "events_per_second": summary(rates),
                "deliveries_per_second": summary([r * subscribers for r in rates]),
            }
    finally:
        if runtime_cm is not None:
            await runtime_cm.shutdown()
    return result
