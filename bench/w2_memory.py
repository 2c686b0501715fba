"""W2 memory per idle conversation: N conversations of ``turns`` completed turns held resident.

``raw`` keeps each conversation's langchain messages in a list (the size of the messages
themselves), ``langgraph-memory`` keeps threads in one ``InMemorySaver``, ``sagents`` keeps live
idle agent servers (no subscriber, no timeout). With ``turns=0`` sagents gives the cost of an
idle server beyond its messages. Memory is the RSS growth of the process (after a full
collection) divided by N; each system runs in its own process.
"""

from __future__ import annotations

from typing import Any

from bench._measure import settle, timed
from bench._model import make_model
from bench._systems import open_system

__all__ = ["run"]


async def run(system_name: str, params: dict[str, Any]) -> dict[str, Any]:
    n, turns = params["conversations"], params["turns"]
    async with open_system(system_name, make_model()) as system:
        warm = await system.conversation("warm-up", stream=False)
        for i in range(turns or 1):
            await warm.turn(f"warm {i}")
        keep: list[Any] = []
        before = settle()
        with timed() as clock:
            for c in range(n):
                conv = await system.conversation(f"w2-{c}", stream=False)
                for i in range(turns):
                    await conv.turn(f"hello {c} {i}")
                if system_name.startswith("sagents"):
                    await conv.subscription.aclose()  # idle: nobody watching
                    keep.append(conv.handle)
                else:
                    keep.append(conv)
        after = settle()
        return {
            "conversations": n,
            "turns": turns,
            "messages_per_conversation": turns * 4,
            "bytes_per_conversation": (after - before) / n,
            "build_seconds": clock.wall,
        }
