"""Ownership leases and fencing (issue 11, item 6), on memory, SQLite and PostgreSQL.

A lease with a one-microsecond ttl has expired by the store's next clock reading (the clock never
repeats a timestamp), which lets these tests cover expiry without waiting.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from langchain_core.messages import HumanMessage

from sagents import ConversationOwnedElsewhere, StateConflict
from sagents._errors import ConversationNotFound
from sagents._state import State
from sagents.persistence import ConversationLeases, DisplayMessage, StateSnapshot
from tests.persistence.conftest import Store

ALICE, BOB = "alice", "bob"
EXPIRED = 1e-6  # seconds


def snapshot(version: int, token: int | None, text: str = "hi") -> StateSnapshot:
    return StateSnapshot(
        state=State(messages=[HumanMessage(text)]), version=version, lease_token=token
    )


async def test_both_stores_implement_the_protocol(store: Store) -> None:
    assert isinstance(store, ConversationLeases)


async def test_a_first_lease_creates_the_conversation_with_token_1(store: Store) -> None:
    lease = await store.acquire_lease(ALICE, "c", "worker-a", 30.0)
    assert (lease.conversation_id, lease.owner, lease.token) == ("c", "worker-a", 1)
    assert lease.state_version is None
    conversation = await store.get_conversation(ALICE, "c")
    assert conversation is not None
    assert conversation.scope == ALICE


async def test_a_second_owner_is_refused_with_the_owner_named(store: Store) -> None:
    first = await store.acquire_lease(ALICE, "c", "worker-a", 30.0)
    with pytest.raises(ConversationOwnedElsewhere) as refused:
        await store.acquire_lease(ALICE, "c", "worker-b", 30.0)
    assert refused.value.owner == "worker-a"
    assert refused.value.expires_at == first.expires_at
    assert refused.value.retryable is True
    assert "worker-a" in str(refused.value)


async def test_the_same_owner_takes_it_again_with_a_new_token(store: Store) -> None:
    first = await store.acquire_lease(ALICE, "c", "worker-a", 30.0)
    again = await store.acquire_lease(ALICE, "c", "worker-a", 30.0)
    assert again.token == first.token + 1


async def test_a_released_lease_passes_to_another_owner(store: Store) -> None:
    first = await store.acquire_lease(ALICE, "c", "worker-a", 30.0)
    await store.release_lease(ALICE, "c", first)
    second = await store.acquire_lease(ALICE, "c", "worker-b", 30.0)
    assert second.token == first.token + 1
    # Releasing an old lease again changes nothing for the new owner.
    await store.release_lease(ALICE, "c", first)
    with pytest.raises(ConversationOwnedElsewhere):
        await store.acquire_lease(ALICE, "c", "worker-a", 30.0)


async def test_an_expired_lease_is_taken_over(store: Store) -> None:
    await store.acquire_lease(ALICE, "c", "worker-a", EXPIRED)
    taken = await store.acquire_lease(ALICE, "c", "worker-b", 30.0)
    assert (taken.owner, taken.token) == ("worker-b", 2)


async def test_the_leases_of_a_dead_owner_are_taken_over_at_once(store: Store) -> None:
    # A host found dead: its live leases expire now, and a zombie of it stays fenced.
    old = await store.acquire_lease(ALICE, "c", "worker-a", 30.0)
    await store.acquire_lease(ALICE, "d", "worker-a", 30.0)
    await store.acquire_lease(ALICE, "e", "worker-b", 30.0)
    assert await store.expire_leases("worker-a") == 2
    assert await store.expire_leases("worker-a") == 0
    taken = await store.acquire_lease(ALICE, "c", "worker-c", 30.0)
    assert (taken.owner, taken.token) == ("worker-c", old.token + 1)
    assert taken.recovered
    with pytest.raises(ConversationOwnedElsewhere):
        await store.acquire_lease(ALICE, "e", "worker-c", 30.0)
    with pytest.raises(StateConflict):
        await store.save_state(ALICE, "c", snapshot(1, old.token))


async def test_the_lease_reports_the_stored_state_version(store: Store) -> None:
    lease = await store.acquire_lease(ALICE, "c", "worker-a", 30.0)
    assert await store.save_state(ALICE, "c", snapshot(7, lease.token))
    again = await store.acquire_lease(ALICE, "c", "worker-a", 30.0)
    assert again.state_version == 7


async def test_a_fenced_writer_is_refused_loudly(store: Store) -> None:
    old = await store.acquire_lease(ALICE, "c", "worker-a", EXPIRED)
    assert await store.save_state(ALICE, "c", snapshot(1, old.token))
    new = await store.acquire_lease(ALICE, "c", "worker-b", 30.0)
    with pytest.raises(StateConflict) as refused:
        await store.save_state(ALICE, "c", snapshot(2, old.token, "lost"))
    assert refused.value.reason == "owned_elsewhere"
    assert await store.save_state(ALICE, "c", snapshot(2, new.token, "kept"))
    stored = await store.load_state(ALICE, "c")
    assert stored is not None
    assert stored.state.messages[0].content == "kept"


async def test_an_expired_lease_nobody_took_is_still_its_writers(store: Store) -> None:
    lease = await store.acquire_lease(ALICE, "c", "worker-a", EXPIRED)
    assert await store.save_state(ALICE, "c", snapshot(1, lease.token))


async def test_a_writer_without_a_lease_waits_for_the_owner(store: Store) -> None:
    lease = await store.acquire_lease(ALICE, "c", "worker-a", 30.0)
    with pytest.raises(StateConflict, match="worker-a"):
        await store.save_state(ALICE, "c", snapshot(1, None))
    await store.release_lease(ALICE, "c", lease)
    assert await store.save_state(ALICE, "c", snapshot(1, None))


async def test_a_save_never_brings_a_deleted_conversation_back(store: Store) -> None:
    lease = await store.acquire_lease(ALICE, "c", "worker-a", 30.0)
    assert await store.save_state(ALICE, "c", snapshot(1, lease.token))
    assert await store.delete_conversation(ALICE, "c")
    with pytest.raises(StateConflict) as refused:
        await store.save_state(ALICE, "c", snapshot(2, lease.token))
    assert refused.value.reason == "deleted"
    assert await store.get_conversation(ALICE, "c") is None
    assert await store.load_state(ALICE, "c") is None


async def test_without_create_a_missing_conversation_is_not_found(store: Store) -> None:
    with pytest.raises(ConversationNotFound):
        await store.acquire_lease(ALICE, "missing", "worker-a", 30.0, create=False)
    assert await store.get_conversation(ALICE, "missing") is None
    await store.create_conversation(ALICE, conversation_id="made")
    lease = await store.acquire_lease(ALICE, "made", "worker-a", 30.0, create=False)
    assert lease.token == 1


async def test_another_scope_gets_not_found(store: Store) -> None:
    await store.acquire_lease(ALICE, "c", "worker-a", 30.0)
    with pytest.raises(ConversationNotFound):
        await store.acquire_lease(BOB, "c", "worker-b", 30.0)


async def test_renewal_extends_every_lease_of_an_owner_and_reports_what_it_holds(
    store: Store,
) -> None:
    a = await store.acquire_lease(ALICE, "c1", "worker-a", EXPIRED)
    await store.acquire_lease(ALICE, "c2", "worker-a", EXPIRED)
    await store.acquire_lease(ALICE, "c3", "worker-a", EXPIRED)
    await store.acquire_lease(ALICE, "c3", "worker-b", 30.0)  # taken over (it had expired)
    assert await store.renew_leases("worker-a", 30.0) == {"c1", "c2"}
    # Renewed: no longer expired, so another owner is refused.
    with pytest.raises(ConversationOwnedElsewhere):
        await store.acquire_lease(ALICE, "c1", "worker-b", 30.0)
    assert await store.save_state(ALICE, "c1", snapshot(1, a.token))
    assert await store.renew_leases("nobody", 30.0) == set()


@pytest.mark.parametrize("ttl", [0, -1.0, float("nan"), float("inf"), True])
async def test_a_bad_ttl_is_refused(store: Store, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await store.acquire_lease(ALICE, "c", "worker-a", ttl)


async def test_display_rows_of_a_fenced_writer_are_refused(store: Store) -> None:
    old = await store.acquire_lease(ALICE, "c", "worker-a", EXPIRED)
    row = DisplayMessage(conversation_id="c", type="user", content={"text": "late"})
    assert await store.append_display_messages(ALICE, "c", [row], lease_token=old.token)
    new = await store.acquire_lease(ALICE, "c", "worker-b", 30.0)
    with pytest.raises(StateConflict) as refused:
        await store.append_display_messages(ALICE, "c", [row], lease_token=old.token)
    assert refused.value.reason == "owned_elsewhere"
    assert await store.append_display_messages(ALICE, "c", [row], lease_token=new.token)
    assert len(await store.list_display_messages(ALICE, "c")) == 2


# -- every other write of a fenced writer: tool-call rows, reconciliation, files --------------
#
# A process that stalled past its lease while another took the conversation over writes with
# the token it had: each write is refused with StateConflict, in the write's own transaction,
# and nothing of the new owner's changes.


def call_row(status: str = "executing") -> DisplayMessage:
    return DisplayMessage(
        conversation_id="c",
        type="tool_call",
        content={"name": "ping", "arguments": {}},
        tool_call_id="call-1",
        status=status,
        state_version=1,
    )


async def test_tool_call_row_updates_of_a_fenced_writer_are_refused(store: Store) -> None:
    old = await store.acquire_lease(ALICE, "c", "worker-a", EXPIRED)
    await store.append_display_messages(ALICE, "c", [call_row()], lease_token=old.token)
    assert await store.update_tool_call_status(
        ALICE, "c", "call-1", "interrupted", lease_token=old.token
    )
    new = await store.acquire_lease(ALICE, "c", "worker-b", 30.0)
    with pytest.raises(StateConflict) as refused:
        await store.update_tool_call_status(
            ALICE, "c", "call-1", "completed", {"by": "zombie"}, lease_token=old.token
        )
    assert refused.value.reason == "owned_elsewhere"
    with pytest.raises(StateConflict) as refused:
        await store.record_decision(ALICE, "c", "call-1", {"type": "reject"}, lease_token=old.token)
    assert refused.value.reason == "owned_elsewhere"
    [row] = await store.list_display_messages(ALICE, "c")
    assert (row.status, row.metadata) == ("interrupted", {})  # nothing changed
    # The owner's own writes pass.
    decided = await store.record_decision(
        ALICE, "c", "call-1", {"type": "approve"}, lease_token=new.token
    )
    assert decided is not None
    assert decided.metadata == {"decision": {"type": "approve"}}
    done = await store.update_tool_call_status(
        ALICE, "c", "call-1", "completed", lease_token=new.token
    )
    assert done is not None
    assert done.status == "completed"


async def test_a_fenced_writer_cannot_reconcile_the_new_owners_rows(store: Store) -> None:
    old = await store.acquire_lease(ALICE, "c", "worker-a", EXPIRED)
    new = await store.acquire_lease(ALICE, "c", "worker-b", 30.0)
    rows = [
        call_row(),
        DisplayMessage(conversation_id="c", type="user", content={}, state_version=2),
    ]
    await store.append_display_messages(ALICE, "c", rows, lease_token=new.token)
    with pytest.raises(StateConflict) as refused:
        await store.reconcile_display_messages(
            ALICE, "c", state_version=0, tool_call_statuses={}, lease_token=old.token
        )
    assert refused.value.reason == "owned_elsewhere"
    stored = await store.list_display_messages(ALICE, "c")
    assert [(r.type, r.status) for r in stored] == [("tool_call", "executing"), ("user", None)]


async def test_file_writes_of_a_fenced_writer_are_refused(store: Store) -> None:
    old = await store.acquire_lease(ALICE, "c", "worker-a", EXPIRED)
    await store.save_files(ALICE, "c", {"/plan.md": "old owner's"}, lease_token=old.token)
    new = await store.acquire_lease(ALICE, "c", "worker-b", 30.0)
    await store.save_files(ALICE, "c", {"/plan.md": "new owner's"}, lease_token=new.token)
    for changes in ({"/plan.md": "zombie's"}, {"/plan.md": None}, {"/other.md": "zombie's"}):
        with pytest.raises(StateConflict) as refused:
            await store.save_files(ALICE, "c", changes, lease_token=old.token)
        assert refused.value.reason == "owned_elsewhere"
    assert await store.load_files(ALICE, "c") == {"/plan.md": "new owner's"}


async def test_a_fenced_writer_cannot_retitle_the_conversation(store: Store) -> None:
    old = await store.acquire_lease(ALICE, "c", "worker-a", EXPIRED)
    await store.update_conversation(ALICE, "c", title="Old plan", lease_token=old.token)
    new = await store.acquire_lease(ALICE, "c", "worker-b", 30.0)
    await store.update_conversation(ALICE, "c", title="New plan", lease_token=new.token)
    with pytest.raises(StateConflict) as refused:
        await store.update_conversation(ALICE, "c", title="Zombie's", lease_token=old.token)
    assert refused.value.reason == "owned_elsewhere"
    conversation = await store.get_conversation(ALICE, "c")
    assert conversation is not None
    assert conversation.title == "New plan"
    # Without a token (the application renaming it), nothing is checked.
    await store.update_conversation(ALICE, "c", title="Renamed")


async def test_writes_never_bring_a_deleted_conversation_back(store: Store) -> None:
    lease = await store.acquire_lease(ALICE, "c", "worker-a", 30.0)
    await store.append_display_messages(ALICE, "c", [call_row()], lease_token=lease.token)
    await store.save_files(ALICE, "c", {"/plan.md": "plan"}, lease_token=lease.token)
    assert await store.delete_conversation(ALICE, "c")
    token = lease.token
    writes: list[Callable[[], Awaitable[object]]] = [
        lambda: store.save_files(ALICE, "c", {"/plan.md": "again"}, lease_token=token),
        lambda: store.update_tool_call_status(ALICE, "c", "call-1", "failed", lease_token=token),
        lambda: store.record_decision(ALICE, "c", "call-1", {"type": "x"}, lease_token=token),
        lambda: store.reconcile_display_messages(
            ALICE, "c", state_version=None, tool_call_statuses={}, lease_token=token
        ),
        lambda: store.update_conversation(ALICE, "c", title="again", lease_token=token),
    ]
    for write in writes:
        with pytest.raises(StateConflict) as refused:
            await write()
        assert refused.value.reason == "deleted"
    assert await store.get_conversation(ALICE, "c") is None
    assert await store.load_files(ALICE, "c") == {}
    assert await store.list_display_messages(ALICE, "c") == []


async def test_a_fenced_write_to_another_scope_is_not_found(store: Store) -> None:
    lease = await store.acquire_lease(ALICE, "c", "worker-a", 30.0)
    with pytest.raises(ConversationNotFound):
        await store.save_files(BOB, "c", {"/x.md": "x"}, lease_token=lease.token)
    with pytest.raises(ConversationNotFound):
        await store.update_tool_call_status(BOB, "c", "call-1", "failed", lease_token=lease.token)
    with pytest.raises(ConversationNotFound):
        await store.append_display_messages(BOB, "c", [call_row()], lease_token=lease.token)
    assert await store.load_files(ALICE, "c") == {}
