"""The middleware protocol.

A middleware adds to an agent without touching the loop: a piece of system prompt, tools, and
hooks around each model call. Every hook is optional: subclass :class:`Middleware` and override
what you need; the loop only calls hooks a middleware actually overrides, so an unused hook costs
nothing. ``before_model`` hooks run in list order and ``after_model`` hooks in reverse order, like
layers of an onion. A middleware keeps its own data in ``State.metadata[self.key]`` so that it is
persisted with the state.

The built-in middleware (TodoList, FileSystem, HumanInTheLoop, ...) use only this protocol.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.tools import BaseTool

from sagents._interrupt import Interrupt
from sagents._state import State

__all__ = ["Middleware"]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Middleware:
    """Base class for middleware; every hook is optional.

    Attributes:
        key: where this middleware keeps its data in ``State.metadata``; defaults to the class
            name in snake_case (``TodoList`` -> ``"todo_list"``).
    """

    key: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("key"):
            cls.key = _snake(cls.__name__)

    @property
    def name(self) -> str:
        """Name used in events and error messages."""
        return type(self).__name__

    def validate(self) -> None:
        """Raise ``InvalidMiddleware`` (or any ``SagentsError``) if misconfigured.

        Called once when an ``Agent`` is built with this middleware.
        """

    def check_tools(self, tool_names: Collection[str]) -> None:
        """Raise ``InvalidMiddleware`` if this middleware refers to tools the agent lacks.

        Called once when an ``Agent`` is built, with the names of all its tools.
        """

    def system_prompt(self) -> str | None:
        """Text appended to the agent's system prompt, in middleware order."""
        return None

    def tools(self) -> Sequence[BaseTool]:
        """Tools this middleware gives the model."""
        return ()

    def callbacks(self) -> Sequence[BaseCallbackHandler]:
        """langchain callback handlers attached to every model call (observability)."""
        return ()

    def transform_display_message(self, message: BaseMessage) -> BaseMessage | None:
        """Called when a message becomes display rows (what a UI shows and the display
        persistence keeps), in middleware order, each seeing the previous one's result:
        return another message to show (annotated ``additional_kwargs``, rewritten content),
        or None to keep it. The model's state is not changed. An exception is logged and the
        message shown as it was. Rewriting a streamed reply replaces its streamed text once it
        is complete."""
        return None

    def debug_summary(self) -> Mapping[str, object] | str:
        """What the live debugger shows of this middleware's configuration: a mapping (a
        key/value table) or text (shown as it is). Keep it small and for human reading;
        override it when the configuration holds large objects (agents, caches).

        The default: the tools it gives the model, and each public attribute as a short
        ``repr`` (at most 200 characters).
        """
        summary: dict[str, object] = {}
        tools = [str(getattr(t, "name", None) or getattr(t, "__name__", t)) for t in self.tools()]
        if tools:
            summary["tools"] = ", ".join(tools)
        for name, value in sorted(getattr(self, "__dict__", {}).items()):
            if not name.startswith("_"):
                summary[name] = _short_repr(value)
        return summary

    async def before_model(self, state: State) -> State | None:
        """Called before each model call; return a new state, or None to keep it."""
        return None

    async def after_model(self, state: State) -> State | Interrupt | None:
        """Called after each model call (its reply is the last message).

        Return a new state, an :class:`Interrupt` to pause for human approval before any tool
        of this turn runs, or None.
        """
        return None

    async def on_model_error(self, state: State, error: BaseException) -> State | None:
        """Called when the model call failed for good (after retries and fallbacks).

        Return a new state to make the call once more with it (a shorter history after the
        provider said the prompt is over the context window, say), or None to let the run end
        in error. The call is made again at most once; hooks run in list order, each given the
        state the previous one returned. ``error`` is what the last model attempt raised.
        """
        return None

    async def before_fallback(
        self, messages: list[BaseMessage], error: BaseException, model: BaseChatModel
    ) -> list[BaseMessage] | None:
        """Called when a fallback model takes over the call from the model before it (which
        raised ``error`` on its last attempt), before its first attempt.

        Return the messages to send it instead (a prompt written for another provider, say),
        or None to send the same. Hooks run in list order, each given the messages the previous
        one returned; the state is not changed.
        """
        return None

    async def handle_message(self, message: Any, state: State) -> State | None:
        """Handle an asynchronous message sent to this middleware (from a task or a process)."""
        return None

    async def on_server_start(self, state: State) -> State | None:
        """Called once when an agent server starts with this middleware."""
        return None

    async def on_server_stop(self, reason: str) -> None:
        """Called once when an agent server with this middleware ends, whatever ended it.

        The place to release what :meth:`on_server_start` acquired (connections, processes).
        ``reason`` is the ``AgentShutdown`` reason: ``"inactivity"``, ``"no_viewers"``,
        ``"manual"`` or the one given to ``stop``, ``"shutdown"`` (the runtime stops),
        ``"crash"``, or ``"start failed"`` (a later ``on_server_start`` hook raised, so this one
        may be called for a server whose start it never saw). Hooks run in reverse list order,
        after any run has been cancelled; each is given ``shutdown_timeout`` seconds, and what it
        raises is logged, never raised: the server ends anyway.
        """

    def overrides(self, hook: str) -> bool:
        """Whether this middleware overrides ``hook`` (so the loop can skip no-op hooks)."""
        return getattr(type(self), hook) is not getattr(Middleware, hook)


def _short_repr(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
