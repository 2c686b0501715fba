"""Quick scale check: start N idle agent servers, measure start rate and memory per server.

    .venv/bin/python bench/scale.py 10000

Memory is the process RSS growth divided by N (read from /proc, Linux only). The agents share
one model and one set of tools, as agents built by one factory do; each has its own Agent
configuration, state (one message) and server.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time

from langchain_core.messages import HumanMessage

from sagents import Agent, Runtime, State
from sagents.execution import Reply, ScriptedChatModel


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def main(n: int) -> None:
    model = ScriptedChatModel(responder=lambda messages: Reply(text="ok"), record_prompts=False)
    agents = [Agent(agent_id=f"conversation-{i}", model=model) for i in range(n)]
    state = State(messages=[HumanMessage("hello")])
    async with Runtime() as runtime:
        gc.collect()
        before = rss_bytes()
        started = time.perf_counter()
        for agent in agents:
            await runtime.start_agent(agent, state, inactivity_timeout=3600)
        elapsed = time.perf_counter() - started
        gc.collect()
        after = rss_bytes()
        print(f"agents started:       {runtime.agent_count():,}")
        print(
            f"start rate:           {n / elapsed:,.0f} agents/s ({elapsed * 1e6 / n:.0f} µs each)"
        )
        print(f"memory per server:    {(after - before) / n / 1024:.1f} KiB (RSS growth / N)")
        print(f"tasks alive:          {len(asyncio.all_tasks()):,}")
        started = time.perf_counter()
        listed = runtime.list_agents_matching("conversation-1*")
        took_ms = (time.perf_counter() - started) * 1e3
        print(f"list_agents_matching: {len(listed):,} ids in {took_ms:.1f} ms")
        started = time.perf_counter()
    print(f"shutdown:             {time.perf_counter() - started:.1f} s for {n:,} agents")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
