"""The lifecycle tour runs, section by section, and shows what the chapter promises.

It runs on virtual time (looptime): the tour's real-time waits (inactivity, grace period,
auto-save interval) take no time here and are exact.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import ModuleType

import pytest

from sagents import Status, telemetry
from sagents.runtime import AgentInfo
from tests.examples import load_example

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.looptime


@pytest.fixture(scope="module")
def tour() -> ModuleType:
    return load_example("lifecycle_tour.py", register=True)


async def test_every_section_runs_in_the_order_of_the_chapter(tour: ModuleType) -> None:
    lines: list[str] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await tour.main(write=lines.append)
    elapsed = loop.time() - started

    assert report.sections == list(tour.SECTIONS)
    headings = [line for line in lines if line.startswith("== ")]
    assert headings == [f"== {n}. {title} ==" for n, title in enumerate(tour.SECTIONS, 1)]
    assert lines[-1].startswith("Tour complete: 13 sections")
    assert 3.0 < elapsed < 6.0  # "a few seconds" of (here virtual) time
    assert report.facts["left_running"] == []
    assert telemetry.list_handlers() == []  # the tour detached its handler


async def test_the_key_facts_hold(tour: ModuleType) -> None:
    report = await tour.main(write=lambda _: None)
    facts = report.facts

    # 1. statuses: the five of the chapter's table were all observed
    assert {
        Status.IDLE,
        Status.RUNNING,
        Status.INTERRUPTED,
        Status.CANCELLED,
        Status.ERROR,
    } <= report.statuses
    assert facts["lifecycle_transitions"] == [Status.IDLE, Status.RUNNING, Status.IDLE]

    # 2. basic start: default inactivity timeout; the demo run finished
    assert facts["default_inactivity_timeout"] == pytest.approx(300.0)
    assert facts["basic_start_messages"] > 1

    # 3. start options: conversation id, one viewer, save_new_message for each new message
    info = facts["options_info"]
    assert isinstance(info, AgentInfo)
    assert info.conversation_id == "123"
    assert info.viewer_count == 1
    assert info.inactivity_remaining == pytest.approx(3600.0)
    assert report.saved_messages == [
        ("123", "human", "What can you do?"),
        ("123", "ai", "I can help with that."),
    ]
    assert facts["options_saves"] == 2  # after the run, before the stop

    # 4. a persisted state, pending approval included, restores exactly and can be resumed
    assert facts["persisted_state_restored_equal"] is True
    assert facts["resumed_after_restart"] == "Published the Q3 roadmap."

    # 5. inactivity: exactly the timeout after the last activity, saved first, restartable
    assert facts["inactivity_after"] == pytest.approx(1.0)
    assert facts["inactivity_saves"] == 1
    assert facts["inactivity_restart_messages"] == 1
    assert facts["forever_status"] is Status.IDLE

    # 6. presence: kept while viewed and across a refresh, then shut down after the grace period
    assert facts["presence_stayed"] == (Status.IDLE, Status.IDLE)
    assert facts["presence_shutdown_after"] == pytest.approx(0.5)
    assert facts["presence_saves"] == 2  # on idle, then before the shutdown

    # 7. manual shutdown and cancel
    assert facts["manual_saves"] == 1
    assert facts["stop_twice"] == "AgentNotRunning"
    assert facts["cancel_kept_messages"] == ["HumanMessage"]  # the half-streamed reply dropped
    assert facts["cancel_idle"] == "InvalidTransition"

    # every shutdown the tour listened to, in order, with its reason
    reasons = report.shutdown_reasons
    for reason in ("inactivity", "no_viewers", "manual", "maintenance"):
        assert reason in reasons
    assert reasons.index("inactivity") < reasons.index("no_viewers") < reasons.index("maintenance")
    assert "crash" not in reasons

    # 8. export / import
    assert facts["import_restored_equal"] is True
    assert facts["from_dict_roundtrip"] is True

    # 9. auto-save: each trigger happened; an unchanged state is not saved again
    assert {trigger for _, trigger, _ in report.saves} == {"interval", "on_idle", "shutdown"}
    assert report.saves == [
        ("ticker", "interval", 2),
        ("ticker", "interval", 3),
        ("ticker", "shutdown", 3),
        ("worker", "on_idle", 2),
        ("worker", "shutdown", 2),
    ]
    assert facts["interval_unchanged_saves"] == 1
    assert facts["auto_save_counts"] == {"ticker": 3, "worker": 2}

    # 10. supervision: a failed run is isolated and the agent recovers
    assert facts["supervision"] == {
        "failed": Status.ERROR,
        "steady": Status.IDLE,
        "recovered": "Back online.",
    }

    # 12. health checks
    health = facts["health"]
    assert health["status"] is Status.IDLE
    assert health["running"] == ["conversation-1", "conversation-2", "user-42"]
    assert health["count"] == 3
    assert health["matching"] == ["conversation-1", "conversation-2"]
    assert health["missing"] is None
    assert health["info"].message_count == 1
    assert health["info"].has_interrupt is False

    # 13. telemetry: every event of the chapter but the crash and the halt (the tour has
    # neither), all from the observed agent
    names = [event for event, _ in report.telemetry]
    assert set(names) == set(tour.TELEMETRY_EVENTS) - {
        ("sagents", "agent", "crash"),
        ("sagents", "execution", "halt"),
    }
    assert names[0] == ("sagents", "agent", "start")
    assert names[-1] == ("sagents", "agent", "stop")
    assert report.telemetry[-1][1]["reason"] == "manual"
    assert {metadata["agent_id"] for _, metadata in report.telemetry} == {"observed"}


async def test_scale_shortens_every_timeout(tour: ModuleType) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await tour.main(write=lambda _: None, scale=0.1)
    assert loop.time() - started < 0.6
    assert report.facts["inactivity_after"] == pytest.approx(0.1)
    assert report.facts["presence_shutdown_after"] == pytest.approx(0.05)
    assert report.facts["presence_stayed"] == (Status.IDLE, Status.IDLE)
    assert report.sections == list(tour.SECTIONS)
