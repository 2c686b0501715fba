"""From sagents to A2A: a run's events as task updates, an interrupt as the input a task
requires, and the reply that answers it.

An A2A *task* is one run of the conversation's agent. A :class:`RunMapper` is the translation
for one task: fed the agent's events one at a time, it answers the task updates each becomes and
says when the run has ended the task (or paused it for input). It does no I/O, so the mapping is
tested without a server; :class:`~sagents.a2a.SessionExecutor` does the rest.

Choices:

- **The text of each model message is an artifact, streamed.** Its first chunk creates the
  artifact, later chunks append to it, and the complete message (``LLMMessage``) replaces it with
  the whole text and ``last_chunk``: what a client stored is exactly the message, whether or not
  the model streamed, and the task's artifacts are the assistant's messages in order.
- **Progress is status messages with the event inside.** A tool call starting or ending, a file
  changing, the todo list: each is a ``working`` status whose message says it in words (a text
  part) and carries the sagents event (``event.to_json()``) as a data part, so a program reads
  the structure and a person the text. ``input-required``, ``completed``, ``failed`` and
  ``canceled`` carry their event the same way.
- **A pending interrupt is described, not encoded.** ``input-required`` lists the pending calls in
  words, with how to reply, and carries the whole interrupt (its ``StatusChanged`` event) as data;
  the reply that answers it is read by :func:`decisions_from_reply`, generically, from what each
  pending call allows — approvals and questions are the same machinery.
- **Protocol numbers are doubles.** A data part's numbers come back as floats
  (``google.protobuf.Value``); whole ones are turned back into ints in decisions, so an edited
  argument ``3`` stays ``3``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

from a2a.helpers import get_data_parts, new_data_part
from a2a.types import (
    Artifact,
    Message,
    Part,
    Role,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)

from sagents._errors import InvalidDecision
from sagents._interrupt import (
    ActionRequest,
    Answer,
    Approve,
    Decision,
    Interrupt,
    Question,
    Reject,
    Respond,
)
from sagents._status import Status
from sagents.events import (
    AgentShutdown,
    Event,
    FileChanged,
    LLMDeltas,
    LLMMessage,
    RunHalted,
    StatusChanged,
    TodosUpdated,
    ToolExecutionCompleted,
    ToolExecutionFailed,
    ToolExecutionStarted,
)

__all__ = [
    "APPROVE_WORDS",
    "REJECT_WORDS",
    "RunMapper",
    "TaskUpdate",
    "decisions_from_reply",
    "input_required",
    "interrupt_ids",
    "pending_ids",
    "status_update",
    "user_text",
]

#: What the executor publishes: an artifact chunk or a status change.
TaskUpdate: TypeAlias = TaskArtifactUpdateEvent | TaskStatusUpdateEvent

#: Task states after which a task takes no more updates.
TERMINAL_STATES = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_REJECTED,
    }
)

#: A text reply that approves every pending approval (case-insensitive, the whole reply).
APPROVE_WORDS = frozenset({"approve", "approved", "yes", "y", "ok", "okay"})
#: A text reply that rejects every pending approval; what follows the word is the reason
#: (``"reject: not that file"``).
REJECT_WORDS = frozenset({"reject", "rejected", "no", "n", "deny", "denied"})

_REPLY_HELP = (
    'Reply "approve", or "reject" (optionally "reject: <why>"), or send a data part '
    '{"decisions": [...]} with one decision per call.'
)
_ANSWER_HELP = 'Reply with your answer, or send a data part {"decisions": [...]}.'
#: Longest rendering of a call's arguments in the text of an input-required message (the
#: whole arguments are in its data part).
_ARGS_SHOWN = 400
_FIRST_WORD = re.compile(r"\s*([A-Za-z]+)\b[\s:;,.!\-]*(.*)", re.DOTALL)


# -- building blocks ---------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON (a tool result may be any object: it is shown as its ``str``)."""
    return json.loads(json.dumps(value, default=str))


def _data_part(value: Any) -> Part:
    return new_data_part(_jsonable(value))


def _agent_message(task_id: str, context_id: str, text: str, data: Any = None) -> Message:
    parts = [Part(text=text)] if text else []
    if data is not None:
        parts.append(_data_part(data))
    return Message(
        role=Role.ROLE_AGENT,
        message_id=uuid.uuid4().hex,
        task_id=task_id,
        context_id=context_id,
        parts=parts,
    )


