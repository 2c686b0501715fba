"""Handles and subscriptions of agents that run on a host of the cluster.

:class:`RemoteAgentHandle` is an :class:`~sagents.AgentHandle` whose calls go to the host that
runs the agent (found in the backend's directory on every call, as a local handle finds its
server in the registry, so a handle survives a restart elsewhere). :class:`RemoteSubscription`
is a :class:`~sagents.runtime.Subscription` fed by that host's event feed to this process
(:mod:`sagents.ray._feed`): the same events, sequence numbers, replay (``after_seq``) and
overflow as in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ray
from langchain_core.messages import BaseMessage, HumanMessage

from sagents._errors import AgentNotRunning, AgentUnavailable, ConfigurationError
from sagents._interrupt import Decision
from sagents._state import State
from sagents._status import Status
from sagents.events import AgentShutdown, Channel, Event, SubscriptionOverflow
from sagents.execution._agent import Agent
from sagents.execution._tool_context import Display
from sagents.runtime._handle import AgentHandle
from sagents.runtime._info import AgentInfo
from sagents.runtime._options import AgentOptions
from sagents.runtime._publisher import Subscription
from sagents.runtime._reset import ResetFiles, check_files
from sagents.runtime._watch import Watch

if TYPE_CHECKING:
    from sagents.ray._backend import RayBackend
    from sagents.ray._feed import FeedLink
    from sagents.runtime._runtime import Runtime

__all__ = ["RemoteAgentHandle", "RemoteSubscription", "RemoteWatch"]


class RemoteAgentHandle(AgentHandle):
    """An agent handle routed to the agent's host (see the module docstring)."""

    __slots__ = ("_backend",)

    def __init__(self, runtime: Runtime, agent_id: str, backend: RayBackend) -> None:
        super().__init__(runtime, agent_id)
        self._backend = backend

    def __repr__(self) -> str:
        return f"RemoteAgentHandle({self.agent_id!r})"

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._backend.call_agent(self.agent_id, method, args, kwargs)

    async def add_message(
        self,
        message: BaseMessage | str,
        *,
        run: bool = True,
        tool_context: Mapping[str, Any] | None = None,
        display: Display = True,
    ) -> None:
        if isinstance(message, str):
            message = HumanMessage(message)
        options: dict[str, Any] = {"run": run}  # only what is set travels
        if tool_context is not None:
            options["tool_context"] = tool_context
        if display is not True:
            options["display"] = display
        await self._call("add_message", message, **options)

    async def execute(self) -> None:
        await self._call("execute")

    async def resume(self, decisions: Sequence[Decision | Mapping[str, Any]]) -> None:
        await self._call("resume", list(decisions))

    async def dismiss_interrupt(self) -> None:
        await self._call("dismiss_interrupt")

    async def reset(self, *, files: ResetFiles = "keep") -> None:
        check_files(files)
        await self._call("reset", files=files)

    async def cancel(self) -> None:
        await self._call("cancel")

    async def pause(self) -> None:
        await self._call("pause")

    async def stop(self, reason: str = "manual") -> None:
        await self._call("stop", reason)

    async def send_to_middleware(self, key: str, message: Any) -> None:
        await self._call("send_to_middleware", key, message)

    async def update_context(self, context: contextvars.Context | None = None) -> None:
        raise ConfigurationError(
            "update_context: a contextvars.Context cannot leave its process, and this agent "
            "runs on a host of the cluster; pass what tools need as messages or metadata"
        )

    async def touch(self) -> None:
        await self._call("touch")

    async def get_state(self) -> State:
        state: State = await self._call("get_state")
        return state

    async def export_state(self) -> dict[str, Any]:
        exported: dict[str, Any] = await self._call("export_state")
        return exported

    async def get_status(self) -> Status:
        status: Status = await self._call("get_status")
        return status

    async def info(self) -> AgentInfo:
        info: AgentInfo = await self._call("info")
        return info

    async def get_agent(self) -> Agent:
        agent: Agent = await self._call("get_agent")
        return agent

    async def options(self) -> AgentOptions:
        options: AgentOptions = await self._call("options")
        return options

    async def last_result(self) -> Any:
        return await self._call("last_result")

    def subscribe(self, channel: Channel = "main", *, after_seq: int | None = None) -> Subscription:
        return self._backend.subscribe(self.agent_id, channel, after_seq)

    async def restore_state(self, state: State | Mapping[str, Any]) -> None:
        if not isinstance(state, State):
            state = State.from_dict(state)
        await self._call("restore_state", state)

    async def update_agent_and_state(self, agent: Agent, state: State) -> None:
        await self._call("update_agent_and_state", agent, state)

    def is_running(self) -> bool:
        return self._backend.runs(self.agent_id)


