"""Text databases refuse, stored anyway (issue 16, item 8): NUL characters and lone surrogates
from a model or a tool round-trip through every store, and a conversation holding them keeps
saving (on PostgreSQL, every later save used to fail)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from sagents._state import State
from sagents.persistence import DisplayMessage, StateSnapshot
from sagents.persistence.sql._text import escape, unescape
from tests.persistence.conftest import Store

# NUL, a lone high and low surrogate, the escape character itself, and look-alikes of escapes.
NASTY = "a\x00b \ud800 \udfff \ue000 \ue0000 \ue000s0041 ☃ \U0001f600"


@given(st.text(alphabet=st.characters(codec=None)))
def test_escape_round_trips_any_text(text: str) -> None:
    assert unescape(escape(text)) == text
    stored = escape(text)
    assert "\x00" not in stored
    assert all(not 0xD800 <= ord(c) <= 0xDFFF for c in stored)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    )
)
def test_escape_round_trips_any_json_value(value: object) -> None:
    assert unescape(escape(value)) == value


def test_plain_text_is_left_alone() -> None:
    text = "plain ascii and ünïcödé ☃"
    assert escape(text) is text
    assert unescape(text) is text


async def test_nul_and_surrogates_from_a_model_round_trip_and_later_saves_work(
    store: Store,
) -> None:
    state = State(
        messages=[
            HumanMessage("read the file"),
            AIMessage(NASTY, tool_calls=[{"name": "t", "args": {NASTY: NASTY}, "id": "c1"}]),
            ToolMessage(NASTY, tool_call_id="c1"),
        ],
        metadata={"notes": {NASTY: [NASTY]}},
    )
    assert await store.save_state("u", "c", StateSnapshot(state=state, version=1))
    stored = await store.load_state("u", "c")
    assert stored is not None
    assert stored.state == state
    later = state.append(AIMessage("and then"))
    assert await store.save_state(
        "u",
        "c",
        StateSnapshot(state=later, version=2, base_version=1, unchanged_prefix=3),
    )
    again = await store.load_state("u", "c")
    assert again is not None
    assert again.state == later


async def test_display_rows_and_titles_holding_them_round_trip(store: Store) -> None:
    await store.create_conversation("u", conversation_id="c", title=NASTY, metadata={NASTY: NASTY})
    [row] = await store.append_display_messages(
        "u",
        "c",
        [
            DisplayMessage(
                conversation_id="c",
                type="tool_call",
                content={"arguments": {NASTY: NASTY}},
                tool_call_id="call",
                status="executing",
                metadata={"m": NASTY},
            )
        ],
    )
    assert row.content == {"arguments": {NASTY: NASTY}}
    updated = await store.record_decision("u", "c", "call", {"type": "reject", "message": NASTY})
    assert updated is not None
    assert updated.metadata["decision"]["message"] == NASTY
    [listed] = await store.list_display_messages("u", "c")
    assert listed.content == {"arguments": {NASTY: NASTY}}
    assert listed.metadata == {"m": NASTY, "decision": {"type": "reject", "message": NASTY}}
    conversation = await store.get_conversation("u", "c")
    assert conversation is not None
    assert (conversation.title, conversation.metadata) == (NASTY, {NASTY: NASTY})
    renamed = await store.update_conversation("u", "c", title=NASTY + "!")
    assert renamed is not None
    assert renamed.title == NASTY + "!"


@pytest.mark.parametrize("text", ["\ue000", "\ue0000", "x\ue000s0041"])
def test_text_that_looks_escaped_is_not_confused_with_an_escape(text: str) -> None:
    assert unescape(escape(text)) == text
