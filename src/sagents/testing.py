"""Test doubles: what an application's own tests use in place of a real model.

:class:`ScriptedChatModel` is a real langchain ``BaseChatModel`` that answers from a script
(:class:`Reply`, :class:`ToolCall`, :class:`Fail` entries, or a responder function), streams like
a provider does, and needs no network: tests, demos and benchmarks run offline and
deterministically. It raises :class:`ScriptExhausted` when asked more often than scripted.

They live here rather than in the top-level ``sagents`` namespace, which keeps what an
application runs in production; ``sagents.execution`` exports them too, beside the loop they
drive.
"""

from sagents._errors import ScriptExhausted
from sagents._public import publish as _publish
from sagents.execution._scripted_model import Fail, Reply, ScriptedChatModel, ToolCall

__all__ = ["Fail", "Reply", "ScriptExhausted", "ScriptedChatModel", "ToolCall"]

_publish(globals(), __all__, __name__)
