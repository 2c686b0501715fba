"""From sagents to AG-UI: messages, interrupts, state and the events of one run.

AG-UI describes a run as a closed stream — ``RUN_STARTED``, what happened, then ``RUN_FINISHED``
or ``RUN_ERROR`` — whereas a sagents agent is a resident server whose events never stop. An
:class:`EventMapper` is the translation for one AG-UI run: it is fed the agent's events one at a
time and answers the protocol events each one becomes, keeping what the protocol needs and our
events do not say (which text message is open, which tool calls were announced, the state the
client holds). It does no I/O, so the mapping is tested without a server.

Choices:

- **Streamed text and tool calls come from the model's chunks** (``LLMDeltas``), not from the
  complete message: a client sees the answer as it is written. The complete message
  (``LLMMessage``) closes what is open and fills in what no chunk carried — a model that does not
  stream, or a tool call whose chunks had no id — so nothing a client must see depends on the
  provider's streaming.
- **Ids are stable across runs.** A text message takes the model message's id, a tool result
  ``result-<tool call id>``, and a messages snapshot uses the same ids, so the snapshot of the
  next run updates what a client streamed instead of adding it twice.
- **State is a JSON document with deltas as JSON Patch.** The mapper keeps the document the
  client holds and answers each change as the patch from it, one level deep per object key
  (a changed todo list is replaced whole: short, and always applicable).
- **One protocol interrupt per pending call.** AG-UI interrupts name one tool call each; a
  sagents interrupt holds one action request per pending call. The interrupt's id is the
  call's id, so a resume entry names the call it decides, also after the agent was restored.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from ag_ui.core import (
    AssistantMessage,
    BaseEvent,
    FunctionCall,
    Message,
    MessagesSnapshotEvent,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunFinishedSuccessOutcome,
    RunStartedEvent,
    StateDeltaEvent,
    StateSnapshotEvent,
    SystemMessage,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TokenUsage,
    ToolCall,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    UserMessage,
    aggregate_token_usage,
    token_usage_from_langchain_metadata,
)
from ag_ui.core import Interrupt as AguiInterrupt
from ag_ui.core import ToolMessage as AguiToolMessage
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.messages import SystemMessage as LangchainSystemMessage

from sagents._interrupt import ActionRequest, Interrupt, Question
from sagents._state import State
from sagents._status import Status
from sagents.events import (
    AgentReset,
    AgentShutdown,
    Event,
    FileChanged,
    LLMDeltas,
    LLMMessage,
    LLMTokenUsage,
    StatusChanged,
    SubscriptionOverflow,
    TodosUpdated,
    ToolCallIdentified,
    ToolExecutionCompleted,
    ToolExecutionFailed,
)

__all__ = [
    "EventMapper",
    "agui_interrupts",
    "agui_messages",
    "default_state_view",
    "json_patch",
    "response_schema",
    "result_message_id",
    "text_of",
]

#: The statuses that end a run.
_ENDS = frozenset({Status.IDLE, Status.INTERRUPTED, Status.ERROR, Status.CANCELLED, Status.PAUSED})

#: One RFC 6902 operation (``{"op": "add", "path": ..., "value": ...}``), validated into the
#: package's operation types by ``StateDeltaEvent``.
PatchOperation: TypeAlias = dict[str, Any]
RunFinishedOutcome: TypeAlias = (
    RunFinishedSuccessOutcome | RunFinishedInterruptOutcome | RunFinishedCancelledOutcome
)


def text_of(content: str | list[str | dict[str, Any]]) -> str:
    """The text of a langchain message content: the string, or its text blocks joined."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
    return "".join(parts)


def result_message_id(tool_call_id: str) -> str:
    """The id of the tool message that answers ``tool_call_id``, in events and snapshots."""
    return f"result-{tool_call_id}"


def _arguments(args: Any) -> str:
    return args if isinstance(args, str) else json.dumps(args, ensure_ascii=False, default=str)


