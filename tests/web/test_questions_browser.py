"""Questions, dismiss and reset as a person meets them (issue 15), in Debian's Chromium driven
by Playwright, at desktop (1280 px) and phone (390 px) width.

A message with "ask me" makes the demo's model ask three questions, shown as a small form: the
recommended choices come pre-selected and marked, an answer the server refuses is said in words
and the form stays usable, and answering completes the run. On the default walk, Dismiss clears
the pending approval, and Reset (after its confirmation) clears the conversation down to a
divider, also after a reload, keeping the files. A sub-agent's question (an interrupt of kind
"sub_agent") is a form too, and a halted run says why: those events are handed to the page
through a routed socket, the demo's agent producing neither.

Screenshots go to ``tests/web/output/product/``; the ones the docs show (the question form at
both widths, the reset divider) go to ``docs/screenshots/`` instead with
``SAGENTS_SCREENSHOTS=docs`` (as in ``test_product_browser.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Locator, Page, ViewportSize, WebSocketRoute, expect

from tests.web.conftest import Demo, chromium
from tests.web.test_product_browser import (
    DESKTOP,
    PHONE,
    assert_fits,
    assert_reachable,
    opened,
    send,
    snap,
    start_conversation,
    until_approval,
)

pytestmark = pytest.mark.slow

#: Where the screenshots the docs do not show always go.
OUTPUT = Path(__file__).parent / "output" / "product"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


@pytest.fixture
def errors() -> list[str]:
    """The page's uncaught errors (``opened`` records them)."""
    return []


WIDTHS = [pytest.param(DESKTOP, id="desktop"), pytest.param(PHONE, id="phone")]


