"""Messages seen twice (``message_preprocessor``): the model gets one version of a message, the
user's display rows show another, and each is persisted where it belongs."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import BaseMessage, HumanMessage

from sagents import InvalidOption, Status
from sagents.execution import Reply
from sagents.persistence import MemoryPersistence
from sagents.runtime import Runtime

from .conftest import make_agent, start_saved, until_status

pytestmark = pytest.mark.looptime  # (a reply that takes a second takes no real time)

DOCS = {"pricing": "Plan A costs 10 EUR a month; plan B 25 EUR."}


def expand_attachments(message: BaseMessage, state: Any) -> tuple[BaseMessage, BaseMessage | str]:
    """The model reads the attached document; the user sees what they typed."""
    text = str(message.content)
    for name, body in DOCS.items():
        if f"[[{name}]]" in text:
            expanded = text.replace(f"[[{name}]]", f"<document name={name!r}>{body}</document>")
            return HumanMessage(expanded), text
    return message, message


async def test_the_model_and_the_user_each_see_their_version(runtime: Runtime) -> None:
    agent = make_agent(responder=lambda messages: Reply(text="Plan A is cheaper."))
    handle, store = await start_saved(runtime, agent, message_preprocessor=expand_attachments)
    async with handle.subscribe() as events:
        await handle.add_message("Which plan is cheaper? [[pricing]]")
        await until_status(events, Status.IDLE)
        await handle.add_message("thanks")  # unchanged by the preprocessor
        await until_status(events, Status.IDLE)
    await handle.stop()  # its saves are written

    stored = await store.load_state("team", "c1")
    assert stored is not None
    first = str(stored.state.messages[0].content)
    assert "<document name='pricing'>Plan A costs 10 EUR" in first  # what the model read
    [prompt, _] = agent.model.prompts  # type: ignore[attr-defined]
    assert "<document name='pricing'>" in str(prompt[-1].content)
    rows = await store.list_display_messages("team", "c1")
    users = [r.content["text"] for r in rows if r.type == "user"]
    assert users == ["Which plan is cheaper? [[pricing]]", "thanks"]  # what the user typed


async def test_a_message_queued_during_a_run_is_preprocessed_too(runtime: Runtime) -> None:
    store = MemoryPersistence()
    seen: list[str] = []

    def tag(message: BaseMessage, state: Any) -> tuple[BaseMessage, str]:
        seen.append(str(message.content))
        return HumanMessage(f"[{len(state.messages)}] {message.content}"), str(message.content)

    # The first reply takes a second: the second message comes while it runs.
    agent = make_agent(responder=lambda messages: Reply(text="ok", delay=1.0))
    handle = await runtime.start_agent(
        agent,
        conversation_id="c2",
        agent_persistence=store,
        display_message_persistence=store,
        message_preprocessor=tag,
        inactivity_timeout=None,
    )
    async with handle.subscribe() as events:
        await handle.add_message("one")
        assert await handle.get_status() is Status.RUNNING
        await handle.add_message("two")  # queued, and run next
        await until_status(events, Status.IDLE)
    state = await handle.get_state()
    await handle.stop()
    assert seen == ["one", "two"]
    humans = [str(m.content) for m in state.messages if isinstance(m, HumanMessage)]
    assert humans == ["[0] one", "[1] two"]  # as the state was when each was added
    rows = await store.list_display_messages(None, "c2")
    assert [r.content["text"] for r in rows if r.type == "user"] == ["one", "two"]


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ("not a pair", "must return \\(for_the_model, for_the_user\\)"),
        (("text", "text"), "the model's version must be a langchain message"),
        ((HumanMessage("x"), 42), "the user's version must be a message or its text"),
    ],
)
async def test_a_preprocessor_that_returns_nonsense_is_refused(
    runtime: Runtime, result: Any, message: str
) -> None:
    handle = await runtime.start_agent(
        make_agent(agent_id="bad", responder=lambda messages: Reply(text="ok")),
        message_preprocessor=lambda m, state: result,
        inactivity_timeout=None,
    )
    with pytest.raises(InvalidOption, match=message):
        await handle.add_message("hello")
    assert (await handle.get_state()).messages == []
    assert await handle.get_status() is Status.IDLE


async def test_the_option_must_be_a_function(runtime: Runtime) -> None:
    with pytest.raises(InvalidOption, match="message_preprocessor must be a function"):
        await runtime.start_agent(make_agent(agent_id="x"), message_preprocessor="nope")


async def test_each_message_can_say_what_its_display_rows_show(runtime: Runtime) -> None:
    agent = make_agent(responder=lambda messages: Reply(text="done"))
    handle, store = await start_saved(runtime, agent, message_preprocessor=expand_attachments)
    async with handle.subscribe() as events:
        # The user typed a command; the model reads its expansion.
        await handle.add_message("Summarise the changelog in 3 bullets", display="/changelog")
        await until_status(events, Status.IDLE)
        await handle.add_message("Context: the user is on plan B.", display=False)
        await until_status(events, Status.IDLE)
        # The message's own display wins over the preprocessor's version for the user.
        await handle.add_message("[[pricing]]", display=HumanMessage("(pricing attached)"))
        await until_status(events, Status.IDLE)
        with pytest.raises(InvalidOption, match="display must be"):
            await handle.add_message("hi", display=3)  # type: ignore[arg-type]
    await handle.stop()

    rows = await store.list_display_messages("team", "c1")
    assert [r.content["text"] for r in rows if r.type == "user"] == [
        "/changelog",
        "(pricing attached)",
    ]
    stored = await store.load_state("team", "c1")
    assert stored is not None
    humans = [str(m.content) for m in stored.state.messages if isinstance(m, HumanMessage)]
    assert humans[0] == "Summarise the changelog in 3 bullets"
    assert humans[1] == "Context: the user is on plan B."
    assert "<document name='pricing'>" in humans[2]
    assert len(humans) == 3  # the refused one was not added