def agui_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    """A conversation as AG-UI messages (what ``MESSAGES_SNAPSHOT`` carries).

    Human, AI, tool and system messages are translated; other kinds (a provider's function
    message, say) have no AG-UI form and are left out. A message without an id gets one from its
    position, which stays the same as long as messages are only appended.
    """
    out: list[Message] = []
    for index, message in enumerate(messages):
        message_id = message.id or f"msg-{index}"
        if isinstance(message, HumanMessage):
            out.append(UserMessage(id=message_id, content=text_of(message.content)))
        elif isinstance(message, AIMessage):
            calls = [
                ToolCall(
                    id=c["id"],
                    function=FunctionCall(name=c["name"], arguments=_arguments(c["args"])),
                )
                for c in message.tool_calls
                if c.get("id")
            ]
            calls += [
                ToolCall(
                    id=c["id"],
                    function=FunctionCall(name=c.get("name") or "", arguments=c.get("args") or ""),
                )
                for c in message.invalid_tool_calls
                if c.get("id")
            ]
            out.append(
                AssistantMessage(
                    id=message_id,
                    content=text_of(message.content) or None,
                    tool_calls=calls or None,
                )
            )
        elif isinstance(message, ToolMessage):
            content = text_of(message.content)
            out.append(
                AguiToolMessage(
                    id=result_message_id(message.tool_call_id),
                    content=content,
                    tool_call_id=message.tool_call_id,
                    error=content if message.status == "error" else None,
                )
            )
        elif isinstance(message, LangchainSystemMessage):
            out.append(SystemMessage(id=message_id, content=text_of(message.content)))
    return out


def default_state_view(state: State) -> dict[str, Any]:
    """What a UI shows of an agent's state: its todos and its middleware metadata (the
    conversation's title, what summarization did ...), as JSON."""
    return {
        "todos": [todo.to_dict() for todo in state.todos],
        "metadata": json.loads(json.dumps(state.metadata, default=str)),
    }


# -- interrupts --------------------------------------------------------------------------------


def _question_schema(question: Question) -> dict[str, Any]:
    if question.type == "free_text":
        return {"type": "string", "minLength": 1, "description": question.question}
    choice: dict[str, Any] = {"type": "string"}
    if not question.allow_other:
        choice["enum"] = list(question.choices)
    if question.type == "single_choice":
        return {**choice, "description": question.question}
    return {"type": "array", "items": choice, "minItems": 1, "description": question.question}


def response_schema(request: ActionRequest) -> dict[str, Any]:
    """The JSON Schema of a resume payload for ``request``: one decision, in the JSON form
    ``handle.resume`` takes, of the kinds the request allows."""
    shapes: dict[str, dict[str, Any]] = {
        "approve": {},
        "edit": {"arguments": {"type": "object"}},
        "reject": {"message": {"type": "string"}},
        "respond": {"message": {"type": "string", "minLength": 1}},
        "answer": {
            "answers": {
                "type": "array",
                "prefixItems": [_question_schema(q) for q in request.questions],
                "items": False,
                "minItems": len(request.questions),
            }
        },
    }
    required = {"edit": ["arguments"], "respond": ["message"], "answer": ["answers"]}
    options = [
        {
            "type": "object",
            "properties": {"type": {"const": kind}, **shapes[kind]},
            "required": ["type", *required.get(kind, [])],
            "additionalProperties": False,
        }
        for kind in request.allowed_decisions
    ]
    return {"oneOf": options}


def _prompt(request: ActionRequest) -> str:
    if request.description:
        return request.description
    if request.questions:
        return "\n".join(q.question for q in request.questions)
    return f"Allow the call to {request.name}?"


def agui_interrupts(interrupt: Interrupt) -> list[AguiInterrupt]:
    """The AG-UI interrupts of a pending sagents interrupt: one per pending call.

    The id is the call's id; ``reason`` is the interrupt's kind (``"human_approval"``,
    ``"question"``, ...); ``responseSchema`` describes the decision the call accepts; the
    request itself (tool, arguments, allowed decisions, questions) is in
    ``metadata["sagents"]``.
    """
    return [
        AguiInterrupt(
            id=request.tool_call_id,
            reason=interrupt.kind,
            message=_prompt(request),
            tool_call_id=request.tool_call_id,
            response_schema=response_schema(request),
            metadata={
                "sagents": {
                    "kind": interrupt.kind,
                    "request": request.to_dict(),
                    "data": interrupt.data,
                }
            },
        )
        for request in interrupt.action_requests
    ]


