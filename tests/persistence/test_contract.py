"""The persistence protocols' contract, run against every implementation (S1-S6).

One parametrized fixture (``store``: memory, SQLite, PostgreSQL) runs each test on each
backend, so the in-memory store used by other tests cannot drift from the SQL one.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from sagents._errors import ConversationExists, ConversationNotFound, StateError
from sagents._interrupt import ActionRequest, Interrupt
from sagents._state import State
from sagents._todo import Todo, TodoStatus
from sagents.persistence import (
    AgentPersistence,
    ConversationStore,
    DisplayMessage,
    DisplayMessagePersistence,
    StateSnapshot,
)
from tests.persistence.conftest import Store

ALICE, BOB = "alice", "bob"


def rich_state() -> State:
    return State(
        agent_id="conversation-c1",
        messages=[
            SystemMessage("be brief"),
            HumanMessage("list / and read /a ☃ — ünïcödé", id="h1"),
            AIMessage(
                "",
                id="ai-1",
                tool_calls=[
                    {"name": "ls", "args": {"path": "/"}, "id": "c1"},
                    {"name": "read_file", "args": {"file_path": "/a", "n": 3.5}, "id": "c2"},
                ],
                usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
                response_metadata={"model": "scripted", "stop": None, "flags": [True, False]},
            ),
            ToolMessage("a\nb", tool_call_id="c1", name="ls", artifact={"entries": ["a", "b"]}),
            ToolMessage("no such file", tool_call_id="c2", status="error"),
            AIMessage([{"type": "text", "text": "done"}], additional_kwargs={"k": {"n": [1]}}),
        ],
        todos=[
            Todo(content="plan", status=TodoStatus.COMPLETED, id="t1"),
            Todo(content="write", status=TodoStatus.IN_PROGRESS, id="t2"),
        ],
        metadata={"title": {"text": "Greetings"}, "files": {"/a": "x" * 10}, "n": -(2**40)},
        interrupt=Interrupt(
            action_requests=(
                ActionRequest(
                    tool_call_id="c3",
                    name="write_file",
                    arguments={"file_path": "/b", "content": "hi"},
                    allowed_decisions=("approve", "reject"),
                    description="write /b",
                ),
            ),
            data={"why": "approval"},
        ),
    )


def say(n: int) -> HumanMessage:
    return HumanMessage(f"message {n}", id=f"m{n}")


def state_of(count: int, start: int = 0) -> State:
    return State(messages=[say(i) for i in range(start, start + count)])


async def save(store: Store, state: State, version: int, **delta: Any) -> bool:
    return await store.save_state(ALICE, "c1", StateSnapshot(state=state, version=version, **delta))


async def loaded(store: Store, conversation_id: str = "c1", scope: str | None = ALICE) -> State:
    stored = await store.load_state(scope, conversation_id)
    assert stored is not None
    return stored.state


# -- agent states ------------------------------------------------------------------------------


def test_stores_implement_the_protocols(store: Store) -> None:
    assert isinstance(store, AgentPersistence)
    assert isinstance(store, DisplayMessagePersistence)
    assert isinstance(store, ConversationStore)


async def test_a_rich_state_round_trips_exactly(store: Store) -> None:
    state = rich_state()
    assert await save(store, state, 7)
    stored = await store.load_state(ALICE, "c1")
    assert stored is not None
    assert stored.version == 7
    assert stored.state == state
    assert [type(m) for m in stored.state.messages] == [type(m) for m in state.messages]
    assert stored.state.to_dict() == state.to_dict()


async def test_load_of_an_unknown_conversation_is_none(store: Store) -> None:
    assert await store.load_state(ALICE, "nope") is None


async def test_a_conversation_without_a_state_loads_as_none(store: Store) -> None:
    await store.create_conversation(ALICE, conversation_id="c1")
    assert await store.load_state(ALICE, "c1") is None


async def test_the_first_save_creates_the_conversation_in_its_scope(store: Store) -> None:
    assert await save(store, state_of(1), 1)
    conversation = await store.get_conversation(ALICE, "c1")
    assert conversation is not None
    assert conversation.scope == ALICE
    assert conversation.interrupted is False


async def test_a_stale_save_loses_to_the_newer_state(store: Store) -> None:
    newer = rich_state()
    assert await save(store, newer, 5)
    assert not await save(store, state_of(2), 4)  # older
    assert not await save(store, state_of(3), 5)  # same version
    assert not await save(store, state_of(3), 4, base_version=5, unchanged_prefix=6)
    stored = await store.load_state(ALICE, "c1")
    assert stored is not None
    assert (stored.version, stored.state) == (5, newer)


async def test_a_stale_save_does_not_touch_the_conversation(store: Store) -> None:
    assert await save(store, state_of(1), 3)
    before = await store.get_conversation(ALICE, "c1")
    assert not await save(store, rich_state(), 2)  # stale, with an interrupt
    after = await store.get_conversation(ALICE, "c1")
    assert after == before


async def test_a_delta_save_appends_new_messages(store: Store) -> None:
    assert await save(store, state_of(3), 1)
    grown = state_of(5)
    assert await save(store, grown, 2, base_version=1, unchanged_prefix=3)
    assert await loaded(store) == grown


async def test_a_delta_save_replaces_messages_after_the_prefix(store: Store) -> None:
    assert await save(store, state_of(4), 1)
    edited = State(messages=[say(0), say(1), HumanMessage("edited", id="e"), say(3), say(9)])
    assert await save(store, edited, 2, base_version=1, unchanged_prefix=2)
    assert await loaded(store) == edited


async def test_a_delta_save_can_shrink_the_messages(store: Store) -> None:
    assert await save(store, state_of(5), 1)
    assert await save(store, state_of(2), 2, base_version=1, unchanged_prefix=2)
    assert await loaded(store) == state_of(2)
    assert await save(store, state_of(4), 3, base_version=2, unchanged_prefix=2)
    assert await loaded(store) == state_of(4)


async def test_a_snapshot_on_another_base_is_rewritten_in_full(store: Store) -> None:
    assert await save(store, state_of(3), 1)
    other = state_of(4, start=10)
    # It claims 3 unchanged messages, but relative to version 2, which is not what is stored.
    assert await save(store, other, 3, base_version=2, unchanged_prefix=3)
    assert await loaded(store) == other
    again = state_of(2, start=20)
    assert await save(store, again, 4, base_version=None, unchanged_prefix=2)
    assert await loaded(store) == again


async def test_an_incoherent_prefix_is_rewritten_in_full(store: Store) -> None:
    assert await save(store, state_of(2), 1)
    longer = state_of(6, start=30)
    # More unchanged messages than are stored: cannot be a delta.
    assert await save(store, longer, 2, base_version=1, unchanged_prefix=5)
    assert await loaded(store) == longer
    shorter = state_of(1, start=40)
    assert await save(store, shorter, 3, base_version=2, unchanged_prefix=4)
    assert await loaded(store) == shorter


async def test_the_head_changes_with_a_delta(store: Store) -> None:
    base = state_of(2)
    assert await save(store, base, 1)
    changed = base.replace(
        todos=[Todo(content="x", id="t")], metadata={"k": [1, 2]}, agent_id="a", interrupt=None
    )
    changed = changed.append(say(2))
    assert await save(store, changed, 2, base_version=1, unchanged_prefix=2)
    assert await loaded(store) == changed


async def test_the_interrupted_flag_follows_the_state(store: Store) -> None:
    assert await save(store, rich_state(), 1)
    conversation = await store.get_conversation(ALICE, "c1")
    assert conversation is not None
    assert conversation.interrupted
    assert await save(store, rich_state().replace(interrupt=None), 2, base_version=1)
    conversation = await store.get_conversation(ALICE, "c1")
    assert conversation is not None
    assert not conversation.interrupted


async def test_a_state_that_is_not_json_is_refused_and_nothing_is_written(store: Store) -> None:
    assert await save(store, state_of(1), 1)
    with pytest.raises(StateError, match="JSON"):
        await save(store, state_of(2).with_metadata("when", {1, 2}), 2)
    with pytest.raises(StateError):
        await save(store, state_of(2).with_metadata("nan", float("nan")), 2)
    stored = await store.load_state(ALICE, "c1")
    assert stored is not None
    assert (stored.version, stored.state) == (1, state_of(1))


async def test_the_loaded_state_is_independent_of_the_store(store: Store) -> None:
    state = rich_state()
    assert await save(store, state, 1)
    first = await loaded(store)
    first.metadata["title"]["text"] = "changed"
    ai = first.messages[2]
    assert isinstance(ai, AIMessage)
    ai.tool_calls[0]["args"]["path"] = "/changed"
    assert await loaded(store) == state


async def test_none_is_a_scope_of_its_own(store: Store) -> None:
    await store.save_state(None, "single", StateSnapshot(state=state_of(1), version=1))
    assert (await loaded(store, "single", scope=None)) == state_of(1)
    assert await store.load_state(ALICE, "single") is None
    with pytest.raises(ConversationNotFound):
        await store.save_state(ALICE, "single", StateSnapshot(state=state_of(2), version=2))


@pytest.mark.parametrize(
    "bad", [{"conversation_id": ""}, {"conversation_id": "x" * 256}, {"scope": "s" * 256}]
)
async def test_malformed_ids_are_refused(store: Store, bad: dict[str, str]) -> None:
    args = {"scope": ALICE, "conversation_id": "c1", **bad}
    with pytest.raises(ValueError, match="at most 255"):
        await store.load_state(args["scope"], args["conversation_id"])
    with pytest.raises(ValueError, match="at most 255"):
        await store.save_state(
            args["scope"], args["conversation_id"], StateSnapshot(state=State(), version=1)
        )


# -- delta saves as a property -------------------------------------------------------------------

_steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 3)),
        st.tuples(st.just("truncate"), st.integers(0, 3)),
        st.tuples(st.just("edit"), st.integers(0, 5)),
        st.tuples(st.just("unknown_base"), st.just(0)),
        st.tuples(st.just("wrong_base"), st.just(0)),
        st.tuples(st.just("stale"), st.just(0)),
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=_steps)
async def test_any_sequence_of_snapshots_restores_the_last_one(
    store: Store, steps: list[tuple[str, int]]
) -> None:
    conversation_id = f"p{time.perf_counter_ns()}"
    messages: list[BaseMessage] = []
    version, counter = 0, 0

    def fresh() -> BaseMessage:
        nonlocal counter
        counter += 1
        return HumanMessage(f"n{counter}", id=f"n{counter}")

    for op, n in steps:
        base: int | None = version or None
        prefix = len(messages)
        if op == "append":
            messages = messages + [fresh() for _ in range(n)]
        elif op == "truncate":
            messages = messages[: max(0, len(messages) - n)]
            prefix = len(messages)
        elif op == "edit":
            if messages:
                i = n % len(messages)
                messages = [*messages[:i], fresh(), *messages[i + 1 :]]
                prefix = i
        elif op == "unknown_base":
            base = None
            messages = [*messages, fresh()]
        elif op == "wrong_base":
            base = version + 100
            messages = [fresh(), *messages]
        state = State(messages=messages)
        if op == "stale" and version == 0:
            continue  # nothing stored yet: nothing to be stale against
        if op == "stale":
            snapshot = StateSnapshot(state=state_of(1, start=999), version=version)
            assert not await store.save_state(ALICE, conversation_id, snapshot)
        else:
            version += 1
            snapshot = StateSnapshot(
                state=state, version=version, base_version=base, unchanged_prefix=prefix
            )
            assert await store.save_state(ALICE, conversation_id, snapshot)
        stored = await store.load_state(ALICE, conversation_id)
        if version == 0:
            assert stored is None
        else:
            assert stored is not None
            assert stored.version == version
            assert stored.state.messages == messages


# -- scope (S4) ----------------------------------------------------------------------------------


async def _alices_conversation(store: Store) -> None:
    await store.create_conversation(ALICE, conversation_id="c1", title="Alice's")
    assert await save(store, rich_state(), 1)
    await store.append_display_messages(
        ALICE,
        "c1",
        [
            DisplayMessage(conversation_id="c1", type="user", content={"text": "hi"}),
            DisplayMessage(
                conversation_id="c1",
                type="tool_call",
                content={"name": "ls"},
                tool_call_id="c1-call",
                status="executing",
            ),
        ],
    )


@pytest.mark.parametrize("intruder", [BOB, None])
async def test_another_scope_sees_nothing_for_every_operation(
    store: Store, intruder: str | None
) -> None:
    await _alices_conversation(store)
    alice_before = await store.get_conversation(ALICE, "c1")
    display_before = await store.list_display_messages(ALICE, "c1")

    assert await store.load_state(intruder, "c1") is None
    with pytest.raises(ConversationNotFound, match="new conversation id"):
        await store.save_state(intruder, "c1", StateSnapshot(state=state_of(1), version=99))
    with pytest.raises(ConversationNotFound):
        await store.append_display_messages(
            intruder, "c1", [DisplayMessage(conversation_id="c1", type="user", content={})]
        )
    assert await store.list_display_messages(intruder, "c1") == []
    assert await store.update_tool_call_status(intruder, "c1", "c1-call", "completed") is None
    assert await store.record_decision(intruder, "c1", "c1-call", {"type": "approve"}) is None
    assert await store.get_conversation(intruder, "c1") is None
    assert await store.list_conversations(intruder) == []
    assert await store.update_conversation(intruder, "c1", title="mine now") is None
    assert await store.delete_conversation(intruder, "c1") is False
    with pytest.raises(ConversationExists):
        await store.create_conversation(intruder, conversation_id="c1")

    # Alice's data is untouched.
    stored = await store.load_state(ALICE, "c1")
    assert stored is not None
    assert (stored.version, stored.state) == (1, rich_state())
    assert await store.get_conversation(ALICE, "c1") == alice_before
    assert await store.list_display_messages(ALICE, "c1") == display_before
    assert [c.id for c in await store.list_conversations(ALICE)] == ["c1"]


# -- display messages (S2) -----------------------------------------------------------------------


def _user(text: str, conversation_id: str = "c1") -> DisplayMessage:
    return DisplayMessage(conversation_id=conversation_id, type="user", content={"text": text})


async def test_append_assigns_ids_sequences_and_timestamps(store: Store) -> None:
    saved = await store.append_display_messages(ALICE, "c1", [_user("a"), _user("b")])
    assert [m.sequence for m in saved] == [1, 2]
    assert all(m.id and m.created_at is not None for m in saved)
    assert len({m.id for m in saved}) == 2
    more = await store.append_display_messages(ALICE, "c1", [_user("c")])
    assert more[0].sequence == 3
    listed = await store.list_display_messages(ALICE, "c1")
    assert listed == [*saved, *more]
    assert [m.content["text"] for m in listed] == ["a", "b", "c"]
    first = listed[0]
    assert first.created_at is not None
    assert first.created_at.utcoffset() == timedelta(0)
    assert first.to_dict()["sequence"] == 1


async def test_append_keeps_every_field(store: Store) -> None:
    message = DisplayMessage(
        conversation_id="c1",
        type="tool_call",
        content={"name": "ls", "arguments": {"path": "/", "deep": [1, {"x": None}]}},
        content_type="json",
        tool_call_id="call-1",
        status="executing",
        metadata={"turn": 3, "ünï": "☃"},
    )
    [saved] = await store.append_display_messages(ALICE, "c1", [message])
    [listed] = await store.list_display_messages(ALICE, "c1")
    assert listed == saved
    for name in ("type", "content", "content_type", "tool_call_id", "status", "metadata"):
        assert getattr(listed, name) == getattr(message, name)


async def test_append_creates_the_conversation(store: Store) -> None:
    await store.append_display_messages(ALICE, "fresh", [_user("hi", "fresh")])
    conversation = await store.get_conversation(ALICE, "fresh")
    assert conversation is not None
    assert conversation.scope == ALICE


async def test_append_refuses_a_message_of_another_conversation(store: Store) -> None:
    with pytest.raises(ValueError, match="appended to 'c1'"):
        await store.append_display_messages(ALICE, "c1", [_user("x", "c2")])
    assert await store.append_display_messages(ALICE, "c1", []) == []


async def test_concurrent_appends_get_unique_consecutive_sequences(store: Store) -> None:
    await store.create_conversation(ALICE, conversation_id="c1")
    results = await asyncio.gather(
        *(store.append_display_messages(ALICE, "c1", [_user(f"m{i}")]) for i in range(20))
    )
    sequences = sorted(m.sequence for batch in results for m in batch if m.sequence is not None)
    assert sequences == list(range(1, 21))
    listed = await store.list_display_messages(ALICE, "c1")
    assert [m.sequence for m in listed] == list(range(1, 21))


async def test_display_messages_are_paged_by_sequence(store: Store) -> None:
    await store.append_display_messages(ALICE, "c1", [_user(str(i)) for i in range(7)])
    first = await store.list_display_messages(ALICE, "c1", limit=3)
    assert [m.sequence for m in first] == [1, 2, 3]
    second = await store.list_display_messages(ALICE, "c1", after_sequence=3, limit=3)
    assert [m.sequence for m in second] == [4, 5, 6]
    last = await store.list_display_messages(ALICE, "c1", after_sequence=6, limit=3)
    assert [m.sequence for m in last] == [7]
    assert await store.list_display_messages(ALICE, "c1", after_sequence=7) == []
    assert await store.list_display_messages(ALICE, "unknown") == []
    with pytest.raises(ValueError, match="limit"):
        await store.list_display_messages(ALICE, "c1", limit=0)


async def test_display_messages_of_conversations_are_separate(store: Store) -> None:
    await store.append_display_messages(ALICE, "c1", [_user("a")])
    [other] = await store.append_display_messages(ALICE, "c2", [_user("b", "c2")])
    assert other.sequence == 1
    assert [m.content for m in await store.list_display_messages(ALICE, "c2")] == [{"text": "b"}]


async def _tool_call_rows(store: Store) -> None:
    await store.append_display_messages(
        ALICE,
        "c1",
        [
            DisplayMessage(
                conversation_id="c1",
                type="tool_call",
                content={"name": "rm"},
                tool_call_id="call-1",
                status="interrupted",
                metadata={"turn": 1},
            ),
            DisplayMessage(
                conversation_id="c1",
                type="tool_result",
                content={"text": "?"},
                tool_call_id="call-1",
            ),
        ],
    )


async def test_tool_call_status_is_updated_and_metadata_merged(store: Store) -> None:
    await _tool_call_rows(store)
    updated = await store.update_tool_call_status(
        ALICE, "c1", "call-1", "completed", {"duration_ms": 12}
    )
    assert updated is not None
    assert (updated.type, updated.status) == ("tool_call", "completed")
    assert updated.metadata == {"turn": 1, "duration_ms": 12}
    call, result = await store.list_display_messages(ALICE, "c1")
    assert call == updated
    assert result.status is None  # only the tool_call row changes
    again = await store.update_tool_call_status(ALICE, "c1", "call-1", "failed")
    assert again is not None
    assert again.metadata == {"turn": 1, "duration_ms": 12}


async def test_decisions_are_recorded_in_the_metadata(store: Store) -> None:
    await _tool_call_rows(store)
    decision = {"type": "edit", "arguments": {"path": "/tmp/x"}}
    recorded = await store.record_decision(ALICE, "c1", "call-1", decision)
    assert recorded is not None
    assert recorded.metadata == {"turn": 1, "decision": decision}
    assert recorded.status == "interrupted"
    [call, _] = await store.list_display_messages(ALICE, "c1")
    assert call.metadata["decision"] == decision


async def test_unknown_tool_calls_and_bad_statuses(store: Store) -> None:
    await _tool_call_rows(store)
    assert await store.update_tool_call_status(ALICE, "c1", "nope", "completed") is None
    assert await store.update_tool_call_status(ALICE, "c2", "call-1", "completed") is None
    assert await store.record_decision(ALICE, "c1", "nope", {"type": "approve"}) is None
    with pytest.raises(ValueError, match="unknown tool call status"):
        await store.update_tool_call_status(ALICE, "c1", "call-1", "done")  # type: ignore[arg-type]


# -- conversations -------------------------------------------------------------------------------


async def test_create_and_get_a_conversation(store: Store) -> None:
    created = await store.create_conversation(
        ALICE, conversation_id="c1", title="Trip", metadata={"tags": ["x"]}
    )
    assert (created.id, created.scope, created.title) == ("c1", ALICE, "Trip")
    assert created.metadata == {"tags": ["x"]}
    assert created.interrupted is False
    assert created.created_at is not None
    assert created.created_at == created.updated_at
    assert await store.get_conversation(ALICE, "c1") == created
    generated = await store.create_conversation(ALICE)
    assert generated.id
    assert generated.id != "c1"
    with pytest.raises(ConversationExists):
        await store.create_conversation(ALICE, conversation_id="c1")


async def test_conversations_are_listed_most_recent_first_and_paged(store: Store) -> None:
    for i in range(5):
        await store.create_conversation(ALICE, conversation_id=f"c{i}")
    await store.create_conversation(BOB, conversation_id="bob's")
    listed = await store.list_conversations(ALICE)
    assert [c.id for c in listed] == ["c4", "c3", "c2", "c1", "c0"]
    page = await store.list_conversations(ALICE, limit=2)
    assert [c.id for c in page] == ["c4", "c3"]
    assert page[-1].updated_at is not None
    page = await store.list_conversations(ALICE, limit=2, before=page[-1].updated_at)
    assert [c.id for c in page] == ["c2", "c1"]
    # Activity moves a conversation to the top.
    await store.save_state(ALICE, "c0", StateSnapshot(state=state_of(1), version=1))
    await store.append_display_messages(ALICE, "c2", [_user("hi", "c2")])
    assert [c.id for c in await store.list_conversations(ALICE, limit=2)] == ["c2", "c0"]


async def test_a_conversation_is_renamed_and_its_metadata_replaced(store: Store) -> None:
    created = await store.create_conversation(ALICE, conversation_id="c1", metadata={"a": 1})
    renamed = await store.update_conversation(ALICE, "c1", title="New title")
    assert renamed is not None
    assert (renamed.title, renamed.metadata) == ("New title", {"a": 1})
    assert renamed.updated_at is not None
    assert created.updated_at is not None
    assert renamed.updated_at > created.updated_at
    changed = await store.update_conversation(ALICE, "c1", metadata={"b": 2})
    assert changed is not None
    assert (changed.title, changed.metadata) == ("New title", {"b": 2})
    assert await store.get_conversation(ALICE, "c1") == changed
    assert await store.update_conversation(ALICE, "missing", title="x") is None


async def test_delete_cascades_to_state_and_display_messages(store: Store) -> None:
    await _alices_conversation(store)
    assert await store.delete_conversation(ALICE, "c1") is True
    assert await store.get_conversation(ALICE, "c1") is None
    assert await store.load_state(ALICE, "c1") is None
    assert await store.list_display_messages(ALICE, "c1") == []
    assert await store.delete_conversation(ALICE, "c1") is False
    # The id is free again, and nothing of the old conversation comes back with it.
    await store.create_conversation(BOB, conversation_id="c1")
    assert await store.load_state(BOB, "c1") is None
    assert await store.list_display_messages(BOB, "c1") == []
    [message] = await store.append_display_messages(BOB, "c1", [_user("new")])
    assert message.sequence == 1


# -- size (S6) -----------------------------------------------------------------------------------


def _long_conversation(n: int) -> list[BaseMessage]:
    messages: list[BaseMessage] = []
    for i in range(n // 4):
        messages += [
            HumanMessage(f"question {i}: " + "lorem ipsum " * 8, id=f"h{i}"),
            AIMessage(
                "",
                id=f"a{i}",
                tool_calls=[{"name": "search", "args": {"q": f"q{i}", "k": 5}, "id": f"t{i}"}],
                usage_metadata={"input_tokens": 100, "output_tokens": 20, "total_tokens": 120},
            ),
            ToolMessage("result " * 20, tool_call_id=f"t{i}", name="search"),
            AIMessage(f"answer {i}: " + "dolor sit amet " * 6, id=f"b{i}"),
        ]
    return messages


async def test_a_thousand_message_conversation_saves_deltas_and_restores(
    store: Store, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = _long_conversation(1000)
    state = State(messages=messages, metadata={"title": "long"})
    # Warm up first (lazy serialiser set-up, statement caches), as in a long-running server.
    warm = StateSnapshot(state=State(messages=messages[:8]), version=1)
    assert await store.save_state(ALICE, "warm-up", warm)
    assert await store.load_state(ALICE, "warm-up") is not None
    t0 = time.perf_counter()
    assert await save(store, state, 1)
    t1 = time.perf_counter()
    grown = state.append(HumanMessage("one more", id="x1"), AIMessage("ok", id="x2"))
    assert await save(store, grown, 2, base_version=1, unchanged_prefix=1000)
    t2 = time.perf_counter()
    stored = await store.load_state(ALICE, "c1")
    t3 = time.perf_counter()
    assert stored is not None
    assert stored.state == grown
    backend = request.node.callspec.params["store"]
    with capsys.disabled():
        print(
            f"\n[{backend}] 1,000 messages: full save {1000 * (t1 - t0):.1f} ms, "
            f"delta save (+2) {1000 * (t2 - t1):.1f} ms, restore 1,002 {1000 * (t3 - t2):.1f} ms"
        )
