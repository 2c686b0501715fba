"""``examples/agui_app.py`` and its copy in ``docs/protocols.md`` ("A 20-line app") run as
written, and say the same thing: the page's snippet is the example without its docstrings and
return annotations (comments may differ), so the two cannot drift apart."""

from __future__ import annotations

import ast
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.agui.conftest import AguiClient
from tests.examples import EXAMPLES, load_example

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocols.md"


def doc_snippet() -> str:
    """The first python block of the section "A 20-line app" of docs/protocols.md."""
    section = DOC.read_text().split("### A 20-line app", 1)[1]
    found = re.search(r"^```python\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)
    assert found is not None, "docs/protocols.md: no python block under 'A 20-line app'"
    return found.group(1)


def load_doc_snippet() -> ModuleType:
    """The snippet run as a module of its own, as ``load_example`` runs an example."""
    module = ModuleType("agui_doc_app")
    exec(compile(doc_snippet(), str(DOC), "exec"), module.__dict__)
    return module


def load(source: str) -> ModuleType:
    return load_example("agui_app.py") if source == "example" else load_doc_snippet()


@pytest.fixture(params=["example", "docs"])
async def app_client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    app = load(request.param).app
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        yield await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")
        )


async def test_the_example_app_runs_a_conversation_per_user(
    app_client: httpx.AsyncClient,
) -> None:
    app_client.headers["X-User"] = "ada"
    ada = AguiClient(app_client)
    first = await ada.say("Herons")
    assert first.status == 200
    assert first.text().startswith("Let me plan how to research 'Herons'.")
    assert first.interrupts()
    done = await ada.approve_all(first)
    assert done.last["outcome"] == {"type": "success"}
    # Another user's scope does not reach ada's conversation.
    bob = AguiClient(app_client, ada.thread_id)
    app_client.headers["X-User"] = "bob"
    refused_run = await bob.say("Let me in")
    assert refused_run.last["type"] == "RUN_ERROR"
    assert refused_run.last["code"] == "not_found"
    del app_client.headers["X-User"]
    assert (await AguiClient(app_client).say("Who am I?")).status == 422


def _essence(source: str) -> str:
    """The code of ``source`` without docstrings, return annotations and the imports only they
    used (comments never reach the tree)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                node.body = body[1:] or [ast.Pass()]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            node.returns = None
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            node.names = [
                alias for alias in node.names if (alias.asname or alias.name).split(".")[0] in used
            ]
    tree.body = [
        node
        for node in tree.body
        if not (isinstance(node, ast.Import | ast.ImportFrom) and not node.names)
    ]
    return ast.dump(tree)


def test_the_docs_snippet_is_the_example() -> None:
    example = (EXAMPLES / "agui_app.py").read_text()
    assert _essence(doc_snippet()) == _essence(example)
    assert len(doc_snippet().splitlines()) <= 30  # still a short example
