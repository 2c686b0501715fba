"""Tests for ``sagents.middleware._conversation_title`` (rule X28), through a real runtime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from sagents import Agent, Done, State, Status
from sagents._errors import InvalidMiddleware
from sagents.events import ConversationTitleGenerated, Event, StatusChanged
from sagents.execution import Fail, Reply, RetryPolicy, ScriptedChatModel
from sagents.middleware import ConversationTitle, Summarization
from sagents.middleware._conversation_title import clean_title
from sagents.persistence import MemoryPersistence
from sagents.runtime import PendingSubscription, Runtime

pytestmark = pytest.mark.looptime


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    async with Runtime() as rt:
        yield rt


def agent_with(
    titler: ConversationTitle,
    *,
    agent_id: str = "titled",
    replies: int = 3,
    middleware: Sequence[Any] = (),
) -> Agent:
    model = ScriptedChatModel(script=[Reply(text=f"reply {i}") for i in range(replies)])
    return Agent(
        agent_id=agent_id,
        model=model,
        middleware=[*middleware, titler],
        retry=RetryPolicy(max_attempts=1),
    )


def title_model(answer: str = '"Planning a Trip to Lisbon."') -> ScriptedChatModel:
    return ScriptedChatModel(responder=lambda messages: Reply(text=answer))


def failing_title_model() -> ScriptedChatModel:
    return ScriptedChatModel(responder=lambda messages: Fail(error=ConnectionError("down")))


def first_user(text: str = "I want to visit Lisbon in May, help me plan") -> State:
    return State(messages=[HumanMessage(text)])


async def next_title_or_idle(events: PendingSubscription, *, title: bool) -> list[Event]:
    """Events up to the title (``title=True``) or up to the agent being idle."""
    seen: list[Event] = []
    async for event in events:
        seen.append(event)
        if title and isinstance(event, ConversationTitleGenerated):
            return seen
        if not title and isinstance(event, StatusChanged) and event.status is Status.IDLE:
            return seen
    raise AssertionError(f"the stream ended: {seen}")


async def test_a_title_is_generated_stored_and_broadcast(runtime: Runtime) -> None:
    model = title_model()
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent_with(ConversationTitle(model)), first_user(), initial_subscribers=[events]
    )
    await handle.execute()
    seen = await next_title_or_idle(events, title=True)

    assert seen[-1] == ConversationTitleGenerated(
        agent_id="titled", title="Planning a Trip to Lisbon", seq=seen[-1].seq
    )
    state = await handle.get_state()
    assert state.metadata["conversation_title"] == {"title": "Planning a Trip to Lisbon"}
    assert state.messages[-1].text == "reply 0"  # the run itself is untouched
    [prompt] = model.prompts
    assert "I want to visit Lisbon in May" in prompt[-1].text


async def test_the_title_is_persisted_with_the_state_and_on_the_conversation(
    runtime: Runtime,
) -> None:
    store = MemoryPersistence()
    await store.create_conversation("team", conversation_id="c1")
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent_with(ConversationTitle(title_model("Lisbon trip"))),
        first_user(),
        conversation_id="c1",
        scope="team",
        agent_persistence=store,
        initial_subscribers=[events],
    )
    await handle.execute()
    await next_title_or_idle(events, title=True)
    # The save runs off the mailbox, after the title; give it a moment of (virtual) time.
    for _ in range(50):
        stored = await store.load_state("team", "c1")
        if stored is not None and "conversation_title" in stored.state.metadata:
            break
        await asyncio.sleep(0.1)
    assert stored is not None
    assert stored.state.metadata["conversation_title"] == {"title": "Lisbon trip"}
    conversation = await store.get_conversation("team", "c1")
    assert conversation is not None
    assert conversation.title == "Lisbon trip"


async def test_a_failing_title_model_is_ignored_and_not_retried_by_this_server(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    model = failing_title_model()
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent_with(ConversationTitle(model)), first_user(), initial_subscribers=[events]
    )
    with caplog.at_level(logging.INFO, logger="sagents.middleware"):
        await handle.execute()
        seen = await next_title_or_idle(events, title=False)
        await asyncio.sleep(1)
        await handle.add_message(HumanMessage("and in June?"))
        seen += await next_title_or_idle(events, title=False)
        await asyncio.sleep(1)

    state = await handle.get_state()
    assert [m.text for m in state.messages if isinstance(m, AIMessage)] == ["reply 0", "reply 1"]
    assert "conversation_title" not in state.metadata
    assert not any(isinstance(e, ConversationTitleGenerated) for e in seen)
    assert await handle.get_status() is Status.IDLE
    assert model.calls == 1  # one attempt per server, not one per model call
    assert "no conversation title (ConnectionError: down)" in caplog.text
    assert "background task failed" not in caplog.text  # ignored, not an error


async def test_the_fallbacks_are_tried_in_order_until_one_gives_a_title(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    down, blank, good, unused = (
        failing_title_model(),
        title_model('"..."'),  # cleaned to nothing: no title
        title_model('"Lisbon in May"'),
        title_model("never asked"),
    )
    titler = ConversationTitle(down, fallbacks=[blank, good, unused])
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent_with(titler), first_user(), initial_subscribers=[events]
    )
    with caplog.at_level(logging.INFO, logger="sagents.middleware"):
        await handle.execute()
        await next_title_or_idle(events, title=True)
    assert (await handle.get_state()).metadata["conversation_title"] == {"title": "Lisbon in May"}
    assert (down.calls, blank.calls, good.calls, unused.calls) == (1, 1, 1, 0)
    assert "(ConnectionError: down) from title model 1 of 4; trying the next model" in caplog.text
    assert "from title model 2 of 4; trying the next model" in caplog.text


async def test_when_every_title_model_fails_the_conversation_stays_untitled(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = failing_title_model(), failing_title_model()
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent_with(ConversationTitle(first, fallbacks=[second])),
        first_user(),
        initial_subscribers=[events],
    )
    with caplog.at_level(logging.INFO, logger="sagents.middleware"):
        await handle.execute()
        await next_title_or_idle(events, title=False)
        for _ in range(50):  # the title task runs beside the turn
            if second.calls:
                break
            await asyncio.sleep(0.1)
    assert "conversation_title" not in (await handle.get_state()).metadata
    assert (first.calls, second.calls) == (1, 1)
    assert "from title model 2 of 2; it stays untitled" in caplog.text


async def test_a_restarted_server_tries_again(runtime: Runtime) -> None:
    calls = 0

    def flaky(messages: list[BaseMessage]) -> Reply | Fail:
        nonlocal calls
        calls += 1
        return Fail(error=ConnectionError("down")) if calls == 1 else Reply(text="Second try")

    titler = ConversationTitle(ScriptedChatModel(responder=flaky))
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent_with(titler), first_user(), initial_subscribers=[events]
    )
    await handle.execute()
    await next_title_or_idle(events, title=False)
    await asyncio.sleep(1)
    state = await handle.get_state()
    await runtime.stop("titled")

    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent_with(titler), state.append(HumanMessage("again")), initial_subscribers=[events]
    )
    await handle.execute()
    await next_title_or_idle(events, title=True)
    assert (await handle.get_state()).metadata["conversation_title"] == {"title": "Second try"}
    assert calls == 2


async def test_a_state_with_a_title_gets_no_new_one(runtime: Runtime) -> None:
    model = title_model()
    events = PendingSubscription()
    state = first_user().with_metadata("conversation_title", {"title": "Kept"})
    handle = await runtime.start_agent(
        agent_with(ConversationTitle(model)), state, initial_subscribers=[events]
    )
    await handle.execute()
    seen = await next_title_or_idle(events, title=False)
    await asyncio.sleep(5)
    assert model.calls == 0
    assert not any(isinstance(e, ConversationTitleGenerated) for e in seen)
    assert (await handle.get_state()).metadata["conversation_title"] == {"title": "Kept"}


async def test_no_user_message_no_title(runtime: Runtime) -> None:
    model = title_model()
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent_with(ConversationTitle(model)),
        State(messages=[AIMessage("Hello! How can I help?")]),
        initial_subscribers=[events],
    )
    await handle.execute()
    await next_title_or_idle(events, title=False)
    await asyncio.sleep(5)
    assert model.calls == 0


async def test_a_title_arriving_during_a_run_is_applied_after_it(runtime: Runtime) -> None:
    # The agent's reply is slow; the title comes back while the run is in progress.
    agent = Agent(
        agent_id="slow",
        model=ScriptedChatModel(script=[Reply(text="a long answer", delay=10)]),
        middleware=[ConversationTitle(title_model("Quick title"))],
        retry=RetryPolicy(max_attempts=1),
    )
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, first_user(), initial_subscribers=[events])
    await handle.execute()
    seen = await next_title_or_idle(events, title=True)
    # Handled once the run had produced its reply (and before it reports idle).
    kinds = [type(e).__name__ for e in seen]
    assert kinds.index("LLMMessage") < kinds.index("ConversationTitleGenerated")
    state = await handle.get_state()
    assert state.metadata["conversation_title"] == {"title": "Quick title"}
    assert state.messages[-1].text == "a long answer"


async def test_one_middleware_titles_several_agents(runtime: Runtime) -> None:
    def answer(messages: list[BaseMessage]) -> Reply:
        return Reply(text=f"About {messages[-1].text.split()[-1]}")

    titler = ConversationTitle(ScriptedChatModel(responder=answer))
    handles = []
    for name in ("cats", "dogs"):
        events = PendingSubscription()
        handle = await runtime.start_agent(
            agent_with(titler, agent_id=name),
            first_user(f"tell me about {name}"),
            initial_subscribers=[events],
        )
        await handle.execute()
        await next_title_or_idle(events, title=True)
        handles.append(handle)
    titles = [(await h.get_state()).metadata["conversation_title"]["title"] for h in handles]
    assert titles == ["About cats", "About dogs"]


async def test_a_summary_is_not_taken_for_the_first_user_message(runtime: Runtime) -> None:
    model = title_model("Real topic")
    summary = HumanMessage(
        "Summary of the earlier conversation: ...", additional_kwargs={"sagents_summary": True}
    )
    state = State(messages=[summary, AIMessage("ok"), HumanMessage("the real question")])
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent_with(ConversationTitle(model), middleware=[Summarization(title_model())]),
        state,
        initial_subscribers=[events],
    )
    await handle.execute()
    await next_title_or_idle(events, title=True)
    [prompt] = model.prompts
    assert prompt[-1].text == "the real question"


async def test_under_a_plain_run_no_title_is_attempted(caplog: pytest.LogCaptureFixture) -> None:
    # Agent.run has no server to hand a title back to: the title model is not even called.
    model = title_model()
    agent = agent_with(ConversationTitle(model))
    with caplog.at_level(logging.INFO, logger="sagents.middleware"):
        result = await agent.run(first_user())
        await asyncio.sleep(1)
    assert isinstance(result, Done)
    assert "conversation_title" not in result.state.metadata
    assert model.prompts == []
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("answer", "title"),
    [
        ('"Planning a Trip."', "Planning a Trip"),
        ("Title: Lisbon in May\nHere is why...", "Lisbon in May"),
        ("  **Bold move**  ", "Bold move"),
        ("\n\n  “Curly quotes”\n", "Curly quotes"),
        ("", ""),
        ("word " * 40, ("word " * 16).strip()),
    ],
)
def test_clean_title(answer: str, title: str) -> None:
    assert clean_title(answer, 80) == title


def test_clean_title_cuts_one_long_word() -> None:
    assert clean_title("x" * 200, 10) == "x" * 10


@pytest.mark.parametrize("options", [{"max_length": 0}, {"max_length": True}])
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidMiddleware, match="max_length"):
        ConversationTitle(title_model(), **options)


def test_a_model_is_required() -> None:
    with pytest.raises(InvalidMiddleware, match="chat model"):
        ConversationTitle("cheap")  # type: ignore[arg-type]


def test_a_fallback_must_be_a_chat_model() -> None:
    with pytest.raises(InvalidMiddleware, match=r"fallbacks=\.\.\.\)\[1\]"):
        ConversationTitle(title_model(), fallbacks=[title_model(), "cheap"])  # type: ignore[list-item]
