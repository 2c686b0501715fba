"""``Conversations``: what a caller may do with the conversations of its scope, done once.

The websocket, the snapshot and list routes of :func:`~sagents.web.conversation_router` and
the web demo's REST API are doors onto the same operations — list, create, load, send a
message, cancel, retry, decide, dismiss, reset — so those live here, over one
:class:`~sagents.Runtime`, the application's :class:`~sagents.SessionConfig` and a
:class:`~sagents.persistence.ConversationStore`, and the doors only translate requests and
errors.

**Scope.** Every operation takes the caller's scope (what the application's auth answered) and
first checks that the scope owns the conversation: a conversation of another scope is
indistinguishable from one that does not exist (``ConversationNotFound``). Running agents are
asked for their scope too, so an agent never answers a caller of another scope.

**Starting.** Sending a message, answering an approval, dismissing it or resetting goes
through ``Session``: the agent is started when it does not run, restored from its saved state,
so a conversation whose agent stopped (no viewers, inactivity) simply continues.

**The application's word.** An optional ``before_action`` hook is awaited before each action
with a :class:`ConversationAction`; what it raises refuses the action (a
``RegistryUnavailable`` while the server drains says "retry": HTTP 503; a
``ConversationNotFound`` hides the conversation; an ``InvalidOption`` says what to change).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from langchain_core.messages import AIMessage

from sagents._errors import (
    AgentNotRunning,
    ConfigurationError,
    ConversationNotFound,
    InvalidTransition,
)
from sagents._state import State
from sagents._status import Status
from sagents.persistence._protocols import Conversation, ConversationStore, Scope
from sagents.runtime._reset import ResetFiles
from sagents.runtime._runtime import Runtime
from sagents.session._config import SessionConfig
from sagents.session._session import Session

__all__ = [
    "NOT_RUNNING",
    "ActionKind",
    "BeforeAction",
    "ConversationAction",
    "Conversations",
    "Snapshot",
    "conversation_json",
    "store_of",
]

#: The status of a conversation whose agent does not run.
NOT_RUNNING = "not_running"
#: The longest automatic title (the first words of the first message).
_TITLE_CHARS = 60
#: How many display rows are read per page when a snapshot is built.
_PAGE = 200

#: What a caller does to a conversation (``"create"``: a new one).
ActionKind: TypeAlias = Literal[
    "create", "rename", "delete", "send", "retry", "cancel", "decide", "dismiss", "reset"
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationAction:
    """An action about to be taken, as the application's ``before_action`` hook sees it.

    Attributes:
        kind: what the caller does.
        scope: the caller's scope (what the application's auth answered).
        conversation_id: the conversation; None when one is being created.
    """

    kind: ActionKind
    scope: Scope
    conversation_id: str | None


#: Awaited before each action; raises a ``SagentsError`` to refuse it.
BeforeAction: TypeAlias = Callable[[ConversationAction], Awaitable[None]]


def store_of(config: SessionConfig) -> ConversationStore | None:
    """The configuration's persistence that keeps conversations, if one does."""
    for candidate in (config.agent_persistence, config.display_message_persistence):
        if isinstance(candidate, ConversationStore):
            return candidate
    return None


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


def _title(text: str | None) -> str | None:
    """A title from a message: its first words, on one line."""
    return " ".join((text or "").split())[:_TITLE_CHARS] or None


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


