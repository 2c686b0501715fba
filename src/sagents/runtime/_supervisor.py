"""Supervisors: restart what crashed, stop everything in order.

A :class:`Supervisor` runs an ordered list of children — each described by a :class:`ChildSpec`
whose ``start`` builds a *fresh* :class:`Child` for every incarnation — and applies OTP's rules
when one of them exits: the restart type of the child (``permanent``, ``transient``,
``temporary``) decides *whether* it comes back, the strategy (``one_for_one``, ``rest_for_one``,
``one_for_all``) decides *which* children come back with it, and the restart intensity (more than
``max_restarts`` restarts within ``max_seconds``) decides when the supervisor gives up, stops
every child and raises :class:`SupervisorGaveUp` from its own ``run()``. A supervisor is itself
a :class:`Child`, so a parent sees that as a crash: failures escalate up the tree.

Invariants:

- **Every task has an owner.** Each child incarnation runs in one task held by its record in the
  supervisor; ``run()`` never returns or raises while one of them is still alive. Cancelling
  ``run()`` from outside is a brutal kill: every child task is cancelled and awaited, then the
  ``CancelledError`` propagates.
- **One task decides.** Everything that changes the children — exits, restarts, ``start_child``,
  ``terminate_child``, ``restart_child``, ``stop`` — is a message in one mailbox consumed by the
  task running ``run()``. Done-callbacks of child tasks only enqueue; an exit whose task is no
  longer the child's current incarnation (it was already terminated by the supervisor) is stale
  and ignored, which is how a shutdown is told apart from a crash.
- **Ready means ready.** A child calls ``ready.started(value)`` once initialised (OTP's init
  acknowledgement, anyio's ``task_status.started``); starting returns only then. A child that
  raises or returns before that has failed to start, and nothing of it is left running.
- **Order is dependency order.** Children keep the position at which they were added; restarts
  happen in that order and shutdown in its reverse.
- Restart intensity is measured on the running loop's ``loop.time()``, so virtual time works.

The obvious alternative to the mailbox is to let callers mutate the children under a lock. The
mailbox is chosen because a restart in progress and a ``start_child`` then never interleave, no
exit is ever handled outside the owner task, and calls still queued when the supervisor ends fail
with :class:`SupervisorNotRunning` instead of hanging.

Deliberate differences from OTP, each because the Python API has no separate ``delete_child``:
``terminate_child`` also removes the child; a group restart (``rest_for_one``/``one_for_all``)
brings back the children that were running, not a ``transient`` one that had already finished
normally. As in OTP, ``temporary`` siblings stopped by a group restart are removed, a manual
``restart_child`` does not count toward the intensity, and a caller that stops waiting for
``start_child`` after the supervisor began starting the child leaves it running (supervised).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any, Self, TypeAlias

from sagents._errors import (
    ChildAlreadyStarted,
    ChildExitedBeforeReady,
    ChildNotFound,
    ConfigurationError,
    SupervisorAlreadyStarted,
    SupervisorGaveUp,
    SupervisorNotRunning,
)
from sagents.runtime._child import (
    Child,
    ChildExited,
    ChildInfo,
    ChildRestarted,
    ChildSpec,
    ChildStarted,
    ExitReason,
    GaveUp,
    Ready,
    RestartType,
    Strategy,
    SupervisorEvent,
)

__all__ = [
    "Child",
    "ChildAlreadyStarted",
    "ChildExited",
    "ChildExitedBeforeReady",
    "ChildInfo",
    "ChildNotFound",
    "ChildRestarted",
    "ChildSpec",
    "ChildStarted",
    "ExitReason",
    "GaveUp",
    "Ready",
    "RestartType",
    "Strategy",
    "Supervisor",
    "SupervisorAlreadyStarted",
    "SupervisorEvent",
    "SupervisorGaveUp",
    "SupervisorNotRunning",
]

_log = logging.getLogger("sagents.supervisor")


# -- internals ----------------------------------------------------------------------------------


class _State(Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(slots=True, eq=False)
class _Record:
    """A child as the supervisor tracks it; identity-hashed so it can sit in sets."""

    spec: ChildSpec
    child: Child | None = None
    task: asyncio.Task[None] | None = None
    restarts: int = 0


class _Ready:
    __slots__ = ("_called", "future")

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future
        self._called = False

    def started(self, value: Any = None) -> None:
        if self._called:
            # A programming error in the child, like anyio's task_status.started() twice.
            raise RuntimeError("ready.started() was called twice by the same child")
        self._called = True
        if not self.future.done():
            self.future.set_result(value)


@dataclass(frozen=True, slots=True)
class _Exited:
    id: Hashable
    task: asyncio.Task[None]


@dataclass(frozen=True, slots=True)
class _StartChild:
    spec: ChildSpec
    reply: asyncio.Future[Any]


@dataclass(frozen=True, slots=True)
class _TerminateChild:
    id: Hashable
    reply: asyncio.Future[Any]


@dataclass(frozen=True, slots=True)
class _RestartChild:
    id: Hashable
    reply: asyncio.Future[Any]


class _Stop:
    pass


_Message: TypeAlias = _Exited | _StartChild | _TerminateChild | _RestartChild | _Stop
_Call: TypeAlias = _StartChild | _TerminateChild | _RestartChild


class _StartFailed(Exception):
    """Internal: the child failed before ready; ``error`` is what to report."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Interrupted(Exception):
    """Internal: stop() was requested while waiting for a child to become ready."""


