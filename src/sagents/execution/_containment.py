"""Containment: what user code raises stays that code's failure, and a cancellation stays one.

The loop runs code it does not own: tools, middleware hooks, models, custom steps. Whatever such
code raises — ``BaseException`` included — is the failure of that one piece (a tool call's error
result, a failed model attempt, a run ended as ``Failed``), never the process's and never a run
left "running" with no result. A few exception types need more than an ``except`` clause:

``CancelledError``
    asyncio delivers a cancel request by throwing ``CancelledError`` into the task, but the same
    type also reaches tasks nobody cancelled: a tool awaiting a future that someone else
    cancelled, a function run in a thread that raises it, a library using it for its own ends.
    Only the first is a cancellation; treating the second as one wedges the run (it ends without
    a result, as if cancelled, yet nobody asked). The task knows which it is:
    ``Task.cancelling()`` counts the cancel requests not yet withdrawn, and the helpers that cancel
    on their own account (``asyncio.timeout``, ``TaskGroup``) withdraw theirs with
    ``uncancel()``. So the loop reads the count before calling user code and compares after.
    A cancel request always wins, even when the code swallowed it or turned it into another
    error on its way out: the run stops, as asked.

``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit``
    These must be caught inside the task (or thread) that raised them. asyncio re-raises the
    first two out of the event loop from *any* task that lets them escape, ending the process and
    every agent in it. The third, once it crosses into another task (a future's exception is
    *thrown* into the awaiting coroutine), does not propagate like an exception at all: Python
    closes everything that coroutine awaits and raises it at the top, past every ``except`` on
    the way, tearing the whole run down. And langchain runs a tool in a task of its own
    (``BaseTool.arun`` starts ``_arun`` as one) or in a worker thread (sync tools). So each tool
    is looked at through a subclass whose ``_arun`` and ``_run`` turn these three into
    :class:`BaseExceptionRaised`, an ordinary exception that reaches the loop like any other
    tool failure (:func:`contain_tool`). Each model call attempt and each middleware background
    task runs as a task whose body is :func:`contained`, which does the same at its top.

    One gap remains, in langchain-core rather than here: ``BaseChatModel.agenerate`` runs
    ``_agenerate`` (and, through it, ``_generate`` in a thread) in ``asyncio.gather`` tasks of its
    own, so a model whose ``_generate`` calls ``sys.exit()`` on the non-streaming path still ends
    the process. Closing it would take a guarded view of every chat model, as tools get.

The alternative — wrapping tools in a delegating proxy tool — does not work: the proxy's own
``arun`` would start the inner tool's ``_arun`` in yet another task, outside the guard.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from langchain_core.tools import BaseTool
from pydantic import BaseModel

__all__ = [
    "BaseExceptionRaised",
    "cancel_requests",
    "contain_tool",
    "contained",
    "contained_call",
    "describe",
    "log_contained",
    "reraise_cancellation",
]

_log = logging.getLogger("sagents.execution")

_T = TypeVar("_T", bound=BaseTool)
_R = TypeVar("_R")

#: Marks the subclasses made by :func:`_contained_class` (in their own ``__dict__``).
_CONTAINED = "__sagents_contained__"

#: What a tool may not let out of its own task or thread (see the module docstring).
_UNCONTAINED = (KeyboardInterrupt, SystemExit, GeneratorExit)


class BaseExceptionRaised(Exception):
    """User code raised ``KeyboardInterrupt``, ``SystemExit`` or ``GeneratorExit`` where it
    could not be let out (see the module docstring); ``original`` is what it raised.

    An ordinary exception, so it travels like any failure; the tool runner reports
    ``original``.
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(describe(original))
        self.original = original


async def contained(awaitable: Awaitable[_R]) -> _R:
    """Await ``awaitable``, turning ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit``
    into :class:`BaseExceptionRaised`: the body of a task that runs user code, so that they
    cannot leave that task."""
    try:
        return await awaitable
    except _UNCONTAINED as exc:
        raise BaseExceptionRaised(exc) from exc


