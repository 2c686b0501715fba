"""Conversations as an A2A agent: other agents talk to yours over the Agent2Agent protocol.

``a2a_app(runtime, config, card)`` serves the conversations of a :class:`~sagents.SessionConfig`
with the ``a2a-sdk`` server: an A2A context is a conversation and a task one run of its agent,
streamed as task updates; an approval or a question waits as ``input-required`` and the next
message on the task answers it; cancelling a task cancels its run. Install with ``pip install
'sagents[a2a]'``; see ``docs/protocols.md``.
"""

try:
    import a2a as _a2a  # noqa: F401
    import sse_starlette as _sse_starlette  # noqa: F401
    import starlette as _starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("sagents.a2a needs the A2A SDK: pip install 'sagents[a2a]'") from exc

from sagents._public import publish as _publish
from sagents.a2a._app import CARD_CONVERSATION_ID, a2a_app, build_agent_card, tool_skills
from sagents.a2a._executor import ScopeOf, SessionExecutor
from sagents.a2a._mapping import APPROVE_WORDS, REJECT_WORDS, decisions_from_reply

__all__ = [
    "APPROVE_WORDS",
    "CARD_CONVERSATION_ID",
    "REJECT_WORDS",
    "ScopeOf",
    "SessionExecutor",
    "a2a_app",
    "build_agent_card",
    "decisions_from_reply",
    "tool_skills",
]

_publish(globals(), __all__, __name__)