def status_update(
    task_id: str, context_id: str, state: TaskState, text: str, data: Any = None
) -> TaskStatusUpdateEvent:
    """A status change of the task, with a message of ``text`` and, when given, ``data`` as a
    data part (no message when there is neither)."""
    status = TaskStatus(state=state, timestamp=datetime.now(UTC))
    if text or data is not None:
        status.message.CopyFrom(_agent_message(task_id, context_id, text, data))
    return TaskStatusUpdateEvent(task_id=task_id, context_id=context_id, status=status)


def _event_data(event: Event) -> dict[str, Any]:
    data = event.to_json()
    # The agent id is the server's name for the conversation; the context id already names it.
    data.pop("agent_id", None)
    return data


def _shown(arguments: Mapping[str, Any]) -> str:
    text = json.dumps(_jsonable(arguments), ensure_ascii=False)
    return text if len(text) <= _ARGS_SHOWN else text[: _ARGS_SHOWN - 3] + "..."


def _describe_question(question: Question) -> str:
    details = []
    if question.choices:
        details.append(f"{question.type.replace('_', ' ')}: {', '.join(question.choices)}")
    if question.recommended:
        details.append(f"recommended: {question.recommended}")
    if question.allow_other:
        details.append("another answer is welcome")
    return question.question + (f" ({'; '.join(details)})" if details else "")


def _describe(interrupt: Interrupt) -> str:
    """The pending calls in words, and how to reply."""
    lines = []
    asking = False
    for i, request in enumerate(interrupt.action_requests, start=1):
        if request.questions:
            asking = True
            for question in request.questions:
                lines.append(f"{i}. {_describe_question(question)}")
        else:
            line = f"{i}. {request.name} {_shown(request.arguments)}"
            if request.description:
                line += f" ({request.description})"
            lines.append(f"{line}; allowed: {', '.join(request.allowed_decisions)}")
    head = "Waiting for your answer" if asking else "Waiting for your approval"
    kind = f" ({interrupt.kind})" if interrupt.kind not in ("human_approval", "question") else ""
    help_ = _ANSWER_HELP if asking else _REPLY_HELP
    return f"{head}{kind}:\n" + "\n".join(lines) + f"\n{help_}"


def input_required(
    task_id: str,
    context_id: str,
    interrupt: Interrupt,
    *,
    problem: str | None = None,
    seq: int = 0,
) -> TaskStatusUpdateEvent:
    """``input-required`` for ``interrupt``: the pending calls described, the interrupt as
    data (its ``StatusChanged`` event); ``problem`` says why a reply was not used."""
    text = _describe(interrupt)
    if problem:
        text = f"Your reply could not be used: {problem}\n\n{text}"
    event = StatusChanged(status=Status.INTERRUPTED, data=interrupt, seq=seq)
    return status_update(
        task_id, context_id, TaskState.TASK_STATE_INPUT_REQUIRED, text, _event_data(event)
    )


def interrupt_ids(message: Message | None) -> tuple[str, ...] | None:
    """The tool call ids of the interrupt an ``input-required`` message of ours asked about,
    or None when ``message`` carries none."""
    if message is None:
        return None
    for data in get_data_parts(message.parts):
        if not isinstance(data, dict) or data.get("type") != StatusChanged.type:
            continue
        interrupt = data.get("data")
        if data.get("status") == Status.INTERRUPTED.value and isinstance(interrupt, dict):
            requests = interrupt.get("action_requests")
            if isinstance(requests, list):
                return tuple(str(r.get("tool_call_id")) for r in requests if isinstance(r, dict))
    return None


def pending_ids(interrupt: Interrupt) -> tuple[str, ...]:
    """The tool call ids ``interrupt`` waits for, in order."""
    return tuple(r.tool_call_id for r in interrupt.action_requests)


# -- a run's events ----------------------------------------------------------------------------


