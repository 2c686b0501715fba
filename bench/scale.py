"""Quick scale check: start N idle agent servers, measure start rate and memory per server.

    .venv/bin/python bench/scale.py 10000            # start, list, shutdown
    .venv/bin/python bench/scale.py 10000 --expire 2  # + every agent expires by inactivity
    .venv/bin/python bench/scale.py --turns 200      # per-turn cost of one agent

Memory is the process RSS growth divided by N (read from /proc, Linux only). The agents share
one model and one set of tools, as agents built by one factory do; each has its own Agent
configuration, state (one message) and server. With ``--expire`` the agents get a short
inactivity timeout instead and the run waits until all of them have stopped by themselves,
then reports what is left (RSS, tasks, registry entries): an expiry must leak nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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


async def idle_agents(n: int, expire: float | None) -> None:
    model = ScriptedChatModel(responder=lambda messages: Reply(text="ok"), record_prompts=False)
    agents = [Agent(agent_id=f"conversation-{i}", model=model) for i in range(n)]
    state = State(messages=[HumanMessage("hello")])
    timeout = 3600.0 if expire is None else expire
    async with Runtime() as runtime:
        gc.collect()
        tasks_before = len(asyncio.all_tasks())
        before = rss_bytes()
        started = time.perf_counter()
        for agent in agents:
            await runtime.start_agent(agent, state, inactivity_timeout=timeout)
        last_start = time.perf_counter()
        elapsed = last_start - started
        gc.collect()
        after = rss_bytes()
        print(f"agents started:       {runtime.agent_count():,}")
        print(
            f"start rate:           {n / elapsed:,.0f} agents/s ({elapsed * 1e6 / n:.1f} µs each)"
        )
        print(f"memory per server:    {(after - before) / n / 1024:.2f} KiB (RSS growth / N)")
        print(f"tasks alive:          {len(asyncio.all_tasks()):,} ({tasks_before} before)")
        started = time.perf_counter()
        listed = runtime.list_agents_matching("conversation-1*")
        took_ms = (time.perf_counter() - started) * 1e3
        print(f"list_agents_matching: {len(listed):,} ids in {took_ms:.1f} ms")
        if expire:
            # Block the loop until every deadline has passed, so that all timers are due at
            # once: what follows measures the expiry itself, not the spread of the starts.
            time.sleep(max(0.0, last_start + timeout - time.perf_counter()) + 0.01)  # noqa: ASYNC251
            expiring = time.perf_counter()
            while runtime.agent_count():  # noqa: ASYNC110 - polling is the measurement
                await asyncio.sleep(0)
            took = time.perf_counter() - expiring
            await asyncio.sleep(0.05)
            gc.collect()
            left = rss_bytes()
            print(f"expired:              {n:,} agents in {took:.2f} s ({n / took:,.0f}/s)")
            print(
                f"after expiry:         RSS {left / 2**20:,.1f} MiB "
                f"(before starting {before / 2**20:,.1f} MiB, peak {after / 2**20:,.1f} MiB), "
                f"{len(asyncio.all_tasks())} tasks, {runtime.agent_count()} registered, "
                f"{len(runtime._units)} units"
            )
        started = time.perf_counter()
    print(f"shutdown:             {time.perf_counter() - started:.2f} s")


async def turns(n: int, rounds: int = 7) -> None:
    """One agent, ``n`` sequential turns (message + run to idle) on a zero-latency model; the
    best of ``rounds`` fresh agents (the machine is shared: the minimum is the cost)."""
    model = ScriptedChatModel(responder=lambda messages: Reply(text="ok"), record_prompts=False)
    best = float("inf")
    async with Runtime() as runtime:
        for i in range(rounds):
            agent = Agent(agent_id=f"turns-{i}", model=model)
            handle = await runtime.start_agent(agent, inactivity_timeout=3600)
            async with handle.subscribe() as events:
                started = time.perf_counter()
                for _ in range(n):
                    await handle.add_message("hi")
                    async for event in events:
                        if getattr(event, "status", None) == "idle":
                            break
                best = min(best, time.perf_counter() - started)
            await handle.stop()
    print(f"turns:                {n} per agent, best of {rounds}: {best * 1e6 / n:.0f} µs each")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=10_000, help="idle agents to start")
    parser.add_argument(
        "--expire",
        type=float,
        metavar="SECONDS",
        help="inactivity timeout: wait until every agent has expired, report what is left",
    )
    parser.add_argument("--turns", type=int, help="measure N turns of one agent instead")
    args = parser.parse_args()
    if args.turns:
        asyncio.run(turns(args.turns))
    else:
        asyncio.run(idle_agents(args.n, args.expire))


if __name__ == "__main__":
    main()
