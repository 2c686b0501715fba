"""Context propagation: the ``contextvars`` of whoever starts an agent follow it into its runs.

A web request sets a request id, a tenant, an OpenTelemetry span; the agent it starts runs later,
in tasks of its own. The runtime captures the caller's context at ``start_agent`` and re-applies
it in the agent server, in every run and in every tool task, so logs, traces and tenant checks
inside tools see what the request saw. ``AgentHandle.update_context()`` replaces the snapshot on
a running agent (e.g. the next request of the same conversation).
"""

from __future__ import annotations

import contextvars

from sagents.execution._middleware_context import _current as _middleware_context
from sagents.execution._middleware_context import set_middleware_context
from sagents.execution._tool_context import _current as _tool_context
from sagents.execution._tool_context import set_tool_context

__all__ = ["apply_context", "capture_context"]


def _forget_sagents_locals() -> None:
    # A sub-agent started from a tool must not inherit its parent's tool or hook context.
    set_tool_context(None)
    set_middleware_context(None)


def capture_context() -> contextvars.Context:
    """A copy of the caller's context, without sagents' own per-task variables."""
    context = contextvars.copy_context()
    # Only when set: clearing them copies the context's variables (agents started outside a
    # tool, the usual case, share the caller's at no cost).
    if context.get(_tool_context) is not None or context.get(_middleware_context) is not None:
        context.run(_forget_sagents_locals)
    return context


def apply_context(context: contextvars.Context) -> None:
    """Set every variable of ``context`` in the current task's context."""
    for variable, value in context.items():
        variable.set(value)