class RunMapper:
    """The A2A updates of one task (one run), from the agent's events.

    Events before the run's ``StatusChanged(RUNNING)`` belong to something else (the agent's
    boot, the dismissal of an earlier interrupt) and are skipped, unless ``running`` says the
    run is already under way. After the run has ended the task (or asked for input),
    :attr:`state` says how and further events are ignored.

    Args:
        task_id: the task.
        context_id: its context (the conversation id).
        running: the run started before the first event fed.
    """

    def __init__(self, task_id: str, context_id: str, *, running: bool = False) -> None:
        self.task_id = task_id
        self.context_id = context_id
        self.running = running
        #: How the run left the task: None while it works, else a terminal state or
        #: ``input-required``.
        self.state: TaskState | None = None
        self._artifact: str | None = None  # the artifact of the model message being streamed
        self._answer = ""

    @property
    def ended(self) -> bool:
        return self.state is not None

    def map(self, event: Event) -> list[TaskUpdate]:
        """The updates ``event`` becomes (often none)."""
        if self.ended:
            return []
        if not self.running:
            if isinstance(event, StatusChanged) and event.status is Status.RUNNING:
                self.running = True
            elif isinstance(event, AgentShutdown):
                return [self._end(TaskState.TASK_STATE_FAILED, _shutdown_text(event), event)]
            return []
        match event:
            case LLMDeltas(deltas=deltas):
                return self._deltas("".join(chunk.text for chunk in deltas))
            case LLMMessage(message=message):
                return self._message(message.text)
            case StatusChanged():
                return self._status(event)
            case AgentShutdown():
                return [self._end(TaskState.TASK_STATE_FAILED, _shutdown_text(event), event)]
            case ToolExecutionStarted(name=name, arguments=arguments):
                return [self._working(f"Calling {name} {_shown(arguments)}", event)]
            case ToolExecutionCompleted(name=name):
                return [self._working(f"{name or 'The tool'} finished", event)]
            case ToolExecutionFailed(name=name, error=error):
                return [self._working(f"{name or 'The tool'} failed: {error}", event)]
            case TodosUpdated(todos=todos):
                done = sum(t.status == "completed" for t in todos)
                return [self._working(f"Todo list: {done} of {len(todos)} done", event)]
            case FileChanged(path=path, change=change):
                return [self._working(f"File {change}: {path}", event)]
            case RunHalted(reason=reason):
                return [self._working(f"Stopped: {reason}", event)]
        return []

    # -- streamed text -------------------------------------------------------------------------

    def _deltas(self, text: str) -> list[TaskUpdate]:
        if not text:
            return []
        append = self._artifact is not None
        if self._artifact is None:
            self._artifact = uuid.uuid4().hex
        return [self._chunk(self._artifact, text, append=append, last=False)]

    def _message(self, text: str) -> list[TaskUpdate]:
        artifact, self._artifact = self._artifact, None
        self._answer = text
        if not text:
            return []
        # The whole message replaces what was streamed: the stored artifact is the message.
        return [self._chunk(artifact or uuid.uuid4().hex, text, append=False, last=True)]

    def _chunk(self, artifact_id: str, text: str, *, append: bool, last: bool) -> TaskUpdate:
        return TaskArtifactUpdateEvent(
            task_id=self.task_id,
            context_id=self.context_id,
            artifact=Artifact(artifact_id=artifact_id, name="message", parts=[Part(text=text)]),
            append=append,
            last_chunk=last,
        )

    # -- statuses ------------------------------------------------------------------------------

    def _status(self, event: StatusChanged) -> list[TaskUpdate]:
        match event.status:
            case Status.RUNNING:
                return []
            case Status.IDLE:
                return [self._end(TaskState.TASK_STATE_COMPLETED, self._answer, event)]
            case Status.INTERRUPTED if isinstance(event.data, Interrupt):
                self.state = TaskState.TASK_STATE_INPUT_REQUIRED
                return [input_required(self.task_id, self.context_id, event.data, seq=event.seq)]
            case Status.ERROR:
                text = f"The run failed: {event.data}" if event.data else "The run failed."
                return [self._end(TaskState.TASK_STATE_FAILED, text, event)]
            case Status.CANCELLED:
                return [self._end(TaskState.TASK_STATE_CANCELED, "Cancelled.", event)]
            case _:
                # Paused for infrastructure (a node drain): this run is over; a new message
                # continues the conversation.
                text = (
                    f"The run stopped: the agent is {event.status.value}. Send a message to "
                    "continue the conversation."
                )
                return [self._end(TaskState.TASK_STATE_FAILED, text, event)]

    def _working(self, text: str, event: Event) -> TaskUpdate:
        return status_update(
            self.task_id, self.context_id, TaskState.TASK_STATE_WORKING, text, _event_data(event)
        )

    def _end(self, state: TaskState, text: str, event: Event) -> TaskUpdate:
        self.state = state
        return status_update(self.task_id, self.context_id, state, text, _event_data(event))


def _shutdown_text(event: AgentShutdown) -> str:
    return (
        f"The agent stopped ({event.reason}) before the run ended. Send a message to continue "
        "the conversation."
    )


# -- what the user sends -----------------------------------------------------------------------


