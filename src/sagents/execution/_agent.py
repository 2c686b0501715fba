"""``Agent``: the immutable configuration of an agent.

An agent is code, never data: model, prompt, middleware and tools are given here and are never
read back from storage. Everything derivable (the full system prompt, the tool table, the
model bound to the tools, which middleware hooks exist) is computed once at construction, so a run
does no per-turn setup, and every mistake surfaces here with the offending field named.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool

from sagents._errors import InvalidAgent, InvalidMiddleware, SagentsError
from sagents._interrupt import Decision
from sagents._state import State
from sagents.execution._middleware import Middleware
from sagents.execution._mode import DEFAULT_MODE, Mode
from sagents.execution._model_call import model_name
from sagents.execution._retry import RetryPolicy
from sagents.execution._tools import as_tool

if TYPE_CHECKING:
    from sagents.execution._result import RunResult
    from sagents.execution._sink import EventSink

__all__ = ["Agent"]

#: How many (model, tool set) bindings :func:`_bind` keeps; see there.
_BIND_CACHE_SIZE = 16
_bind_cache: OrderedDict[
    tuple[int, tuple[int, ...]],
    tuple[BaseChatModel, tuple[BaseTool, ...], Runnable[Any, Any], str],
] = OrderedDict()


def _until_tools(until_tool: str | Sequence[str] | None) -> tuple[str, ...]:
    if until_tool is None:
        return ()
    names = (until_tool,) if isinstance(until_tool, str) else tuple(until_tool)
    if not names or not all(isinstance(name, str) and name for name in names):
        raise InvalidAgent("until_tool", "must be a tool name, a non-empty list of them, or None")
    return names


def _bind(model: BaseChatModel, tools: tuple[BaseTool, ...]) -> tuple[Runnable[Any, Any], str]:
    """``model.bind_tools(tools)`` and the model's name for telemetry, reused for the same model
    and tool objects.

    A service builds one agent per conversation, always with the same model and tools, and
    ``bind_tools`` (converting every tool to its JSON schema) is most of an ``Agent``'s
    construction. The key is identity: two distinct tools are never assumed equal. Entries hold
    their model and tools strongly, which keeps their ids from being reused; a weak-keyed cache
    cannot work here, as the bound runnable itself refers to its model. So the cache is a small
    LRU: at most ``_BIND_CACHE_SIZE`` bindings (and the models and tools they hold) stay alive,
    however many new tools a process makes.
    """
    if not tools:
        return model, model_name(model)
    key = (id(model), tuple(map(id, tools)))
    entry = _bind_cache.get(key)
    if entry is not None:
        _bind_cache.move_to_end(key)
        return entry[2], entry[3]
    try:
        bound = model.bind_tools(list(tools))
    except NotImplementedError:
        raise InvalidAgent(
            "model", f"{type(model).__name__} does not support tool calling (bind_tools)"
        ) from None
    name = model_name(model)  # a few attribute misses on a pydantic model: slow enough to keep
    _bind_cache[key] = (model, tools, bound, name)
    if len(_bind_cache) > _BIND_CACHE_SIZE:
        _bind_cache.popitem(last=False)
    return bound, name


def _rebuilt(cls: type[Agent], arguments: dict[str, Any]) -> Agent:
    """An unpickled :class:`Agent` (see ``Agent.__reduce__``)."""
    return cls(**arguments)


def _instantiate(entry: Any, index: int) -> Middleware:
    if inspect.isclass(entry) and issubclass(entry, Middleware):
        try:
            return entry()
        except SagentsError:
            raise
        except Exception as exc:
            raise InvalidMiddleware(
                f"[{index}] {entry.__name__}() could not be built with defaults: {exc}; "
                "pass an instance instead"
            ) from exc
    if isinstance(entry, Middleware):
        return entry
    raise InvalidMiddleware(
        f"[{index}] {entry!r} is not a Middleware instance or subclass "
        "(subclass sagents.Middleware and override the hooks you need)"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent:
    """An agent's configuration; see ``agent.run(state)`` to execute it without a server.

    Args:
        agent_id: unique id of the agent (e.g. ``"conversation-42"``).
        model: any langchain ``BaseChatModel``.
        base_system_prompt: the prompt before the middleware contributions.
        middleware: middleware instances, or classes built with their defaults.
        tools: langchain tools or plain typed functions (with docstrings).
        name: display name.
        max_runs: maximum model calls in one run before it ends in error.
        mode: the execution pipeline (default: :data:`sagents.execution.DEFAULT_MODE`).
        until_tool: end the run when the model calls this tool (or any of these tools) and
            return its result.
        tool_timeout: seconds a tool may run (``None``: no limit); ``tool.metadata["timeout"]``
            overrides it per tool.
        retry: retries of transient model errors.
        fallback_models: tried in order when ``model`` keeps failing.
        stream: stream model output (deltas are broadcast) or make one plain call.

    Raises:
        InvalidAgent: a field is invalid; the message names it.
    """

    agent_id: str
    model: BaseChatModel
    base_system_prompt: str = ""
    middleware: Sequence[Middleware | type[Middleware]] = ()
    tools: Sequence[BaseTool | Callable[..., Any]] = ()
    name: str | None = None
    max_runs: int = 50
    mode: Mode = DEFAULT_MODE
    until_tool: str | Sequence[str] | None = None
    tool_timeout: float | None = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    fallback_models: Sequence[BaseChatModel] = ()
    stream: bool = True

    # Derived once at construction.
    system_prompt: str = field(init=False, repr=False)
    all_tools: Mapping[str, BaseTool] = field(init=False, repr=False)
    models: tuple[Runnable[Any, Any], ...] = field(init=False, repr=False)
    model_names: tuple[str, ...] = field(init=False, repr=False)
    #: ``until_tool`` as a tuple of tool names (empty without one).
    until_tools: tuple[str, ...] = field(init=False, repr=False)
    before_model_hooks: tuple[Middleware, ...] = field(init=False, repr=False)
    after_model_hooks: tuple[Middleware, ...] = field(init=False, repr=False)
    before_fallback_hooks: tuple[Middleware, ...] = field(init=False, repr=False)
    #: The middleware that override ``transform_display_message``, in order.
    display_hooks: tuple[Middleware, ...] = field(init=False, repr=False)
    callbacks: tuple[BaseCallbackHandler, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._check_fields()
        middleware = self._checked_middleware()
        tools = self._checked_tools(middleware)

        prompts = [self.base_system_prompt] if self.base_system_prompt else []
        prompts += [p for mw in middleware if (p := mw.system_prompt())]

        models = (self.model, *self.fallback_models)
        tool_objects = tuple(tools.values())
        bound, names = zip(*(_bind(m, tool_objects) for m in models), strict=True)

        set_ = object.__setattr__
        set_(self, "middleware", middleware)
        set_(self, "tools", tuple(self.tools))
        set_(self, "fallback_models", tuple(self.fallback_models))
        set_(self, "system_prompt", "\n\n".join(prompts))
        set_(self, "all_tools", tools)
        set_(self, "models", bound)
        set_(self, "model_names", names)
        set_(self, "until_tools", _until_tools(self.until_tool))
        set_(
            self, "before_model_hooks", tuple(m for m in middleware if m.overrides("before_model"))
        )
        set_(
            self,
            "before_fallback_hooks",
            tuple(m for m in middleware if m.overrides("before_fallback")),
        )
        set_(
            self,
            "after_model_hooks",
            tuple(m for m in reversed(middleware) if m.overrides("after_model")),
        )
        set_(
            self,
            "display_hooks",
            tuple(m for m in middleware if m.overrides("transform_display_message")),
        )
        set_(self, "callbacks", tuple(cb for mw in middleware for cb in mw.callbacks()))
        if not isinstance(self.mode, Mode):
            raise InvalidAgent("mode", f"must be a sagents Mode, got {type(self.mode).__name__}")

    def _check_fields(self) -> None:
        if not isinstance(self.agent_id, str) or not self.agent_id.strip():
            raise InvalidAgent("agent_id", "must be a non-empty string")
        if not isinstance(self.model, BaseChatModel):
            raise InvalidAgent(
                "model", f"must be a langchain BaseChatModel, got {type(self.model).__name__}"
            )
        if not isinstance(self.max_runs, int) or self.max_runs < 1:
            raise InvalidAgent("max_runs", f"must be a positive integer, got {self.max_runs!r}")
        if self.tool_timeout is not None and not self.tool_timeout > 0:
            raise InvalidAgent("tool_timeout", "must be a positive number of seconds or None")
        if not isinstance(self.base_system_prompt, str):
            raise InvalidAgent("base_system_prompt", "must be a string")
        for i, fallback in enumerate(self.fallback_models):
            if not isinstance(fallback, BaseChatModel):
                raise InvalidAgent("fallback_models", f"[{i}] is not a langchain BaseChatModel")

    def _checked_middleware(self) -> tuple[Middleware, ...]:
        """The middleware, instantiated and validated (their metadata keys are unique)."""
        middleware = tuple(_instantiate(m, i) for i, m in enumerate(self.middleware))
        keys: set[str] = set()
        for mw in middleware:
            if mw.key in keys:
                raise InvalidMiddleware(f"two middleware use the metadata key {mw.key!r}")
            keys.add(mw.key)
            try:
                mw.validate()
            except SagentsError:
                raise
            except Exception as exc:
                raise InvalidMiddleware(f"{mw.name} failed validation: {exc}") from exc
        return middleware

    def _checked_tools(self, middleware: tuple[Middleware, ...]) -> dict[str, BaseTool]:
        """Every tool by name: the middleware's, then the agent's own (names are unique)."""
        tools: dict[str, BaseTool] = {}
        sources = [(mw.name, t) for mw in middleware for t in mw.tools()]
        sources += [("tools", as_tool(t)) for t in self.tools]
        for source, tool in sources:
            if tool.name in tools:
                raise InvalidAgent("tools", f"duplicate tool name {tool.name!r} (from {source})")
            tools[tool.name] = tool
        for mw in middleware:
            mw.check_tools(frozenset(tools))
        for name in _until_tools(self.until_tool):
            if name not in tools:
                raise InvalidAgent(
                    "until_tool", f"{name!r} is not one of the tools: {sorted(tools)}"
                )
        return tools

    def __reduce__(self) -> tuple[Callable[..., Agent], tuple[type[Agent], dict[str, Any]]]:
        # Pickled as its arguments, so that where it is unpickled (a Ray host) the derived
        # fields are derived again: the models bound to the tools' schemas are then shared
        # with every agent of the same model and tools there, as in one process, instead of
        # each agent bringing its own copy (8 KiB for three tools, measured).
        arguments = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        return _rebuilt, (type(self), arguments)

    @property
    def middleware_instances(self) -> tuple[Middleware, ...]:
        """The middleware, instantiated, in order."""
        return tuple(self.middleware)  # type: ignore[arg-type]

    async def run(self, state: State | None = None, *, sink: EventSink | None = None) -> RunResult:
        """Execute until the model is done, an interrupt, or an error.

        Raises:
            InvalidTransition: ``state`` has a pending interrupt (use :meth:`resume`).
        """
        from sagents.execution._run import Run

        return await Run(self, state, sink=sink).execute()

    async def resume(
        self,
        state: State,
        decisions: Sequence[Decision | Mapping[str, Any]],
        *,
        sink: EventSink | None = None,
    ) -> RunResult:
        """Continue a run that was interrupted for approval, with one decision per pending call.

        Raises:
            InvalidTransition: ``state`` has no pending interrupt.
            InvalidDecision: the decisions do not fit the interrupt (it is kept).
        """
        from sagents.execution._run import Run

        return await Run(self, state, sink=sink, decisions=decisions).execute()
