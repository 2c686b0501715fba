"""Memory per idle agent inside a Ray host, against the same agents in one process.

``python -m bench.ray_memory [N]`` starts N idle agents (one model and three tools shared, as
a factory shares them; one message of state each) with ``runtime.start_agent``: first in an
in-process ``Runtime``, then through ``RayBackend(hosts=1)``, and measures the Python heap each
costs with ``tracemalloc`` where the agents live (in the host, through Ray's ``__ray_call__``),
after a full collection. Prints KiB per agent and, with ``--top K``, the K source lines whose
allocations grew most in the host.

Numbers for ``docs/distributed.md``; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tracemalloc
from typing import Any

import ray
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool

__all__ = ["main"]


def _add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _search(query: str, limit: int = 10) -> list[str]:
    """Search the documents for ``query``; at most ``limit`` titles."""
    return [query][:limit]


def _convert(amount: float, currency: str, to: str = "EUR") -> str:
    """Convert ``amount`` of ``currency`` into ``to``."""
    return f"{amount} {currency} in {to}"


def _heap_start(_actor: Any = None) -> int:
    gc.collect()
    if not tracemalloc.is_tracing():
        tracemalloc.start(1)
    tracemalloc.clear_traces()
    return 0


def _heap_now(_actor: Any = None, top: int = 0) -> tuple[int, list[str]]:
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    total = sum(stat.size for stat in snapshot.statistics("filename"))
    lines = [
        f"{stat.size / 1024:9.1f} KiB {stat.count:8d} blocks  {stat.traceback}"
        for stat in snapshot.statistics("lineno")[:top]
    ]
    return total, lines


async def measure(n: int, top: int) -> dict[str, Any]:
    from sagents import Agent, Runtime, State
    from sagents.ray import RayBackend
    from sagents.testing import Reply, ScriptedChatModel

    model = ScriptedChatModel(script=[Reply(text="ok")], record_prompts=False)
    tools = [tool(function) for function in (_add, _search, _convert)]
    result: dict[str, Any] = {"agents": n, "tools_per_agent": len(tools)}

    def agent(i: int) -> Agent:
        return Agent(agent_id=f"c-{i}", model=model, tools=tools)

    def state() -> State:
        return State(messages=[HumanMessage("hello")])

    # Each agent has its own configuration and state in both places (a host unpickles its
    # own copies); the model and tools are shared in both.
    async with Runtime() as local:
        await local.start_agent(agent(-1), state())
        _heap_start()
        for i in range(n):
            await local.start_agent(agent(i), state(), inactivity_timeout=None)
        heap, _ = _heap_now()
        result["in_process_kib_per_agent"] = round(heap / n / 1024, 2)
        tracemalloc.stop()
    backend = RayBackend(hosts=1, host_cpus=0, stop_hosts=True)
    async with Runtime(backend=backend) as remote:
        await remote.start_agent(agent(-1), state())
        [name] = list(await backend.hosts())
        host = ray.get_actor(name, namespace=backend.namespace)
        await host.__ray_call__.remote(_heap_start)
        for i in range(n):
            await remote.start_agent(agent(i), state(), inactivity_timeout=None)
        heap, lines = await host.__ray_call__.remote(_heap_now, top)
        result["ray_host_kib_per_agent"] = round(heap / n / 1024, 2)
        result["ray_host_top"] = lines
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ray_memory", description=__doc__)
    parser.add_argument("agents", nargs="?", type=int, default=5000)
    parser.add_argument("--top", type=int, default=0, help="source lines that grew most")
    args = parser.parse_args(argv)
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        result = asyncio.run(measure(args.agents, args.top))
    finally:
        ray.shutdown()
    lines = result.pop("ray_host_top")
    print(json.dumps(result, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
