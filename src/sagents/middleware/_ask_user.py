"""``AskUserQuestion``: the model asks the user questions and waits for the answers.

The model calls ``ask_user(questions=[...])``. Each question is single choice, multiple choice or
free text, with optional choices and a recommended one (:class:`~sagents.Question`). The call
pauses the run with an interrupt of kind ``"question"``: the agent becomes ``interrupted``, as
for an approval, and the same machinery carries it — the interrupt is part of the state, so it
survives export, shutdown and restart, and the answers arrive through ``resume``:

* ``Answer([...])`` / ``{"type": "answer", "answers": [...]}``: one answer per question, in
  order — a choice, a list of choices (multiple choice), or text. They are checked against the
  questions before anything changes; an answer that does not fit raises ``InvalidDecision`` and
  the question stays pending. The tool's result gives the model each question with its answer.
* ``Respond(message)``: the user replies in words instead of picking answers.
* ``Reject(message)``: the user declines to answer; the model is told and carries on.

``dismiss_interrupt()`` clears a pending question without any of these (the call is answered as
not run and the agent becomes idle), and a new user message does the same.

The tool *suspends* (``ToolContext.suspend``) rather than the middleware interrupting after the
model call as ``HumanInTheLoop`` does: asking is the tool's own work, so when the run resumes
the tool runs again with the answers and returns them. That also composes: an approval asked in
the same turn comes first and the question when the tool runs, parallel ``ask_user`` calls
become one interrupt with one decision each, and a sub-agent's question reaches its parent like
any suspended call (as a ``"sub_agent"`` interrupt whose requests carry the questions).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from sagents._errors import InvalidMiddleware, StateError
from sagents._interrupt import (
    MAX_QUESTIONS,
    QUESTION_DECISIONS,
    QUESTION_TYPES,
    ActionRequest,
    Answer,
    Interrupt,
    Question,
    QuestionType,
    Reject,
    Respond,
    format_answers,
)
from sagents.execution._middleware import Middleware
from sagents.execution._tool_context import get_tool_context

__all__ = ["ASK_USER_TOOL", "AskUserQuestion"]

#: The tool's name.
ASK_USER_TOOL = "ask_user"

_PROMPT = """\
## Asking the user
When you need a decision or a fact only the user has, call `ask_user` instead of guessing. Ask
one or more short questions in one call. Each question is `single_choice` or `multiple_choice`
(give at least two `choices`, and mark the one you suggest as `recommended`) or `free_text`.
The run waits for the answers, which come back as the tool's result. Ask only what you cannot
find out yourself."""


class QuestionInput(BaseModel):
    """One question as the model writes it."""

    question: str = Field(description="The question, as the user will read it.")
    type: Literal["single_choice", "multiple_choice", "free_text"] | None = Field(
        default=None,
        description=(
            "single_choice: pick one of choices. multiple_choice: pick one or more. "
            "free_text: any text (choices are then suggestions). Default: single_choice "
            "when choices are given, else free_text."
        ),
    )
    choices: list[str] = Field(
        default_factory=list,
        description="The options, distinct; at least two for a choice question.",
    )
    recommended: str | None = Field(
        default=None, description="The option you suggest (one of choices)."
    )
    allow_other: bool = Field(
        default=False,
        description="Let the user answer a choice question with text of their own.",
    )


class AskUserArgs(BaseModel):
    questions: list[QuestionInput] = Field(
        min_length=1,
        max_length=MAX_QUESTIONS,
        description=f"The questions to ask, 1 to {MAX_QUESTIONS}, in the order to show them.",
    )


class AskUserQuestion(Middleware):
    """Gives the model the ``ask_user(questions)`` tool, which pauses the run until the user
    answers (see the module docstring).

    Args:
        system_prompt: what the model is told about asking (None: nothing).
        response_types: the kinds of question the model may ask; a question of another kind
            is refused, and the model told which kinds it may use.
        allow_other: True gives every choice question an "other" answer in the user's own
            words, False takes it from every question; None (default): as the model asks.
        allow_cancel: whether the user may decline to answer (``Reject``); False leaves
            answering and replying in words.

    Raises:
        InvalidMiddleware: ``response_types`` is empty or names an unknown kind.
    """

    key = "ask_user_question"

    def __init__(
        self,
        *,
        system_prompt: str | None = _PROMPT,
        response_types: Sequence[QuestionType] = QUESTION_TYPES,
        allow_other: bool | None = None,
        allow_cancel: bool = True,
    ) -> None:
        self._prompt = system_prompt
        self.response_types = tuple(dict.fromkeys(response_types))
        unknown = [kind for kind in self.response_types if kind not in QUESTION_TYPES]
        if not self.response_types or unknown:
            raise InvalidMiddleware(
                f"AskUserQuestion(response_types=...) must list some of "
                f"{', '.join(QUESTION_TYPES)}; got {list(response_types)!r}"
            )
        self.allow_other = allow_other
        self.allowed_decisions = tuple(
            d for d in QUESTION_DECISIONS if allow_cancel or d != "reject"
        )
        kinds = " or ".join(kind.replace("_", " ") for kind in self.response_types)
        self._tool = StructuredTool.from_function(
            coroutine=self._ask_user,
            name=ASK_USER_TOOL,
            description=f"Ask the user one or more questions ({kinds}) and wait for the answers.",
            args_schema=AskUserArgs,
            metadata={"display_text": "Asking you"},
        )

    def system_prompt(self) -> str | None:
        if self._prompt is None or self.response_types == QUESTION_TYPES:
            return self._prompt
        return f"{self._prompt}\nOnly ask {' or '.join(self.response_types)} questions here."

    def tools(self) -> Sequence[BaseTool]:
        return (self._tool,)

    async def _ask_user(self, questions: list[QuestionInput]) -> ToolMessage | str:
        ctx = get_tool_context()
        asked = _questions(questions, self.response_types, self.allow_other)
        resume = ctx.resume
        if resume is None:
            ctx.suspend(
                Interrupt(
                    kind="question",
                    action_requests=(
                        ActionRequest(
                            tool_call_id=ctx.tool_call_id,
                            name=ctx.tool_name,
                            arguments={"questions": [q.to_dict() for q in asked]},
                            allowed_decisions=self.allowed_decisions,
                            questions=asked,
                        ),
                    ),
                )
            )
            return ""  # ignored: the call waits for the answers
        # One request, so one decision; validated against these questions by resume.
        match resume.decisions[0]:
            case Answer(answers=answers):
                pairs = [
                    {"question": q.question, "answer": a}
                    for q, a in zip(asked, answers, strict=True)
                ]
                return ToolMessage(
                    content=format_answers(asked, answers),
                    tool_call_id=ctx.tool_call_id,
                    name=ctx.tool_name,
                    artifact={"answers": pairs},
                )
            case Respond(message=message):
                return f"The user replied instead of picking answers: {message}"
            case Reject(message=message):
                reason = f": {message}" if message else "."
                return f"The user declined to answer{reason} Carry on without the answers."
            case other:  # parse_decisions allows only the three above for a question
                raise ValueError(f"a question cannot be resumed with {other.type!r}")


def _questions(
    inputs: Sequence[QuestionInput],
    kinds: tuple[QuestionType, ...] = QUESTION_TYPES,
    allow_other: bool | None = None,
) -> tuple[Question, ...]:
    """The model's questions, checked (the model is told what to fix), of the ``kinds``
    allowed, with ``allow_other`` forced when it is not None."""
    asked = []
    for i, item in enumerate(inputs):
        kind = item.type or ("single_choice" if item.choices else "free_text")
        if kind not in kinds:
            raise ValueError(
                f"questions[{i}]: a {kind} question is not allowed here; ask it as "
                f"{' or '.join(kinds)} and call ask_user again"
            )
        other = item.allow_other if allow_other is None else allow_other and kind != "free_text"
        try:
            asked.append(
                Question(
                    question=item.question,
                    type=kind,
                    choices=tuple(item.choices),
                    recommended=item.recommended,
                    allow_other=other,
                )
            )
        except StateError as exc:
            raise ValueError(f"questions[{i}]: {exc}; fix it and call ask_user again") from None
    return tuple(asked)
