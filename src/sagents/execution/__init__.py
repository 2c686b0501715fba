"""The execution layer: agents, runs, the loop's steps and modes, tools, the scripted model.

Import the usual names from :mod:`sagents`; this namespace adds what custom modes and tests need:
the individual steps, :class:`Run`, sinks and the script entries of :class:`ScriptedChatModel`.
"""

from sagents._errors import Halt
from sagents._public import publish as _publish
from sagents.execution._agent import Agent
from sagents.execution._demo_model import demo_model
from sagents.execution._middleware import Middleware
from sagents.execution._middleware_context import MiddlewareContext, get_middleware_context
from sagents.execution._mode import DEFAULT_MODE, Mode, Step
from sagents.execution._result import Done, Failed, Interrupted, RunResult
from sagents.execution._retry import RetryPolicy, is_transient_error
from sagents.execution._run import Run, dismiss_interrupt
from sagents.execution._scripted_model import Fail, Reply, ScriptedChatModel, ToolCall
from sagents.execution._sink import CollectingSink, EventSink, NullSink
from sagents.execution._steps import (
    call_llm,
    check_max_runs,
    check_pre_tool_hitl,
    check_tool_interrupts,
    check_until_tool,
    continue_or_done,
    execute_tools,
    propagate_state,
)
from sagents.execution._tool_context import StateUpdate, ToolContext, ToolResume, get_tool_context

__all__ = [
    "Agent",
    "CollectingSink",
    "DEFAULT_MODE",
    "Done",
    "EventSink",
    "Fail",
    "Failed",
    "Halt",
    "Interrupted",
    "Middleware",
    "MiddlewareContext",
    "Mode",
    "NullSink",
    "Reply",
    "RetryPolicy",
    "Run",
    "RunResult",
    "ScriptedChatModel",
    "StateUpdate",
    "Step",
    "ToolCall",
    "ToolContext",
    "ToolResume",
    "call_llm",
    "check_max_runs",
    "check_pre_tool_hitl",
    "check_tool_interrupts",
    "check_until_tool",
    "continue_or_done",
    "demo_model",
    "dismiss_interrupt",
    "execute_tools",
    "get_middleware_context",
    "get_tool_context",
    "is_transient_error",
    "propagate_state",
]

_publish(globals(), __all__, __name__)