class Conversations:
    """The conversation operations of one runtime and session configuration, by scope.

    Args:
        runtime: the runtime the agents run in.
        config: the application's session configuration (factory, persistence, presence).
        store: where conversations are kept; default: the configuration's persistence that is
            a ``ConversationStore``.
        before_action: awaited before each action (see the module docs).

    Raises:
        ConfigurationError: no ``store`` and no persistence of ``config`` keeps conversations.
    """

    def __init__(
        self,
        runtime: Runtime,
        config: SessionConfig,
        store: ConversationStore | None = None,
        *,
        before_action: BeforeAction | None = None,
    ) -> None:
        found = store if store is not None else store_of(config)
        if found is None:
            raise ConfigurationError(
                "the conversation router needs a ConversationStore: give store=..., or a "
                "SessionConfig whose agent_persistence keeps conversations (MemoryPersistence, "
                "SqlPersistence)"
            )
        self.runtime = runtime
        self.config = config
        self.store: ConversationStore = found
        self._before_action = before_action

    async def _about_to(self, kind: ActionKind, scope: Scope, conversation_id: str | None) -> None:
        if self._before_action is not None:
            action = ConversationAction(kind=kind, scope=scope, conversation_id=conversation_id)
            await self._before_action(action)

    # -- reading ---------------------------------------------------------------------------------

    def agent_id(self, conversation_id: str) -> str:
        """The id of the conversation's agent."""
        return self.config.agent_id_for(conversation_id)

    async def status(self, scope: Scope, conversation_id: str) -> str:
        """The agent's status value, or ``"not_running"``."""
        return (await self.running(scope, conversation_id))[0]

    async def running(self, scope: Scope, conversation_id: str) -> tuple[str, int | None]:
        """The agent's status value (or ``"not_running"``) and its server instance
        (``AgentInfo.instance``; None when it does not run).

        A reconnecting client may resume from its last ``seq`` only within the same instance:
        every new instance numbers its events from 1 again.
        """
        info = await self.runtime.agent_info(self.agent_id(conversation_id))
        if info is None or info.scope != scope:
            return NOT_RUNNING, None
        return info.status.value, info.instance

    async def get(self, scope: Scope, conversation_id: str) -> Conversation:
        """The conversation, if ``scope`` owns it.

        Raises:
            ConversationNotFound: no such conversation for this scope.
        """
        found = await self.store.get_conversation(scope, conversation_id)
        if found is None:
            raise ConversationNotFound(
                f"no conversation {conversation_id!r} here; pick one from the list"
            )
        return found

    async def list_json(self, scope: Scope, *, limit: int = 200) -> list[dict[str, Any]]:
        """The scope's conversations, most recently updated first, with their status."""
        rows = await self.store.list_conversations(scope, limit=limit)
        # Only the running ones are asked (with a backend, each asks its host, concurrently).
        running = set(self.runtime.list_running_agents())
        asked = [c.id for c in rows if self.agent_id(c.id) in running]
        found = await asyncio.gather(*(self.status(scope, c) for c in asked))
        statuses = dict(zip(asked, found, strict=True))
        return [conversation_json(c, statuses.get(c.id, NOT_RUNNING)) for c in rows]

    async def snapshot(self, scope: Scope, conversation_id: str) -> Snapshot:
        """The conversation as a reloaded page shows it: messages, todos, pending approval."""
        conversation = await self.get(scope, conversation_id)
        status, instance = await self.running(scope, conversation_id)
        state: State | None = None
        if status != NOT_RUNNING:
            with contextlib.suppress(AgentNotRunning):  # it stopped meanwhile: read the saved
                state = await self.runtime.agent(self.agent_id(conversation_id)).get_state()
        if state is None:
            state = await self._saved_state(scope, conversation_id)
        messages: list[dict[str, Any]] = []
        rows = self.config.display_message_persistence
        after: int | None = None
        while rows is not None:
            page = await rows.list_display_messages(
                scope, conversation_id, after_sequence=after, limit=_PAGE
            )
            messages.extend(m.to_dict() for m in page)
            if len(page) < _PAGE:
                break
            after = page[-1].sequence
        return Snapshot(
            conversation=conversation,
            status=status,
            instance=instance,
            state=state,
            messages=messages,
        )

    async def _saved_state(self, scope: Scope, conversation_id: str) -> State | None:
        persistence = self.config.agent_persistence
        if persistence is None:
            return None
        stored = await persistence.load_state(scope, conversation_id)
        return None if stored is None else stored.state

    # -- changing --------------------------------------------------------------------------------

    async def create(self, scope: Scope, title: str | None = None) -> Conversation:
        """A new conversation of ``scope``; its agent starts with the first message."""
        await self._about_to("create", scope, None)
        return await self.store.create_conversation(scope, title=title)

    async def rename(self, scope: Scope, conversation_id: str, title: str) -> Conversation:
        """Change the title.

        Raises:
            ConversationNotFound: not this scope's conversation.
        """
        await self._about_to("rename", scope, conversation_id)
        updated = await self.store.update_conversation(scope, conversation_id, title=title)
        if updated is None:
            raise ConversationNotFound(f"no conversation {conversation_id!r} here")
        return updated

    async def delete(self, scope: Scope, conversation_id: str) -> None:
        """Stop the agent and delete the conversation, as one step (see ``Session.delete``)."""
        await self._about_to("delete", scope, conversation_id)
        if not await Session.delete(self.runtime, self.config, conversation_id, scope=scope):
            raise ConversationNotFound(f"no conversation {conversation_id!r} here")

    async def send(self, scope: Scope, conversation_id: str, text: str) -> None:
        """Add a user message and run; (re)starts the agent from its saved state if needed.
        A conversation without a title takes the first words of its first message.

        Raises:
            ConversationNotFound: not this scope's conversation.
        """
        await self._about_to("send", scope, conversation_id)
        conversation = await self.get(scope, conversation_id)
        session = await Session.ensure_running(
            self.runtime, self.config, conversation_id, scope=scope
        )
        # Each socket follows the agent on its own; this subscription is not needed.
        await session.events.aclose()
        await session.handle.add_message(text)
        if conversation.title is None and (title := _title(text)) is not None:
            await self.store.update_conversation(scope, conversation_id, title=title)

    async def retry(self, scope: Scope, conversation_id: str) -> None:
        """Run the agent again from its saved state, after a run that ended in an error (the
        model was unreachable, say): the conversation's last message gets its answer this
        time, and the user's message is not repeated.

        An agent that stopped since (its status is lost with it) is retried when its saved
        conversation still awaits the model's answer: the last message is not the model's.

        Raises:
            InvalidTransition: nothing to retry (the agent is not in error, or has its answer).
        """
        await self._about_to("retry", scope, conversation_id)
        await self.get(scope, conversation_id)
        status = await self.status(scope, conversation_id)
        if status == NOT_RUNNING:
            saved = await self._saved_state(scope, conversation_id)
            messages = [] if saved is None else saved.messages
            if not messages or isinstance(messages[-1], AIMessage):
                status = "answered"
        if status not in (Status.ERROR.value, NOT_RUNNING):
            raise InvalidTransition(f"there is nothing to retry: the agent is {status}")
        session = await Session.ensure_running(
            self.runtime, self.config, conversation_id, scope=scope
        )
        await session.events.aclose()
        await session.handle.execute()

    async def cancel(self, scope: Scope, conversation_id: str) -> None:
        """Cancel the run in progress.

        Raises:
            InvalidTransition: nothing is running.
        """
        await self._about_to("cancel", scope, conversation_id)
        await self.get(scope, conversation_id)
        if await self.status(scope, conversation_id) == NOT_RUNNING:
            raise InvalidTransition("the agent is not running; there is nothing to cancel")
        await self.runtime.cancel(self.agent_id(conversation_id))

    async def decide(
        self, scope: Scope, conversation_id: str, decisions: Sequence[Mapping[str, Any]]
    ) -> None:
        """Answer the pending approval or question (restarting the agent if needed).

        Raises:
            InvalidTransition: nothing waits for a decision.
            InvalidDecision: the decisions do not fit the pending calls.
        """
        await self._about_to("decide", scope, conversation_id)
        await self.get(scope, conversation_id)
        session = await Session.resume(
            self.runtime, self.config, conversation_id, list(decisions), scope=scope
        )
        # Each socket follows the agent on its own; this subscription is not needed.
        await session.events.aclose()

    async def dismiss(self, scope: Scope, conversation_id: str) -> None:
        """Clear the pending approval or question without a decision: the calls are answered
        as not run and the agent becomes idle (restarting it from its saved state if needed).

        Raises:
            InvalidTransition: nothing waits for a decision.
        """
        await self._about_to("dismiss", scope, conversation_id)
        await self.get(scope, conversation_id)
        await Session.dismiss(self.runtime, self.config, conversation_id, scope=scope)

    async def reset(self, scope: Scope, conversation_id: str, files: ResetFiles = "keep") -> None:
        """Start the conversation over: a run in progress is cancelled and the messages, todos
        and any pending approval go (the agent is started from its saved state if needed, so
        that the fresh state is what is saved).

        Raises:
            InvalidOption: ``files="clear"`` for files shared with other conversations.
        """
        await self._about_to("reset", scope, conversation_id)
        await self.get(scope, conversation_id)
        session = await Session.start(self.runtime, self.config, conversation_id, scope=scope)
        await session.handle.reset(files=files)
