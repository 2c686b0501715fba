"""``MiddlewareHooks``: an agent server's middleware outside its runs.

Inside a run, middleware hooks are the execution loop's business. Outside one, the server calls
them itself: ``on_server_start`` when it starts, ``handle_message`` for a message sent to a
middleware by key (by the application through the handle, or by the middleware's own background
work through ``MiddlewareContext.send``), and ``on_server_stop`` when it ends, whatever ended it
(the one hook given the reason rather than the state: an ending has no state to change). They
all see the agent's one :class:`~sagents.execution.MiddlewareContext`, which this object makes
and closes with the server, and whose ``send`` and ``persist`` go through the server's mailbox:
a hook asks, the server does it in order.

A hook that returns a state replaces the server's; messages it appended are new messages like
any other (saved one by one, shown to the user). Made on first use: most agents never call a
hook outside a run, and those that run need the context anyway. An agent with a stop hook always
gets one by its end, so that the hook runs even for a server that never ran anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.messages import BaseMessage

from sagents import telemetry
from sagents._errors import InvalidTransition
from sagents._state import State
from sagents.events import Event
from sagents.execution._agent import Agent
from sagents.execution._containment import cancel_requests, reraise_cancellation
from sagents.execution._middleware import Middleware
from sagents.execution._middleware_context import MiddlewareContext, set_middleware_context
from sagents.execution._middleware_context import _current as _middleware_context
from sagents.runtime._recorder import common_prefix

if TYPE_CHECKING:
    from sagents.runtime._recorder import Recorder
    from sagents.runtime._runner import Runner

__all__ = ["HooksHost", "MiddlewareHooks", "has_stop_hooks"]

_log = logging.getLogger("sagents.server")


class HooksHost(Protocol):
    """What the hooks need from their agent server."""

    agent: Agent
    agent_id: str
    state: State
    services: Mapping[str, Any]
    recorder: Recorder

    def emit(self, event: Event) -> None: ...

    def post(self, fn: Callable[..., Any], *args: Any) -> None: ...

    def set_state(self, state: State, new_messages: Sequence[BaseMessage] = ()) -> None: ...

    def runs(self) -> Runner:
        """The server's runs (to hand a middleware its message after the run in progress)."""
        ...


class MiddlewareHooks:
    """Calls an agent's middleware hooks for its server (see the module docstring)."""

    __slots__ = ("_host", "context")

    def __init__(self, host: HooksHost) -> None:
        self._host = host
        #: What the middleware get from ``get_middleware_context()``, in and outside runs.
        self.context = MiddlewareContext(
            host.agent_id,
            services=host.services,
            emit=host.emit,
            send=self._send,
            persist=self._persist,
            show=self._show,
        )

    async def server_started(self) -> None:
        """Run every ``on_server_start`` hook, in order."""
        host = self._host
        for mw in host.agent.middleware_instances:
            if mw.overrides("on_server_start"):
                set_middleware_context(self.context)
                self._apply(await mw.on_server_start(host.state))

    async def deliver(self, mw: Middleware, message: Any) -> None:
        """Run ``mw``'s ``handle_message`` hook on ``message``."""
        if telemetry.has_handlers(telemetry.MIDDLEWARE_MESSAGE_RECEIVED):
            telemetry.execute(
                telemetry.MIDDLEWARE_MESSAGE_RECEIVED,
                {"system_time": time.time()},
                {"agent_id": self._host.agent_id, "middleware": mw.key},
            )
        set_middleware_context(self.context)
        self._apply(await mw.handle_message(message, self._host.state))

    async def deliver_deferred(self, key: str, message: Any) -> None:
        """Deliver a message that waited for the end of a run; a failure is logged."""
        since = cancel_requests()
        try:
            await self.deliver(middleware_named(self._host.agent, key), message)
        except BaseException as exc:
            reraise_cancellation(exc, since)
            _log.error("agent %r: %s.handle_message failed", self._host.agent_id, key, exc_info=exc)

    async def close(self, reason: str, timeout: float) -> None:
        """The server ends: run every ``on_server_stop`` hook, then stop what the hooks spawned.

        Hooks run in reverse list order (the last one started is the first to stop), each
        within ``timeout`` seconds; a hook that fails or runs out of time is logged and the
        next one runs. The spawned work is cancelled even if this is cancelled meanwhile, so a
        hook cut short still has its background tasks (and what they hold) ended.
        """
        try:
            for mw in reversed(self._host.agent.middleware_instances):
                if mw.overrides("on_server_stop"):
                    await self._stop(mw, reason, timeout)
        finally:
            await self.context.aclose()

    async def _stop(self, mw: Middleware, reason: str, timeout: float) -> None:
        agent_id = self._host.agent_id
        # The ending may run in a caller's task (a kill, a failed start): the context is set
        # for the hook only, never left behind in that task.
        token = _middleware_context.set(self.context)
        since = cancel_requests()
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                await mw.on_server_stop(reason)
        except BaseException as exc:
            reraise_cancellation(exc, since)  # the server's end was itself cancelled
            if deadline.expired():
                _log.error(
                    "agent %r: %s.on_server_stop did not finish within %s s",
                    agent_id,
                    mw.name,
                    timeout,
                )
            else:
                _log.error("agent %r: %s.on_server_stop failed", agent_id, mw.name, exc_info=exc)
        finally:
            _middleware_context.reset(token)

    def _apply(self, changed: State | None) -> None:
        if changed is None:
            return
        host = self._host
        old, new = host.state.messages, changed.messages
        appended: Sequence[BaseMessage] = ()
        if len(new) > len(old) and common_prefix(old, new) == len(old):
            appended = new[len(old) :]
        host.set_state(changed, appended)

    def _send(self, key: str, message: Any) -> None:
        self._host.post(self._sent, key, message)

    def _show(
        self, type: str, content: dict[str, Any], content_type: str, metadata: dict[str, Any]
    ) -> bool:
        display = self._host.recorder.display
        return display is not None and display.synthetic(type, content, content_type, metadata)

    def _persist(self, point: str) -> None:
        # Through the mailbox: a hook asks before it returns the state to save.
        self._host.post(self._host.recorder.checkpoint, point)

    async def _sent(self, key: str, message: Any) -> None:
        # Sent by a middleware's background work: a failure is logged, never a crash.
        since = cancel_requests()
        try:
            await self._host.runs().send_to_middleware(key, message)
        except BaseException as exc:
            reraise_cancellation(exc, since)  # a kill of the server is not the hook's failure
            _log.error(
                "agent %r: message to middleware %r failed", self._host.agent_id, key, exc_info=exc
            )


def has_stop_hooks(agent: Agent) -> bool:
    """Whether a middleware of ``agent`` has an ``on_server_stop`` hook (its server must then
    take the ending that awaits, never the task-free one)."""
    return any(mw.overrides("on_server_stop") for mw in agent.middleware_instances)


def middleware_named(agent: Agent, key: str) -> Middleware:
    """The agent's middleware with metadata key ``key``.

    Raises:
        InvalidTransition: it has none.
    """
    for mw in agent.middleware_instances:
        if mw.key == key:
            return mw
    keys = sorted(mw.key for mw in agent.middleware_instances)
    raise InvalidTransition(
        f"agent {agent.agent_id!r} has no middleware with key {key!r}; keys: {keys}"
    )
