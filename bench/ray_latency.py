"""Latency through the Ray backend, against the bare Ray primitives it is built on.

``python -m bench.ray_latency`` starts a local Ray and measures, in one run:

- a handle call (``handle.get_status()``) in-process, through ``RayBackend``, and a bare Ray
  actor call that does nothing (``await actor.ping.remote()``): round trips, p50 and p99;
- a streamed event: a model streams deltas stamped with ``time.perf_counter()`` (the same
  monotonic clock in every process of one machine), and the subscriber in the benchmark's
  process records when each arrives; against a bare Ray streaming generator yielding
  ``perf_counter()`` stamps at the same pace.

Numbers for ``docs/distributed.md``; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import ray
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

__all__ = ["main"]


class StampingModel(BaseChatModel):
    """Streams ``deltas`` chunks, each holding the ``perf_counter()`` of its production."""

    deltas: int = 200
    pace: float = 0.002

    @property
    def _llm_type(self) -> str:
        return "stamping"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="done"))])

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        raise NotImplementedError("async only")

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for _ in range(self.deltas):
            await asyncio.sleep(self.pace)
            yield ChatGenerationChunk(message=AIMessageChunk(content=f"{time.perf_counter()} "))


class Bare:
    """The bare Ray actor the backend's costs are compared with."""

    async def ping(self) -> None:
        return None

    async def stream(self, items: int, pace: float) -> AsyncIterator[float]:
        for _ in range(items):
            await asyncio.sleep(pace)
            yield time.perf_counter()


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1e3, 4),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3, 4),
    }


async def _calls(call: Any, n: int) -> list[float]:
    for _ in range(20):
        await call()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return times


async def _agent_stream(handle: Any) -> list[float]:
    from sagents import Status
    from sagents.events import LLMDeltas, StatusChanged

    latencies: list[float] = []
    async with handle.subscribe() as events:
        await handle.add_message("stream")
        async for event in events:
            if isinstance(event, LLMDeltas):
                now = time.perf_counter()
                stamps = [str(delta.content).split() for delta in event.deltas]
                latencies += [now - float(stamp[0]) for stamp in stamps if stamp]
            elif isinstance(event, StatusChanged) and event.status is Status.IDLE:
                break
    return latencies


async def measure(calls: int, deltas: int, pace: float) -> dict[str, Any]:
    import bench.ray_latency as this
    from sagents import Agent, Runtime
    from sagents.ray import RayBackend

    ray.cloudpickle.register_pickle_by_value(this)
    model = StampingModel(deltas=deltas, pace=pace)
    result: dict[str, Any] = {"calls": calls, "deltas": deltas, "pace_s": pace}
    async with Runtime() as local:
        handle = await local.start_agent(Agent(agent_id="a", model=model), inactivity_timeout=None)
        result["in_process_call"] = _ms(await _calls(handle.get_status, calls))
        result["in_process_event"] = _ms(await _agent_stream(handle))
    backend = RayBackend(hosts=1, host_cpus=0, stop_hosts=True)
    async with Runtime(backend=backend) as remote:
        handle = await remote.start_agent(Agent(agent_id="a", model=model), inactivity_timeout=None)
        result["ray_backend_call"] = _ms(await _calls(handle.get_status, calls))
        result["ray_backend_event"] = _ms(await _agent_stream(handle))
    bare = ray.remote(Bare).options(num_cpus=0).remote()

    async def ping() -> None:
        await bare.ping.remote()

    result["bare_ray_call"] = _ms(await _calls(ping, calls))
    latencies = []
    async for ref in bare.stream.options(num_returns="streaming").remote(deltas, pace):
        stamp = await ref
        latencies.append(time.perf_counter() - stamp)
    result["bare_ray_streamed_item"] = _ms(latencies)
    ray.kill(bare)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ray_latency", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--deltas", type=int, default=500)
    parser.add_argument("--pace", type=float, default=0.002, help="seconds between deltas")
    args = parser.parse_args(argv)
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        result = asyncio.run(measure(args.calls, args.deltas, args.pace))
    finally:
        ray.shutdown()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
