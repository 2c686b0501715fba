"""``Session``: start, restore, resume and stop conversation agents.

The whole start pipeline of a conversation, in one place: router → factory → persisted state (or
the factory's fresh state) → ``runtime.start_agent``. Every operation is **idempotent and
race-free**: calls for one conversation are serialised by a lock per agent id in that runtime,
so fifty concurrent ``start`` calls build exactly one agent and the others return it.

``RegistryUnavailable`` from the runtime propagates unchanged: it means "retry shortly" (a web
layer maps it to HTTP 503), never "not running".

A caller's ``scope`` may be any hashable value with a stable key (see
:func:`~sagents.persistence.scope_key`); one without is refused with ``ConfigurationError``
before anything starts. Scopes are compared by that key, as the shipped stores compare them,
so a running agent is "not found" for exactly the callers its stored conversation is hidden
from.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import weakref
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sagents._errors import (
    AgentNotRunning,
    ConfigurationError,
    ConversationNotFound,
    InvalidOption,
)
from sagents._interrupt import Decision
from sagents._state import State
from sagents.execution._agent import Agent
from sagents.persistence._protocols import ConversationStore, Scope
from sagents.persistence._scope import scope_key
from sagents.runtime._handle import AgentHandle
from sagents.runtime._options import InitialSubscriber, StartOptions
from sagents.runtime._presence import PresenceTracking
from sagents.runtime._runtime import Runtime
from sagents.runtime._watch import PendingSubscription
from sagents.session._config import SessionConfig
from sagents.session._factory import FactoryConfig, SessionOptions

__all__ = ["Session"]

T = TypeVar("T")

# Per runtime: agent id -> (lock, callers holding or waiting for it). An entry lives only while
# someone uses it, so a long-lived process does not keep a lock per conversation it ever served.
_locks: weakref.WeakKeyDictionary[Runtime, dict[str, tuple[asyncio.Lock, int]]] = (
    weakref.WeakKeyDictionary()
)


@contextlib.asynccontextmanager
async def _lock(runtime: Runtime, agent_id: str) -> AsyncIterator[None]:
    locks = _locks.setdefault(runtime, {})
    lock, users = locks.get(agent_id, (None, 0))
    if lock is None:
        lock = asyncio.Lock()
    locks[agent_id] = (lock, users + 1)
    try:
        async with lock:
            yield
    finally:
        lock, users = locks[agent_id]
        if users == 1:
            del locks[agent_id]
        else:
            locks[agent_id] = (lock, users - 1)


class _AnyScope:
    """Marks "no scope check" (None is a real scope: single-tenant apps)."""


_ANY_SCOPE = _AnyScope()


def _serves(theirs: Scope, key: str | None) -> bool:
    """Whether an agent started for the scope ``theirs`` serves the caller whose scope has
    ``key``."""
    try:
        return scope_key(theirs) == key
    except ConfigurationError:
        return False  # started outside sessions, with a scope no session caller can name


def _running_in(runtime: Runtime, agent_id: str, key: str | None) -> bool:
    """Whether the agent runs; a caller of another scope is told it does not exist."""
    info = runtime.agent_info_nowait(agent_id)
    if info is None:
        return False
    if not _serves(info.scope, key):
        raise _not_in_scope(agent_id)
    return True


def _not_in_scope(agent_id: str) -> ConversationNotFound:
    return ConversationNotFound(
        f"no conversation for agent {agent_id!r} in this scope; check the conversation id"
    )


async def _attached(events: Any) -> None:
    attached = getattr(events, "attached", None)
    if attached is not None:
        await attached()


async def _maybe_await(value: T | Awaitable[T]) -> T:
    if inspect.isawaitable(value):
        return await cast(Awaitable[T], value)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """A running conversation agent, as returned by :meth:`start`, :meth:`ensure_running` or
    :meth:`resume`.

    Attributes:
        agent_id: the agent's id.
        conversation_id: the conversation.
        handle: talk to the agent.
        restored: True when this call started it from persisted state.
        started: True when this call started it (False: it was already running).
        events: with :meth:`ensure_running` and :meth:`resume`, the caller's subscription
            (attached before the agent's first event when this call started it); None
            otherwise.
    """

    agent_id: str
    conversation_id: str
    handle: AgentHandle
    restored: bool = False
    started: bool = False
    events: Any = None

    # -- the operations ----------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        runtime: Runtime,
        config: SessionConfig,
        conversation_id: str,
        *,
        scope: Scope = None,
        request_opts: Mapping[str, Any] | None = None,
        initial_subscribers: Sequence[InitialSubscriber] = (),
    ) -> Session:
        """Start the conversation's agent, or return it if it runs.

        Raises:
            ConfigurationError: ``scope`` is not hashable or has no stable key.
            ConversationNotFound: the agent runs for another scope.
            RegistryUnavailable: the runtime is starting or stopping; retry.
        """
        key = scope_key(scope)
        agent_id = config.agent_id_for(conversation_id)
        if runtime.backend is not None:
            if initial_subscribers:
                raise InvalidOption(
                    "initial_subscribers cannot reach an agent on another host; use "
                    "Session.ensure_running, whose events see the whole start"
                )
            kwargs = {"scope": scope, "request_opts": request_opts}
            return await cls._on_host(
                runtime, "start", config, agent_id, (conversation_id,), kwargs
            )
        async with _lock(runtime, agent_id):
            if _running_in(runtime, agent_id, key):
                return cls(
                    agent_id=agent_id,
                    conversation_id=conversation_id,
                    handle=runtime.agent(agent_id),
                )
            return await cls._boot(
                runtime,
                config,
                conversation_id,
                agent_id,
                scope=scope,
                request_opts=request_opts or {},
                initial_subscribers=initial_subscribers,
            )

    @classmethod
    async def ensure_running(
        cls,
        runtime: Runtime,
        config: SessionConfig,
        conversation_id: str,
        *,
        scope: Scope = None,
        request_opts: Mapping[str, Any] | None = None,
        channel: str = "main",
    ) -> Session:
        """The action path: make sure the agent runs and the caller is subscribed.

        When this call starts the agent, the returned ``events`` are attached through
        ``initial_subscribers`` and see its whole boot; when it already runs, ``events`` is a
        fresh subscription. Close ``events`` when done.

        Raises:
            ConfigurationError: ``scope`` is not hashable or has no stable key.
            ConversationNotFound: the agent runs for another scope.
        """
        key = scope_key(scope)
        agent_id = config.agent_id_for(conversation_id)
        if runtime.backend is not None:
            kwargs = {"scope": scope, "request_opts": request_opts}
            session = await cls._on_host(
                runtime, "start", config, agent_id, (conversation_id,), kwargs
            )
            # Started by this call: its whole start is still in the agent's replay buffer.
            remote_events = session.handle.subscribe(
                channel,  # type: ignore[arg-type]
                after_seq=0 if session.started else None,
            )
            await _attached(remote_events)
            return dataclasses.replace(session, events=remote_events)
        async with _lock(runtime, agent_id):
            if _running_in(runtime, agent_id, key):
                handle = runtime.agent(agent_id)
                return cls(
                    agent_id=agent_id,
                    conversation_id=conversation_id,
                    handle=handle,
                    events=handle.subscribe(channel),  # type: ignore[arg-type]
                )
            events = PendingSubscription(channel)  # type: ignore[arg-type]
            session = await cls._boot(
                runtime,
                config,
                conversation_id,
                agent_id,
                scope=scope,
                request_opts=request_opts or {},
                initial_subscribers=[events],
            )
            return cls(
                agent_id=agent_id,
                conversation_id=conversation_id,
                handle=session.handle,
                restored=session.restored,
                started=True,
                events=events,
            )

    @classmethod
    async def resume(
        cls,
        runtime: Runtime,
        config: SessionConfig,
        conversation_id: str,
        decisions: Sequence[Decision | Mapping[str, Any]],
        *,
        scope: Scope = None,
        request_opts: Mapping[str, Any] | None = None,
        channel: str = "main",
    ) -> Session:
        """Resume an interrupted conversation, subscribed to the run the decisions start.

        If its agent shut down while waiting (inactivity), it is restarted from the persisted
        state — the interrupt is durable — and the decisions are applied at once. The agent is
        reached as :meth:`ensure_running` reaches it, so ``events`` is attached before the
        decisions are sent (and, when this call restarts the agent, before its first event):
        the resumed run is seen whole. Close ``events`` when done.

        Raises:
            ConfigurationError: ``scope`` is not hashable or has no stable key.
            InvalidTransition: nothing is waiting for a decision.
            InvalidDecision: the decisions do not fit; the interrupt stays.
        """
        # ensure_running then the handle's resume, on a backend too: the host only starts the
        # agent, and the subscription lives with the caller who closes it (a session made on
        # the host would leave its events there, open, with nobody to read them).
        session = await cls.ensure_running(
            runtime,
            config,
            conversation_id,
            scope=scope,
            request_opts=request_opts,
            channel=channel,
        )
        try:
            await session.handle.resume(decisions)
        except BaseException:
            await session.events.aclose()
            raise
        return session

    @classmethod
    async def dismiss(
        cls,
        runtime: Runtime,
        config: SessionConfig,
        conversation_id: str,
        *,
        scope: Scope = None,
        request_opts: Mapping[str, Any] | None = None,
    ) -> Session:
        """Clear the conversation's pending approval or question without a new message.

        Every pending call is answered with a "not run" result and the agent becomes idle;
        nothing runs. If its agent shut down while waiting, it is restarted from the persisted
        state first (the interrupt is durable), as :meth:`resume` does.

        Raises:
            ConfigurationError: ``scope`` is not hashable or has no stable key.
            InvalidTransition: nothing is waiting for a decision.
        """
        scope_key(scope)  # refuses a scope without a key before anything runs
        if runtime.backend is not None:
            agent_id = config.agent_id_for(conversation_id)
            kwargs = {"scope": scope, "request_opts": request_opts}
            return await cls._on_host(
                runtime, "dismiss", config, agent_id, (conversation_id,), kwargs
            )
        session = await cls.start(
            runtime, config, conversation_id, scope=scope, request_opts=request_opts
        )
        await session.handle.dismiss_interrupt()
        return session

    @classmethod
    async def stop(
        cls,
        runtime: Runtime,
        config: SessionConfig,
        conversation_id: str,
        *,
        reason: str = "manual",
        scope: Scope | _AnyScope = _ANY_SCOPE,
    ) -> bool:
        """Stop the conversation's agent gracefully; False when it was not running.

        With ``scope``, a caller of another scope gets ``ConversationNotFound``; without
        it (trusted server code), any agent of the conversation is stopped.

        Raises:
            ConfigurationError: ``scope`` is not hashable or has no stable key.
        """
        key = None if isinstance(scope, _AnyScope) else scope_key(scope)
        agent_id = config.agent_id_for(conversation_id)
        backend = runtime.backend
        if backend is not None:
            kwargs: dict[str, Any] = {"reason": reason}
            if not isinstance(scope, _AnyScope):
                kwargs["scope"] = scope
            args = (conversation_id,)
            stopped = await backend.session("stop", config, agent_id, args, kwargs, where="running")
            return stopped is True
        async with _lock(runtime, agent_id):
            if isinstance(scope, _AnyScope):
                if runtime.get_status_nowait(agent_id) is None:
                    return False
            elif not _running_in(runtime, agent_id, key):
                return False
            await runtime.stop(agent_id, reason=reason)
            return True

    @classmethod
    async def delete(
        cls,
        runtime: Runtime,
        config: SessionConfig,
        conversation_id: str,
        *,
        scope: Scope = None,
    ) -> bool:
        """Delete the conversation with its state and display messages; False when this scope
        has no such conversation.

        Its agent is stopped first (reason ``"deleted"``), and both steps happen under the
        conversation's lock, so a message sent at the same time either ran before the delete
        (and is deleted with it) or starts after it and finds no conversation; and a save of
        the stopped agent can never bring the conversation back (its lease's saves are refused
        once the conversation is gone).

        Raises:
            ConfigurationError: ``scope`` is not hashable or has no stable key.
            ConversationNotFound: the agent runs for another scope.
            InvalidOption: neither persistence of ``config`` is a ``ConversationStore``.
        """
        key = scope_key(scope)
        store: ConversationStore | None = None
        for candidate in (config.agent_persistence, config.display_message_persistence):
            if isinstance(candidate, ConversationStore):
                store = candidate
                break
        if store is None:
            raise InvalidOption(
                "Session.delete needs agent_persistence or display_message_persistence to be a "
                "ConversationStore (as MemoryPersistence and SqlPersistence are)"
            )
        agent_id = config.agent_id_for(conversation_id)
        backend = runtime.backend
        if backend is not None:
            # Where it runs (stopped there under the lock), else on any host (the store is
            # shared): the host deletes it as an in-process runtime would.
            args, kwargs = (conversation_id,), {"scope": scope}
            for where in ("running", "any"):
                deleted = await backend.session(
                    "delete", config, agent_id, args, kwargs, where=where
                )
                if deleted is not None:
                    return deleted is True
        async with _lock(runtime, agent_id):
            if _running_in(runtime, agent_id, key):
                await runtime.stop(agent_id, reason="deleted")
            return await store.delete_conversation(scope, conversation_id)

    @classmethod
    async def fetch_running(
        cls,
        runtime: Runtime,
        config: SessionConfig,
        conversation_id: str,
        *,
        scope: Scope = None,
    ) -> Session | None:
        """The conversation's running session (its ``handle``; ``started`` and ``restored``
        False, no ``events``), or None when its agent does not run here or anywhere in the
        backend's cluster; never starts or restores it.

        Raises:
            ConfigurationError: ``scope`` is not hashable or has no stable key.
            ConversationNotFound: the agent runs for another scope than ``scope`` (None is the
                scope of a single-tenant app).
        """
        key = scope_key(scope)
        agent_id = config.agent_id_for(conversation_id)
        info = await runtime.agent_info(agent_id)
        if info is None:
            return None
        if not _serves(info.scope, key):
            raise _not_in_scope(agent_id)
        try:
            handle = runtime.agent(agent_id)
        except AgentNotRunning:
            return None  # it stopped meanwhile
        return cls(agent_id=agent_id, conversation_id=conversation_id, handle=handle)

    @classmethod
    def is_running(cls, runtime: Runtime, config: SessionConfig, conversation_id: str) -> bool:
        """Whether the conversation's agent runs in this runtime (or its backend's cluster)."""
        agent_id = config.agent_id_for(conversation_id)
        if runtime.backend is not None:
            return runtime.backend.runs(agent_id)
        return runtime.get_status_nowait(agent_id) is not None

    @classmethod
    async def _on_host(
        cls,
        runtime: Runtime,
        method: str,
        config: SessionConfig,
        agent_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Session:
        """``method`` run by the backend's host that runs (or is to run) the agent."""
        assert runtime.backend is not None
        result = await runtime.backend.session(
            method, config, agent_id, args, kwargs, where="place"
        )
        agent_id, conversation_id, restored, started = result
        return cls(
            agent_id=agent_id,
            conversation_id=conversation_id,
            handle=runtime.agent(agent_id),
            restored=restored,
            started=started,
        )

    # -- the pipeline ---------------------------------------------------------------------------

    @classmethod
    async def _boot(
        cls,
        runtime: Runtime,
        config: SessionConfig,
        conversation_id: str,
        agent_id: str,
        *,
        scope: Scope,
        request_opts: Mapping[str, Any],
        initial_subscribers: Sequence[InitialSubscriber],
    ) -> Session:
        factory, factory_config = await _maybe_await(
            config.factory_router.resolve(scope, conversation_id, agent_id, request_opts)
        )
        if not isinstance(factory_config, FactoryConfig):
            raise TypeError("FactoryRouter.resolve must return (factory, FactoryConfig)")
        agent, options = await _maybe_await(factory.create_agent(agent_id, factory_config))
        if not isinstance(agent, Agent) or not isinstance(options, SessionOptions):
            raise TypeError("Factory.create_agent must return (Agent, SessionOptions)")
        stored = None
        if config.agent_persistence is not None:
            stored = await config.agent_persistence.load_state(scope, conversation_id)
        if stored is not None:
            state, version, restored = stored.state, stored.version, True
        else:
            state = options.fresh_state or State()
            version, restored = None, False
        # The application's own server options (SessionConfig's, then the factory's) are
        # checked by the runtime like any start option: an unknown or mistyped one is refused.
        server_options = cast(StartOptions, {**config.server_options, **options.server_options})
        start: StartOptions = {
            "inactivity_timeout": config.inactivity_timeout,
            "conversation_id": conversation_id,
            "scope": scope,
            "state_version": version,
            **server_options,
        }
        if config.agent_persistence is not None:
            start["agent_persistence"] = config.agent_persistence
        if config.display_message_persistence is not None:
            start["display_message_persistence"] = config.display_message_persistence
        if config.presence is not None:
            start["presence"] = PresenceTracking(
                presence=config.presence,
                topic=config.presence_topic(conversation_id),
                grace_period=config.grace_period,
            )
        if initial_subscribers:
            start["initial_subscribers"] = [
                *start.get("initial_subscribers", ()),
                *initial_subscribers,
            ]
        handle = await runtime.start_agent(agent, state, **start)
        return cls(
            agent_id=agent_id,
            conversation_id=conversation_id,
            handle=handle,
            restored=restored,
            started=True,
        )
