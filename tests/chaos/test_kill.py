"""Kill durability (issue 16) on SQLite and PostgreSQL: seeded SIGKILLs at random points while
six fast agents (50 kB tool results) run turns back to back.

After every kill no turn reported durably saved is lost, the stored state is whole turns, at
most two completed turns per conversation are missing (the documented bound: a run never starts
while two completed turns are unsaved), rows are never behind the state, SQLite passes ``PRAGMA
integrity_check``; after a reconciling start the display rows are exactly those of the state.
The campaign itself, and what each check means, is ``bench/kill_campaign.py``.

CI runs 10 kills per database; ``SAGENTS_KILL_ROUNDS=200`` runs the full campaign, and
``SAGENTS_KILL_SEED`` replays another seed. These are real processes killed at real moments, so
the test runs on real time.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from bench.kill_campaign import (
    BOUND,
    Campaign,
    CampaignOptions,
    Tally,
    database,
    row_problems,
    turn_problems,
)
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from sagents import State
from sagents.persistence import DisplayMessage, StoredState
from tests.chaos.kill_child import RESULT
from tests.persistence.conftest import postgres_engine

ROUNDS = int(os.environ.get("SAGENTS_KILL_ROUNDS", "10"))
SEED = int(os.environ.get("SAGENTS_KILL_SEED", "16"))


@pytest.mark.slow
@pytest.mark.timeout(max(120, ROUNDS * 15))
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_seeded_kills_under_load_lose_nothing_beyond_the_bound(
    kind: str, tmp_path: Path
) -> None:
    if kind == "postgres":
        await (await postgres_engine()).dispose()  # skips (or fails under CI) when it is down
    options = CampaignOptions(rounds=ROUNDS, seed=SEED)
    async with database(kind, tmp_path) as (store, url, prefix):
        tally = await Campaign(
            kind,
            store,
            url,
            prefix,
            tmp_path,
            options,
            sqlite_path=tmp_path / "kill.db" if kind == "sqlite" else None,
        ).run()
    assert tally.problems == [], "\n".join(tally.problems)
    assert tally.kills == ROUNDS
    assert tally.lost_beyond_bound == 0
    assert max(tally.lost) <= BOUND
    # The campaign did what it is for: turns completed and were saved between kills, and the
    # rows were checked after a reconciling start at least once (always after the last kill).
    assert tally.turns_completed > 0, _summary(tally)
    assert tally.turns_durable > 0, _summary(tally)
    assert tally.verifications >= options.agents, _summary(tally)
    assert tally.rows_checked == tally.messages_checked  # one row per message in this scenario


def _summary(tally: Tally) -> str:
    return (
        f"{tally.kills} kills ({tally.early_kills} before a turn), {tally.turns_completed} "
        f"turns completed, {tally.turns_durable} reported durable, lost {dict(tally.lost)}"
    )


# -- the checks catch what they look for (a check that cannot fail proves nothing) --------------


def _turn(n: int) -> list[AIMessage | HumanMessage | ToolMessage]:
    call = {"name": "fetch", "args": {"n": 4 * n}, "id": f"call{n}"}
    return [
        HumanMessage(f"turn {n}"),
        AIMessage("", tool_calls=[call]),
        ToolMessage(RESULT, tool_call_id=f"call{n}"),
        AIMessage("done"),
    ]


def _rows(n: int, version: int) -> list[DisplayMessage]:
    call, done = f"call{n}", "completed"
    rows = [
        DisplayMessage(conversation_id="c", type="user", content={"text": f"turn {n}"}),
        DisplayMessage(conversation_id="c", type="tool_call", content={}, tool_call_id=call),
        DisplayMessage(conversation_id="c", type="tool_result", content={}, tool_call_id=call),
        DisplayMessage(conversation_id="c", type="assistant", content={"text": "done"}),
    ]
    return [
        dataclasses.replace(row, state_version=version, status=done if row.tool_call_id else None)
        for row in rows
    ]


def test_the_checks_flag_torn_turns_and_rows_out_of_step_with_the_state() -> None:
    messages = _turn(1) + _turn(2)
    stored = StoredState(state=State(messages=messages), version=8)
    rows = _rows(1, 4) + _rows(2, 8)
    assert turn_problems(messages) == []
    assert row_problems(rows, stored, 8, settled=True) == []

    assert turn_problems(messages[:6])  # a torn turn
    assert turn_problems(_turn(1) + _turn(3))  # a turn skipped
    assert row_problems(rows[:4], stored, 8, settled=False)  # rows behind the state
    assert row_problems(rows + _rows(3, 12), stored, 8, settled=True)  # rows ahead
    executing = [dataclasses.replace(rows[1], status="executing"), *rows[2:]]
    assert row_problems([rows[0], *executing], stored, 8, settled=True)
    assert row_problems(rows[:1] + rows, stored, 8, settled=True)  # a user row twice
    assert row_problems([r for r in rows if r.type != "tool_call"], stored, 8, settled=True)
