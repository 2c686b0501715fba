"""``WebServices``: the runtime, the database and the conversation operations of the demo.

The REST routes and the websocket protocol are two doors onto the same operations (create, list,
send a message, cancel, decide, dismiss, reset, read files), so those live here once, scoped by
the caller's identity, and both doors only translate requests and errors. Everything is owned by
one instance built from a :class:`~sagents.web.WebConfig`: a :class:`~sagents.Runtime`, a
:class:`~sagents.persistence.sql.SqlPersistence`, a :class:`~sagents.LocalPresence` and the
:class:`~sagents.SessionConfig` that ties them to the demo factory.

Lifecycle: :meth:`start` upgrades the schema and starts the runtime;
:meth:`begin_drain` flips readiness and refuses new work; :meth:`aclose` lets running agents
finish (up to ``drain_timeout``), then stops every agent gracefully (each saves its state) and
closes the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage

from sagents._errors import (
    AgentNotRunning,
    ConversationExists,
    ConversationNotFound,
    FileSystemError,
    InvalidTransition,
    RegistryUnavailable,
    SagentsError,
)
from sagents._state import State
from sagents._status import Status
from sagents.events import StatusChanged
from sagents.middleware._disk_file_store import DiskFileStore
from sagents.middleware._file_store import FileStore, normalize_path
from sagents.persistence._protocols import Conversation
from sagents.persistence.sql import SqlPersistence, upgrade
from sagents.runtime._presence import LocalPresence, Presence
from sagents.runtime._reset import ResetFiles
from sagents.runtime._runtime import Runtime
from sagents.session._config import SessionConfig
from sagents.session._router import SingleFactoryRouter
from sagents.session._session import Session
from sagents.web._config import WebConfig
from sagents.web._demo_factory import DemoFactory, build_model

__all__ = [
    "RAY_NAMESPACE",
    "FileEntry",
    "IdentityFiles",
    "ServiceDraining",
    "Snapshot",
    "WebServices",
    "conversation_json",
]

_SCOPE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
NOT_RUNNING = "not_running"


#: The Ray namespace of the demo's directory, hosts and presence board.
RAY_NAMESPACE = "sagents-demo"


@dataclass(frozen=True, slots=True)
class IdentityFiles:
    """The runtime's ``filesystem_store``: each identity's files under ``root/<identity>``.

    A value (not a closure), so that the hosts of a cluster receive it. ``debounce=0``: every
    change is on disk when the tool returns, so the files panel can read them from any
    process, also after the agents of this identity have stopped.
    """

    root: Path

    async def __call__(self, scope: Hashable) -> FileStore:
        if not isinstance(scope, str) or not _SCOPE.match(scope):
            raise FileSystemError(f"no filesystem for scope {scope!r}")
        return await DiskFileStore.open(self.root / scope, debounce=0)


class ServiceDraining(RegistryUnavailable):
    """The server is shutting down and takes no new work: retry on another instance."""


def conversation_json(conversation: Conversation, status: str) -> dict[str, Any]:
    """The JSON form of a conversation row and its agent's status."""
    return {
        "id": conversation.id,
        "title": conversation.title,
        "interrupted": conversation.interrupted,
        "status": status,
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
    }


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEntry:
    """One file of an identity's shared filesystem."""

    path: str
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """Everything a page needs to show a conversation (what a reload restores)."""

    conversation: Conversation
    status: str
    instance: int | None
    state: State | None
    messages: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        state = self.state
        return {
            "conversation": conversation_json(self.conversation, self.status),
            "status": self.status,
            "instance": self.instance,
            "todos": [] if state is None else [t.to_dict() for t in state.todos],
            "interrupt": None
            if state is None or state.interrupt is None
            else state.interrupt.to_dict(),
            "messages": self.messages,
        }


