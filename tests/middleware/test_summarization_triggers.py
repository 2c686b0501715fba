"""Summarization triggers beyond a token threshold (issue 15): a message count, a fraction of
the model's context window counting the system prompt, recovery from a context-overflow error,
and shortening the arguments of old file writes."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from sagents import Agent, Done, Failed, State
from sagents._errors import InvalidMiddleware
from sagents.events import ChainError, MiddlewareAction
from sagents.execution import CollectingSink, Fail, Reply, RetryPolicy, ScriptedChatModel
from sagents.middleware import Summarization, is_summary
from sagents.middleware._summarization import is_context_overflow, shorten_file_arguments


def summary_model(text: str = "S: the story so far") -> ScriptedChatModel:
    return ScriptedChatModel(responder=lambda messages: Reply(text=text))


def chat(count: int, size: int = 10) -> list[BaseMessage]:
    """``count`` alternating user / assistant messages of ``size`` characters each."""
    return [
        HumanMessage(f"{i:03}" + "u" * size) if i % 2 == 0 else AIMessage(f"{i:03}" + "a" * size)
        for i in range(count)
    ]


def agent_with(
    summarizer: Summarization, *script: Any, prompt: str | None = None, **model: Any
) -> Agent:
    return Agent(
        agent_id="trigger-agent",
        model=ScriptedChatModel(script=list(script) or [Reply(text="done")], **model),
        middleware=[summarizer],
        base_system_prompt=prompt or "",
        retry=RetryPolicy(max_attempts=1),
    )


def actions(sink: CollectingSink) -> list[Any]:
    return [e.data for e in sink.events if isinstance(e, MiddlewareAction)]


# -- message count -------------------------------------------------------------------------


async def test_more_messages_than_max_messages_is_summarised() -> None:
    summarizer = Summarization(summary_model(), max_messages=25, messages_to_keep=10)
    assert summarizer.threshold is None  # no token trigger unless asked for
    result = await agent_with(summarizer).run(State(messages=chat(27)))
    assert isinstance(result, Done)
    history = result.state.messages
    assert is_summary(history[0])
    assert history[1:-1] == chat(27)[-10:]  # the kept messages, then the reply
    under = await agent_with(summarizer).run(State(messages=chat(25)))
    assert isinstance(under, Done)
    assert not any(is_summary(m) for m in under.state.messages)


# -- a fraction of the context window, counting the system prompt ---------------------------


class Counter:
    """A token counter: one token per message and per character, recording its calls."""

    def __init__(self) -> None:
        self.calls: list[list[BaseMessage]] = []

    def __call__(self, messages: Sequence[BaseMessage]) -> int:
        self.calls.append(list(messages))
        return sum(1 + len(m.text) for m in messages)


async def test_the_system_prompt_counts_toward_a_fraction_of_the_window() -> None:
    counter = Counter()
    summarizer = Summarization(
        summary_model(),
        fraction=0.5,
        context_window=2_000,
        messages_to_keep=4,
        token_counter=counter,
    )
    history = chat(20, size=30)  # 20 * 34 = 680 tokens: under 1,000 by themselves
    assert counter(history) < 1_000
    counter.calls.clear()
    without_prompt = await agent_with(summarizer).run(State(messages=history))
    assert isinstance(without_prompt, Done)
    assert not any(is_summary(m) for m in without_prompt.state.messages)

    long_prompt = "Follow the house rules. " * 20  # about 480 more tokens
    result = await agent_with(summarizer, prompt=long_prompt).run(State(messages=history))
    assert isinstance(result, Done)
    assert is_summary(result.state.messages[0])
    first_count = counter.calls[1]
    assert isinstance(first_count[0], SystemMessage)
    assert long_prompt in first_count[0].text


async def test_the_window_comes_from_the_agent_models_profile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    summarizer = Summarization(summary_model(), fraction=0.8, messages_to_keep=2)
    history = chat(10, size=100)  # about 290 approximate tokens
    small = agent_with(summarizer, profile={"max_input_tokens": 300})
    result = await small.run(State(messages=history))
    assert isinstance(result, Done)
    assert is_summary(result.state.messages[0])  # 290 > 0.8 * 300

    large = agent_with(summarizer, profile={"max_input_tokens": 100_000})
    result = await large.run(State(messages=history))
    assert isinstance(result, Done)
    assert not any(is_summary(m) for m in result.state.messages)

    unknown = Summarization(summary_model(), fraction=0.8, messages_to_keep=2)
    with caplog.at_level(logging.WARNING, logger="sagents.middleware"):
        for _ in range(2):
            result = await agent_with(unknown).run(State(messages=history))
            assert isinstance(result, Done)
            assert not any(is_summary(m) for m in result.state.messages)
    warnings = [r for r in caplog.records if "context window is unknown" in r.getMessage()]
    assert len(warnings) == 1


# -- context overflow ----------------------------------------------------------------------

_REQUEST = httpx.Request("POST", "https://api.example.com/v1/chat")


def openai_overflow() -> BaseException:
    openai = pytest.importorskip("openai")
    error: BaseException = openai.BadRequestError(
        "Error code: 400 - This model's maximum context length is 128000 tokens.",
        response=httpx.Response(400, request=_REQUEST),
        body={"message": "...", "type": "invalid_request_error", "code": "context_length_exceeded"},
    )
    return error


def anthropic_overflow() -> BaseException:
    anthropic = pytest.importorskip("anthropic")
    message = "prompt is too long: 210000 tokens > 200000 maximum"
    error: BaseException = anthropic.BadRequestError(
        message,
        response=httpx.Response(400, request=_REQUEST),
        body={"type": "error", "error": {"type": "invalid_request_error", "message": message}},
    )
    return error


class CodedError(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__("Bad request")
        self.body = body


def test_common_overflow_errors_are_recognised() -> None:
    assert is_context_overflow(openai_overflow())
    assert is_context_overflow(anthropic_overflow())
    assert is_context_overflow(ValueError("Input is too long for requested model."))
    assert is_context_overflow(CodedError({"error": {"code": "context_length_exceeded"}}))
    wrapped = RuntimeError("the provider call failed")
    wrapped.__cause__ = anthropic_overflow()
    assert is_context_overflow(wrapped)
    assert not is_context_overflow(TimeoutError("read timed out"))
    assert not is_context_overflow(ValueError("Rate limit reached for tokens per min"))


@pytest.mark.parametrize("make_error", [openai_overflow, anthropic_overflow])
async def test_an_overflow_is_summarised_and_the_call_made_once_more(make_error: Any) -> None:
    summarizer = Summarization(summary_model(), threshold=10**9, messages_to_keep=4)
    prompts: list[list[BaseMessage]] = []

    def answer(messages: list[BaseMessage]) -> Reply:
        prompts.append(messages)
        return Reply(text="done")

    agent = agent_with(summarizer, Fail(error=make_error()), answer)
    sink = CollectingSink()
    result = await agent.run(State(messages=chat(30)), sink=sink)
    assert isinstance(result, Done)
    [retried] = prompts
    assert is_summary(retried[0])
    assert retried[1:] == chat(30)[-4:]
    assert result.state.messages[1:-1] == chat(30)[-4:]
    assert [a["action"] for a in actions(sink)] == ["context_overflow", "summarized"]
    assert not [e for e in sink.events if isinstance(e, ChainError)]


async def test_other_errors_are_not_retried() -> None:
    summary = summary_model()
    agent = agent_with(
        Summarization(summary, threshold=10**9, messages_to_keep=4),
        Fail(error=ValueError("invalid api key")),
    )
    sink = CollectingSink()
    result = await agent.run(State(messages=chat(30)), sink=sink)
    assert isinstance(result, Failed)
    assert summary.calls == 0
    assert len([e for e in sink.events if isinstance(e, ChainError)]) == 1


async def test_a_second_overflow_fails_the_run_but_keeps_the_summary() -> None:
    model_error = ValueError("prompt is too long")
    agent = agent_with(
        Summarization(summary_model(), threshold=10**9, messages_to_keep=4),
        Fail(error=model_error),
        Fail(error=model_error),
        Reply(text="never reached"),
    )
    sink = CollectingSink()
    result = await agent.run(State(messages=chat(30)), sink=sink)
    assert isinstance(result, Failed)
    assert len([e for e in sink.events if isinstance(e, ChainError)]) == 1
    assert is_summary(result.state.messages[0])  # the next run starts from the smaller state
    assert len(result.state.messages) == 5


async def test_a_custom_predicate_decides_and_none_turns_recovery_off() -> None:
    class QuotaOverflow(Exception):
        pass

    custom = Summarization(
        summary_model(),
        threshold=10**9,
        messages_to_keep=4,
        is_context_overflow=lambda error: isinstance(error, QuotaOverflow),
    )
    result = await agent_with(custom, Fail(error=QuotaOverflow()), Reply(text="ok")).run(
        State(messages=chat(30))
    )
    assert isinstance(result, Done)
    off = Summarization(summary_model(), threshold=10**9, is_context_overflow=None)
    result = await agent_with(off, Fail(error=ValueError("prompt is too long"))).run(
        State(messages=chat(30))
    )
    assert isinstance(result, Failed)


# -- shortening old file writes ------------------------------------------------------------


def write_turn(index: int, size: int) -> list[BaseMessage]:
    call_id = f"w{index}"
    args = {"file_path": f"/f{index}.md", "content": "c" * size}
    return [
        AIMessage(
            content=[
                {"type": "text", "text": f"writing {index}"},
                {"type": "tool_use", "id": call_id, "name": "write_file", "input": args},
            ],
            tool_calls=[{"name": "write_file", "args": args, "id": call_id}],
            additional_kwargs={
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "write_file", "arguments": json.dumps(args)},
                    }
                ]
            },
        ),
        ToolMessage(content=f"Created /f{index}.md", tool_call_id=call_id, name="write_file"),
    ]


def file_history(turns: int, size: int) -> list[BaseMessage]:
    messages: list[BaseMessage] = [HumanMessage("write the files")]
    for index in range(turns):
        messages += write_turn(index, size)
    return [*messages, HumanMessage("now check them")]


async def test_old_file_writes_are_shortened_before_anything_is_summarised() -> None:
    summary = summary_model()
    summarizer = Summarization(summary, threshold=5_000, messages_to_keep=3, shorten_arguments=300)
    history = file_history(4, size=4_000)  # about 4,000 tokens of file contents
    sink = CollectingSink()
    result = await agent_with(summarizer).run(State(messages=history), sink=sink)
    assert isinstance(result, Done)
    assert summary.calls == 0  # shortening was enough
    messages = result.state.messages
    old = [m for m in messages[:-4] if isinstance(m, AIMessage)]
    assert len(old) == 3
    for message in old:
        content = message.tool_calls[0]["args"]["content"]
        assert len(content) == 300
        assert content.endswith("[4,000 characters, cut in the history; the file holds the text]")
        assert message.tool_calls[0]["args"]["file_path"].startswith("/f")
        block = message.content[1]
        assert isinstance(block, dict)
        assert block["input"]["content"] == content
        raw = message.additional_kwargs["tool_calls"][0]["function"]["arguments"]
        assert json.loads(raw)["content"] == content
    recent = messages[-4]  # within messages_to_keep: left whole
    assert isinstance(recent, AIMessage)
    assert len(recent.tool_calls[0]["args"]["content"]) == 4_000
    [shortened] = actions(sink)
    assert shortened["action"] == "arguments_shortened"
    assert shortened["messages"] == 3
    assert shortened["tokens_after"] < 5_000 < shortened["tokens_before"]


async def test_when_shortening_is_not_enough_the_history_is_summarised_too() -> None:
    summary = summary_model()
    summarizer = Summarization(summary, threshold=500, messages_to_keep=3, shorten_arguments=300)
    sink = CollectingSink()
    result = await agent_with(summarizer).run(State(messages=file_history(4, 4_000)), sink=sink)
    assert isinstance(result, Done)
    assert summary.calls == 1
    assert [a["action"] for a in actions(sink)] == ["arguments_shortened", "summarized"]
    [transcript] = summary.prompts
    assert "c" * 400 not in transcript[1].text  # the summary model read the short form


def test_shortening_is_idempotent_and_touches_only_file_writes() -> None:
    other = AIMessage("", tool_calls=[{"name": "lookup", "args": {"q": "x" * 5_000}, "id": "l1"}])
    history = [*file_history(2, 1_000), other]
    once, changed = shorten_file_arguments(history, len(history), 200)
    assert changed == 2
    assert once[-1] is other
    again, changed_again = shorten_file_arguments(once, len(once), 200)
    assert changed_again == 0
    assert again == once


@pytest.mark.parametrize(
    ("options", "word"),
    [
        ({"max_messages": 0}, "max_messages"),
        ({"max_messages": 10, "messages_to_keep": 10}, "more than messages_to_keep"),
        ({"fraction": 0}, "fraction"),
        ({"fraction": 1.5}, "fraction"),
        ({"fraction": float("nan")}, "fraction"),
        ({"context_window": -5}, "context_window"),
        ({"shorten_arguments": 50}, "shorten_arguments"),
    ],
)
def test_bad_trigger_options_are_refused(options: dict[str, Any], word: str) -> None:
    with pytest.raises(InvalidMiddleware, match=word):
        Summarization(summary_model(), **options)
