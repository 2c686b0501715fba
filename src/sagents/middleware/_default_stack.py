"""``default_middleware``: the standard stack in one call, with room to drop, replace or add.

The stack an agent that plans, works on files and delegates usually wants, in the order that
works: ``TodoList`` (plan), ``FileSystem`` (files), ``SubAgent`` (a general-purpose helper with
the parent's model and tools), ``Summarization`` (keep the history under the model's window),
then your own middleware, then ``PatchToolCalls`` last, so that it sees the history exactly as
the model will. This is what Sagents builds unless ``replace_default_middleware`` is set, and
what deepagents' ``create_deep_agent`` builds; here it is a list you pass as ``middleware=``,
so the agent's configuration stays explicit::

    agent = Agent(agent_id="a1", model=model, middleware=default_middleware())
    agent = Agent(
        agent_id="a2",
        model=model,
        middleware=default_middleware(
            model,
            exclude={SubAgent},                              # no delegation
            replace=[FileSystem(store=my_store)],            # this FileSystem instead
            extra=[HumanInTheLoop(interrupt_on={"write_file": True})],
        ),
    )
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from langchain_core.language_models import BaseChatModel

from sagents._errors import ConfigurationError
from sagents.execution._middleware import Middleware
from sagents.middleware._file_system import FileSystem
from sagents.middleware._patch_tool_calls import PatchToolCalls
from sagents.middleware._sub_agent import SubAgent
from sagents.middleware._summarization import Summarization
from sagents.middleware._todo_list import TodoList

__all__ = ["DEFAULT_STACK", "default_middleware"]

#: The classes of the standard stack, in order (``PatchToolCalls`` stays last).
DEFAULT_STACK: tuple[type[Middleware], ...] = (
    TodoList,
    FileSystem,
    SubAgent,
    Summarization,
    PatchToolCalls,
)


def default_middleware(
    model: BaseChatModel | None = None,
    *,
    exclude: Collection[type[Middleware]] = (),
    replace: Sequence[Middleware] = (),
    extra: Sequence[Middleware] = (),
) -> list[Middleware]:
    """The standard middleware stack (see the module docstring), fresh instances each call.

    Args:
        model: the model ``Summarization`` writes its summaries with; None (the default): the
            agent's own.
        exclude: classes of the stack to leave out.
        replace: instances used instead of the stack's own of the same class, in its place
            (e.g. ``Summarization(model, fraction=0.8)``).
        extra: your middleware, after the stack's and before ``PatchToolCalls``.

    Raises:
        ConfigurationError: ``exclude`` or ``replace`` names a class that is not in the stack,
            or one class is both excluded and replaced, or replaced twice.
    """
    replacements: dict[type[Middleware], Middleware] = {}
    for middleware in replace:
        kind = next((k for k in DEFAULT_STACK if type(middleware) is k), None)
        if kind is None:
            raise ConfigurationError(
                f"default_middleware(replace=...): {type(middleware).__name__} is not in the "
                f"stack ({_names(DEFAULT_STACK)}); pass it in extra=[...] to add it"
            )
        if kind in replacements:
            raise ConfigurationError(f"default_middleware: {kind.__name__} is replaced twice")
        replacements[kind] = middleware
    for kind in exclude:
        if kind not in DEFAULT_STACK:
            raise ConfigurationError(
                f"default_middleware(exclude=...): {getattr(kind, '__name__', kind)!s} is not "
                f"in the stack ({_names(DEFAULT_STACK)})"
            )
        if kind in replacements:
            raise ConfigurationError(
                f"default_middleware: {kind.__name__} is both excluded and replaced"
            )
    stack: list[Middleware] = []
    for kind in DEFAULT_STACK:
        if kind is PatchToolCalls:
            stack.extend(extra)
        if kind in exclude:
            continue
        stack.append(replacements[kind] if kind in replacements else _default(kind, model))
    return stack


def _default(kind: type[Middleware], model: BaseChatModel | None) -> Middleware:
    if kind is Summarization:
        return Summarization(model)
    return kind()


def _names(kinds: Sequence[type[Middleware]]) -> str:
    return ", ".join(kind.__name__ for kind in kinds)
