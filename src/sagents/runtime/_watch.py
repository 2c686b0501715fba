"""Durable subscriptions: ``runtime.watch(agent_id)``.

A plain subscription ends with its server (``AgentShutdown`` is its last event). A watch spans
server instances: it is *pending* while the agent is not running, attaches to each new instance
the moment it registers (before that instance publishes anything, so nothing is missed), and
yields the events of one instance after the other, each instance's ``AgentShutdown`` included.
It ends only when the caller closes it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Self

from sagents._resource import AsyncResource
from sagents.events import Channel, Event
from sagents.runtime._publisher import Publisher, Subscription

if TYPE_CHECKING:
    from sagents.runtime._registry import Registry
    from sagents.runtime._server import AgentServer

__all__ = ["PendingSubscription", "Watch"]


class Watch(AsyncResource):
    """An async iterator of one agent id's events across restarts; close it when done."""

    def __init__(self, registry: Registry[AgentServer], agent_id: str, channel: Channel) -> None:
        self.agent_id = agent_id
        self.channel: Channel = channel
        self._subscriptions: deque[Subscription] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._closed = False
        self._publisher: Publisher | None = None
        self._remove = registry.add_watcher(agent_id, self._attach)
        current = registry.get(agent_id)
        if current is not None and not current.closed:
            self._attach(current)

    @property
    def pending(self) -> bool:
        """True while no server instance is attached (the agent is not running)."""
        return not self._subscriptions

    def _attach(self, server: AgentServer) -> None:
        self.attach(server.publisher)

    def attach(self, publisher: Publisher) -> None:
        """Attach to a server instance's publisher (also usable in ``initial_subscribers``)."""
        if self._closed or publisher is self._publisher:
            return
        self._publisher = publisher
        self._subscriptions.append(publisher.subscribe(self.channel))
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        while not self._closed:
            if self._subscriptions:
                try:
                    return await self._subscriptions[0].__anext__()
                except StopAsyncIteration:
                    self._subscriptions.popleft()
                    continue
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Detach from the registry and from the current instance; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._remove()
        while self._subscriptions:
            await self._subscriptions.popleft().aclose()
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)


class PendingSubscription(AsyncResource):
    """A subscription to the *next* server started with it in ``initial_subscribers``.

    ``start_agent(..., initial_subscribers=[events])`` attaches it before the server publishes
    anything, so the caller sees the whole boot; iterating before that waits. It ends with that
    server instance.
    """

    def __init__(self, channel: Channel = "main") -> None:
        self.channel: Channel = channel
        self._subscription: Subscription | None = None
        self._attached = asyncio.Event()
        self._closed = False

    def attach(self, publisher: Publisher) -> None:
        if self._subscription is not None or self._closed:
            return
        self._subscription = publisher.subscribe(self.channel)
        self._attached.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        if self._subscription is None:
            await self._attached.wait()
        if self._subscription is None:
            raise StopAsyncIteration
        return await self._subscription.__anext__()

    async def aclose(self) -> None:
        self._closed = True
        self._attached.set()
        if self._subscription is not None:
            await self._subscription.aclose()
