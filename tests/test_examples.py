"""The examples run, so they never rot (they are the README's first command)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from langchain_core.messages import ToolMessage

from sagents import Done, Edit, Interrupt, Reject
from tests.examples import load_example

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def walkthrough() -> ModuleType:
    return load_example("walkthrough.py", register=True)


async def test_walkthrough_plans_writes_after_approval_and_finishes(
    walkthrough: ModuleType,
) -> None:
    out: list[str] = []
    result = await walkthrough.main("supervision trees", write=out.append)
    text = "".join(out)
    assert isinstance(result, Done)
    assert [t.status.value for t in result.state.todos] == ["completed"] * 3
    assert "Approval needed: write_file" in text
    assert "file /notes/supervision-trees.md" in text
    assert result.state.interrupt is None


async def test_walkthrough_with_an_edited_path(walkthrough: ModuleType) -> None:
    def edit(interrupt: Interrupt) -> list[Edit]:
        return [
            Edit(arguments={**r.arguments, "file_path": "/elsewhere.md"})
            for r in interrupt.action_requests
        ]

    out: list[str] = []
    result = await walkthrough.main("x", decide=edit, write=out.append)
    assert isinstance(result, Done)
    assert "file /elsewhere.md" in "".join(out)


async def test_walkthrough_with_a_rejection(walkthrough: ModuleType) -> None:
    def reject(interrupt: Interrupt) -> list[Reject]:
        return [Reject(message="not today") for _ in interrupt.action_requests]

    out: list[str] = []
    result = await walkthrough.main("x", decide=reject, write=out.append)
    assert isinstance(result, Done)
    rejected = [
        m for m in result.state.messages if isinstance(m, ToolMessage) and m.status == "error"
    ]
    assert len(rejected) == 1
    assert "not today" in str(rejected[0].content)
    assert "file " not in "".join(out)


def test_the_readme_s_first_example_runs() -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    first = re.search(r"```python\n(.*?)```", readme, re.S)
    assert first is not None
    done = subprocess.run(
        [sys.executable, "-c", first.group(1)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "are saved and reviewed" in done.stdout


def test_the_default_stack_example_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "default_stack.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "standard: ['TodoList', 'FileSystem', 'SubAgent', 'Summarization'" in done.stdout
    assert "tailored: ['TodoList', 'FileSystem', 'Summarization', 'HumanInTheLoop'" in done.stdout
    assert "saved and reviewed" in done.stdout


def test_the_chat_app_example_runs_as_a_script() -> None:
    # The browser test (tests/web/test_router_browser.py) serves the app; this one checks that
    # `python examples/chat_app.py` builds it in a fresh process and hands it to uvicorn.
    code = (
        "import runpy, sys, uvicorn\n"
        "uvicorn.run = lambda app, **options: print(type(app).__name__, options)\n"
        "runpy.run_path(sys.argv[1], run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLES / "chat_app.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "FastAPI {'host': '127.0.0.1', 'port': 8000}"