class WebServices:
    """The demo's conversation operations over one runtime and one database.

    Args:
        config: the application configuration.
        model: the chat model to use instead of the one ``config`` names (tests).
    """

    def __init__(
        self, config: WebConfig, *, model: BaseChatModel | None = None, owns_cluster: bool = False
    ) -> None:
        self.config = config
        self.files = IdentityFiles(config.data_dir / "files")
        self._owns_cluster = owns_cluster or config.ray_address is None
        self.presence: Presence
        if config.ray_address is None:
            self.presence = LocalPresence()
            self.runtime = Runtime(filesystem_store=self.files)
        else:
            from sagents.ray import RayBackend, RayPresence

            self.presence = RayPresence(namespace=RAY_NAMESPACE)
            backend = RayBackend(
                address=config.ray_address,
                namespace=RAY_NAMESPACE,
                # The cluster outlives a server process: whoever started it stops its hosts.
                stop_hosts=owns_cluster,
                runtime_options={"filesystem_store": self.files},
                # Ray's own chatter once per process is enough: the hosts log to the process
                # that started them, and to the cluster's log files.
                init_options={}
                if owns_cluster
                else {"logging_level": "ERROR", "log_to_driver": False},
            )
            self.runtime = Runtime(backend=backend)
        self.store = SqlPersistence(config.url)
        if model is None:
            model = build_model(config.model, delay=config.model_delay, **config.model_options)
        self.session_config = SessionConfig(
            factory_router=SingleFactoryRouter(DemoFactory(model)),
            agent_persistence=self.store,
            display_message_persistence=self.store,
            presence=self.presence,
            grace_period=config.grace_period,
            inactivity_timeout=config.inactivity_timeout,
            # Conversations are created by the API only: a start never brings a deleted one back.
            # A short lease: after a crash of the demo, its conversations are free again within
            # 10 s (a clean stop releases them at once).
            server_options={"create_conversation": False, "lease_ttl": 10.0},
        )
        self._draining = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create or upgrade the tables, then start the runtime."""
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        await upgrade(self.store.engine)
        await self.runtime.start()

    @property
    def draining(self) -> bool:
        return self._draining

    def ready(self) -> bool:
        """Readiness: the runtime can host agents and no shutdown has begun."""
        return not self._draining and self.runtime.ready()

    def _check_accepting(self) -> None:
        """Raise ``ServiceDraining`` once a shutdown has begun: no new work is taken."""
        if self._draining:
            raise ServiceDraining("the server is shutting down; try again in a moment")

    def begin_drain(self) -> None:
        """Flip readiness and refuse new messages (the first step of a graceful shutdown)."""
        self._draining = True

    async def aclose(self) -> None:
        """Drain, stop every agent gracefully (each saves its state), close the database.

        A server process of a cluster it did not start (``owns_cluster=False``) leaves the
        agents running on the cluster for the other processes."""
        self.begin_drain()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.drain_timeout):
                    if self._owns_cluster:
                        await self._runs_finished()
        finally:
            try:
                await self.runtime.shutdown()
            finally:
                await self.store.aclose()

    async def _runs_finished(self) -> None:
        async def finished(agent_id: str) -> None:
            with contextlib.suppress(SagentsError):  # it stopped meanwhile: nothing to wait for
                handle = self.runtime.agent(agent_id)
                async with handle.subscribe() as events:
                    if await handle.get_status() != Status.RUNNING:
                        return
                    async for event in events:
                        if isinstance(event, StatusChanged) and event.status != Status.RUNNING:
                            return

        await asyncio.gather(*(finished(a) for a in self.runtime.list_running_agents()))

    # -- conversations ---------------------------------------------------------------------------

    def agent_id(self, conversation_id: str) -> str:
        return self.session_config.agent_id_for(conversation_id)

    async def status(self, scope: str, conversation_id: str) -> str:
        """The agent's status value, or ``"not_running"``."""
        return (await self.running(scope, conversation_id))[0]

    async def running(self, scope: str, conversation_id: str) -> tuple[str, int | None]:
        """The agent's status value (or ``"not_running"``) and its server instance
        (``AgentInfo.instance``; None when it does not run).

        A reconnecting client may resume from its last ``seq`` only within the same instance:
        every new instance numbers its events from 1 again.
        """
        info = await self.runtime.agent_info(self.agent_id(conversation_id))
        if info is None or info.scope != scope:
            return NOT_RUNNING, None
        return info.status.value, info.instance

    async def conversation(self, scope: str, conversation_id: str) -> Conversation:
        """The conversation, if ``scope`` owns it.

        Raises:
            ConversationNotFound: no such conversation for this identity.
        """
        found = await self.store.get_conversation(scope, conversation_id)
        if found is None:
            raise ConversationNotFound(
                f"no conversation {conversation_id!r} here; pick one from the list"
            )
        return found

    async def list_conversations(self, scope: str) -> list[dict[str, Any]]:
        rows = await self.store.list_conversations(scope, limit=200)
        # Only the running ones are asked (with a backend, each asks its host, concurrently).
        running = set(self.runtime.list_running_agents())
        asked = [c.id for c in rows if self.agent_id(c.id) in running]
        found = await asyncio.gather(*(self.status(scope, c) for c in asked))
        statuses = dict(zip(asked, found, strict=True))
        return [conversation_json(c, statuses.get(c.id, NOT_RUNNING)) for c in rows]

    async def create_conversation(self, scope: str, title: str | None) -> Conversation:
        self._check_accepting()
        return await self.store.create_conversation(scope, title=title)

    async def open_thread(self, scope: str, conversation_id: str, text: str | None) -> None:
        """The conversation of an AG-UI thread: created on the thread's first run (AG-UI clients
        name their threads), titled after its first message like one started on the page.

        Raises:
            ConversationNotFound: the id belongs to another identity.
            ServiceDraining: the server is shutting down.
        """
        self._check_accepting()
        title = " ".join((text or "").split())[:60] or None
        found = await self.store.get_conversation(scope, conversation_id)
        if found is None:
            try:
                await self.store.create_conversation(
                    scope, conversation_id=conversation_id, title=title
                )
            except ConversationExists:  # taken meanwhile, or by another identity
                await self.conversation(scope, conversation_id)
        elif found.title is None and title is not None:
            await self.store.update_conversation(scope, conversation_id, title=title)

    async def rename(self, scope: str, conversation_id: str, title: str) -> Conversation:
        updated = await self.store.update_conversation(scope, conversation_id, title=title)
        if updated is None:
            raise ConversationNotFound(f"no conversation {conversation_id!r} here")
        return updated

    async def delete(self, scope: str, conversation_id: str) -> None:
        """Stop the agent and delete the conversation, as one step (see ``Session.delete``)."""
        if not await Session.delete(
            self.runtime, self.session_config, conversation_id, scope=scope
        ):
            raise ConversationNotFound(f"no conversation {conversation_id!r} here")

    async def snapshot(self, scope: str, conversation_id: str) -> Snapshot:
        """The conversation as a reloaded page shows it: messages, todos, pending approval."""
        conversation = await self.conversation(scope, conversation_id)
        status, instance = await self.running(scope, conversation_id)
        state: State | None = None
        if status != NOT_RUNNING:
            with contextlib.suppress(AgentNotRunning):  # it stopped meanwhile: read the saved
                state = await self.runtime.agent(self.agent_id(conversation_id)).get_state()
        if state is None:
            stored = await self.store.load_state(scope, conversation_id)
            state = None if stored is None else stored.state
        messages: list[dict[str, Any]] = []
        after: int | None = None
        while True:
            page = await self.store.list_display_messages(
                scope, conversation_id, after_sequence=after, limit=200
            )
            messages.extend(m.to_dict() for m in page)
            if len(page) < 200:
                break
            after = page[-1].sequence
        return Snapshot(
            conversation=conversation,
            status=status,
            instance=instance,
            state=state,
            messages=messages,
        )

    # -- actions ---------------------------------------------------------------------------------

    async def send(self, scope: str, conversation_id: str, text: str) -> None:
        """Add a user message and run; (re)starts the agent from its saved state if needed.

        Raises:
            ConversationNotFound: not this identity's conversation.
            ServiceDraining: the server is shutting down.
        """
        self._check_accepting()
        conversation = await self.conversation(scope, conversation_id)
        session = await Session.ensure_running(
            self.runtime, self.session_config, conversation_id, scope=scope
        )
        # The socket of each tab follows the agent on its own; this subscription is not needed.
        await session.events.aclose()
        await session.handle.add_message(text)
        if conversation.title is None:
            title = " ".join(text.split())[:60] or None
            if title:
                await self.store.update_conversation(scope, conversation_id, title=title)

    async def retry(self, scope: str, conversation_id: str) -> None:
        """Run the agent again from its saved state, after a run that ended in an error (the
        model was unreachable, say): the conversation's last message gets its answer this
        time, and the user's message is not repeated.

        An agent that stopped since (its status is lost with it) is retried when its saved
        conversation still awaits the model's answer: the last message is not the model's.

        Raises:
            InvalidTransition: nothing to retry (the agent is not in error, or has its answer).
            ServiceDraining: the server is shutting down.
        """
        self._check_accepting()
        await self.conversation(scope, conversation_id)
        status = await self.status(scope, conversation_id)
        if status == NOT_RUNNING:
            stored = await self.store.load_state(scope, conversation_id)
            messages = [] if stored is None else stored.state.messages
            if not messages or isinstance(messages[-1], AIMessage):
                status = "answered"
        if status not in (Status.ERROR.value, NOT_RUNNING):
            raise InvalidTransition(f"there is nothing to retry: the agent is {status}")
        session = await Session.ensure_running(
            self.runtime, self.session_config, conversation_id, scope=scope
        )
        # The socket of each tab follows the agent on its own; this subscription is not needed.
        await session.events.aclose()
        await session.handle.execute()

    async def cancel(self, scope: str, conversation_id: str) -> None:
        """Cancel the run in progress.

        Raises:
            InvalidTransition: nothing is running.
        """
        await self.conversation(scope, conversation_id)
        if await self.status(scope, conversation_id) == NOT_RUNNING:
            raise InvalidTransition("the agent is not running; there is nothing to cancel")
        await self.runtime.cancel(self.agent_id(conversation_id))

    async def decide(
        self, scope: str, conversation_id: str, decisions: Sequence[Mapping[str, Any]]
    ) -> None:
        """Answer the pending approval (restarting the agent from its saved state if needed).

        Raises:
            InvalidTransition: nothing waits for a decision.
            InvalidDecision: the decisions do not fit the pending calls.
        """
        self._check_accepting()
        await self.conversation(scope, conversation_id)
        await Session.resume(
            self.runtime, self.session_config, conversation_id, list(decisions), scope=scope
        )

    async def dismiss(self, scope: str, conversation_id: str) -> None:
        """Clear the pending approval or question without a decision: the calls are answered
        as not run and the agent becomes idle (restarting it from its saved state if needed).

        Raises:
            InvalidTransition: nothing waits for a decision.
        """
        self._check_accepting()
        await self.conversation(scope, conversation_id)
        await Session.dismiss(self.runtime, self.session_config, conversation_id, scope=scope)

    async def reset(self, scope: str, conversation_id: str, files: ResetFiles = "keep") -> None:
        """Start the conversation over: a run in progress is cancelled and the messages, todos
        and any pending approval go (the agent is started from its saved state if needed, so
        that the fresh state is what is saved). ``files="clear"`` is refused here: an
        identity's files are shared by all its conversations.

        Raises:
            InvalidOption: ``files="clear"`` for the identity's shared files.
        """
        self._check_accepting()
        await self.conversation(scope, conversation_id)
        session = await Session.start(
            self.runtime, self.session_config, conversation_id, scope=scope
        )
        await session.handle.reset(files=files)

    # -- files -----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _files(self, scope: str) -> Any:
        try:
            store = self.runtime.filesystem(scope)
        except SagentsError:  # no agent of this identity runs here: read its files from disk
            store = None
        if store is not None:
            yield store
            return
        opened = await self.files(scope)
        try:
            yield opened
        finally:
            await opened.aclose()

    async def list_files(self, scope: str) -> list[FileEntry]:
        """The files shared by this identity's conversations."""
        async with self._files(scope) as store:
            return [
                FileEntry(path=p, size=len((await store.read(p)).encode()))
                for p in await store.list("/")
            ]

    async def read_file(self, scope: str, path: str) -> str:
        """One file's content.

        Raises:
            FileSystemError: no such file, or an invalid path.
        """
        path = normalize_path(path)
        async with self._files(scope) as store:
            return str(await store.read(path))
