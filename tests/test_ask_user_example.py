"""``examples/ask_user.py`` runs, offline, so it never rots (issue 15, item 1)."""

from __future__ import annotations

from types import ModuleType

import pytest
from langchain_core.messages import AIMessage, ToolMessage

from sagents import Answer, Interrupt
from tests.examples import load_example


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("ask_user.py", register=True)


async def test_the_example_answers_with_the_recommended_choices(example: ModuleType) -> None:
    out: list[str] = []
    state = await example.main(write=out.append)
    text = "".join(out)
    assert "? Which database should the project use? [single choice]" in text
    assert "PostgreSQL (recommended)" in text
    last = state.messages[-1]
    assert isinstance(last, AIMessage)
    assert last.text == "Setting up atlas on PostgreSQL with login."
    assert state.interrupt is None


async def test_the_example_asks_again_after_an_answer_that_does_not_fit(
    example: ModuleType,
) -> None:
    tries: list[Interrupt] = []

    def decide(interrupt: Interrupt) -> list[Answer]:
        tries.append(interrupt)
        if len(tries) == 1:
            return [Answer(["MySQL", ["login"], "x"])]
        return [Answer(["SQLite", ["search", "payments"], "nova"])]

    out: list[str] = []
    state = await example.main(decide, write=out.append)
    assert len(tries) == 2
    assert tries[0] == tries[1]  # the same question still waited
    assert "not accepted:" in "".join(out)
    assert "'MySQL' is not one of the choices" in "".join(out)
    answers = [m for m in state.messages if isinstance(m, ToolMessage)]
    assert len(answers) == 1
    assert state.messages[-1].text == "Setting up nova on SQLite with search, payments."
