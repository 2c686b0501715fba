"""Messages sent while a reply streams, as a person meets them, in Debian's Chromium driven by
Playwright.

A message that arrives during a run waits for the follow-up turn after it (``message_queued``):
the page shows it last, marked queued, keeps it across a reload, and drops the mark once its
turn has started. Past ``max_follow_ups`` chained turns (10, the default) the queued messages
are only added (``follow_ups_limited``), and the page says so in words. Both come from the
demo's own scenario, with a model that holds each new message's reply mid-stream until the test
lets it go, so that a person can type while it streams. What a reload keeps (the page holds the
queued messages in the tab's sessionStorage) is checked on made-up snapshots, in the page.

Screenshots go to ``tests/web/output/product/`` (``docs/screenshots/`` with
``SAGENTS_SCREENSHOTS=docs``, as in ``test_product_browser.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.web.conftest import Demo, chromium, demo_config, running_demo
from tests.web.product_helpers import DEMO_RESPONDER, GatedModel
from tests.web.test_product_browser import opened, send, snap, start_conversation

pytestmark = pytest.mark.slow

QUEUED = "queued — answered after the current reply"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


@pytest.fixture
def errors() -> list[str]:
    """The page's uncaught errors (``opened`` records them)."""
    return []


@pytest.fixture
def model() -> GatedModel:
    return GatedModel(responder=DEMO_RESPONDER, record_prompts=False, every_turn=True)


@pytest.fixture
async def demo(tmp_path: Path, model: GatedModel) -> AsyncIterator[Demo]:
    # A long grace period: the agent outlives the page's reload, with its queue.
    async with running_demo(demo_config(tmp_path, grace_period=60.0), model=model) as demo:
        yield demo


async def test_a_message_sent_while_a_reply_streams_is_queued_then_answered(
    demo: Demo, model: GatedModel, browser: Browser, errors: list[str]
) -> None:
    async with opened(browser, demo.url, errors) as page:
        await start_conversation(page)
        await send(page, "First")
        await model.wait_held()
        await expect(page.locator(".message.streaming .bubble")).to_contain_text("Let me")
        await send(page, "Second")
        queued = page.locator(".message.queued")
        await expect(queued.locator(".bubble")).to_have_text(["Second"])
        await expect(queued.locator(".note")).to_have_text([QUEUED])
        await expect(queued).to_have_class("message user queued")
        # It waits below the reply it comes after.
        last = page.locator("#messages > .message").last
        await expect(last).to_have_class("message user queued")
        await snap(page, "queued-message")

        # A reload shows it once, still queued (the socket's catch-up and the tab's storage
        # both have it).
        await page.reload()
        await expect(page.locator(".message.streaming .bubble")).to_contain_text("Let me")
        await expect(queued.locator(".bubble")).to_have_text(["Second"])
        await expect(page.locator(".message.user .bubble")).to_have_text(["First", "Second"])
        await expect(page.locator("#agent-status")).to_have_attribute("data-status", "running")
        # A new tab of the same person (nothing in its storage) sees it queued too, from the
        # socket's catch-up.
        other = await page.context.new_page()
        await other.goto(page.url)
        other_queued = other.locator(".message.queued")
        await expect(other_queued.locator(".bubble")).to_have_text(["Second"])
        await expect(other.locator(".message.user .bubble")).to_have_text(["First", "Second"])
        await expect(other.locator("#messages > .message").last).to_have_class(
            "message user queued"
        )

        # The first run goes on to its approval; the queued message dismisses it and runs.
        model.release()
        await model.wait_held()  # the follow-up turn, answering "Second", streams
        await expect(queued).to_have_count(0)
        await expect(other_queued).to_have_count(0)
        await other.close()
        await expect(page.locator(".message.user .bubble")).to_have_text(["First", "Second"])
        await expect(page.locator(".message.user .note")).to_have_count(0)
        model.release()
        await expect(page.locator(".approval")).to_have_count(1)
        await page.click(".approval button.approve")
        await expect(page.locator("#agent-status")).to_have_attribute("data-status", "idle")
        answer = page.locator(".message.assistant:not(.streaming) .bubble").last
        await expect(answer).to_have_text("All done: my notes on 'Second' are saved and reviewed.")

        # The mark stays gone after a reload, and the message is shown once.
        await page.reload()
        await expect(answer).to_have_text("All done: my notes on 'Second' are saved and reviewed.")
        await expect(page.locator(".message.user .bubble")).to_have_text(["First", "Second"])
        await expect(queued).to_have_count(0)
    assert errors == []


