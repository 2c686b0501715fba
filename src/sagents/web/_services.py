"""``WebServices``: the runtime, the database and the conversation operations of the demo.

Everything the demo serves is owned by one instance built from a
:class:`~sagents.web.WebConfig`: a :class:`~sagents.Runtime`, a
:class:`~sagents.persistence.sql.SqlPersistence`, a :class:`~sagents.LocalPresence` (or the
cluster's ``RayPresence``), the :class:`~sagents.SessionConfig` that ties them to the demo
factory, and the conversation operations over them (``conversations``: the same
``Conversations`` that :func:`~sagents.web.conversation_router` serves, for the demo's REST
routes). What is the demo's own lives here: its lifecycle (draining first: once a shutdown has
begun, new work is refused with ``ServiceDraining``), the AG-UI threads, and the files of each
identity.

Lifecycle: :meth:`start` upgrades the schema and starts the runtime;
:meth:`begin_drain` flips readiness and refuses new work; :meth:`aclose` lets running agents
finish (up to ``drain_timeout``), then stops every agent gracefully (each saves its state) and
closes the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from sagents._errors import (
    ConversationExists,
    FileSystemError,
    RegistryUnavailable,
    SagentsError,
)
from sagents._status import Status
from sagents.events import StatusChanged
from sagents.middleware._disk_file_store import DiskFileStore
from sagents.middleware._file_store import FileStore, normalize_path
from sagents.persistence._protocols import Scope
from sagents.persistence.sql import SqlPersistence, upgrade
from sagents.runtime._presence import LocalPresence, Presence
from sagents.runtime._runtime import Runtime
from sagents.session._config import SessionConfig
from sagents.session._router import SingleFactoryRouter
from sagents.web._config import WebConfig
from sagents.web._conversations import ConversationAction, Conversations
from sagents.web._demo_factory import DemoFactory, build_model

__all__ = [
    "RAY_NAMESPACE",
    "FileEntry",
    "IdentityFiles",
    "ServiceDraining",
    "WebServices",
]

_SCOPE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEntry:
    """One file of an identity's shared filesystem."""

    path: str
    size: int


class WebServices:
    """The demo's runtime, database and conversation operations.

    Args:
        config: the application configuration.
        model: the chat model to use instead of the one ``config`` names (tests).

    Attributes:
        runtime: the runtime of the demo's agents.
        store: the database (agent states, display messages, conversations).
        presence: who views which conversation.
        session_config: the demo's factory, persistence and timers.
        conversations: the operations on conversations, refusing new work while draining.
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
        self.conversations = Conversations(
            self.runtime, self.session_config, self.store, before_action=self.before_action
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

    async def before_action(self, action: ConversationAction) -> None:
        """Refuse new work once a shutdown has begun (a cancel is still taken): the
        ``before_action`` hook of the demo's conversation operations.

        Raises:
            ServiceDraining: the server is shutting down.
        """
        if action.kind != "cancel":
            self._check_accepting()

    async def open_thread(self, scope: Scope, conversation_id: str, text: str | None) -> None:
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
                await self.conversations.get(scope, conversation_id)
        elif found.title is None and title is not None:
            await self.store.update_conversation(scope, conversation_id, title=title)

    # -- files -----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _files(self, scope: str) -> Any:
        try:
            store = self.runtime.filesystem(scope)
            if self.runtime.backend is not None:
                # The store on the host running this identity's agents, which only a call
                # tells: none runs while that call says so.
                await store.exists("/")
        except SagentsError:  # no agent of this identity runs: read its files from disk
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