# -- state -------------------------------------------------------------------------------------


def _pointer(path: str, key: str) -> str:
    return f"{path}/{key.replace('~', '~0').replace('/', '~1')}"


def _same(a: Any, b: Any) -> bool:
    # By JSON text: 1 and True are equal in Python, not in JSON.
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def json_patch(old: Any, new: Any, path: str = "") -> list[PatchOperation]:
    """The RFC 6902 patch that turns ``old`` into ``new``: objects are compared key by key,
    anything else that changed is replaced whole."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        ops: list[PatchOperation] = [
            {"op": "remove", "path": _pointer(path, key)} for key in old if key not in new
        ]
        for key, value in new.items():
            if key not in old:
                ops.append({"op": "add", "path": _pointer(path, key), "value": value})
            else:
                ops.extend(json_patch(old[key], value, _pointer(path, key)))
        return ops
    if _same(old, new):
        return []
    return [{"op": "replace", "path": path, "value": new}]


# -- the events of a run -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _End:
    status: Status | None
    data: Any = None
    error: tuple[str, str] | None = None  # (code, message) of an end without a status


class EventMapper:
    """The AG-UI events of one run of a sagents agent.

    Feed it the agent's events with :meth:`map`; it answers the protocol events each becomes,
    and :attr:`ended` turns true at the status that ends the run (once the run has started: see
    :meth:`expect_run`). :meth:`finish` closes the run.

    Args:
        thread_id: the AG-UI thread (the conversation id).
        run_id: the AG-UI run.
    """

    def __init__(self, *, thread_id: str, run_id: str) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self._running = False
        self._end: _End | None = None
        self._state: dict[str, Any] | None = None
        # The model message being streamed: its id, the chunk id that named it, its open text
        # message (None when closed) and how many text messages it opened.
        self._message: str | None = None
        self._chunk_id: str | None = None
        self._text: str | None = None
        self._texts = 0
        self._by_index: dict[Any, str] = {}  # tool call chunk index -> tool call id
        self._open_calls: list[str] = []  # started, not ended (of the streamed message)
        self._announced: set[str] = set()  # every tool call started in this run
        self._model: str | None = None
        self._usage: list[TokenUsage] = []

    # -- lifecycle ------------------------------------------------------------------------

    def run_started(self) -> RunStartedEvent:
        return RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id)

    def expect_run(self, *, running: bool = False) -> None:
        """What comes next is a run: the statuses that end a run end this one once the agent
        runs (``running``: it runs already). Before that, an ``idle`` (a dismissed approval,
        say) is not the end."""
        self._running = self._running or running

    @property
    def ended(self) -> bool:
        return self._end is not None

    def finish(self, *, interrupt: Interrupt | None = None) -> list[BaseEvent]:
        """The events that close the run: open messages ended, then ``RUN_FINISHED`` with the
        outcome the agent's status gives, or ``RUN_ERROR``.

        Args:
            interrupt: the pending interrupt, for a run that ends without having waited for one
                (it re-presents an approval the client did not answer).
        """
        out = self._close_message()
        end = self._end or _End(status=Status.INTERRUPTED if interrupt else Status.IDLE)
        usage = aggregate_token_usage(self._usage) or None
        if end.error is not None:
            code, message = end.error
            out.append(RunErrorEvent(message=message, code=code, usage=usage))
            return out
        if end.status is Status.ERROR:
            reason = str(end.data) if end.data else "the run failed"
            out.append(RunErrorEvent(message=reason, code="run_failed", usage=usage))
            return out
        pending = end.data if end.status is Status.INTERRUPTED else None
        if isinstance(pending, Mapping):
            pending = Interrupt.from_dict(pending)
        if not isinstance(pending, Interrupt):
            pending = interrupt
        outcome: RunFinishedOutcome
        metadata: dict[str, Any] | None = None
        if end.status is Status.INTERRUPTED and pending is not None and pending.action_requests:
            outcome = RunFinishedInterruptOutcome(interrupts=agui_interrupts(pending))
        elif end.status in (Status.CANCELLED, Status.PAUSED):
            outcome = RunFinishedCancelledOutcome()
            metadata = {"sagents": {"status": end.status.value}}
        else:
            outcome = RunFinishedSuccessOutcome()
        out.append(
            RunFinishedEvent(
                thread_id=self.thread_id,
                run_id=self.run_id,
                outcome=outcome,
                usage=usage,
                metadata=metadata,
            )
        )
        return out

    def error(self, code: str, message: str) -> list[BaseEvent]:
        """End the run with ``RUN_ERROR`` (something failed outside the agent's run)."""
        self._end = _End(status=None, error=(code, message))
        return self.finish()

    # -- state ----------------------------------------------------------------------------

    def state_snapshot(self, view: Mapping[str, Any]) -> StateSnapshotEvent:
        self._state = json.loads(json.dumps(view, default=str))
        return StateSnapshotEvent(snapshot=self._state)

    def state_update(self, view: Mapping[str, Any]) -> list[BaseEvent]:
        """A ``STATE_DELTA`` from the state the client holds to ``view`` (none if equal)."""
        if self._state is None:
            return [self.state_snapshot(view)]
        new = json.loads(json.dumps(view, default=str))
        ops = json_patch(self._state, new)
        self._state = new
        # The dicts are validated into the package's JSON Patch operation types.
        return [StateDeltaEvent.model_validate({"delta": ops})] if ops else []

    def _state_change(self, key: str, value: Any) -> list[BaseEvent]:
        if self._state is None or key not in self._state:
            return []
        return self.state_update({**self._state, key: value})

    def _files_change(self, event: FileChanged) -> list[BaseEvent]:
        if self._state is None or not isinstance(self._state.get("files"), list):
            return []
        files = [p for p in self._state["files"] if p not in (event.path, event.previous_path)]
        if event.change != "deleted":
            files.append(event.path)
        return self._state_change("files", sorted(files))

    # -- events ---------------------------------------------------------------------------

    def map(self, event: Event) -> list[BaseEvent]:
        """The AG-UI events ``event`` becomes (often none)."""
        match event:
            case LLMDeltas(deltas=deltas):
                out: list[BaseEvent] = []
                for chunk in deltas:
                    out += self._chunk(chunk)
                return out
            case LLMMessage(message=message):
                return self._complete(message)
            case ToolCallIdentified(tool_call_id=call_id, name=name):
                if call_id in self._announced or self._message is None:
                    return []
                return self._start_call(call_id, name)
            case ToolExecutionCompleted(tool_call_id=call_id, result=result):
                content = result if isinstance(result, str) else _arguments(result)
                return self._result(call_id, content)
            case ToolExecutionFailed(tool_call_id=call_id, error=error):
                return self._result(call_id, error, failed=True)
            case TodosUpdated(todos=todos):
                return self._state_change("todos", [t.to_dict() for t in todos])
            case FileChanged():
                return self._files_change(event)
            case LLMTokenUsage(usage=usage):
                entry = token_usage_from_langchain_metadata(usage, model=self._model)
                if entry is not None:
                    self._usage.append(entry)
                return []
            case AgentReset():
                out = self._close_message()
                out.append(MessagesSnapshotEvent(messages=[]))
                return out + self._state_change("todos", []) + self._state_change("metadata", {})
            case StatusChanged(status=status, data=data):
                if status is Status.RUNNING:
                    self._running = True
                elif status in _ENDS and self._running and self._end is None:
                    self._end = _End(status=status, data=data)
                return []
            case AgentShutdown(reason=reason):
                if self._end is None:
                    why = f"the agent stopped ({reason}) before the run ended; run again"
                    self._end = _End(status=None, error=("agent_stopped", why))
                return []
            case SubscriptionOverflow():
                if self._end is None:
                    why = "this stream fell behind the agent; run again to catch up"
                    self._end = _End(status=None, error=("overflow", why))
                return []
        return []

    # -- the streamed message -------------------------------------------------------------

    def _chunk(self, chunk: AIMessageChunk) -> list[BaseEvent]:
        out: list[BaseEvent] = []
        if self._message is None or (chunk.id is not None and chunk.id != self._chunk_id):
            out += self._close_message()
            self._message = chunk.id or f"msg-{uuid.uuid4().hex}"
            self._chunk_id = chunk.id
        text = text_of(chunk.content)
        if text:
            if self._text is None:
                # A message that speaks again after a tool call gets a new text message: the
                # protocol has no way to reopen the first one.
                suffix = f"-{self._texts}" if self._texts else ""
                self._text = f"{self._message}{suffix}"
                self._texts += 1
                out.append(TextMessageStartEvent(message_id=self._text, role="assistant"))
            out.append(TextMessageContentEvent(message_id=self._text, delta=text))
        for piece in chunk.tool_call_chunks:
            index, call_id, args = piece.get("index"), piece.get("id"), piece.get("args")
            if call_id:
                if call_id not in self._announced:
                    out += self._start_call(call_id, piece.get("name") or "")
                if index is not None:
                    self._by_index[index] = call_id
            else:
                call_id = self._by_index.get(index) if index is not None else None
                if call_id is None and index is None and self._open_calls:
                    call_id = self._open_calls[-1]
            if call_id and call_id in self._open_calls and args:
                out.append(ToolCallArgsEvent(tool_call_id=call_id, delta=args))
        return out

    def _start_call(self, call_id: str, name: str) -> list[BaseEvent]:
        out = self._end_text()
        self._announced.add(call_id)
        self._open_calls.append(call_id)
        out.append(
            ToolCallStartEvent(
                tool_call_id=call_id, tool_call_name=name, parent_message_id=self._message
            )
        )
        return out

    def _end_text(self) -> list[BaseEvent]:
        if self._text is None:
            return []
        text, self._text = self._text, None
        return [TextMessageEndEvent(message_id=text)]

    def _close_message(self) -> list[BaseEvent]:
        out = self._end_text()
        out += [ToolCallEndEvent(tool_call_id=c) for c in self._open_calls]
        self._message = self._chunk_id = None
        self._texts = 0
        self._by_index = {}
        self._open_calls = []
        return out

    def _complete(self, message: AIMessage) -> list[BaseEvent]:
        """The message is complete: close what its chunks opened, and send what they did not
        carry (all of it, for a model that does not stream)."""
        streamed = self._message is not None
        message_id = self._message or message.id or f"msg-{uuid.uuid4().hex}"
        out = self._close_message()
        if message.response_metadata.get("model_name"):
            self._model = str(message.response_metadata["model_name"])
        text = text_of(message.content)
        if not streamed and text:
            out += [
                TextMessageStartEvent(message_id=message_id, role="assistant"),
                TextMessageContentEvent(message_id=message_id, delta=text),
                TextMessageEndEvent(message_id=message_id),
            ]
        calls = [(c["id"], c["name"], _arguments(c["args"])) for c in message.tool_calls]
        calls += [
            (c["id"], c.get("name") or "", c.get("args") or "") for c in message.invalid_tool_calls
        ]
        for call_id, name, args in calls:
            if not call_id or call_id in self._announced:
                continue
            self._announced.add(call_id)
            out.append(
                ToolCallStartEvent(
                    tool_call_id=call_id, tool_call_name=name, parent_message_id=message_id
                )
            )
            if args:
                out.append(ToolCallArgsEvent(tool_call_id=call_id, delta=args))
            out.append(ToolCallEndEvent(tool_call_id=call_id))
        return out

    def _result(self, call_id: str, content: str, *, failed: bool = False) -> list[BaseEvent]:
        out: list[BaseEvent] = []
        if call_id in self._open_calls:
            self._open_calls.remove(call_id)
            out.append(ToolCallEndEvent(tool_call_id=call_id))
        out.append(
            ToolCallResultEvent(
                message_id=result_message_id(call_id),
                tool_call_id=call_id,
                content=content,
                role="tool",
                metadata={"sagents": {"status": "error"}} if failed else None,
            )
        )
        return out
