"""A guided run of one agent: todos, files and a human approval, fully offline.

    .venv/bin/python examples/walkthrough.py                  # approves automatically
    .venv/bin/python examples/walkthrough.py --interactive    # you approve, edit or reject
    .venv/bin/python examples/walkthrough.py --topic "supervision trees"

The agent uses the offline ``demo_model`` (a scripted langchain chat model), so no API key and no
server are needed. Swap in any langchain ``BaseChatModel`` to run the same agent on a real model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage

from sagents import Agent, Approve, Decision, Edit, Interrupt, Interrupted, Reject, RunResult, State
from sagents.events import (
    Event,
    LLMDeltas,
    LLMMessage,
    TodosUpdated,
    ToolExecutionCompleted,
    ToolExecutionFailed,
    ToolExecutionStarted,
)
from sagents.execution import demo_model
from sagents.middleware import FileSystem, HumanInTheLoop, MemoryFileStore, TodoList

TODO_MARKS = {"pending": " ", "in_progress": "~", "completed": "x", "cancelled": "-"}


class ConsoleSink:
    """Prints what the agent does as it happens (an EventSink)."""

    debug = False

    def __init__(self, write: Callable[[str], None] = print) -> None:
        self.write = write
        self._streaming = False

    def emit(self, event: Event) -> None:
        match event:
            case LLMDeltas(deltas=deltas):
                text = "".join(str(d.content) for d in deltas)
                if text:
                    if not self._streaming:
                        self.write("\nassistant> ")
                        self._streaming = True
                    self.write(text)
            case LLMMessage():
                self._streaming = False
                self.write("\n")
            case ToolExecutionStarted(name=name, arguments=arguments):
                self.write(f"  -> {name}({_short(arguments)})\n")
            case ToolExecutionCompleted(name=name):
                self.write(f"  <- {name}: ok\n")
            case ToolExecutionFailed(name=name, error=error):
                self.write(f"  <- {name}: {error}\n")
            case TodosUpdated(todos=todos):
                for todo in todos:
                    self.write(f"     [{TODO_MARKS[todo.status]}] {todo.content}\n")
            case _:
                pass

    def state_changed(self, state: State, new_messages: Sequence[BaseMessage]) -> None:
        pass


def _short(arguments: dict[str, Any]) -> str:
    text = json.dumps(arguments, ensure_ascii=False)
    return text if len(text) <= 70 else text[:67] + "..."


def ask(interrupt: Interrupt) -> list[Decision]:
    """Ask the person at the terminal for one decision per pending call."""
    decisions: list[Decision] = []
    for request in interrupt.action_requests:
        options = "/".join(request.allowed_decisions)
        choice = input(f"{request.name}: {options} [approve]: ").strip() or "approve"
        if choice == "reject":
            decisions.append(Reject(message=input("  why? ").strip() or None))
        elif choice == "edit":
            path = input("  new file_path: ").strip()
            decisions.append(Edit(arguments={**request.arguments, "file_path": path}))
        else:
            decisions.append(Approve())
    return decisions


def approve_all(interrupt: Interrupt) -> list[Decision]:
    return [Approve() for _ in interrupt.action_requests]


async def main(
    topic: str = "asyncio supervision",
    decide: Callable[[Interrupt], list[Decision]] = approve_all,
    write: Callable[[str], None] = lambda text: print(text, end="", flush=True),
) -> RunResult:
    """Run the walkthrough and return the final result."""
    files = MemoryFileStore()
    agent = Agent(
        agent_id="walkthrough",
        model=demo_model(),
        base_system_prompt="You are a careful research assistant.",
        middleware=[
            TodoList(),
            FileSystem(files),
            HumanInTheLoop(interrupt_on={"write_file": True, "delete_file": True}),
        ],
    )
    sink = ConsoleSink(write)
    write(f"user> {topic}\n")
    result = await agent.run(State(messages=[HumanMessage(topic)]), sink=sink)
    while isinstance(result, Interrupted):
        for request in result.interrupt.action_requests:
            write(f"\nApproval needed: {request.name}({_short(request.arguments)})\n")
        result = await agent.resume(result.state, decide(result.interrupt), sink=sink)
    write(f"\nfinished: {result.status.value}, {len(result.state.messages)} messages\n")
    for path in await files.list("/"):
        write(f"file {path}:\n{await files.read(path)}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", default="asyncio supervision")
    parser.add_argument("--interactive", action="store_true", help="decide approvals yourself")
    args = parser.parse_args()
    asyncio.run(main(args.topic, ask if args.interactive else approve_all))
