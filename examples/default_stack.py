"""The standard middleware stack, and a stack of your own built from it (offline).

.venv/bin/python examples/default_stack.py
"""

from __future__ import annotations

import asyncio

from langchain_core.messages import HumanMessage

from sagents import Agent, Approve, Interrupted, State
from sagents.execution import demo_model
from sagents.middleware import HumanInTheLoop, SubAgent, Summarization, default_middleware


def build() -> tuple[Agent, Agent]:
    model = demo_model()
    # TodoList, FileSystem, SubAgent, Summarization, PatchToolCalls.
    standard = Agent(agent_id="standard", model=model, middleware=default_middleware(model))
    # No delegation, an earlier summary, and approval before any file is written.
    tailored = Agent(
        agent_id="tailored",
        model=model,
        middleware=default_middleware(
            model,
            exclude={SubAgent},
            replace=[Summarization(model, max_messages=40)],
            extra=[HumanInTheLoop(interrupt_on={"write_file": True})],
        ),
    )
    return standard, tailored


async def main() -> str:
    standard, tailored = build()
    print("standard:", [m.name for m in standard.middleware_instances])
    print("tailored:", [m.name for m in tailored.middleware_instances])
    result = await tailored.run(State(messages=[HumanMessage("middleware stacks")]))
    while isinstance(result, Interrupted):
        decisions = [Approve() for _ in result.interrupt.action_requests]
        result = await tailored.resume(result.state, decisions)
    answer = str(result.state.messages[-1].content)
    print(answer)
    return answer


if __name__ == "__main__":
    asyncio.run(main())
