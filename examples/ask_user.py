"""Ask the user: the model asks questions, the agent waits, the answers come back. Offline.

    .venv/bin/python examples/ask_user.py                 # answers with the recommended choices
    .venv/bin/python examples/ask_user.py --interactive   # you answer at the terminal

The agent has the ``AskUserQuestion`` middleware, so its model may call ``ask_user``. Here the
model is a ``ScriptedChatModel`` (no API key): it asks two questions, then uses the answers.
While the questions wait, the agent is ``interrupted`` — as for an approval, the question is in
its state and would survive a restart — and ``handle.resume([Answer([...])])`` continues it.
An answer that does not fit (not one of the choices) raises ``InvalidDecision`` and the question
stays, so the loop below simply asks again.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from langchain_core.messages import BaseMessage, ToolMessage

from sagents import Agent, Answer, Interrupt, InvalidDecision, Question, Runtime, State, Status
from sagents.events import LLMMessage, StatusChanged
from sagents.middleware import AskUserQuestion
from sagents.testing import Reply, ScriptedChatModel, ToolCall

QUESTIONS = [
    {
        "question": "Which database should the project use?",
        "choices": ["PostgreSQL", "SQLite"],
        "recommended": "PostgreSQL",
    },
    {
        "question": "Which features do you want from the start?",
        "type": "multiple_choice",
        "choices": ["login", "payments", "search"],
        "recommended": "login",
    },
    {"question": "What is the project called?", "recommended": "atlas"},
]


def respond(messages: list[BaseMessage]) -> Reply:
    """The scripted model: ask first, then build on the answers (the tool result's artifact)."""
    last = messages[-1]
    if not isinstance(last, ToolMessage):
        return Reply(
            text="A few questions before I start.",
            tool_calls=[ToolCall(name="ask_user", args={"questions": QUESTIONS})],
        )
    if not isinstance(last.artifact, dict):  # declined, or replied in words
        return Reply(text=f"Understood ({last.content}). I will use sensible defaults.")
    database, features, name = (item["answer"] for item in last.artifact["answers"])
    return Reply(text=f"Setting up {name} on {database} with {', '.join(features)}.")


def recommended(question: Question) -> str | list[str]:
    """What the asker suggested (the first choice, or "untitled", when nothing was)."""
    choice = question.recommended or (question.choices[0] if question.choices else "untitled")
    return [choice] if question.type == "multiple_choice" else choice


def answer_recommended(interrupt: Interrupt) -> list[Answer]:
    """One ``Answer`` per pending ``ask_user`` call, each taking the recommended options."""
    return [Answer([recommended(q) for q in r.questions]) for r in interrupt.action_requests]


def answer_at_terminal(interrupt: Interrupt) -> list[Answer]:
    """Ask the person at the terminal (several choices: separate them with commas)."""
    decisions = []
    for request in interrupt.action_requests:
        answers: list[Any] = []
        for question in request.questions:
            typed = input(f"{question.question} [{question.recommended or ''}] ").strip()
            value = typed or question.recommended or ""
            if question.type == "multiple_choice":
                answers.append([part.strip() for part in value.split(",") if part.strip()])
            else:
                answers.append(value)
        decisions.append(Answer(answers))
    return decisions


def show(interrupt: Interrupt, write: Callable[[str], None]) -> None:
    for request in interrupt.action_requests:
        for question in request.questions:
            options = ", ".join(
                f"{c} (recommended)" if c == question.recommended else c for c in question.choices
            )
            kind = question.type.replace("_", " ")
            write(f"? {question.question} [{kind}]{': ' + options if options else ''}\n")


async def main(
    decide: Callable[[Interrupt], list[Answer]] = answer_recommended,
    write: Callable[[str], None] = lambda text: print(text, end="", flush=True),
) -> State:
    """Run the conversation and return the agent's final state."""
    agent = Agent(
        agent_id="ask-user-example",
        model=ScriptedChatModel(responder=respond),
        middleware=[AskUserQuestion()],
    )
    async with Runtime() as runtime:
        handle = await runtime.start_agent(agent, inactivity_timeout=None)
        async with handle.subscribe() as events:
            write("user> Set up a new web project for me.\n")
            await handle.add_message("Set up a new web project for me.")
            async for event in events:
                match event:
                    case LLMMessage(message=message) if message.text:
                        write(f"assistant> {message.text}\n")
                    case StatusChanged(status=Status.INTERRUPTED, data=Interrupt() as interrupt):
                        show(interrupt, write)
                        while True:
                            try:
                                await handle.resume(decide(interrupt))
                                break
                            except InvalidDecision as refused:  # the question still waits
                                write(f"  not accepted: {refused}\n")
                    case StatusChanged(status=Status.IDLE | Status.ERROR):
                        break
        return await handle.get_state()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactive", action="store_true", help="answer at the terminal")
    args = parser.parse_args()
    asyncio.run(main(answer_at_terminal if args.interactive else answer_recommended))
