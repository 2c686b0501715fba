"""Tests for ``sagents.persistence._memory`` beyond the shared contract."""

from __future__ import annotations

import subprocess
import sys

from sagents._state import State
from sagents.persistence import DisplayMessage, StateSnapshot
from sagents.persistence._memory import MemoryPersistence


def test_the_memory_store_does_not_import_sqlalchemy() -> None:
    code = (
        "import sys, sagents, sagents.persistence, sagents.persistence._memory; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic')]; "
        "sys.exit(repr(bad) if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_stored_data_cannot_be_changed_through_arguments_or_results() -> None:
    store = MemoryPersistence()
    metadata = {"nested": {"k": 1}}
    await store.save_state("a", "c1", StateSnapshot(state=State(metadata=metadata), version=1))
    metadata["nested"]["k"] = 2
    content = {"text": "hi"}
    [saved] = await store.append_display_messages(
        "a", "c1", [DisplayMessage(conversation_id="c1", type="user", content=content)]
    )
    content["text"] = "changed"
    saved.content["text"] = "changed too"
    [listed] = await store.list_display_messages("a", "c1")
    listed.metadata["x"] = 1
    stored = await store.load_state("a", "c1")
    assert stored is not None
    assert stored.state.metadata == {"nested": {"k": 1}}
    [again] = await store.list_display_messages("a", "c1")
    assert (again.content, again.metadata) == ({"text": "hi"}, {})


async def test_values_are_stored_as_json_would_store_them() -> None:
    # Tuples come back as lists, as from a database: the memory store hides no difference.
    store = MemoryPersistence()
    state = State(metadata={"pair": (1, 2)})
    await store.save_state(None, "c1", StateSnapshot(state=state, version=1))
    stored = await store.load_state(None, "c1")
    assert stored is not None
    assert stored.state.metadata == {"pair": [1, 2]}