class RemoteSubscription(Subscription):
    """A subscription to an agent on another host (see the module docstring).

    Its events come over the host's feed to this process (:mod:`sagents.ray._feed`), shared
    by every subscription of this process to that host. Iteration ends as a local one does
    (the agent's ``AgentShutdown``, an overflow, or :meth:`aclose`); if the host dies
    meanwhile it raises :class:`AgentUnavailable`, and a new subscription with ``after_seq``
    set to the last ``seq`` seen resumes once the agent runs again. A reader more than the
    feed's window behind overflows as in one process: the events it holds, then one
    ``SubscriptionOverflow`` (its ``seq`` the last one kept, ``dropped`` the events this
    process discarded), then the end. ``get_nowait`` returns the events already received.
    """

    __slots__ = (
        "_agent_id",
        "_attach",
        "_buffer",
        "_channel",
        "_dropped",
        "_ended",
        "_error",
        "_last_seq",
        "_link",
        "_replayed",
        "_sub_id",
        "_taken",
        "_waiter",
    )

    def __init__(
        self, link: FeedLink, agent_id: str, channel: Channel, after_seq: int | None
    ) -> None:
        self._link = link
        self._agent_id = agent_id
        self._channel: Channel = channel
        self._ended = False
        self._error: BaseException | None = None
        self._dropped = 0
        self._last_seq = after_seq or 0
        self._buffer: deque[Event] = deque()
        # The window counts live events only, as in one process: the first ``_replayed``
        # (all of them until the host has answered how many) are the replay.
        self._replayed: int | None = None
        self._taken = 0
        self._waiter: asyncio.Future[None] | None = None
        self._sub_id = link.add(self)
        # Answered once the host has subscribed it; the backend holds this process's next
        # calls to the agent until then (see attached()).
        attach = link.host.attach.remote(link.client_id, self._sub_id, agent_id, channel, after_seq)
        self._attach = asyncio.get_running_loop().create_task(self._attached(attach))

    def __repr__(self) -> str:
        state = "finished" if self.finished else "attached" if self.is_attached else "attaching"
        return f"<RemoteSubscription {self._agent_id!r} {self._channel} {state}>"

    @property
    def channel(self) -> Channel:
        return self._channel

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def finished(self) -> bool:
        return self._ended and not self._buffer

    def get_nowait(self) -> Event | None:
        if not self._buffer:
            return None
        event = self._buffer.popleft()
        self._taken += 1
        if isinstance(event, SubscriptionOverflow):
            self._dropped += event.dropped
        return event

    @property
    def is_attached(self) -> bool:
        """Whether the host has attached it (or it failed to attach: it has ended)."""
        return self._attach.done()

    def when_attached(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once attached (or failed to attach)."""
        self._attach.add_done_callback(lambda _: callback())

    async def attached(self) -> None:
        """Return once the host has attached this subscription: every event the agent
        publishes from now on reaches it. The backend awaits this before sending this
        process's next call to the agent, so that, as in one process, a call made after
        ``subscribe()`` has its events seen."""
        with contextlib.suppress(Exception):  # its failure is raised by iteration
            await asyncio.shield(self._attach)

    async def _attached(self, ref: Any) -> None:
        try:
            self._replayed = await ref
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            self.fail(cause if isinstance(cause, BaseException) else exc)
        except ray.exceptions.RayActorError as exc:
            self.fail(
                AgentUnavailable(
                    f"the host of agent {self._agent_id!r} did not answer ({exc}); subscribe "
                    "again once the agent runs again (Session.ensure_running)"
                )
            )

    # -- fed by the link -------------------------------------------------------------------

    def deliver(self, events: tuple[Event, ...], ended: bool, window: int) -> bool:
        if self._ended:
            return False
        if self._replayed is None:  # not attached yet: what arrives now is (mostly) replay
            room = len(events)
        else:  # the replay not taken yet, received or to come, is room beyond the window
            room = window - len(self._buffer) + max(0, self._replayed - self._taken)
        if len(events) > room:
            kept = events[: max(room, 0)]
            if kept:
                self._last_seq = kept[-1].seq
            self._buffer.extend(kept)
            overflow = SubscriptionOverflow(
                agent_id=self._agent_id, seq=self._last_seq, dropped=len(events) - len(kept)
            )
            self._buffer.append(overflow)
            self._end()
            return False
        if events:
            self._last_seq = events[-1].seq
            self._buffer.extend(events)
        if ended:
            self._end()
            return False
        self._wake()
        return True

    def fail(self, error: BaseException) -> None:
        if not self._ended:
            self._error = error
            self._end()

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by the consumer --------------------------------------------------------------

    async def __anext__(self) -> Event:
        if not self._attach.done():
            await asyncio.shield(self._attach)
        while not self._buffer:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self.get_nowait()
        assert event is not None
        return event

    async def aclose(self) -> None:
        """Stop it, here and on the host."""
        self._buffer.clear()
        self._attach.cancel()
        if not self._ended:
            self._end()
        self._link.remove(self._sub_id)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # (at interpreter shutdown)
            self._link.remove(self._sub_id)


class RemoteWatch(Watch):
    """``runtime.watch(agent_id)`` over the cluster: pending while the agent runs nowhere,
    then the events of each of its server instances in turn, on whichever host, each from its
    start (a subscription with ``after_seq=0``, replayed from the instance's buffer: nothing is
    missed unless the buffer overflowed, which a ``SubscriptionOverflow`` says). It ends only
    when closed."""

    def __init__(self, backend: RayBackend, agent_id: str, channel: Channel) -> None:
        self.agent_id = agent_id
        self.channel: Channel = channel
        self._backend = backend
        self._current: Subscription | None = None
        self._closed = False
        self._changed: asyncio.Event = asyncio.Event()
        self._remove = backend.on_change(agent_id, self._changed.set)
        self._instance_ended = True  # (no instance yet: the first one is read from its start)
        self._last_seq = 0

    @property
    def pending(self) -> bool:
        return self._current is None

    def attach(self, publisher: Any) -> None:
        raise ConfigurationError("a remote watch attaches by itself; it takes no publisher")

    async def __anext__(self) -> Event:
        while not self._closed:
            if self._current is None:
                if not self._backend.runs(self.agent_id):
                    self._changed.clear()
                    if not self._backend.runs(self.agent_id):
                        await self._changed.wait()
                    continue
                # A new instance from its start; the same one (its stream ended without its
                # AgentShutdown, e.g. an overflow) from the last event seen.
                after = 0 if self._instance_ended else self._last_seq
                self._current = self._backend.subscribe(self.agent_id, self.channel, after)
            try:
                event = await self._current.__anext__()
            except StopAsyncIteration:
                await self._drop()
                continue
            except (AgentNotRunning, AgentUnavailable):
                # The directory still lists an instance that has ended (or whose host died):
                # its next change says what runs now.
                await self._drop()
                self._changed.clear()
                await self._changed.wait()
                continue
            self._instance_ended = isinstance(event, AgentShutdown)
            self._last_seq = event.seq
            return event
        raise StopAsyncIteration

    async def _drop(self) -> None:
        if self._current is not None:
            await self._current.aclose()
            self._current = None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._remove()
        if self._current is not None:
            await self._current.aclose()
            self._current = None
        self._changed.set()