async def contained_call(make: Callable[[], Awaitable[_R]]) -> _R:
    """:func:`contained` of ``make()``, called inside the task: a task cancelled before its
    first step then leaves no coroutine that was never awaited."""
    return await contained(make())


def cancel_requests() -> int:
    """The current task's pending cancel requests (``Task.cancelling()``); 0 outside a task."""
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()


def reraise_cancellation(exc: BaseException, since: int) -> None:
    """Raise ``CancelledError`` if this task was asked to cancel since ``since`` (a
    :func:`cancel_requests` count read before the code that raised ``exc`` ran); else return.

    ``exc`` itself is re-raised when it is that cancellation; anything else the code raised on
    its way out is chained to a fresh ``CancelledError``: the cancellation wins.
    """
    if cancel_requests() <= since:
        return
    if isinstance(exc, asyncio.CancelledError):
        raise exc
    raise asyncio.CancelledError from exc


def describe(exc: BaseException) -> str:
    """``"Type: message"`` (or ``"Type"`` when the message is empty); never raises, even for an
    exception whose ``__str__`` does."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception:
        text = "<the exception's message could not be read>"
    return f"{name}: {text}" if text else name


def log_contained(exc: BaseException, where: str, agent_id: str) -> None:
    """Log at warning that ``where`` raised a non-``Exception`` the loop contained (these are
    rare enough that each one deserves a line: they usually mean a bug or a stray ``exit()``)."""
    if not isinstance(exc, Exception):
        _log.warning(
            "agent %r: %s raised %s; it is treated as that call's failure, not the process's "
            "(nor a cancellation of the run)",
            agent_id,
            where,
            describe(exc),
        )


def contain_tool(tool: _T) -> _T:
    """``tool`` as the loop runs it: the same object (same fields, same state, the same
    mutations visible through both) seen through a subclass of its class whose ``_arun`` and
    ``_run`` turn ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` into
    :class:`BaseExceptionRaised`.

    Idempotent; the tool's class and the tool itself are left untouched.
    """
    cls = type(tool)
    if _CONTAINED in cls.__dict__:
        return tool
    view = cast("_T", object.__new__(_contained_class(cls)))
    # pydantic keeps a model's whole state in these slots (``__dict__`` among them): sharing the
    # very objects makes the view and the tool one state, whatever the tool mutates later.
    for slot in BaseModel.__slots__:
        object.__setattr__(view, slot, object.__getattribute__(tool, slot))
    return view


@functools.cache
def _contained_class(cls: type[_T]) -> type[_T]:
    # One subclass per tool class (cached: tool classes are few and live as long as the process).
    return type(
        cls.__name__,
        (cls,),
        {
            "_arun": _contained_arun(cls),
            "_run": _contained_run(cls),
            _CONTAINED: True,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
        },
    )


# ``BaseTool.arun`` and ``BaseTool.run`` read a signature to decide whether to pass the tool
# ``run_manager`` and ``config``: ``_run``'s, or ``_arun``'s when a class overrides it. Each guard
# shows the signature of what it wraps (``functools.update_wrapper``), or it would change what
# the tool receives; a guard of the default ``_arun`` (which runs ``_run`` in a thread) shows
# ``_run``'s.


def _contained_arun(cls: type[BaseTool]) -> Any:
    original = cls._arun

    async def _arun(self: BaseTool, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(self, *args, **kwargs)
        except _UNCONTAINED as exc:
            raise BaseExceptionRaised(exc) from exc

    return functools.update_wrapper(_arun, cls._run if original is BaseTool._arun else original)


def _contained_run(cls: type[BaseTool]) -> Any:
    original = cls._run

    def _run(self: BaseTool, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        except _UNCONTAINED as exc:
            raise BaseExceptionRaised(exc) from exc

    return functools.update_wrapper(_run, original)