def user_text(message: Message) -> str:
    """A user's A2A message as the text of a conversation message.

    Text parts are kept as they are; a data part becomes a fenced JSON block, a file given by
    URL a link, and a file sent inline (raw bytes) a note naming it (its bytes are not put into
    the conversation).
    """
    pieces: list[str] = []
    for part in message.parts:
        if part.HasField("text"):
            pieces.append(part.text)
        elif part.HasField("data"):
            (value,) = get_data_parts([part])
            data = json.dumps(_integral(value), ensure_ascii=False, indent=2)
            pieces.append(f"```json\n{data}\n```")
        elif part.HasField("url"):
            pieces.append(f"[{part.filename or part.url}]({part.url})")
        elif part.HasField("raw"):
            name = part.filename or "a file"
            kind = f", {part.media_type}" if part.media_type else ""
            pieces.append(f"[attached {name}{kind}: {len(part.raw)} bytes, not included]")
    return "\n".join(pieces).strip()


def _integral(value: Any) -> Any:
    """Whole floats back to ints, recursively (protocol numbers are doubles)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


def _choice(question: Question, text: str) -> str | None:
    folded = text.strip().casefold()
    return next((c for c in question.choices if c.casefold() == folded), None)


def _answer(question: Question, text: str) -> str | list[str] | None:
    """``text`` as the answer to ``question``, or None when it does not fit."""
    if question.type == "free_text":
        return text
    if question.type == "single_choice":
        choice = _choice(question, text)
        if choice is not None:
            return choice
        return text if question.allow_other else None
    whole = _choice(question, text)
    if whole is not None:
        return [whole]
    picked = [_choice(question, piece) for piece in re.split(r"[,\n]", text) if piece.strip()]
    if picked and all(p is not None for p in picked):
        return [p for p in picked if p is not None]
    return [text] if question.allow_other else None


def _from_text(index: int, request: ActionRequest, text: str) -> Decision:
    allowed = request.allowed_decisions
    where = f"call {index} ({request.name})"
    if request.questions:
        if "answer" in allowed and len(request.questions) == 1:
            answer = _answer(request.questions[0], text)
            if answer is not None:
                return Answer(answers=[answer])
        if "respond" in allowed:
            return Respond(message=text)
        raise InvalidDecision(
            f"{where} asks {len(request.questions)} question(s) that this text does not answer; "
            'send a data part {"decisions": [{"type": "answer", "answers": [...]}]}'
        )
    match = _FIRST_WORD.match(text)
    word, rest = (match.group(1).casefold(), match.group(2).strip()) if match else ("", text)
    if word in APPROVE_WORDS and not rest and "approve" in allowed:
        return Approve()
    if word in REJECT_WORDS and "reject" in allowed:
        return Reject(message=rest or None)
    if "respond" in allowed:
        return Respond(message=text)
    raise InvalidDecision(f"{where}: the reply {text[:60]!r} is not a decision. {_REPLY_HELP}")


def decisions_from_reply(interrupt: Interrupt, message: Message) -> list[Decision | dict[str, Any]]:
    """The decisions a user's A2A message gives for ``interrupt``, one per pending call.

    - A data part ``{"decisions": [...]}`` is used as given: the JSON decisions of
      :func:`sagents.parse_decisions` (``{"type": "approve"}``, ``{"type": "edit", "arguments":
      {...}}``, ``{"type": "reject", "message": "..."}``, ``{"type": "respond", "message":
      "..."}``, ``{"type": "answer", "answers": [...]}``).
    - Otherwise the text answers every pending call. For an approval: one of
      :data:`APPROVE_WORDS` approves, one of :data:`REJECT_WORDS` rejects (what follows the word
      is the reason: ``"reject: use /tmp"``), any other text is the call's result where the call
      allows ``respond``. For a call asking one question: the text is the answer (a choice
      matched case-insensitively; for several choices, separated by commas), else the reply in
      words where ``respond`` is allowed.

    The decisions are validated when the run is resumed (``handle.resume``), which refuses
    decisions that do not fit and keeps the interrupt.

    Raises:
        InvalidDecision: the reply is empty, mixes approvals and questions in text, or is text
            that no pending call can take; the message says what to send.
    """
    for data in get_data_parts(message.parts):
        if isinstance(data, dict) and "decisions" in data:
            decisions = data["decisions"]
            if not isinstance(decisions, list) or not all(isinstance(d, dict) for d in decisions):
                raise InvalidDecision("'decisions' must be a list of decision objects")
            return [_integral(d) for d in decisions]
    text = "\n".join(p.text for p in message.parts if p.HasField("text")).strip()
    if not text:
        raise InvalidDecision(f"the reply is empty. {_REPLY_HELP}")
    requests: Sequence[ActionRequest] = interrupt.action_requests
    asking = {bool(r.questions) for r in requests}
    if len(asking) > 1:
        raise InvalidDecision(
            "the pending calls are approvals and questions at once, which one text cannot "
            'answer; send a data part {"decisions": [...]} with one decision per call'
        )
    return [_from_text(i, r, text) for i, r in enumerate(requests, start=1)]
