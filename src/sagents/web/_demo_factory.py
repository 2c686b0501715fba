"""The demo's :class:`~sagents.Factory`: one agent per conversation, todos, files, approvals.

Every conversation gets the three core middleware: ``TodoList``, ``FileSystem`` on the files of
its owner (a *scope-shared* filesystem: all conversations of one browser identity see the same
files, served by the runtime's filesystem server of that scope) and ``HumanInTheLoop`` on the
tools that change files, so a write waits for the person's approval; and ``AskUserQuestion``, so
the model can ask the person questions (the page shows them as a small form).

The model is the offline scripted scenario by default (``sagents.execution.demo_model``: it plans
todos, writes notes under ``/notes/``, reads them back and answers; a message with "ask me" gets
three questions instead), so the demo runs without an API key. ``provider:name`` builds a real
model with langchain's ``init_chat_model``; what that needs (the provider package, its API key)
is checked up front by :func:`check_model` so that the command line fails with a message naming
the fix instead of a traceback mid-run.

The fix for a missing package is a pip command, and which one works depends on where sagents
came from: ``pip install 'sagents[openai]'`` for the published package, but from a source
checkout that looks for sagents on the package index instead of the checkout, so there the
message names the checkout's own command (``.venv/bin/pip install -e '.[openai]'``) as well.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from sagents._errors import ConfigurationError
from sagents.execution._agent import Agent
from sagents.execution._demo_model import demo_model
from sagents.middleware._ask_user import AskUserQuestion
from sagents.middleware._file_system import FileSystem
from sagents.middleware._human_in_the_loop import HumanInTheLoop
from sagents.middleware._todo_list import TodoList
from sagents.session._factory import FactoryConfig, SessionOptions

__all__ = ["PROVIDERS", "DemoFactory", "build_model", "check_model"]

#: provider -> (python package of its langchain integration, the sagents extra, API key variable)
PROVIDERS: dict[str, tuple[str, str, str]] = {
    "openai": ("langchain_openai", "openai", "OPENAI_API_KEY"),
    "anthropic": ("langchain_anthropic", "anthropic", "ANTHROPIC_API_KEY"),
}

PROTECTED_TOOLS = ("write_file", "delete_file", "edit_file")

_PROMPT = (
    "You are a careful research assistant in a demo of sagents. Plan your work with the todo "
    "list, keep notes as files under /notes/, and answer briefly."
)


def _source_checkout(module: Path) -> Path | None:
    """The sagents source checkout that ``module`` (a file of the package) lies in, if any.

    A checkout has the package under ``src/`` below a ``pyproject.toml`` that names sagents; an
    editable install runs from there too. A package installed in site-packages has neither.
    """
    parents = module.resolve().parents
    if len(parents) < 4 or parents[1].name != "sagents" or parents[2].name != "src":
        return None
    root = parents[3]
    try:
        with (root / "pyproject.toml").open("rb") as file:
            name = tomllib.load(file).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return root if name == "sagents" else None


def _install_hint(extra: str, *, checkout: Path | None, prefix: Path, python: str) -> str:
    """The commands that install the sagents extra ``extra``.

    Args:
        extra: the name of the extra, e.g. ``"openai"``.
        checkout: the source checkout sagents runs from, or None for an installed package.
        prefix: the running environment (``sys.prefix``): the checkout's ``.venv`` or another.
        python: the running interpreter, for the pip of an environment outside the checkout.
    """
    published = f"pip install 'sagents[{extra}]'"
    if checkout is None:
        return published
    if prefix.resolve() == (checkout / ".venv").resolve():
        pip = ".venv/bin/pip"
    else:
        pip = f"{shlex.quote(python)} -m pip"
    return (
        f"{pip} install -e '.[{extra}]' in the checkout {checkout} "
        f"(for the published package: {published})"
    )


def _install_hint_here(extra: str) -> str:
    """How to install the sagents extra ``extra`` where this sagents runs (see the module doc)."""
    return _install_hint(
        extra,
        checkout=_source_checkout(Path(__file__)),
        prefix=Path(sys.prefix),
        python=sys.executable,
    )


def check_model(model: str, environ: Mapping[str, str]) -> None:
    """Check that ``provider:name`` can be built: langchain, the provider package, its API key.

    Raises:
        ConfigurationError: something is missing; the message says what to install or set.
    """
    provider, _, name = model.partition(":")
    if not provider or not name:
        raise ConfigurationError(
            f"--model expects provider:name, e.g. openai:gpt-4o-mini, got {model!r}"
        )
    package, extra, variable = PROVIDERS.get(
        provider, (f"langchain_{provider}", provider, f"{provider.upper()}_API_KEY")
    )
    if importlib.util.find_spec("langchain") is None or importlib.util.find_spec(package) is None:
        needs = package.replace("_", "-")
        raise ConfigurationError(
            f"the {provider!r} provider needs {needs}: {_install_hint_here(extra)}"
        )
    if not environ.get(variable):
        raise ConfigurationError(
            f"the {provider!r} provider needs an API key: set {variable} "
            "(or run without --model for the offline demo)"
        )


def build_model(model: str | None, *, delay: float = 0.0, **options: Any) -> BaseChatModel:
    """The offline demo model (``model=None``), or ``init_chat_model("provider:name")``."""
    if model is None:
        return demo_model(delay=delay)
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as exc:  # pragma: no cover - check_model reports it first
        raise ConfigurationError(
            f"--model needs langchain: {_install_hint_here('openai')}"
        ) from exc
    try:
        chat: BaseChatModel = init_chat_model(model, **options)
        return chat
    except (ImportError, ValueError) as exc:
        raise ConfigurationError(f"cannot build the model {model!r}: {exc}") from exc


class DemoFactory:
    """Builds the demo agent of a conversation.

    Args:
        model: the chat model shared by all conversations (the scripted demo model is
            stateless, and provider clients are safe to share).
    """

    def __init__(self, model: BaseChatModel) -> None:
        self.model = model

    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        agent = Agent(
            agent_id=agent_id,
            model=self.model,
            name="demo",
            base_system_prompt=_PROMPT,
            middleware=[
                TodoList(),
                FileSystem(),
                HumanInTheLoop(interrupt_on=dict.fromkeys(PROTECTED_TOOLS, True)),
                AskUserQuestion(),
            ],
        )
        # The owner's files are shared by all their conversations (the runtime's filesystem
        # server of that scope); the FileSystem middleware finds it through the tool context.
        return agent, SessionOptions(server_options={"filesystem_scope": config.scope})
