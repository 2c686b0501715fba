"""What a middleware hook can reach besides the state: its agent, the host's services, events,
background work and its own mailbox.

Hooks receive only the state, so that the common case stays a pure function. The rest is found
through :func:`get_middleware_context`, a ``contextvars`` lookup that works in every hook
(``on_server_start``, ``before_model``, ``after_model``, ``handle_message``) and in tasks those
hooks spawn. An agent server provides a context that can defer work to its mailbox; a plain
``Agent.run`` provides one without a mailbox, where :meth:`MiddlewareContext.send` raises.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from sagents import telemetry
from sagents._errors import SagentsError
from sagents.events import Event
from sagents.execution._containment import contained

if TYPE_CHECKING:
    from sagents.execution._agent import Agent

__all__ = ["MiddlewareContext", "get_middleware_context"]

_log = logging.getLogger("sagents.middleware")

_current: ContextVar[MiddlewareContext | None] = ContextVar(
    "sagents_middleware_context", default=None
)


class MiddlewareContext:
    """The host of a running agent, as middleware see it.

    Attributes:
        agent_id: the agent whose hook is running.
        services: what the host offers (the same mapping tools see in ``ToolContext.services``).
        agent: the agent of the current (or last) run, set by the run: its ``system_prompt``
            and ``model`` tell a hook what the model call will hold. None before the first run.
    """

    __slots__ = (
        "__weakref__",
        "_emit",
        "_persist",
        "_send",
        "_show",
        "_tasks",
        "agent",
        "agent_id",
        "services",
    )

    def __init__(
        self,
        agent_id: str,
        *,
        services: Mapping[str, Any] | None = None,
        emit: Callable[[Event], None] | None = None,
        send: Callable[[str, Any], None] | None = None,
        persist: Callable[[str], None] | None = None,
        agent: Agent | None = None,
        show: Callable[[str, dict[str, Any], str, dict[str, Any]], bool] | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.agent = agent
        self.services: Mapping[str, Any] = services if services is not None else {}
        self._emit = emit
        self._send = send
        self._persist = persist
        self._show = show
        self._tasks: set[asyncio.Task[Any]] = set()

    def emit(self, event: Event) -> None:
        """Publish ``event`` to the agent's subscribers (its ``agent_id`` is filled in)."""
        if self._emit is not None:
            if not event.agent_id:
                event = dataclasses.replace(event, agent_id=self.agent_id)
            self._emit(event)

    @property
    def can_send(self) -> bool:
        """Whether :meth:`send` works (the agent is hosted by an agent server)."""
        return self._send is not None

    def send(self, key: str, message: Any) -> None:
        """Deliver ``message`` to the ``handle_message`` hook of the middleware with ``key``.

        It goes through the agent's mailbox, so the hook sees the latest state; while a run is in
        progress it is handled right after the run ends.

        Raises:
            SagentsError: the agent is not hosted by an agent server (plain ``Agent.run``).
        """
        if self._send is None:
            raise SagentsError(
                "MiddlewareContext.send needs an agent server; start the agent with "
                "Runtime.start_agent instead of Agent.run"
            )
        self._send(key, message)

    def save_display_message(
        self,
        type: str,
        content: Mapping[str, Any],
        *,
        content_type: str = "text",
        metadata: Mapping[str, Any] | None = None,
    ) -> bool:
        """Add a row to the conversation's transcript that no message of the state stands
        behind (a todo snapshot, "the user cancelled", an answer as the user gave it): written
        by the display persistence, in order with the other rows, and broadcast as
        ``DisplayMessageSaved``. The model never sees it.

        Args:
            type: the row's kind, for the UI (e.g. ``"todos"``, ``"notice"``).
            content: its JSON content.
            content_type: how to render it (``text``, ``markdown``, ``json``...).
            metadata: more JSON the row keeps.

        Returns:
            Whether it will be written: False without an agent server, a display persistence
            or a conversation id.

        Raises:
            SagentsError: ``type`` is empty, or ``content`` / ``metadata`` is not JSON.
        """
        if not isinstance(type, str) or not type.strip():
            raise SagentsError("save_display_message: type must be a non-empty string")
        row = dict(content)
        extra = dict(metadata or {})
        try:
            json.dumps([row, extra, content_type], allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SagentsError(
                f"save_display_message: content and metadata must be JSON ({exc}); convert "
                "the values to strings, numbers, lists and dicts"
            ) from None
        return self._show is not None and self._show(type, row, content_type, extra)

    def persist(self, point: str) -> None:
        """Ask the host to save the state now, at lifecycle ``point`` (e.g. ``"title_generated"``).

        Without agent persistence (or without a server) this does nothing.
        """
        if self._persist is not None:
            self._persist(point)

    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, name: str | None = None
    ) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, owned by the agent: it is cancelled when the agent's
        server ends, and an exception it raises is logged, never lost silently.

        ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` raised by ``coro`` fail the
        task (as ``BaseExceptionRaised``, with the original as ``original``) instead of
        leaving it: asyncio would carry the first two out of the event loop, ending the process.
        """
        task = asyncio.get_running_loop().create_task(contained(coro), name=name)
        self._tasks.add(task)
        started = time.perf_counter()
        task.add_done_callback(lambda done: self._task_done(done, started))
        if telemetry.has_handlers(telemetry.MIDDLEWARE_TASK_SPAWNED):
            telemetry.execute(
                telemetry.MIDDLEWARE_TASK_SPAWNED,
                {"system_time": time.time()},
                {"agent_id": self.agent_id, "task": task.get_name()},
            )
        return task

    def _task_done(self, task: asyncio.Task[Any], started: float) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            _log.error(
                "agent %r: a middleware background task failed", self.agent_id, exc_info=error
            )
        event = (
            telemetry.MIDDLEWARE_TASK_COMPLETED
            if error is None
            else telemetry.MIDDLEWARE_TASK_FAILED
        )
        if telemetry.has_handlers(event):
            metadata: dict[str, Any] = {"agent_id": self.agent_id, "task": task.get_name()}
            if error is None:
                metadata["cancelled"] = task.cancelled()
            else:
                metadata["error"] = f"{type(error).__name__}: {error}"
            telemetry.execute(event, {"duration": time.perf_counter() - started}, metadata)

    async def aclose(self) -> None:
        """Cancel the background tasks and wait for them (called by the host when it ends)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def get_middleware_context() -> MiddlewareContext:
    """The context of the middleware hook running in this task.

    Raises:
        SagentsError: called outside a middleware hook of a sagents agent.
    """
    context = _current.get()
    if context is None:
        raise SagentsError(
            "get_middleware_context() was called outside a middleware hook; call it from "
            "on_server_start, before_model, after_model or handle_message"
        )
    return context


def set_middleware_context(context: MiddlewareContext | None) -> None:
    """Set the context for the current task (used by the loop and the agent server)."""
    _current.set(context)
