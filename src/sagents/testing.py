"""Test doubles: what an application's own tests use in place of a real model.

:class:`ScriptedChatModel` is a real langchain ``BaseChatModel`` that answers from a script
(:class:`Reply`, :class:`ToolCall`, :class:`Fail` entries, or a responder function), streams like
a provider does, and needs no network: tests, demos and benchmarks run offline and
deterministically. It raises :class:`ScriptExhausted` when asked more often than scripted.

:func:`crash_agent` injects the one fault no public call can cause: a bug in an agent server
itself, to test what supervision does about it.

They live here rather than in the top-level ``sagents`` namespace, which keeps what an
application runs in production; ``sagents.execution`` exports the model doubles too, beside the
loop they drive.
"""

from __future__ import annotations

import typing

from sagents._errors import ScriptExhausted
from sagents._public import publish as _publish
from sagents.execution._scripted_model import Fail, Reply, ScriptedChatModel, ToolCall

if typing.TYPE_CHECKING:
    from sagents.runtime import Runtime

__all__ = ["Fail", "Reply", "ScriptExhausted", "ScriptedChatModel", "ToolCall", "crash_agent"]


def crash_agent(runtime: Runtime, agent_id: str) -> None:
    """Crash the agent's server the way a bug in it would: its next own message raises.

    Returns at once; the crash happens when the server's mailbox gets to that message. The
    server then ends with ``AgentShutdown(reason="crash")`` (its sub-agents end with it), and
    its unit restarts it from the last state it kept, unless the restart intensity is used up
    (``Runtime(max_restarts=..., max_seconds=...)``); ``handle.info().instance`` tells the
    restarted server from the crashed one.

    Raises:
        AgentNotRunning: no server runs ``agent_id`` (or it is ending).
    """
    runtime._server(agent_id).post(_bug)


def _bug() -> None:
    raise RuntimeError("sagents.testing.crash_agent: a bug in the agent server")


_publish(globals(), __all__, __name__)