async def snap_output(page: Page, name: str) -> None:
    """A screenshot for the test's reader only (never written to the docs)."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(OUTPUT / f"{name}.png"))


def phone(viewport: ViewportSize) -> bool:
    return viewport["width"] < 900


async def reachable(page: Page, selector: str) -> None:
    """Scrolled into view (the approvals panel scrolls on a phone), then on top and on screen."""
    await page.locator(selector).scroll_into_view_if_needed()
    await assert_reachable(page, selector)


async def until_idle(page: Page) -> None:
    await expect(page.locator("#agent-status")).to_have_attribute("data-status", "idle")


def last_reply(page: Page) -> Locator:
    """The last saved reply (its row may be saved after the agent went idle: expect waits)."""
    return page.locator(".message.assistant:not(.streaming) .bubble").last


# -- the question form -----------------------------------------------------------------------------


@pytest.mark.parametrize("viewport", WIDTHS)
async def test_the_question_form_refuses_in_words_then_completes_the_run(
    demo: Demo, browser: Browser, errors: list[str], viewport: ViewportSize
) -> None:
    async with opened(browser, demo.url, errors, viewport) as page:
        await start_conversation(page)
        await send(page, "Please ask me about supervision")
        form = page.locator(".ask-form")
        await expect(form).to_have_count(1)
        await expect(page.locator("#agent-status")).to_have_text("awaiting your answer")
        await expect(page.locator(".approval:not(.ask-form)")).to_have_count(0)
        questions = form.locator(".question")
        await expect(questions.locator("legend")).to_have_text(
            [
                "How deep should my notes go?",
                "Which sections do you want?",
                "What should the notes file be called?",
            ]
        )
        # Single choice: radios, the recommended one selected and marked; "Other" with a field.
        depth = questions.nth(0)
        await expect(depth.locator("input[type=radio]")).to_have_count(4)
        await expect(depth.locator("label.recommended input")).to_be_checked()
        await expect(depth.locator("label.recommended")).to_contain_text("A short summary")
        await expect(depth.locator(".recommended-mark")).to_have_text("recommended")
        # Multiple choice: checkboxes, the recommended one checked.
        sections = questions.nth(1)
        await expect(sections.locator("input[type=checkbox]")).to_have_count(4)
        await expect(sections.locator("input:checked")).to_have_count(1)
        await expect(sections.locator("label.recommended")).to_contain_text("Key ideas")
        # Free text: the recommended answer as the placeholder, the choices as suggestions.
        name = questions.nth(2).locator("input.free-text")
        await expect(name).to_have_attribute("placeholder", "supervision.md")
        await expect(questions.nth(2).locator("button.suggestion")).to_have_text(
            ["supervision.md", "notes.md"]
        )
        await assert_fits(page)
        for control in ("button.send-answers", "button.reply", "button.skip", "button.dismiss"):
            await reachable(page, f"#approvals {control}")
        await form.locator("h4").scroll_into_view_if_needed()  # the form from its top
        await snap(page, "phone-question-form" if phone(viewport) else "question-form")

        # The file name is left empty: the server refuses, and says why.
        await page.click(".ask-form button.send-answers")
        problem = form.locator(".problem")
        await expect(problem).to_contain_text("the answer must be non-empty text")
        await expect(page.locator("#errors .error").last).to_contain_text(
            "Your decision was not applied"
        )
        await expect(questions.nth(2)).to_have_class("question invalid")
        await expect(page.locator("#agent-status")).to_have_attribute("data-status", "interrupted")
        # ... and the form is usable again, the person's choices kept.
        await expect(form.locator("button.send-answers")).to_be_enabled()
        await expect(name).to_be_enabled()
        await expect(depth.locator("label.recommended input")).to_be_checked()
        if not phone(viewport):
            await form.locator("h4").scroll_into_view_if_needed()
            await snap_output(page, "question-refused")

        await questions.nth(2).locator("button.suggestion", has_text="supervision.md").click()
        await expect(name).to_have_value("supervision.md")
        await depth.locator("input.other-text").fill("A long essay")
        await expect(depth.locator("input.other-choice")).to_be_checked()
        await sections.locator("label", has_text="Sources").click()
        await reachable(page, ".ask-form button.send-answers")
        await page.click(".ask-form button.send-answers")
        await until_idle(page)
        await expect(page.locator(".ask-form")).to_have_count(0)
        await expect(last_reply(page)).to_have_text(
            "Thank you! Noted: A long essay; Key ideas, Sources; supervision.md."
        )
        card = page.locator(".tool-call[data-tool=ask_user]")
        await expect(card.locator(".tool-decision")).to_have_text(
            "answered: A long essay · Key ideas, Sources · supervision.md"
        )
        await expect(card).to_have_attribute("data-status", "completed")
        await assert_fits(page)
    assert errors == []


async def test_reply_instead_and_skip(demo: Demo, browser: Browser, errors: list[str]) -> None:
    async with opened(browser, demo.url, errors) as page:
        await start_conversation(page)
        await send(page, "Ask me anything")
        await page.click(".ask-form button.reply")
        await page.fill(".ask-form textarea.reply-message", "Keep it short")
        await page.click(".ask-form button.send-reply")
        await until_idle(page)
        await expect(last_reply(page)).to_contain_text("Keep it short")
        await expect(page.locator(".tool-call[data-tool=ask_user] .tool-decision")).to_have_text(
            "replied: Keep it short"
        )

        await send(page, "Ask me again")
        await expect(page.locator(".ask-form")).to_have_count(1)
        await page.click(".ask-form button.skip")
        await until_idle(page)
        await expect(last_reply(page)).to_contain_text("declined to answer")
    assert errors == []


# -- dismiss and reset -----------------------------------------------------------------------------


@pytest.mark.parametrize("viewport", WIDTHS)
async def test_dismiss_clears_the_approval_and_reset_the_conversation(
    demo: Demo, browser: Browser, errors: list[str], viewport: ViewportSize
) -> None:
    async with opened(browser, demo.url, errors, viewport) as page:
        await start_conversation(page)
        await send(page, "Kept notes")
        await until_approval(page)
        await page.click(".approval button.approve")
        await until_idle(page)
        await expect(page.locator("#files li.file")).to_have_count(1)

        await send(page, "Dismissed notes")
        await until_approval(page)
        await reachable(page, "#approvals button.dismiss")
        await page.click("#approvals button.dismiss")
        await until_idle(page)
        await expect(page.locator("#approvals > *")).to_have_count(0)
        write = page.locator(".tool-call[data-tool=write_file]").last
        await expect(write).to_have_attribute("data-status", "cancelled")
        await expect(page.locator("#files li.file")).to_have_count(1)  # it never ran

        # Reset asks first; the second click starts the conversation over.
        await reachable(page, "#reset")
        await page.click("#reset")
        await expect(page.locator("#reset")).to_have_text("Really reset? Files stay")
        await expect(page.locator(".message.user")).to_have_count(2)
        await page.click("#reset")
        divider = page.locator(".message.reset-divider")
        await expect(divider).to_have_count(1)
        await expect(divider).to_contain_text("files kept")
        await expect(page.locator("#messages > *")).to_have_count(1)  # the divider alone
        await expect(page.locator("#todos li.todo")).to_have_count(0)
        await expect(page.locator("#reset")).to_have_text("Reset")
        await assert_fits(page)
        if phone(viewport):
            await snap_output(page, "phone-reset")
        else:
            await snap(page, "reset-divider")
        # A reload shows what follows the last reset, and the files are still there.
        await page.reload()
        await expect(divider).to_have_count(1)
        await expect(page.locator("#messages > *")).to_have_count(1)
        await expect(page.locator("#files li.file")).to_have_count(1)
        # The conversation goes on below the divider.
        await send(page, "After the reset")
        await until_approval(page)
        await expect(page.locator(".message.user .bubble")).to_have_text(["After the reset"])
        await expect(page.locator("#messages > *").first).to_have_class("message reset-divider")
    assert errors == []


# -- what the page reads from the request, not the interrupt's kind --------------------------------

#: A question asked by a sub-agent: its parent's interrupt is of kind "sub_agent", and its
#: request carries the questions.
SUB_AGENT_QUESTION = {
    "kind": "sub_agent",
    "action_requests": [
        {
            "tool_call_id": "call-sub",
            "name": "task",
            "arguments": {"task_name": "researcher"},
            "allowed_decisions": ["answer", "respond", "reject"],
            "description": None,
            "questions": [
                {
                    "question": "Which colour?",
                    "type": "single_choice",
                    "choices": ["red", "blue"],
                    "recommended": "blue",
                    "allow_other": False,
                }
            ],
        }
    ],
    "data": {"sub_agent": "researcher"},
}


def event_frame(seq: int, event: dict[str, Any]) -> str:
    return json.dumps({"type": "event", "instance": None, "event": {"seq": seq, **event}})


async def test_a_sub_agent_question_is_a_form_and_a_halted_run_says_why(
    demo: Demo, browser: Browser, errors: list[str]
) -> None:
    # The demo's agent has no sub-agent and never halts: the page's socket is routed through
    # Playwright, which hands it these events as if the server had sent them.
    routes: list[WebSocketRoute] = []

    def route(ws: WebSocketRoute) -> None:
        ws.connect_to_server()
        routes.append(ws)

    async with opened(browser, demo.url, errors) as page:
        await page.route_web_socket(re.compile(r"/api/conversations/[^/]+/ws"), route)
        await start_conversation(page)
        await expect(page.locator("body")).to_have_attribute("data-socket", "open")
        [socket] = routes
        socket.send(
            event_frame(
                1001,
                {"type": "status_changed", "status": "interrupted", "data": SUB_AGENT_QUESTION},
            )
        )
        form = page.locator(".ask-form")
        await expect(form).to_have_count(1)
        await expect(form.locator("legend")).to_have_text("Which colour?")
        await expect(form.locator("label.recommended input")).to_be_checked()
        await expect(page.locator("#agent-status")).to_have_text("awaiting your answer")
        socket.send(event_frame(1002, {"type": "run_halted", "reason": "the budget is spent"}))
        socket.send(event_frame(1003, {"type": "status_changed", "status": "idle", "data": None}))
        await expect(page.locator(".message.notice")).to_have_text("Stopped: the budget is spent")
        await expect(form).to_have_count(0)
        await expect(page.locator("#agent-status")).to_have_text("idle")
    assert errors == []