class _GiveUp(Exception):
    """Internal: the restart intensity was exceeded."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


def _reply(
    future: asyncio.Future[Any], value: Any = None, *, error: BaseException | None = None
) -> None:
    # The caller may have been cancelled meanwhile; nobody is waiting then.
    if future.done():
        return
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)


# -- the supervisor -----------------------------------------------------------------------------


class Supervisor:
    """Starts children, restarts them per OTP rules, and stops them in reverse order.

    Run it under a parent (it is a :class:`Child`) or as a root with ``async with``::

        async with Supervisor(children=[ChildSpec(id="db", start=Database)]) as sup:
            await sup.start_child(ChildSpec(id="web", start=WebServer))
            await sup.wait()

    Args:
        name: shown in logs, task names and events.
        strategy: which children are restarted with one that exited.
        max_restarts: restarts allowed within ``max_seconds``; one more and the supervisor gives
            up. ``0`` gives up at the first exit that calls for a restart.
        max_seconds: the sliding window of the restart intensity, in loop-time seconds.
        children: started in order by ``run()``; ``run()`` fails if one fails to start.
        on_event: called with each :data:`SupervisorEvent`; if it raises, the error is logged
            and the supervisor carries on.

    Raises:
        ConfigurationError: invalid strategy, limits, or duplicate ids in ``children``.
    """

    def __init__(
        self,
        *,
        name: str = "supervisor",
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        children: Sequence[ChildSpec] = (),
        on_event: Callable[[SupervisorEvent], None] | None = None,
    ) -> None:
        try:
            strategy = Strategy(strategy)
        except ValueError as exc:
            raise ConfigurationError(
                f"Supervisor {name!r}: strategy must be one of {[s.value for s in Strategy]}"
            ) from exc
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ConfigurationError(f"Supervisor {name!r}: max_restarts must be an int >= 0")
        if not max_seconds > 0:  # also rejects NaN
            raise ConfigurationError(f"Supervisor {name!r}: max_seconds must be > 0")
        counts = Counter(spec.id for spec in children)
        duplicates = sorted(repr(id) for id, count in counts.items() if count > 1)
        if duplicates:
            raise ConfigurationError(
                f"Supervisor {name!r}: duplicate child ids {', '.join(duplicates)}"
            )
        self._name = name
        self._strategy = strategy
        self._max_restarts = max_restarts
        self._max_seconds = max_seconds
        self._initial = tuple(children)
        self._on_event = on_event
        self._children: dict[Hashable, _Record] = {}
        self._inbox: asyncio.Queue[_Message] = asyncio.Queue()
        # Bounded: once it holds max_restarts + 1 entries all inside the window, we give up.
        self._restart_times: deque[float] = deque(maxlen=max_restarts + 1)
        self._state = _State.NEW
        self._stop_requested: asyncio.Future[None] | None = None
        self._done = asyncio.Event()
        self._error: Exception | None = None
        self._root_task: asyncio.Task[None] | None = None

    # -- introspection ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The supervisor's name."""
        return self._name

    @property
    def running(self) -> bool:
        """Whether the supervisor is ready and not stopping."""
        return self._state is _State.RUNNING

    def which_children(self) -> list[ChildInfo]:
        """A snapshot of the children, in start order."""
        return [
            ChildInfo(
                id=rec.spec.id,
                restart=rec.spec.restart,
                running=rec.task is not None and not rec.task.done(),
                restarts=rec.restarts,
            )
            for rec in self._children.values()
        ]

    def count_children(self) -> int:
        """How many children are listed (running or not)."""
        return len(self._children)

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self, ready: Ready) -> None:
        """Start the initial children in order, report ready, and supervise until stopped.

        Args:
            ready: ``ready.started(self)`` is called once every initial child is ready.

        Raises:
            SupervisorGaveUp: the restart intensity was exceeded (all children were stopped).
            SupervisorAlreadyStarted: this supervisor already ran.
            Exception: whatever an initial child raised before it was ready (the children
                started before it were stopped, in reverse order).
        """
        self._claim()
        await self._run(ready)

    async def stop(self) -> None:
        """Stop every child gracefully, in reverse start order; return once ``run()`` ended.

        Idempotent; a no-op on a supervisor that was never started. Never raises the reason the
        supervisor ended (use :meth:`wait` for that).
        """
        if self._state is _State.NEW:
            return
        self._request_stop()
        await self._done.wait()

    async def wait(self) -> None:
        """Wait until the supervisor has ended.

        Raises:
            SupervisorGaveUp: it gave up.
            Exception: an initial child failed to start.
        """
        await self._done.wait()
        if self._error is not None:
            raise self._error

    async def __aenter__(self) -> Self:
        """Run as a root: start in a task owned by this object and wait until ready.

        Raises:
            Exception: whatever :meth:`run` raised before it was ready.
            SupervisorNotRunning: it was stopped before it was ready.
        """
        self._claim()
        loop = asyncio.get_running_loop()
        ready = _Ready(loop.create_future())
        task = loop.create_task(self._run(ready), name=f"supervisor {self.name}")
        self._root_task = task
        try:
            await asyncio.wait({ready.future, task}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await self._kill_root(task)
            raise
        if ready.future.done():
            return self
        await task  # ended before ready: raises what run() raised
        raise SupervisorNotRunning(f"supervisor {self.name!r} was stopped before it was ready")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop gracefully; re-raise :class:`SupervisorGaveUp` if it gave up."""
        task = self._root_task
        if task is None:  # pragma: no cover - only reachable by calling __aexit__ by hand
            return
        self._request_stop()
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            # Asked to hurry: the graceful shutdown becomes a kill, but still an awaited one.
            await self._kill_root(task)
            raise
        error = None if task.cancelled() else task.exception()
        # Never mask a cancellation (or KeyboardInterrupt) of the body, nor raise its own error
        # twice; otherwise, the supervisor giving up is news the caller must get.
        if error is None or error is exc or (exc is not None and not isinstance(exc, Exception)):
            return
        raise error

    async def _kill_root(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: its error is logged already, and ours wins

    @property
    def _stopping(self) -> bool:
        return self._stop_requested is not None and self._stop_requested.done()

    def _claim(self) -> None:
        if self._state is not _State.NEW:
            raise SupervisorAlreadyStarted(
                f"supervisor {self.name!r} already ran; build a new Supervisor to start again"
            )
        self._state = _State.STARTING
        self._stop_requested = asyncio.get_running_loop().create_future()

    def _request_stop(self) -> None:
        if self._stop_requested is not None and not self._stop_requested.done():
            self._stop_requested.set_result(None)
            self._inbox.put_nowait(_Stop())

    async def _run(self, ready: Ready) -> None:
        try:
            try:
                await self._start_initial()
            except _Interrupted:
                await self._shutdown()
                return
            self._state = _State.RUNNING
            _log.debug("supervisor %r started %d children", self.name, len(self._children))
            ready.started(self)
            await self._supervise()
        except Exception as exc:
            self._error = exc
            raise
        finally:
            try:
                # Normally a no-op: only cancellation (or a bug) can leave a child alive here.
                await self._kill_all()
            finally:
                # Even if cancelled again meanwhile, nobody may wait for this supervisor forever.
                self._state = _State.STOPPED
                self._fail_queued_calls()
                self._done.set()

    async def _start_initial(self) -> None:
        for spec in self._initial:
            rec = _Record(spec)
            self._children[spec.id] = rec
            try:
                value = await self._start(rec)
            except _StartFailed as failed:
                error = failed.error
            else:
                self._emit(ChildStarted(supervisor=self.name, id=spec.id, value=value))
                continue
            del self._children[spec.id]
            self._report_exit(rec, ExitReason.CRASH, error)
            await self._shutdown()
            # Raised outside the except block, so the child's own __context__ stays intact.
            raise error

    async def _supervise(self) -> None:
        give_up: _GiveUp | None = None
        try:
            while True:
                message = await self._inbox.get()
                match message:
                    case _Stop():
                        break
                    case _Exited():
                        await self._handle_exit(message)
                    case _StartChild():
                        await self._handle_start_child(message)
                    case _TerminateChild():
                        await self._handle_terminate_child(message)
                    case _RestartChild():
                        await self._handle_restart_child(message)
        except _Interrupted:
            pass
        except _GiveUp as exc:
            give_up = exc
        await self._shutdown()
        if give_up is not None:
            summary = (
                f"supervisor {self.name!r} gave up: more than {self._max_restarts} restarts "
                f"within {self._max_seconds} s; its children were stopped"
            )
            _log.error("%s", summary)
            self._emit(
                GaveUp(
                    supervisor=self.name,
                    max_restarts=self._max_restarts,
                    max_seconds=self._max_seconds,
                    error=give_up.error,
                )
            )
            raise SupervisorGaveUp(summary) from give_up.error

    # -- the public calls, sent to the owner task --------------------------------------------

    async def start_child(self, spec: ChildSpec) -> Any:
        """Add a child and start it; return once it is ready.

        Args:
            spec: the child to add, after the existing ones.

        Returns:
            The value the child passed to ``ready.started()``.

        Raises:
            ChildAlreadyStarted: a child with ``spec.id`` is present.
            SupervisorNotRunning: the supervisor is not running or stopped meanwhile.
            Exception: whatever the child raised before it was ready (nothing is left running).
            ChildExitedBeforeReady: the child returned before it was ready.
        """
        loop = asyncio.get_running_loop()
        return await self._call(_StartChild(spec, loop.create_future()))

    async def terminate_child(self, id: Hashable) -> None:
        """Stop a child gracefully and remove it; it is not restarted.

        Raises:
            ChildNotFound: no child has this id.
            SupervisorNotRunning: the supervisor is not running.
        """
        loop = asyncio.get_running_loop()
        await self._call(_TerminateChild(id, loop.create_future()))

    async def restart_child(self, id: Hashable) -> Any:
        """Stop a child gracefully (if running) and start a fresh incarnation of it.

        Only this child is restarted, whatever the strategy, and the restart does not count
        toward the intensity. If the new incarnation fails to start, the error is raised and the
        child stays listed but not running (a temporary one is removed).

        Returns:
            The value the new incarnation passed to ``ready.started()``.

        Raises:
            ChildNotFound: no child has this id.
            SupervisorNotRunning: the supervisor is not running or stopped meanwhile.
            Exception: whatever the new incarnation raised before it was ready.
        """
        loop = asyncio.get_running_loop()
        return await self._call(_RestartChild(id, loop.create_future()))

    async def _call(self, message: _Call) -> Any:
        # STARTING is accepted: the call is handled once the initial children are up.
        if self._state not in (_State.STARTING, _State.RUNNING) or self._stopping:
            raise SupervisorNotRunning(f"supervisor {self.name!r} is not running")
        self._inbox.put_nowait(message)
        return await message.reply

    async def _handle_start_child(self, message: _StartChild) -> None:
        if message.reply.done():  # the caller gave up before we started anything
            return
        spec = message.spec
        if spec.id in self._children:
            error = ChildAlreadyStarted(
                f"supervisor {self.name!r} already has a child {spec.id!r}; "
                "use it, or terminate_child() it first"
            )
            _reply(message.reply, error=error)
            return
        rec = _Record(spec)
        self._children[spec.id] = rec
        try:
            value = await self._start(rec)
        except _StartFailed as failed:
            del self._children[spec.id]
            self._report_exit(rec, ExitReason.CRASH, failed.error)
            _reply(message.reply, error=failed.error)
            return
        except _Interrupted:
            del self._children[spec.id]
            _reply(message.reply, error=self._stopping_error())
            raise
        self._emit(ChildStarted(supervisor=self.name, id=spec.id, value=value))
        _reply(message.reply, value)

    async def _handle_terminate_child(self, message: _TerminateChild) -> None:
        rec = self._children.get(message.id)
        if rec is None:
            _reply(message.reply, error=self._not_found(message.id))
            return
        await self._terminate(rec)
        del self._children[message.id]
        _reply(message.reply)

    async def _handle_restart_child(self, message: _RestartChild) -> None:
        rec = self._children.get(message.id)
        if rec is None:
            _reply(message.reply, error=self._not_found(message.id))
            return
        await self._terminate(rec)
        try:
            value = await self._start(rec)
        except _StartFailed as failed:
            self._report_exit(rec, ExitReason.CRASH, failed.error)
            if rec.spec.restart is RestartType.TEMPORARY:
                del self._children[message.id]
            _reply(message.reply, error=failed.error)
            return
        except _Interrupted:
            _reply(message.reply, error=self._stopping_error())
            raise
        rec.restarts += 1
        self._emit(
            ChildRestarted(supervisor=self.name, id=message.id, restarts=rec.restarts, value=value)
        )
        _reply(message.reply, value)

    def _not_found(self, id: Hashable) -> ChildNotFound:
        return ChildNotFound(f"supervisor {self.name!r} has no child {id!r}")

    def _stopping_error(self) -> SupervisorNotRunning:
        return SupervisorNotRunning(f"supervisor {self.name!r} is stopping")

    def _fail_queued_calls(self) -> None:
        while not self._inbox.empty():
            message = self._inbox.get_nowait()
            if isinstance(message, _StartChild | _TerminateChild | _RestartChild):
                _reply(message.reply, error=SupervisorNotRunning(f"supervisor {self.name!r} ended"))

    # -- exits and restarts -------------------------------------------------------------------

    def _on_child_done(self, id: Hashable, task: asyncio.Task[None]) -> None:
        # Runs as a loop callback: only hand the exit to the owner task.
        self._inbox.put_nowait(_Exited(id, task))

    async def _handle_exit(self, message: _Exited) -> None:
        rec = self._children.get(message.id)
        if rec is None or rec.task is not message.task:
            return  # stale: the supervisor already terminated that incarnation itself
        reason, error = _outcome(message.task)
        rec.task = rec.child = None
        self._report_exit(rec, reason, error)
        restart = rec.spec.restart
        if restart is RestartType.TEMPORARY:
            del self._children[message.id]
            return
        if restart is RestartType.TRANSIENT and reason is ExitReason.NORMAL:
            return
        if self._stopping:
            return  # stop() was asked for: a restart now would only be torn down again
        await self._restart(rec, error)

    async def _restart(self, failed: _Record, error: BaseException | None) -> None:
        """Restart ``failed`` and its group per the strategy, retrying failed starts.

        Raises:
            _GiveUp: the restart intensity was exceeded.
            _Interrupted: stop() was requested meanwhile.
        """
        pending: set[_Record] = set()  # must be started again, in position order
        while True:
            self._count_restart(error)
            group = self._group(failed)
            for rec in reversed(group):
                if rec is failed or rec.task is None:
                    continue
                await self._terminate(rec)
                if rec.spec.restart is RestartType.TEMPORARY:
                    del self._children[rec.spec.id]  # OTP: never restarted, even by a sibling
                else:
                    pending.add(rec)
            pending.add(failed)
            for rec in [r for r in self._children.values() if r in pending]:
                try:
                    value = await self._start(rec)
                except _StartFailed as start_failed:
                    # A failed restart is another crash: count it and go again from that child.
                    self._report_exit(rec, ExitReason.CRASH, start_failed.error)
                    failed, error = rec, start_failed.error
                    break
                pending.discard(rec)
                rec.restarts += 1
                self._emit(
                    ChildRestarted(
                        supervisor=self.name, id=rec.spec.id, restarts=rec.restarts, value=value
                    )
                )
            else:
                return

    def _group(self, failed: _Record) -> list[_Record]:
        records = list(self._children.values())
        match self._strategy:
            case Strategy.ONE_FOR_ONE:
                return [failed]
            case Strategy.REST_FOR_ONE:
                return records[records.index(failed) :]
            case Strategy.ONE_FOR_ALL:
                return records

    def _count_restart(self, error: BaseException | None) -> None:
        now = asyncio.get_running_loop().time()
        times = self._restart_times
        times.append(now)
        while times and now - times[0] > self._max_seconds:
            times.popleft()
        if len(times) > self._max_restarts:
            raise _GiveUp(error)

    # -- starting and stopping one child ------------------------------------------------------

    async def _start(self, rec: _Record) -> Any:
        """Start a fresh incarnation of ``rec`` and wait until it is ready.

        Returns:
            The value the child passed to ``ready.started()``.

        Raises:
            _StartFailed: the factory or the child failed before ready; nothing is left running.
            _Interrupted: stop() was requested first; the half-started child was terminated.
        """
        spec = rec.spec
        if self._stopping:
            # Do not even build the child: stop() on a child whose run() never began is a race.
            raise _Interrupted
        loop = asyncio.get_running_loop()
        ready = _Ready(loop.create_future())
        try:
            child = spec.start()
            task = loop.create_task(child.run(ready), name=f"{self.name}/{spec.id!r}")
        except Exception as exc:  # a broken factory, or a run() that is not a coroutine
            raise _StartFailed(exc) from None
        # Held by the record from now on, so a kill of the supervisor finds it.
        rec.child, rec.task = child, task
        waiters: set[asyncio.Future[Any]] = {ready.future, task}
        if self._stop_requested is not None:  # always, once claimed
            waiters.add(self._stop_requested)
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if ready.future.done():
            # Ready wins even if the task also ended in the same step; that exit is then an
            # ordinary one, seen through the callback like any later exit.
            task.add_done_callback(functools.partial(self._on_child_done, spec.id))
            return ready.future.result()
        if task.done():
            rec.child = rec.task = None
            raise _StartFailed(_start_error(spec.id, task))
        await self._terminate(rec)
        raise _Interrupted

    async def _terminate(self, rec: _Record) -> None:
        """Stop ``rec``'s incarnation (stop(), then cancel after the timeout) and await it."""
        task, child = rec.task, rec.child
        if task is None or child is None:
            return
        if task.done():
            # It ended on its own and its exit is still queued: report what really happened.
            reason, error = _outcome(task)
        else:
            await self._stop_gracefully(rec.spec, child, task)
            reason = ExitReason.SHUTDOWN
            error = None if task.cancelled() else task.exception()
        # Only now: if we are cancelled while waiting, _kill_all must still find the task.
        rec.task = rec.child = None
        self._report_exit(rec, reason, error)

    async def _stop_gracefully(
        self, spec: ChildSpec, child: Child, task: asyncio.Task[None]
    ) -> None:
        if spec.shutdown_timeout != 0:
            try:
                async with asyncio.timeout(spec.shutdown_timeout):
                    try:
                        await child.stop()
                    except Exception:
                        _log.exception(
                            "supervisor %r: stop() of child %r raised; cancelling it",
                            self.name,
                            spec.id,
                        )
                    else:
                        await asyncio.wait({task})
            except TimeoutError:
                _log.warning(
                    "supervisor %r: child %r did not stop within %s s; cancelling it",
                    self.name,
                    spec.id,
                    spec.shutdown_timeout,
                )
        if not task.done():
            task.cancel()
            await asyncio.wait({task})

    async def _shutdown(self) -> None:
        self._state = _State.STOPPING
        for rec in reversed(list(self._children.values())):
            await self._terminate(rec)

    async def _kill_all(self) -> None:
        records = [rec for rec in reversed(self._children.values()) if rec.task is not None]
        tasks = [rec.task for rec in records if rec.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for rec in records:
            rec.task = rec.child = None
            self._report_exit(rec, ExitReason.SHUTDOWN, None)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # retrieved, so asyncio does not log it as never retrieved

    # -- reporting ----------------------------------------------------------------------------

    def _report_exit(self, rec: _Record, reason: ExitReason, error: BaseException | None) -> None:
        id = rec.spec.id
        if reason is ExitReason.CRASH:
            _log.error("supervisor %r: child %r crashed", self.name, id, exc_info=error)
        elif error is not None:
            _log.error(
                "supervisor %r: child %r raised while stopping", self.name, id, exc_info=error
            )
        else:
            _log.debug("supervisor %r: child %r exited (%s)", self.name, id, reason)
        self._emit(ChildExited(supervisor=self.name, id=id, reason=reason, error=error))

    def _emit(self, event: SupervisorEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            # Observers never break the observed.
            _log.exception("supervisor %r: on_event raised on %r", self.name, event)


def _outcome(task: asyncio.Task[None]) -> tuple[ExitReason, BaseException | None]:
    """How a task that ended without being asked to ended."""
    if task.cancelled():
        return ExitReason.CRASH, asyncio.CancelledError(
            "the child task was cancelled by something other than its supervisor"
        )
    error = task.exception()
    return (ExitReason.NORMAL, None) if error is None else (ExitReason.CRASH, error)


def _start_error(id: Hashable, task: asyncio.Task[None]) -> BaseException:
    """The error to report for a child task that ended before it was ready."""
    if task.cancelled():
        return ChildExitedBeforeReady(
            f"child {id!r} was cancelled before it called ready.started()"
        )
    error = task.exception()
    if error is not None:
        return error
    return ChildExitedBeforeReady(
        f"child {id!r} returned before it called ready.started(); call it once initialised"
    )
