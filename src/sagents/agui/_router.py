"""``agui_router``: a conversation of resident agents over the AG-UI event stream.

One route, ``POST`` with a ``RunAgentInput``, answered with a server-sent event stream. The
thread id is the conversation id: every run goes through ``Session.ensure_running``, so a thread
is served by the conversation's one agent server — started, or restored from its saved state
after an inactivity shutdown — and the application's ``SessionConfig`` (factory, persistence,
presence, timeouts) applies as it does for any other door.

A run, in order:

1. ``RUN_STARTED``; the agent made sure of (a failure ends the stream with ``RUN_ERROR``);
2. ``MESSAGES_SNAPSHOT`` (the conversation, with the new user messages) and ``STATE_SNAPSHOT``
   (todos, files, metadata: see :func:`~sagents.agui.default_state_view`), so a client that
   connects knows the whole conversation;
3. the input applied: new user messages added, resume entries turned into decisions;
4. the run's events as they happen (text, tool calls and their results, state deltas);
5. at the agent's next ``idle``, ``interrupted``, ``error`` or ``cancelled``: a last state delta
   and ``RUN_FINISHED`` (success, interrupt or cancelled outcome) or ``RUN_ERROR``.

A run without new messages or resume entries applies nothing: it reports a pending interrupt
again, follows a run already in progress (started by another door) to its end, or just sends the
snapshots. A client that leaves does not stop the agent's run: the conversation lives in its
agent, and the next run (or any other door) sees what it did.

**Presence.** An open stream is a viewer of the conversation (``SessionConfig.presence``), like a
tab of the web demo: when the last one goes, the agent's grace period starts.

**Plug points.** The application gives the runtime and the session configuration (each a value,
or a callable of the request), a FastAPI dependency answering the caller's scope (its auth: any
hashable value with a stable key, see :func:`sagents.persistence.scope_key`), and optionally
``prepare_thread``, called before each run to check or create the conversation.

Errors before the stream starts are HTTP errors (415 not JSON, 422 an input that does not fit,
404 a thread the caller may not use, 503 retry); once it has started they are ``RUN_ERROR``
events with a ``code``. Messages from storage are never quoted: they go to the log.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint's annotations at
# run time, and the scope dependency is a local of agui_router that a string annotation would
# not find.

import contextlib
import inspect
import itertools
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeAlias

import anyio
from ag_ui.core import BaseEvent, MessagesSnapshotEvent, RunAgentInput
from ag_ui.encoder import EventEncoder
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from sagents._errors import (
    AgentNotRunning,
    ConfigurationError,
    ConversationNotFound,
    ConversationOwnedElsewhere,
    InvalidDecision,
    InvalidTransition,
    PersistenceFailed,
    RegistryUnavailable,
    SagentsError,
    StateConflict,
)
from sagents._files import ConversationFiles
from sagents._state import State
from sagents._status import Status
from sagents.agui._input import UnsupportedInput, plan_run, user_texts
from sagents.agui._mapping import EventMapper, agui_messages, default_state_view
from sagents.events import Event
from sagents.persistence._protocols import Scope
from sagents.persistence._scope import scope_key
from sagents.runtime._handle import AgentHandle
from sagents.runtime._runtime import Runtime
from sagents.session._config import SessionConfig
from sagents.session._session import Session

__all__ = ["StateView", "ThreadRun", "agui_router"]

_log = logging.getLogger("sagents.agui")

#: What a UI is shown of an agent's state: a JSON object built from the state.
StateView: TypeAlias = Callable[[State], Mapping[str, Any]]
RuntimeSource: TypeAlias = Runtime | Callable[[Request], Runtime]
ConfigSource: TypeAlias = (
    SessionConfig | Callable[[Request], SessionConfig | Awaitable[SessionConfig]]
)

#: The longest thread id accepted (what the shipped stores keep as a conversation id).
MAX_THREAD_ID = 255
#: How deep a resume payload may nest.
_MAX_DEPTH = 32
#: How long the clean-up of a stream (its subscription, its viewer) may take.
_CLEANUP_SECONDS = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreadRun:
    """A run about to start, as the application's ``prepare_thread`` hook sees it.

    Attributes:
        scope: the caller's scope (what the ``scope`` dependency answered).
        thread_id: the thread, i.e. the conversation id.
        run_id: the run.
        user_texts: the texts of the user messages at the end of the input (the new message,
            for a client that sends one; e.g. to title a new conversation).
        input: the whole input, as the client sent it.
    """

    scope: Scope
    thread_id: str
    run_id: str
    user_texts: tuple[str, ...]
    input: RunAgentInput


def _no_scope() -> Scope:
    return None


def _storable(value: Any, depth: int = 0) -> bool:
    """Whether every string in ``value`` can be stored (no U+0000, no lone surrogate) and it
    nests at most ``_MAX_DEPTH`` levels."""
    if depth > _MAX_DEPTH:
        return False
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, list):
        return all(_storable(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(_storable(k, depth) and _storable(v, depth + 1) for k, v in value.items())
    return True


def _failure(exc: SagentsError, doing: str) -> tuple[int, str, str]:
    """``(HTTP status, code, message)`` for an error; a message that may quote storage is
    replaced, and its cause logged."""
    if isinstance(exc, ConversationNotFound):
        return 404, "not_found", str(exc)
    if isinstance(exc, InvalidDecision):
        return 422, "invalid_decision", str(exc)
    if isinstance(exc, InvalidTransition | AgentNotRunning):
        return 409, "conflict", str(exc)
    if isinstance(exc, RegistryUnavailable):
        return 503, "unavailable", str(exc)
    if isinstance(exc, ConversationOwnedElsewhere):
        message = "this conversation is open in another server process; try again in a moment"
        return 409, "owned_elsewhere", message
    if isinstance(exc, StateConflict):
        return 409, "conflict", "this conversation changed elsewhere; run again to see it"
    if isinstance(exc, PersistenceFailed) or getattr(exc, "retryable", False) is True:
        _log.warning("%s: unavailable for now: %r", doing, exc, exc_info=exc)
        return 503, "unavailable", "the server cannot do that right now; try again in a moment"
    _log.error("%s failed: %r", doing, exc, exc_info=exc)
    return 500, "internal", "the server could not do that; try again"


def _refuse(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _check_input(run: RunAgentInput, max_message_chars: int) -> tuple[str, ...]:
    """The input's user texts, once the input is known to fit.

    Raises:
        HTTPException: 422, with what does not fit.
    """
    if not run.thread_id or len(run.thread_id) > MAX_THREAD_ID or not _storable(run.thread_id):
        raise _refuse(422, f"threadId: 1 to {MAX_THREAD_ID} characters of storable text")
    try:
        texts = user_texts(run)
    except UnsupportedInput as exc:
        raise _refuse(422, str(exc)) from None
    for _, text in texts:
        if not text.strip():
            raise _refuse(422, "a user message needs some text")
        if len(text) > max_message_chars:
            raise _refuse(422, f"a user message is limited to {max_message_chars} characters")
        if not _storable(text):
            raise _refuse(422, "a user message holds U+0000 or a lone surrogate")
    for entry in run.resume or ():
        if not _storable(entry.interrupt_id) or not _storable(entry.payload):
            raise _refuse(
                422,
                f"resume entry {entry.interrupt_id[:64]!r}: its payload holds U+0000 or a lone "
                f"surrogate, or nests deeper than {_MAX_DEPTH} levels",
            )
    return tuple(text for _, text in texts)


def agui_router(
    runtime: RuntimeSource,
    config: ConfigSource,
    *,
    scope: Callable[..., Any] | None = None,
    prepare_thread: Callable[[ThreadRun], Awaitable[None]] | None = None,
    state_view: StateView = default_state_view,
    include_files: bool = True,
    max_message_chars: int = 20_000,
    path: str = "",
) -> APIRouter:
    """A router with the AG-UI endpoint: ``POST {path}`` runs a conversation (see the module
    docs). Mount it with ``app.include_router(agui_router(...), prefix="/agui")``.

    Args:
        runtime: the runtime, or a callable answering it for a request (e.g. one started in
            the app's lifespan: ``lambda request: request.app.state.runtime``).
        config: the ``SessionConfig`` of the conversations, or a callable (sync or async)
            answering it for a request.
        scope: a FastAPI dependency answering the caller's scope (the tenant its conversations
            belong to: any hashable value with a stable key, see
            :func:`sagents.persistence.scope_key`); it raises ``HTTPException`` to refuse the
            caller. None: one scope, ``None``, for everyone.
        prepare_thread: awaited before each run with a :class:`ThreadRun`, to check the thread
            or create its conversation; it raises ``ConversationNotFound`` to refuse the thread
            (404), ``RegistryUnavailable`` to say "retry" (503).
        state_view: what the AG-UI state holds of the agent's state (a JSON object).
        include_files: add ``"files"``, the paths of the agent's files, to the state (agents
            that have a filesystem, in this process or on a backend's host).
        max_message_chars: the longest user message accepted.
        path: the route's path under the router's prefix.
    """
    router = APIRouter()
    viewers = itertools.count(1)
    dependency = scope or _no_scope

    @router.post(path, response_class=StreamingResponse, summary="Run a conversation (AG-UI)")
    async def run_agent(
        request: Request, caller: Annotated[Any, Depends(dependency)]
    ) -> StreamingResponse:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise _refuse(415, "send the RunAgentInput as application/json")
        try:
            run = RunAgentInput.model_validate_json(await request.body())
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "body"
            raise _refuse(422, f"not a RunAgentInput: {where}: {exc.errors()[0]['msg']}") from None
        texts = _check_input(run, max_message_chars)
        try:
            scope_key(caller)  # a scope without a key is the application's bug: 500, logged
        except ConfigurationError as exc:
            status, _, message = _failure(exc, "AG-UI scope dependency")
            raise _refuse(status, message) from None
        the_runtime = runtime if isinstance(runtime, Runtime) else runtime(request)
        the_config = config
        if not isinstance(the_config, SessionConfig):
            answer = the_config(request)
            the_config = await answer if inspect.isawaitable(answer) else answer
        if prepare_thread is not None:
            thread = ThreadRun(
                scope=caller,
                thread_id=run.thread_id,
                run_id=run.run_id,
                user_texts=texts,
                input=run,
            )
            try:
                await prepare_thread(thread)
            except SagentsError as exc:
                status, _, message = _failure(exc, f"AG-UI thread {run.thread_id}")
                raise _refuse(status, message) from None
        stream = _RunStream(
            runtime=the_runtime,
            config=the_config,
            scope=caller,
            run=run,
            state_view=state_view,
            include_files=include_files,
            viewer=f"agui-{next(viewers)}",
        )
        encoder = EventEncoder()
        return StreamingResponse(
            (encoder.encode(event) async for event in stream.events()),
            media_type=encoder.get_content_type(),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router


class _RunStream:
    """The events of one AG-UI run (the module docs list them)."""

    def __init__(
        self,
        *,
        runtime: Runtime,
        config: SessionConfig,
        scope: Scope,
        run: RunAgentInput,
        state_view: StateView,
        include_files: bool,
        viewer: str,
    ) -> None:
        self.runtime = runtime
        self.config = config
        self.scope = scope
        self.run = run
        self.state_view = state_view
        self.include_files = include_files
        self.viewer = viewer
        self.mapper = EventMapper(thread_id=run.thread_id, run_id=run.run_id)

    async def events(self) -> AsyncIterator[BaseEvent]:
        yield self.mapper.run_started()
        try:
            session = await Session.ensure_running(
                self.runtime, self.config, self.run.thread_id, scope=self.scope
            )
        except SagentsError as exc:
            for event in self._error(exc):
                yield event
            return
        # A viewer once the scope is known to own the conversation (the start checked it).
        presence = self.config.presence
        topic = self.config.presence_topic(self.run.thread_id)
        try:
            if presence is not None:
                # The scope's key: presence metadata may be listed as JSON or cross processes.
                meta = {"scope": scope_key(self.scope), "via": "agui"}
                await presence.track(topic, self.viewer, meta)
            async for event in self._drive(session.handle, session.events):
                yield event
        except SagentsError as exc:
            for event in self._error(exc):
                yield event
        except Exception:
            # A bug: the client is told the run failed (a stream cut short is all it would
            # see otherwise), the log gets the traceback.
            _log.exception("AG-UI run %s of thread %s failed", self.run.run_id, self.run.thread_id)
            for event in self.mapper.error("internal", "the server could not do that; try again"):
                yield event
        finally:
            # A client that leaves cancels the stream (Starlette's task group, anyio's
            # cancellation, which would cancel every await here again): the clean-up is
            # shielded, with a deadline of its own.
            with anyio.move_on_after(_CLEANUP_SECONDS, shield=True):
                await session.events.aclose()
                if presence is not None:
                    with contextlib.suppress(Exception):  # a viewer must never fail the stream
                        await presence.untrack(topic, self.viewer)

    def _error(self, exc: SagentsError) -> list[BaseEvent]:
        _, code, message = _failure(exc, f"AG-UI run {self.run.run_id}")
        return self.mapper.error(code, message)

    async def _drive(
        self, handle: AgentHandle, events: AsyncIterable[Event]
    ) -> AsyncIterator[BaseEvent]:
        mapper = self.mapper
        state = await handle.get_state()
        status = await handle.get_status()
        try:
            plan = plan_run(self.run, state)
        except UnsupportedInput as exc:  # checked before the stream: only a defensive net
            for event in mapper.error("invalid", str(exc)):
                yield event
            return
        shown = state.messages if plan.still_open else [*state.messages, *plan.messages]
        yield MessagesSnapshotEvent(messages=agui_messages(shown))
        yield mapper.state_snapshot(await self._view(handle, state))
        if plan.decisions is not None:
            await handle.resume(plan.decisions)
        elif plan.dismiss:
            await handle.dismiss_interrupt()
        last = len(plan.messages) - 1
        for index, message in enumerate(plan.messages):
            await handle.add_message(message, run=index == last)
        if plan.runs or (status is Status.RUNNING and not plan.dismiss):
            mapper.expect_run(running=status is Status.RUNNING)
            async for happened in events:
                for out in mapper.map(happened):
                    yield out
                if mapper.ended:
                    break
            if not mapper.ended:  # the subscription ended without the agent saying why
                for out in mapper.error("agent_stopped", "the agent stopped; run again"):
                    yield out
                return
        pending = state.interrupt
        with contextlib.suppress(SagentsError):  # it stopped meanwhile: the deltas sent stand
            state = await handle.get_state()
            for out in mapper.state_update(await self._view(handle, state)):
                yield out
            pending = state.interrupt
        for out in mapper.finish(interrupt=pending if plan.still_open else None):
            yield out

    async def _view(self, handle: AgentHandle, state: State) -> dict[str, Any]:
        view = dict(self.state_view(state))
        if self.include_files:
            files = await self._files(handle)
            if files is not None:
                view["files"] = files
        return view

    async def _files(self, handle: AgentHandle) -> list[str] | None:
        """The paths of the agent's files; None when it has no filesystem."""
        try:
            options = await handle.options()
            where = options.filesystem_scope
            if where is None:
                if options.conversation_id is not None:
                    where = ConversationFiles(
                        scope=options.scope, conversation_id=options.conversation_id
                    )
                else:
                    where = ConversationFiles(scope=options.scope, agent_id=handle.agent_id)
            return sorted(await self.runtime.filesystem(where).list("/"))
        except SagentsError:
            return None
