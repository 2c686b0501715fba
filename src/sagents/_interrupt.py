"""Interrupts and the human decisions that answer them.

An :class:`Interrupt` is plain data kept in ``State.interrupt``, so it is persisted with the state
and survives a restart: the approval a user gives tomorrow resumes the run paused today.
Decisions are small frozen dataclasses; :func:`parse_decisions` also accepts their JSON form
(``{"type": "approve"}``, ``{"type": "edit", "arguments": {...}}``,
``{"type": "reject", "message": "..."}``, ``{"type": "respond", "message": "..."}``,
``{"type": "answer", "answers": [...]}``) because decisions usually arrive from a browser.

Questions to the user (``AskUserQuestion``) travel on the same machinery rather than a second
one: an action request that carries :class:`Question` s allows the ``answer`` decision, and the
answers are checked against those questions when the run is resumed, before anything changes, so
an invalid answer is refused like an invalid approval and the interrupt stays.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, get_args

from sagents._errors import InvalidDecision, StateError

__all__ = [
    "APPROVAL_DECISIONS",
    "ActionRequest",
    "Answer",
    "Approve",
    "Decision",
    "DecisionType",
    "Edit",
    "Interrupt",
    "QUESTION_DECISIONS",
    "Question",
    "QuestionType",
    "Reject",
    "Respond",
    "format_answers",
    "parse_decisions",
]

DecisionType: TypeAlias = Literal["approve", "edit", "reject", "respond", "answer"]
ALL_DECISIONS: tuple[DecisionType, ...] = get_args(DecisionType)
#: What a protected call allows unless its policy says otherwise.
APPROVAL_DECISIONS: tuple[DecisionType, ...] = ("approve", "edit", "reject")
#: What a call asking questions allows: answer them, reply in words, or decline.
QUESTION_DECISIONS: tuple[DecisionType, ...] = ("answer", "respond", "reject")

QuestionType: TypeAlias = Literal["single_choice", "multiple_choice", "free_text"]
QUESTION_TYPES: tuple[QuestionType, ...] = get_args(QuestionType)

#: Bounds of a question (it is model-written text a page shows) and of an answer.
MAX_QUESTIONS = 10
MAX_CHOICES = 20
MAX_QUESTION_CHARS = 2_000
MAX_CHOICE_CHARS = 500
MAX_ANSWER_CHARS = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Question:
    """One question to the user, asked through an action request (``AskUserQuestion``).

    Attributes:
        question: the text the user reads.
        type: ``"single_choice"`` (answered with one of ``choices``), ``"multiple_choice"``
            (a list of them) or ``"free_text"`` (any text; ``choices`` are then suggestions).
        choices: the options, distinct; at least two for a choice question.
        recommended: the option the asker suggests (one of ``choices`` when there are any).
        allow_other: a choice question may also be answered with text of the user's own.

    Raises:
        StateError: the question is malformed (the message says how).
    """

    question: str
    type: QuestionType = "free_text"
    choices: tuple[str, ...] = ()
    recommended: str | None = None
    allow_other: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.choices, list):
            object.__setattr__(self, "choices", tuple(self.choices))
        problem = _question_problem(self)
        if problem is not None:
            raise StateError(f"invalid question: {problem}")

    @property
    def is_choice(self) -> bool:
        """Whether the answer must be picked from ``choices`` (unless ``allow_other``)."""
        return self.type != "free_text"

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "type": self.type,
            "choices": list(self.choices),
            "recommended": self.recommended,
            "allow_other": self.allow_other,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Question:
        """Rebuild a question from its JSON form; every field is checked, nothing coerced.

        Raises:
            StateError: the data is malformed.
        """
        if not isinstance(data, Mapping):
            raise StateError(f"a question must be an object, got {type(data).__name__}")
        unknown = set(data) - _QUESTION_KEYS
        if unknown:
            raise StateError(f"unknown question field(s): {_names(unknown)}")
        choices = data.get("choices", [])
        if not isinstance(choices, list | tuple):
            raise StateError("question 'choices' must be a list of strings")
        return cls(
            question=data.get("question"),  # type: ignore[arg-type]  # checked by __post_init__
            type=data.get("type", "free_text"),
            choices=tuple(choices),
            recommended=data.get("recommended"),
            allow_other=data.get("allow_other", False),
        )


def _question_problem(q: Question) -> str | None:
    """What is wrong with ``q``, or None."""
    if not isinstance(q.question, str) or not q.question.strip():
        return "'question' must be non-empty text"
    if len(q.question) > MAX_QUESTION_CHARS:
        return f"'question' is longer than {MAX_QUESTION_CHARS} characters"
    if q.type not in QUESTION_TYPES:
        return f"'type' {_short(q.type)} is not one of {', '.join(QUESTION_TYPES)}"
    if not isinstance(q.choices, tuple) or not all(
        isinstance(c, str) and c.strip() for c in q.choices
    ):
        return "'choices' must be a list of non-empty strings"
    if len(q.choices) > MAX_CHOICES:
        return f"at most {MAX_CHOICES} choices"
    if any(len(c) > MAX_CHOICE_CHARS for c in q.choices):
        return f"a choice is longer than {MAX_CHOICE_CHARS} characters"
    if len(set(q.choices)) != len(q.choices):
        return "'choices' must be distinct"
    if q.type != "free_text" and len(q.choices) < 2:
        return f"a {q.type} question needs at least two choices"
    if q.recommended is not None:
        if not isinstance(q.recommended, str) or not q.recommended.strip():
            return "'recommended' must be non-empty text or null"
        if q.choices and q.recommended not in q.choices:
            return f"'recommended' {_short(q.recommended)} is not one of the choices"
        if len(q.recommended) > MAX_ANSWER_CHARS:
            return f"'recommended' is longer than {MAX_ANSWER_CHARS} characters"
    if not isinstance(q.allow_other, bool):
        return "'allow_other' must be true or false"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionRequest:
    """One tool call waiting for a human decision.

    Attributes:
        tool_call_id: the call's id.
        name: the tool's name.
        arguments: the call's arguments.
        allowed_decisions: the decisions a human may give for it.
        description: why it waits, for the human.
        questions: what the call asks the user (``AskUserQuestion``); answered with an
            :class:`Answer`. Empty for an approval.
    """

    tool_call_id: str
    name: str
    arguments: dict[str, Any]
    allowed_decisions: tuple[DecisionType, ...] = APPROVAL_DECISIONS
    description: str | None = None
    questions: tuple[Question, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tool_call_id": self.tool_call_id,
            "name": self.name,
            "arguments": self.arguments,
            "allowed_decisions": list(self.allowed_decisions),
            "description": self.description,
        }
        if self.questions:  # only then: an approval's JSON stays as it always was
            out["questions"] = [q.to_dict() for q in self.questions]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ActionRequest:
        """Rebuild a request from its JSON form; every field is checked, nothing coerced.

        Raises:
            StateError: the data is malformed.
        """
        if not isinstance(data, Mapping):
            raise StateError(f"an action request must be an object, got {type(data).__name__}")
        unknown = set(data) - _REQUEST_KEYS
        if unknown:
            raise StateError(f"unknown action request field(s): {_names(unknown)}")
        for key in ("tool_call_id", "name"):
            if not isinstance(data.get(key), str):
                raise StateError(f"an action request needs {key!r} as a string")
        arguments = data.get("arguments")
        if not isinstance(arguments, dict):
            raise StateError("an action request needs 'arguments' as an object")
        allowed = data.get("allowed_decisions", APPROVAL_DECISIONS)
        if not isinstance(allowed, list | tuple) or any(a not in ALL_DECISIONS for a in allowed):
            raise StateError(
                f"action request 'allowed_decisions' must list some of {', '.join(ALL_DECISIONS)}"
            )
        description = data.get("description")
        if not isinstance(description, str | None):
            raise StateError("action request 'description' must be a string or null")
        questions = data.get("questions", [])
        if not isinstance(questions, list) or len(questions) > MAX_QUESTIONS:
            raise StateError(
                f"action request 'questions' must be a list of at most {MAX_QUESTIONS} questions"
            )
        return cls(
            tool_call_id=data["tool_call_id"],
            name=data["name"],
            arguments=dict(arguments),
            allowed_decisions=tuple(allowed),
            description=description,
            questions=tuple(Question.from_dict(q) for q in questions),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Interrupt:
    """A run paused for human approval.

    Attributes:
        action_requests: the pending calls, one decision expected for each, in this order.
        kind: who raised it (``"human_approval"``, ``"question"``, or e.g. ``"sub_agent"``).
            A page should decide how to show each request from the request itself (its
            ``allowed_decisions`` and ``questions``): a sub-agent's question arrives as a
            ``"sub_agent"`` interrupt.
        data: extra JSON data for the raiser (e.g. which sub-agent is waiting).
    """

    action_requests: tuple[ActionRequest, ...]
    kind: str = "human_approval"
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "action_requests": [r.to_dict() for r in self.action_requests],
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Interrupt:
        """Rebuild an interrupt from its JSON form.

        Raises:
            StateError: the data is malformed.
        """
        if not isinstance(data, Mapping):
            raise StateError(f"an interrupt must be an object, got {type(data).__name__}")
        unknown = set(data) - {"kind", "action_requests", "data"}
        if unknown:
            raise StateError(f"unknown interrupt field(s): {_names(unknown)}")
        kind = data.get("kind", "human_approval")
        if not isinstance(kind, str):
            raise StateError("interrupt 'kind' must be a string")
        requests = data.get("action_requests")
        if not isinstance(requests, list):
            raise StateError("an interrupt needs a list 'action_requests'")
        extra = data.get("data", {})
        if not isinstance(extra, dict):
            raise StateError("interrupt 'data' must be an object")
        return cls(
            action_requests=tuple(ActionRequest.from_dict(r) for r in requests),
            kind=kind,
            data=dict(extra),
        )


@dataclass(frozen=True, slots=True)
class Approve:
    """Run the call as the model asked."""

    type: Literal["approve"] = "approve"


@dataclass(frozen=True, slots=True)
class Edit:
    """Run the call with these arguments instead."""

    arguments: dict[str, Any]
    type: Literal["edit"] = "edit"


@dataclass(frozen=True, slots=True)
class Reject:
    """Do not run the call; the model is told, with ``message`` when given."""

    message: str | None = None
    type: Literal["reject"] = "reject"


@dataclass(frozen=True, slots=True)
class Respond:
    """Do not run the call; ``message`` is its result, as if the tool had answered it (the
    human answers in place of the tool)."""

    message: str
    type: Literal["respond"] = "respond"


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the questions of a call (:class:`Question`), one answer per question, in order:
    a choice (``single_choice``), a list of choices (``multiple_choice``) or text
    (``free_text``)."""

    answers: Sequence[str | Sequence[str]]
    type: Literal["answer"] = "answer"


