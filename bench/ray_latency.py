"""Latency through the Ray backend, against the bare Ray primitives it is built on.

``python -m bench.ray_latency`` starts a local Ray and measures, in one run, round after round
(so that a machine's drift touches every path alike):

- a handle call (``handle.get_status()``) in-process and through ``RayBackend``, against two
  bare Ray actor calls: one that carries nothing (``await actor.ping.remote()``) and one that
  carries what a handle call must (the agent's id and the method, in; a ``Status``, out);
- a streamed event: a model streams deltas stamped with ``time.perf_counter()`` (the same
  monotonic clock in every process of one machine), and the subscriber in the benchmark's
  process records when each arrives; against a bare Ray streaming generator yielding, at the
  same pace, a float stamp, and the same ``LLMDeltas`` event (one stamped chunk).

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

    async def call(self, agent_id: str, method: str) -> Any:
        from sagents import Status

        return Status.IDLE

    async def stream(self, items: int, pace: float) -> AsyncIterator[float]:
        for _ in range(items):
            await asyncio.sleep(pace)
            yield time.perf_counter()

    async def events(self, items: int, pace: float) -> AsyncIterator[Any]:
        from sagents.events import LLMDeltas

        for _ in range(items):
            await asyncio.sleep(pace)
            chunk = AIMessageChunk(content=f"{time.perf_counter()} ")
            yield LLMDeltas(deltas=[chunk])


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


def _stamp_latencies(deltas: Any, now: float) -> list[float]:
    stamps = [str(delta.content).split() for delta in deltas]
    return [now - float(stamp[0]) for stamp in stamps if stamp]


async def _agent_stream(handle: Any) -> list[float]:
    from sagents import Status
    from sagents.events import LLMDeltas, StatusChanged

    latencies: list[float] = []
    async with handle.subscribe() as events:
        await handle.add_message("stream")
        async for event in events:
            if isinstance(event, LLMDeltas):
                latencies += _stamp_latencies(event.deltas, time.perf_counter())
            elif isinstance(event, StatusChanged) and event.status is Status.IDLE:
                break
    return latencies


async def _bare_stream(generator: Any, items: int, pace: float) -> list[float]:
    latencies: list[float] = []
    async for ref in generator.options(num_returns="streaming").remote(items, pace):
        item = await ref
        now = time.perf_counter()
        if isinstance(item, float):
            latencies.append(now - item)
        else:
            latencies += _stamp_latencies(item.deltas, now)
    return latencies


async def measure(calls: int, deltas: int, pace: float, rounds: int) -> dict[str, Any]:
    import bench.ray_latency as this
    from sagents import Agent, Runtime
    from sagents.ray import RayBackend

    ray.cloudpickle.register_pickle_by_value(this)
    model = StampingModel(deltas=max(1, deltas // rounds), pace=pace)
    per_round = max(1, calls // rounds)
    samples: dict[str, list[float]] = {}

    def add(name: str, values: list[float]) -> None:
        samples.setdefault(name, []).extend(values)

    bare = ray.remote(Bare).options(num_cpus=0).remote()

    async def ping() -> None:
        await bare.ping.remote()

    async def call() -> None:
        await bare.call.remote("a", "get_status")

    backend = RayBackend(hosts=1, host_cpus=0, stop_hosts=True)
    async with Runtime() as local, Runtime(backend=backend) as remote:
        agent = Agent(agent_id="a", model=model)
        here = await local.start_agent(agent, inactivity_timeout=None)
        there = await remote.start_agent(agent, inactivity_timeout=None)
        for _ in range(rounds):
            add("in_process_call", await _calls(here.get_status, per_round))
            add("ray_backend_call", await _calls(there.get_status, per_round))
            add("bare_ray_call", await _calls(ping, per_round))
            add("bare_ray_call_with_arguments", await _calls(call, per_round))
            add("in_process_event", await _agent_stream(here))
            add("ray_backend_event", await _agent_stream(there))
            add("bare_ray_streamed_item", await _bare_stream(bare.stream, model.deltas, pace))
            add("bare_ray_streamed_event", await _bare_stream(bare.events, model.deltas, pace))
    ray.kill(bare)
    result: dict[str, Any] = {"calls": calls, "deltas": deltas, "pace_s": pace, "rounds": rounds}
    result.update((name, _ms(values)) for name, values in samples.items())
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ray_latency", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--deltas", type=int, default=500)
    parser.add_argument("--pace", type=float, default=0.002, help="seconds between deltas")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over every path")
    args = parser.parse_args(argv)
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        result = asyncio.run(measure(args.calls, args.deltas, args.pace, args.rounds))
    finally:
        ray.shutdown()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
