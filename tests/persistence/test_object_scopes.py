"""Every persistence operation under a scope that is not text (issue 15, item 5), on memory,
SQLite and PostgreSQL: states, display messages, conversations, files and leases are found from
an equal scope and from no other, the text that reads like the scope's key included.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from sagents import ConfigurationError, ConversationNotFound
from sagents._state import State
from sagents.persistence import DisplayMessage, StateSnapshot, scope_key
from tests.persistence.conftest import Store


class Plan(enum.Enum):
    PRO = "pro"


@dataclasses.dataclass(frozen=True)
class Tenant:
    org: str
    user: int


SCOPES = [("acme", 42), Tenant(org="acme", user=42), Plan.PRO, 42, frozenset({"a", "b"})]


def others(scope: Any) -> list[Any]:
    key = scope_key(scope)
    return [None, "acme", str(scope), repr(scope), key, ("acme", 42.0), "42", 42.0, True]


def snapshot(version: int, text: str = "hi") -> StateSnapshot:
    return StateSnapshot(state=State(messages=[HumanMessage(text)]), version=version)


@pytest.mark.parametrize("scope", SCOPES, ids=lambda s: type(s).__name__)
async def test_every_operation_keeps_to_its_scope(store: Store, scope: Any) -> None:
    strangers = [o for o in others(scope) if scope_key(o) != scope_key(scope)]
    created = await store.create_conversation(scope, conversation_id="c", title="t")
    assert created.scope == scope
    assert await store.save_state(scope, "c", snapshot(1))
    rows = [
        DisplayMessage(conversation_id="c", type="user", content={"text": "hi"}),
        DisplayMessage(
            conversation_id="c",
            type="tool_call",
            content={"name": "x"},
            tool_call_id="t1",
            status="executing",
            state_version=1,
        ),
    ]
    await store.append_display_messages(scope, "c", rows)
    await store.save_files(scope, "c", {"/a.md": "alpha"})

    for stranger in strangers:
        assert await store.get_conversation(stranger, "c") is None
        assert await store.list_conversations(stranger) == []
        assert await store.load_state(stranger, "c") is None
        assert await store.list_display_messages(stranger, "c") == []
        assert await store.update_tool_call_status(stranger, "c", "t1", "completed") is None
        assert await store.record_decision(stranger, "c", "t1", {"type": "approve"}) is None
        assert await store.update_conversation(stranger, "c", title="x") is None
        assert await store.load_files(stranger, "c") == {}
        assert await store.list_files(stranger, "c") == {}
        assert await store.load_file(stranger, "c", "/a.md") is None
        try:  # (memory answers "nothing to settle", SQL "not found": neither touches a row)
            settled = await store.reconcile_display_messages(
                stranger, "c", state_version=None, tool_call_statuses={}
            )
        except ConversationNotFound:
            settled = []
        assert settled == []
        with pytest.raises(ConversationNotFound):
            await store.save_state(stranger, "c", snapshot(2, "stolen"))
        with pytest.raises(ConversationNotFound):
            await store.append_display_messages(stranger, "c", rows[:1])
        with pytest.raises(ConversationNotFound):
            await store.save_files(stranger, "c", {"/a.md": "stolen"})
        with pytest.raises(ConversationNotFound):
            await store.acquire_lease(stranger, "c", "worker-b", 30.0)
        assert await store.delete_conversation(stranger, "c") is False

    lease = await store.acquire_lease(scope, "c", "worker-a", 30.0)
    assert lease.token == 1
    assert await store.renew_leases("worker-a", 30.0) == {"c"}
    for stranger in strangers:
        await store.release_lease(stranger, "c", lease)  # not theirs: nothing happens
    assert await store.renew_leases("worker-a", 30.0) == {"c"}
    await store.release_lease(scope, "c", lease)
    assert await store.renew_leases("worker-a", 30.0) == set()

    shown = await store.list_display_messages(scope, "c")
    assert [(row.type, row.status) for row in shown] == [("user", None), ("tool_call", "executing")]
    updated = await store.update_tool_call_status(scope, "c", "t1", "completed")
    assert updated is not None
    assert updated.status == "completed"
    [conversation] = await store.list_conversations(scope)
    assert (conversation.id, conversation.scope, conversation.title) == ("c", scope, "t")
    stored = await store.load_state(scope, "c")
    assert stored is not None
    assert stored.state.messages[0].content == "hi"
    assert await store.load_files(scope, "c") == {"/a.md": "alpha"}
    assert [row.type for row in await store.list_display_messages(scope, "c")] == [
        "user",
        "tool_call",
    ]
    assert await store.delete_conversation(scope, "c") is True
    assert await store.get_conversation(scope, "c") is None


async def test_equal_scopes_built_apart_are_one_tenant(store: Store) -> None:
    await store.save_state(Tenant(org="acme", user=42), "c", snapshot(1))
    stored = await store.load_state(Tenant(org="ac" + "me", user=int("42")), "c")
    assert stored is not None
    await store.save_state(frozenset({"a", "b"}), "d", snapshot(1))
    assert await store.load_state(frozenset(["b", "a"]), "d") is not None


async def test_text_scopes_keep_their_own_stored_form(store: Store) -> None:
    """Rows stored when scopes had to be text still match: a str is its own key."""
    await store.save_state("alice", "c", snapshot(1))
    assert await store.load_state("alice", "c") is not None
    assert await store.load_state(("alice",), "c") is None
    await store.save_state("§alice", "d", snapshot(1))  # stored escaped, found again
    assert await store.load_state("§alice", "d") is not None
    assert await store.load_state(scope_key("§alice"), "d") is None


@pytest.mark.parametrize(
    "scope", [["acme"], {"acme"}, object(), ("a" * 300,)], ids=["list", "set", "object", "long"]
)
async def test_a_scope_without_a_key_is_refused_by_every_store(store: Store, scope: Any) -> None:
    with pytest.raises(ConfigurationError):
        await store.load_state(scope, "c")
    with pytest.raises(ConfigurationError):
        await store.save_state(scope, "c", snapshot(1))
    with pytest.raises(ConfigurationError):
        await store.list_conversations(scope)