Decision: TypeAlias = Approve | Edit | Reject | Respond | Answer

_REQUEST_KEYS = frozenset(
    {"tool_call_id", "name", "arguments", "allowed_decisions", "description", "questions"}
)
_QUESTION_KEYS = frozenset({"question", "type", "choices", "recommended", "allow_other"})
_TYPES: dict[type, str] = {
    Approve: "approve",
    Edit: "edit",
    Reject: "reject",
    Respond: "respond",
    Answer: "answer",
}
#: The field each decision type takes besides ``type``.
_FIELDS = {"edit": "arguments", "reject": "message", "respond": "message", "answer": "answers"}


def _names(keys: set[Any]) -> str:
    # Keys come from outside: a megabyte key must not become a megabyte message.
    shown = sorted(repr(k)[:40] for k in keys)[:5]
    return ", ".join(shown) + (" ..." if len(keys) > 5 else "")


def _is_json(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is JSON a store keeps as given: finite numbers, string keys, no sets,
    bytes or objects, nested at most 100 levels."""
    if depth > 100:
        return False
    if value is None or isinstance(value, bool | str):
        return True
    if isinstance(value, int | float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, list):
        return all(_is_json(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v, depth + 1) for k, v in value.items())
    return False


def _parse_one(index: int, raw: Decision | Mapping[str, Any]) -> Decision:
    if isinstance(raw, Approve | Edit | Reject | Respond | Answer):
        decision: Decision = raw
    elif isinstance(raw, Mapping):
        kind = raw.get("type")
        extra = set(raw) - {"type", "arguments", "message", "answers"}
        if extra:
            raise InvalidDecision(
                f"decision {index}: unknown field(s) {_names(extra)}; use 'type', "
                "'arguments' (edit), 'message' (reject, respond) or 'answers' (answer)"
            )
        if kind not in ALL_DECISIONS:
            raise InvalidDecision(f"decision {index}: type {_short(kind)} is not one of {_KINDS}")
        for key in ("arguments", "message", "answers"):
            if key in raw and _FIELDS.get(kind) != key:
                takers = " or ".join(k for k, v in _FIELDS.items() if v == key)
                raise InvalidDecision(f"decision {index}: only {_a(takers)} takes {key!r}")
        if kind == "approve":
            decision = Approve()
        elif kind == "edit":
            decision = Edit(arguments=raw.get("arguments"))  # type: ignore[arg-type]
        elif kind == "reject":
            decision = Reject(message=raw.get("message"))
        elif kind == "respond":
            decision = Respond(message=raw.get("message"))  # type: ignore[arg-type]
        else:
            decision = Answer(answers=raw.get("answers"))  # type: ignore[arg-type]
    else:
        raise InvalidDecision(
            f"decision {index}: expected Approve/Edit/Reject/Respond/Answer or a dict, "
            f"got {type(raw).__name__}"
        )
    if decision.type != _TYPES[type(decision)]:
        # The run applies a decision by its class: its type must say the same, or the policy
        # (allowed decisions) would be checked against one thing and another done.
        raise InvalidDecision(
            f"decision {index}: a {type(decision).__name__} must have type "
            f"{_TYPES[type(decision)]!r}, not {_short(decision.type)}"
        )
    if isinstance(decision, Edit) and not isinstance(decision.arguments, dict):
        raise InvalidDecision(f"decision {index}: an edit needs 'arguments' as an object")
    if isinstance(decision, Edit) and not _is_json(decision.arguments):
        raise InvalidDecision(
            f"decision {index}: edited arguments must be JSON (string keys, finite numbers, "
            "no sets or bytes, at most 100 levels deep)"
        )
    if isinstance(decision, Reject) and not isinstance(decision.message, str | None):
        raise InvalidDecision(f"decision {index}: a reject 'message' must be a string")
    if isinstance(decision, Respond) and (
        not isinstance(decision.message, str) or not decision.message.strip()
    ):
        raise InvalidDecision(f"decision {index}: a respond decision needs a 'message' (text)")
    if isinstance(decision, Respond) and len(decision.message) > MAX_ANSWER_CHARS:
        raise InvalidDecision(
            f"decision {index}: a respond 'message' is longer than {MAX_ANSWER_CHARS} characters"
        )
    return decision


_KINDS = ", ".join(repr(k) for k in ALL_DECISIONS)


def _a(kinds: str) -> str:
    return ("an " if kinds[0] in "aeiou" else "a ") + kinds


def _checked_answer(where: str, request: ActionRequest, answer: Answer) -> Answer:
    """``answer`` checked against the questions of ``request``, as plain lists and strings.

    Raises:
        InvalidDecision: the answers do not fit the questions (the message says which).
    """
    questions = request.questions
    if not questions:
        raise InvalidDecision(f"{where}: {request.name!r} asks no question; nothing to answer")
    given = answer.answers
    if isinstance(given, str | bytes | bytearray | Mapping) or not isinstance(given, Sequence):
        raise InvalidDecision(f"{where}: 'answers' must be a list, one answer per question")
    if len(given) != len(questions):
        raise InvalidDecision(
            f"{where}: expected {len(questions)} answer(s), one per question, got {len(given)}"
        )
    checked: list[str | list[str]] = []
    for i, (question, value) in enumerate(zip(questions, given, strict=True)):
        at = f"{where}, answer {i} (to {_short(question.question)})"
        if question.type == "multiple_choice":
            if isinstance(value, str | bytes | bytearray | Mapping) or not isinstance(
                value, Sequence
            ):
                raise InvalidDecision(f"{at}: a multiple_choice answer is a list of choices")
            if len(value) > MAX_CHOICES:
                raise InvalidDecision(f"{at}: pick at most {MAX_CHOICES} choices")
            picked = [_checked_text(at, question, v) for v in value]
            if not picked:
                raise InvalidDecision(f"{at}: pick at least one choice")
            if len(set(picked)) != len(picked):
                raise InvalidDecision(f"{at}: a choice is picked twice")
            checked.append(picked)
        else:
            checked.append(_checked_text(at, question, value))
    return Answer(answers=checked)


def _checked_text(at: str, question: Question, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidDecision(f"{at}: the answer must be non-empty text")
    if len(value) > MAX_ANSWER_CHARS:
        raise InvalidDecision(f"{at}: the answer is longer than {MAX_ANSWER_CHARS} characters")
    if question.is_choice and not question.allow_other and value not in question.choices:
        choices = ", ".join(_short(c) for c in question.choices)
        raise InvalidDecision(f"{at}: {_short(value)} is not one of the choices ({choices})")
    return value


def format_answers(questions: Sequence[Question], answers: Sequence[str | Sequence[str]]) -> str:
    """The answers as the model reads them: each question, then its answer (a list of choices
    as JSON, so a choice with a comma stays one choice)."""
    lines = ["The user answered:"]
    for i, (question, answer) in enumerate(zip(questions, answers, strict=True), start=1):
        shown = answer if isinstance(answer, str) else json.dumps(list(answer), ensure_ascii=False)
        lines.append(f"{i}. {question.question}\n   Answer: {shown}")
    return "\n".join(lines)


def parse_decisions(
    interrupt: Interrupt, decisions: Sequence[Decision | Mapping[str, Any]]
) -> tuple[Decision, ...]:
    """Validate ``decisions`` against ``interrupt``: one per action request, each allowed, and
    an answer fitting the request's questions.

    Raises:
        InvalidDecision: wrong count, unknown or disallowed type, a malformed edit, reject or
            respond, or answers that do not fit the questions.
    """
    if isinstance(decisions, str | bytes | bytearray | Mapping) or not isinstance(
        decisions, Sequence
    ):
        raise InvalidDecision("decisions must be a list with one decision per pending call")
    expected = len(interrupt.action_requests)
    if len(decisions) != expected:
        names = ", ".join(r.name for r in interrupt.action_requests)
        raise InvalidDecision(
            f"expected {expected} decision(s), one per pending call ({names}), got {len(decisions)}"
        )
    parsed = [_parse_one(i, raw) for i, raw in enumerate(decisions)]
    for i, (request, decision) in enumerate(zip(interrupt.action_requests, parsed, strict=True)):
        where = f"decision {i} for {request.name!r}"
        if decision.type not in request.allowed_decisions:
            raise InvalidDecision(
                f"{where}: {decision.type!r} is not allowed; "
                f"allowed: {', '.join(request.allowed_decisions)}"
            )
        if isinstance(decision, Answer):
            parsed[i] = _checked_answer(where, request, decision)
    return tuple(parsed)
