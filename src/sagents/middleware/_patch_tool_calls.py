"""``PatchToolCalls``: answer dangling tool calls before the model sees the history.

Providers reject a history in which an assistant message asks for tools and the next non-tool
message arrives without a result for each call (OpenAI answers 400, Anthropic too). sagents never
leaves such a hole on purpose — a cancel settles the calls of the run it stops — but a history can
still get one: the process crashed while tools ran and the user wrote again after the restart,
a state was restored from an older save or edited by hand, or the model produced a tool call whose
arguments were not valid JSON (langchain keeps it in ``invalid_tool_calls``, which the loop does
not run, yet the provider client still sends it back).

Before each model call this middleware scans the whole history once and gives every unanswered
call a synthetic error :class:`~langchain_core.messages.ToolMessage`, inserted right after the
results its assistant message already has, because providers need the results *between* that
message and the next one, not at the end. Scanning everything (instead of only what came after
the last patch) is deliberate: a restored or edited state can have a hole anywhere, and one pass
over the messages is cheap next to a model call. On the usual, valid history the hook allocates
nothing but one small set per tool-calling turn and returns ``None``.

A result counts only where a provider accepts it: in the block of tool messages directly after
its assistant message. Results elsewhere are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from sagents._errors import SagentsError
from sagents._state import State
from sagents.events import MiddlewareAction
from sagents.execution._middleware import Middleware
from sagents.execution._middleware_context import get_middleware_context

__all__ = ["PatchToolCalls"]

#: The content of the synthetic result given to a dangling tool call.
DEFAULT_PATCH_MESSAGE = (
    "Cancelled: this tool call never returned a result (the run was cancelled or interrupted "
    "before it finished). It may not have run; call it again if it is still needed."
)


def find_dangling_tool_calls(
    messages: Sequence[BaseMessage],
) -> list[tuple[int, list[dict[str, Any]]]]:
    """The unanswered tool calls of ``messages``, grouped by where their results belong.

    Returns:
        ``(position, calls)`` pairs in history order: ``position`` is the index in ``messages``
        just after the tool results that follow the assistant message; ``calls`` are its tool
        calls (valid ones first, then invalid ones) without a result there. Calls without an id
        cannot be answered and are not listed.
    """
    found: list[tuple[int, list[dict[str, Any]]]] = []
    count = len(messages)
    index = 0
    while index < count:
        message = messages[index]
        index += 1
        if not isinstance(message, AIMessage) or not (
            message.tool_calls or message.invalid_tool_calls
        ):
            continue
        answered: set[str] = set()
        while index < count:
            result = messages[index]
            if not isinstance(result, ToolMessage):
                break
            answered.add(result.tool_call_id)
            index += 1
        missing: list[dict[str, Any]] = [
            dict(call)
            for call in (*message.tool_calls, *message.invalid_tool_calls)
            if call.get("id") and call.get("id") not in answered
        ]
        if missing:
            found.append((index, missing))
    return found


class PatchToolCalls(Middleware):
    """Give every tool call left without a result a synthetic "cancelled" error result.

    Put it last in the middleware list, so that it sees the history exactly as the model will
    (after, for example, summarisation has rewritten it). Each patch is reported on the debug
    channel as ``MiddlewareAction(middleware="PatchToolCalls", data={"patched": [...]})`` with
    the ``tool_call_id`` and ``name`` of each patched call.

    Args:
        message: the content of the synthetic results.
    """

    key = "patch_tool_calls"

    def __init__(self, *, message: str = DEFAULT_PATCH_MESSAGE) -> None:
        self._message = message

    async def before_model(self, state: State) -> State | None:
        return self.patch(state)

    def patch(self, state: State) -> State | None:
        """The state with dangling tool calls answered, or None when there are none."""
        dangling = find_dangling_tool_calls(state.messages)
        if not dangling:
            return None
        messages: list[BaseMessage] = []
        patched: list[dict[str, str]] = []
        start = 0
        for position, calls in dangling:
            messages.extend(state.messages[start:position])
            for call in calls:
                messages.append(
                    ToolMessage(
                        content=self._message,
                        tool_call_id=call["id"],
                        name=call.get("name"),
                        status="error",
                    )
                )
                patched.append({"tool_call_id": call["id"], "name": call.get("name") or ""})
            start = position
        messages.extend(state.messages[start:])
        self._report(patched)
        return state.replace(messages=messages)

    def _report(self, patched: list[dict[str, str]]) -> None:
        try:
            context = get_middleware_context()
        except SagentsError:
            return  # called directly, outside a run: there is nobody to tell
        context.emit(MiddlewareAction(middleware=self.name, data={"patched": patched}))