async def test_the_follow_up_limit_is_said_in_words(
    demo: Demo, model: GatedModel, browser: Browser, errors: list[str]
) -> None:
    # Ten follow-up turns run in a row (each one's message sent while the one before streams);
    # the eleventh message is only added.
    async with opened(browser, demo.url, errors) as page:
        await start_conversation(page)
        await send(page, "Turn 0")
        await model.wait_held()
        queued = page.locator(".message.queued")
        for turn in range(1, 12):
            await send(page, f"Turn {turn}")
            await expect(queued.locator(".bubble")).to_have_text([f"Turn {turn}"])
            model.release()
            if turn < 11:
                await model.wait_held()
                await expect(queued).to_have_count(0)
        notice = page.locator(".message.notice[data-notice=follow-ups]")
        await expect(notice).to_have_text(
            "1 message was added without an answer: the follow-up limit (10 turns in a row) "
            "was reached. Send a message to continue."
        )
        await expect(page.locator("#agent-status")).to_have_attribute("data-status", "idle")
        await expect(queued).to_have_count(0)
        bubbles = page.locator(".message.user .bubble")
        await expect(bubbles).to_have_count(12)
        await expect(bubbles.last).to_have_text("Turn 11")
        # The notice is the conversation's last word: nothing answered "Turn 11".
        await expect(page.locator("#messages > .message").last).to_have_attribute(
            "data-notice", "follow-ups"
        )
        await snap(page, "follow-ups-limited")
        # A reload keeps it (the socket's catch-up sends what the last run said).
        await page.reload()
        await expect(notice).to_have_count(1)
        await expect(page.locator("#messages > .message").last).to_have_attribute(
            "data-notice", "follow-ups"
        )

        # The next message starts a run that answers: the notice goes.
        await send(page, "Go on")
        await model.wait_held()
        await expect(notice).to_have_count(0)
        model.release()
        await expect(page.locator(".approval")).to_have_count(1)
    assert errors == []


#: What the page keeps across a reload, checked in the page itself: the messages that still
#: wait, given the snapshot the reload brings (its rows, status and agent instance).
RECALL = """async () => {
    const { recall, remember, followUpsText } = await import("/static/js/queued.js");
    const entry = (text) => ({ kind: "user", text, fromTool: false, afterSeq: 2, instance: 7 });
    const row = (text, sequence) => ({ type: "user", content: { text }, sequence });
    const snapshot = (status, instance, messages) => ({ status, instance, messages });
    const kept = (shot) => {
        remember("c1", [entry("Again"), entry("Later")]);
        return recall("c1", shot).map((e) => e.text);
    };
    return {
        // "Again" was sent before too (row 2): only a row after the queued event is its own.
        waiting: kept(snapshot("running", 7, [row("Again", 2)])),
        started: kept(snapshot("running", 7, [row("Again", 2), row("Again", 3)])),
        decision: kept(snapshot("interrupted", 7, [row("Again", 3), row("Later", 4)])),
        atRest: kept(snapshot("idle", 7, [])),
        otherInstance: kept(snapshot("running", 8, [])),
        words: [
            followUpsText({ max_follow_ups: 3, added: 2 }),
            followUpsText({ max_follow_ups: 1, added: 1 }),
            followUpsText({ max_follow_ups: 0, added: 1 }),
        ],
    };
}"""


async def test_a_reload_keeps_only_the_messages_that_still_wait(
    demo: Demo, browser: Browser, errors: list[str]
) -> None:
    async with opened(browser, demo.url, errors) as page:
        found = await page.evaluate(RECALL)
    assert found == {
        "waiting": ["Again", "Later"],
        "started": ["Later"],
        "decision": [],
        "atRest": [],
        "otherInstance": [],
        "words": [
            "2 messages were added without an answer: the follow-up limit (3 turns in a row) "
            "was reached. Send a message to continue.",
            "1 message was added without an answer: the follow-up limit (1 turn in a row) "
            "was reached. Send a message to continue.",
            "1 message was added without an answer: follow-up turns are turned off. "
            "Send a message to continue.",
        ],
    }
    assert errors == []
