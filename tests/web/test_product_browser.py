"""The demo as a person meets it (issue 14), in Debian's Chromium driven by Playwright.

Phone and desktop widths are checked on element boxes (nothing off-screen, no sideways scroll,
the controls a person needs are on top and inside the viewport); then the honest tool cards,
the connection state when the server goes away, a failing model's error, and a reload in the
middle of a streamed reply.

Each state a reader should see is saved as a PNG, at the viewport's size: what a person sees on
that screen. They go to ``tests/web/output/product/``; with ``SAGENTS_SCREENSHOTS=docs`` they
replace the committed ones in ``docs/screenshots/`` (the README links to them), so that a test
run leaves the checkout as it was. Without Chromium the tests skip, except under CI (``CI``
set), where a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    ViewportSize,
    expect,
)
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from sagents.web import create_app
from sagents.web._client_errors import refusal
from sagents.web._socket import _refuse as refuse_socket
from tests.web.conftest import (
    Demo,
    StartDemo,
    chromium,
    demo_config,
    running_demo,
    serving,
    wait_until,
)
from tests.web.product_helpers import Switch, closed_port, flaky_model, gated_model

pytestmark = pytest.mark.slow

TIMEOUT = 15_000  # ms, for every wait on the page
SCREENSHOTS = (
    Path(__file__).parents[2] / "docs" / "screenshots"
    if os.environ.get("SAGENTS_SCREENSHOTS") == "docs"
    else Path(__file__).parent / "output" / "product"
)
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


@pytest.fixture
def errors() -> list[str]:
    return []


@contextlib.asynccontextmanager
async def opened(
    browser: Browser, url: str, errors: list[str], viewport: ViewportSize = DESKTOP
) -> AsyncIterator[Page]:
    """A page in a context of its own (its own identity cookie) at ``viewport``."""
    context: BrowserContext = await browser.new_context(viewport=viewport)
    context.set_default_timeout(TIMEOUT)
    expect.set_options(timeout=TIMEOUT)
    try:
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(url)
        yield page
    finally:
        await context.close()


async def snap(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


async def start_conversation(page: Page) -> str:
    before = page.url
    await page.click("#welcome-start")
    await expect(page.locator("#chat")).to_be_visible()
    await page.wait_for_url(lambda url: "#/c/" in url and url != before)
    return page.url.rsplit("/", 1)[-1]


async def send(page: Page, text: str) -> None:
    await page.fill("#message-input", text)
    await page.click("#send")


async def until_approval(page: Page) -> None:
    await expect(page.locator(".approval")).to_have_count(1)
    await expect(page.locator("#agent-status")).to_have_attribute("data-status", "interrupted")


async def until_idle(page: Page) -> None:
    await expect(page.locator("#agent-status")).to_have_attribute("data-status", "idle")
    await expect(page.locator(".message.assistant:not(.streaming) .bubble").last).to_contain_text(
        "All done"
    )


# -- element boxes ---------------------------------------------------------------------------------

#: Every rendered element whose box leaves the viewport sideways, and the page's scroll width.
OVERFLOW = """() => {
    const width = document.documentElement.clientWidth;
    const outside = [];
    for (const node of document.querySelectorAll("body *")) {
        const box = node.getBoundingClientRect();
        if (box.width === 0 || box.height === 0) continue;
        if (box.left < -0.5 || box.right > width + 0.5) {
            outside.push(`${node.tagName.toLowerCase()}#${node.id}.${node.className}`
                + ` [${Math.round(box.left)}, ${Math.round(box.right)}]`);
        }
    }
    return {width, scrollWidth: document.documentElement.scrollWidth, outside};
}"""

#: Where an element is, and whether a click at its centre reaches it (nothing covers it).
REACHABLE = """(node) => {
    const box = node.getBoundingClientRect();
    const x = box.left + box.width / 2;
    const y = box.top + box.height / 2;
    const top = document.elementFromPoint(x, y);
    return {
        box: [box.left, box.top, box.right, box.bottom],
        viewport: [document.documentElement.clientWidth, document.documentElement.clientHeight],
        onTop: top !== null && (top === node || node.contains(top)),
    };
}"""


async def assert_fits(page: Page) -> None:
    """Nothing is wider than the viewport and the page does not scroll sideways."""
    found: dict[str, Any] = await page.evaluate(OVERFLOW)
    assert found["outside"] == []
    assert found["scrollWidth"] <= found["width"]


async def assert_reachable(page: Page, selector: str) -> None:
    """The element is inside the viewport and on top: a tap on it lands on it."""
    locator = page.locator(selector)
    await expect(locator).to_be_visible()
    where: dict[str, Any] = await locator.evaluate(REACHABLE)
    left, top, right, bottom = where["box"]
    width, height = where["viewport"]
    assert left >= 0, (selector, where)
    assert right <= width, (selector, where)
    assert top >= 0, (selector, where)
    assert bottom <= height, (selector, where)
    assert where["onTop"], (selector, where)


# -- 1. phone width --------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [360, 390])
async def test_the_page_works_at_phone_width(
    demo: Demo, browser: Browser, errors: list[str], width: int
) -> None:
    viewport: ViewportSize = {"width": width, "height": 844}
    async with opened(browser, demo.url, errors, viewport) as page:
        await expect(page.locator("#welcome")).to_be_visible()
        # The conversation list and the plan sit behind toggles.
        await expect(page.locator("#sidebar")).to_be_hidden()
        await expect(page.locator("#panels")).to_be_hidden()
        await assert_fits(page)
        await page.click("#toggle-conversations")
        await assert_reachable(page, "#new-conversation")
        await page.click("#new-conversation")
        await expect(page.locator("#chat")).to_be_visible()
        await expect(page.locator("#sidebar")).to_be_hidden()  # choosing one closes the list
        await assert_reachable(page, "#send")
        await send(page, "Phone width")
        await until_approval(page)
        await assert_fits(page)
        for control in ("#send", "#message-input", "#agent-status", "#toggle-panels"):
            await assert_reachable(page, control)
        for button in ("approve", "edit", "reject"):
            await assert_reachable(page, f".approval button.{button}")
        if width == PHONE["width"]:
            await snap(page, "phone-approval")
        await page.click("#toggle-panels")
        await expect(page.locator("#todos li.todo")).to_have_count(3)
        await assert_reachable(page, "#todos")
        await assert_fits(page)
        if width == PHONE["width"]:
            await snap(page, "phone-plan-drawer")
        await page.click("#backdrop", position={"x": 10, "y": 300})
        await expect(page.locator("#panels")).to_be_hidden()
        await page.click(".approval button.edit")
        await assert_fits(page)
        await page.locator(".approval button.save-edit").scroll_into_view_if_needed()
        await assert_reachable(page, ".approval button.save-edit")
        await page.click(".approval button.save-edit")
        await until_idle(page)
        await assert_fits(page)
        await assert_reachable(page, "#send")
        if width == PHONE["width"]:
            await snap(page, "phone-done")
    assert errors == []


async def test_the_page_keeps_three_columns_on_a_desktop(
    demo: Demo, browser: Browser, errors: list[str]
) -> None:
    async with opened(browser, demo.url, errors) as page:
        await start_conversation(page)
        await send(page, "Desktop")
        await until_approval(page)
        await expect(page.locator("#sidebar")).to_be_visible()
        await expect(page.locator("#panels")).to_be_visible()
        await expect(page.locator("#toggle-conversations")).to_be_hidden()
        await expect(page.locator("#toggle-panels")).to_be_hidden()
        await assert_fits(page)
        for control in ("#send", "#new-conversation", "#todos", ".approval button.approve"):
            await assert_reachable(page, control)
        await snap(page, "desktop-approval")
    assert errors == []


async def test_the_debugger_fits_a_1280px_screen(
    start_demo: StartDemo, browser: Browser, errors: list[str]
) -> None:
    demo = await start_demo(debugger=True)
    async with opened(browser, demo.url, errors) as page:
        await start_conversation(page)
        await send(page, "Debugger width")
        await until_approval(page)  # the tab keeps the agent running: one row in the table
        debugger = await page.context.new_page()
        debugger.on("pageerror", lambda error: errors.append(str(error)))
        await debugger.goto(f"{demo.url}/debug/")
        await expect(debugger.locator("#agents tbody tr")).to_have_count(1)
        await debugger.locator("#agents tbody tr").click()
        await expect(debugger.locator("#messages li")).to_have_count(4)
        await assert_fits(debugger)
        table = await debugger.locator("#agents").bounding_box()
        panel = await debugger.locator("#agents-panel").bounding_box()
        telemetry = await debugger.locator("#telemetry-panel").bounding_box()
        assert table is not None
        assert panel is not None
        assert telemetry is not None
        # The agents table stays inside its card, which ends before the telemetry card.
        assert table["x"] + table["width"] <= panel["x"] + panel["width"] + 0.5
        assert panel["x"] + panel["width"] <= telemetry["x"]
        await snap(debugger, "debugger-1280")
    assert errors == []


# -- 5. honest tool cards --------------------------------------------------------------------------


async def test_tool_cards_say_what_really_ran(
    demo: Demo, browser: Browser, errors: list[str]
) -> None:
    async with opened(browser, demo.url, errors) as page:
        await start_conversation(page)
        await send(page, "Honest cards")
        await until_approval(page)
        # The turn's plan updates are one line; the second one waits behind the approval.
        folds = page.locator(".todo-fold")
        await expect(folds).to_have_count(1)
        await expect(folds.locator(":scope > summary")).to_have_text(
            "plan updated 2 times · 1 waiting: not run yet"
        )
        waiting = folds.locator(".tool-call[data-tool=write_todos]").nth(1)
        await expect(waiting).to_be_hidden()  # folded
        await folds.locator(":scope > summary").click()
        await expect(waiting).to_be_visible()
        await expect(waiting).to_have_attribute("data-status", "waiting")
        await expect(waiting.locator(".tool-status")).to_have_text("waiting: not run yet")
        await expect(folds.locator(".tool-call").first).to_have_attribute(
            "data-status", "completed"
        )
        write = page.locator(".tool-call[data-tool=write_file]")
        await expect(write.locator(".tool-status")).to_have_text("awaiting your approval")
        await snap(page, "card-waiting")
        # Approve with other arguments: the card shows the ones the call ran with.
        await page.click(".approval button.edit")
        editor = page.locator(".approval textarea.edit-args")
        original = await editor.input_value()
        await editor.fill(original.replace("/notes/honest-cards.md", "/notes/edited.md"))
        await page.click(".approval button.save-edit")
        await until_idle(page)
        await expect(waiting).to_have_attribute("data-status", "completed")
        await expect(write).to_have_attribute("data-status", "completed")
        await expect(write).to_have_attribute("data-edited", "true")
        await expect(write.locator(".tool-edited")).to_be_visible()
        await write.locator(".tool-arguments > summary").click()
        await expect(write.locator(".tool-args")).to_contain_text("/notes/edited.md")
        await expect(write.locator(".tool-args")).not_to_contain_text("honest-cards")
        await expect(write.locator(".tool-args-original")).to_contain_text("/notes/honest-cards.md")
        # Four plan updates in the turn, still one line; all of them ran.
        await expect(folds).to_have_count(1)
        await expect(folds.locator(":scope > summary")).to_have_text(
            "plan updated 4 times · all done"
        )
        await snap(page, "card-edited")
        await page.reload()
        await expect(page.locator(".todo-fold")).to_have_count(1)
        reloaded = page.locator(".tool-call[data-tool=write_file]")
        await expect(reloaded).to_have_attribute("data-edited", "true")
        await expect(reloaded.locator(".tool-args")).to_contain_text("/notes/edited.md")
        await expect(reloaded.locator(".tool-decision")).to_have_text("decision: edit")
    assert errors == []


async def test_a_call_behind_an_approval_is_waiting_after_a_reload(
    demo: Demo, browser: Browser, errors: list[str]
) -> None:
    # The stored row says "executing": only the page knows that nothing runs while it waits.
    async with opened(browser, demo.url, errors) as page:
        await start_conversation(page)
        await send(page, "Still waiting")
        await until_approval(page)
        await page.reload()
        await until_approval(page)
        waiting = page.locator(".tool-call[data-tool=write_todos]").nth(1)
        await expect(waiting).to_have_attribute("data-status", "waiting")
        await page.click(".approval button.reject")
        await page.click(".approval button.confirm-reject")
        await expect(page.locator("#agent-status")).to_have_attribute("data-status", "idle")
        await expect(waiting).to_have_attribute("data-status", "completed")
        write = page.locator(".tool-call[data-tool=write_file]")
        await expect(write.locator(".tool-status")).to_have_text("rejected: not run")
    assert errors == []


# -- 3. the connection -----------------------------------------------------------------------------


async def test_the_page_says_when_the_server_is_gone_and_queues_a_decision(
    tmp_path: Path, browser: Browser, errors: list[str]
) -> None:
    config = demo_config(tmp_path)
    async with contextlib.AsyncExitStack() as server:
        demo = await server.enter_async_context(running_demo(config))
        port = int(demo.url.rsplit(":", 1)[1])
        async with opened(browser, demo.url, errors, PHONE) as page:
            await start_conversation(page)
            await send(page, "Server gone")
            await until_approval(page)
            await expect(page.locator("#connection")).to_be_hidden()
            await server.aclose()  # the server stops (its agents save their state)
            banner = page.locator("#connection")
            await expect(banner).to_be_visible()
            await expect(banner).to_have_attribute("data-state", "reconnecting")
            await expect(banner).to_contain_text("Connection lost")
            await expect(banner).to_contain_text("queued")
            await expect(page.locator("#agent-status")).to_have_attribute("data-stale", "true")
            await assert_reachable(page, ".approval button.approve")
            await page.click(".approval button.approve")
            await expect(page.locator(".approval .chosen")).to_have_text(
                "your decision: approve — queued: sent when the connection is back"
            )
            await snap(page, "phone-offline")
            # The server comes back on the same port: the decision goes out and the run ends.
            await server.enter_async_context(running_demo(config, port=port))
            await expect(page.locator("#agent-status")).not_to_have_attribute("data-stale", "true")
            await until_idle(page)
            await expect(page.locator("#toggle-panels .plan-progress")).to_have_text("3/3")
    assert errors == []


async def test_a_message_sent_while_offline_is_queued_then_sent(
    tmp_path: Path, browser: Browser, errors: list[str]
) -> None:
    config = demo_config(tmp_path)
    async with contextlib.AsyncExitStack() as server:
        demo = await server.enter_async_context(running_demo(config))
        port = int(demo.url.rsplit(":", 1)[1])
        async with opened(browser, demo.url, errors) as page:
            await start_conversation(page)
            await expect(page.locator("#agent-status")).to_have_attribute(
                "data-status", "not_running"
            )
            await server.aclose()
            await expect(page.locator("#connection")).to_have_attribute(
                "data-state", "reconnecting"
            )
            await send(page, "Sent later")
            pending = page.locator(".message.user.pending")
            await expect(pending.locator(".bubble")).to_have_text("Sent later")
            await expect(pending.locator(".note")).to_have_text(
                "queued: sent when the connection is back"
            )
            await snap(page, "desktop-offline-queued")
            await server.enter_async_context(running_demo(config, port=port))
            await until_approval(page)
            await expect(pending).to_have_count(0)
            await expect(page.locator(".message.user .bubble")).to_have_text(["Sent later"])
    assert errors == []


async def test_cancel_is_refused_while_offline(
    tmp_path: Path, browser: Browser, errors: list[str]
) -> None:
    model = gated_model(hold_at=2)
    config = demo_config(tmp_path)
    async with contextlib.AsyncExitStack() as server:
        demo = await server.enter_async_context(running_demo(config, model=model))
        async with opened(browser, demo.url, errors) as page:
            await start_conversation(page)
            await send(page, "Cancel offline")
            await model.wait_held()
            await expect(page.locator("#cancel")).to_be_visible()
            await page.context.set_offline(True)
            await expect(page.locator("#connection")).to_have_attribute("data-state", "offline")
            await page.click("#cancel")
            await expect(page.locator("#errors .error").last).to_contain_text(
                "Not cancelled: the page is not connected"
            )
            await page.context.set_offline(False)
            await expect(page.locator("#agent-status")).not_to_have_attribute("data-stale", "true")
            await expect(page.locator("#agent-status")).to_have_attribute("data-status", "running")
            model.release()
            await until_approval(page)
    assert errors == []


async def test_dismiss_and_reset_are_refused_while_offline(
    start_demo: StartDemo, browser: Browser, errors: list[str]
) -> None:
    """Sent late, a dismiss or a reset could clear what came after the click: while the page is
    offline both are refused, in words, and nothing changes; back online, the approval waits."""
    demo = await start_demo()
    async with opened(browser, demo.url, errors) as page:
        await start_conversation(page)
        await send(page, "Dismiss offline")
        await until_approval(page)
        await page.context.set_offline(True)
        await expect(page.locator("#connection")).to_have_attribute("data-state", "offline")
        await expect(page.locator("#connection")).to_contain_text(
            "Cancel, Dismiss and Reset need a live connection"
        )
        said = page.locator("#errors .error")

        await page.click("#approvals button.dismiss")
        await expect(said.last).to_have_text(
            "Not dismissed: the page is not connected. Try again once it is back online."
        )
        await expect(page.locator("#approvals button.dismiss")).to_be_enabled()
        await expect(page.locator(".dismiss-note")).to_have_text(
            "decide nothing: the agent stops here and waits for your next message"
        )

        await page.click("#reset")
        await expect(page.locator("#reset")).to_have_text("Really reset? Files stay")
        await page.click("#reset")
        await expect(said.last).to_have_text(
            "Not reset: the page is not connected. Try again once it is back online."
        )
        await expect(said).to_have_count(2)  # each said once, and nothing else went wrong
        await expect(page.locator(".message.reset-divider")).to_have_count(0)
        await expect(page.locator(".message.user .bubble")).to_have_text(["Dismiss offline"])

        await page.context.set_offline(False)
        await expect(page.locator("#agent-status")).not_to_have_attribute("data-stale", "true")
        # Neither went out later (a frame queued then would reach the server before this
        # approval): the approval still waits, the call runs, and the conversation is whole.
        await until_approval(page)
        await page.click(".approval button.approve")
        await until_idle(page)
        write = page.locator(".tool-call[data-tool=write_file]")
        await expect(write).to_have_attribute("data-status", "completed")
        await expect(page.locator(".message.reset-divider")).to_have_count(0)
        await expect(page.locator(".message.user .bubble")).to_have_text(["Dismiss offline"])
    assert errors == []


# -- 2. errors are visible -------------------------------------------------------------------------


async def test_an_unreachable_model_shows_its_error(
    start_demo: StartDemo, browser: Browser, errors: list[str]
) -> None:
    # The real provider path: langchain-openai against a local port nothing listens on.
    demo = await start_demo(
        model="openai:gpt-4o-mini",
        model_options={
            "base_url": f"http://127.0.0.1:{closed_port()}/v1",
            "api_key": "sk-test-not-a-key",
            "max_retries": 0,
        },
    )
    async with opened(browser, demo.url, errors, PHONE) as page:
        await start_conversation(page)
        await send(page, "Unreachable model")
        error = page.locator(".message.run-error")
        await expect(error).to_be_visible()
        await expect(error.locator(".error-text")).to_contain_text("the model failed")
        await expect(error.locator(".error-text")).to_contain_text("Connection error")
        await expect(page.locator("#agent-status")).to_have_attribute("data-status", "error")
        await assert_reachable(page, ".run-error button.retry")
        await assert_fits(page)
        await snap(page, "phone-model-error")
        # A reload still says why: the socket replays the failure.
        await page.reload()
        await expect(page.locator(".run-error .error-text")).to_contain_text("Connection error")
    assert errors == []


async def test_retry_after_a_failed_model_call(
    tmp_path: Path, browser: Browser, errors: list[str]
) -> None:
    switch = Switch()
    async with (
        running_demo(demo_config(tmp_path), model=flaky_model(switch)) as demo,
        opened(browser, demo.url, errors) as page,
    ):
        await start_conversation(page)
        await send(page, "Flaky")
        await expect(page.locator(".run-error .error-text")).to_contain_text(
            "the provider is unreachable"
        )
        switch.failing = False
        await page.click(".run-error button.retry")
        await until_approval(page)
        await expect(page.locator(".run-error")).to_have_count(0)
        await expect(page.locator(".message.user .bubble")).to_have_text(["Flaky"])
    assert errors == []


async def test_a_refused_message_is_said_in_words(
    start_demo: StartDemo, browser: Browser, errors: list[str]
) -> None:
    demo = await start_demo(max_message_chars=10)
    async with opened(browser, demo.url, errors) as page:
        await start_conversation(page)
        await send(page, "A message over ten characters")
        await expect(page.locator("#errors .error")).to_have_text(
            "Your message was not sent: text: at most 10 characters"
        )
    assert errors == []


class RefusingSockets:
    """The demo behind a gate that refuses the socket of a conversation named
    ``refused-<status>`` the way the conversation router refuses a caller its app's auth turns
    away with ``HTTPException(status)``: an error frame, then the close code 4000 + status.

    (The demo's own auth is its cookie, which only ever refuses with 404; a page of the demo
    mounted in an app with its own auth meets the others.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "websocket" else ""
        match = re.fullmatch(r"/api/conversations/refused-(\d{3})/ws", path)
        if match is None:
            await self.app(scope, receive, send)
            return
        ws = WebSocket(scope, receive, send)
        await ws.accept()
        await refuse_socket(ws, refusal(HTTPException(int(match[1]), "the app's own reason")))


async def test_a_refused_conversation_is_said_by_its_close_code(
    tmp_path: Path, browser: Browser, errors: list[str]
) -> None:
    """A socket refused for good says why in words that depend on its close code: 4404 and
    4422 from the demo itself, 4401, 4403 and another code from an app's auth."""
    config = demo_config(tmp_path)
    app = create_app(config)
    async with serving(RefusingSockets(app)) as url, opened(browser, url, errors) as page:
        said = page.locator("#errors .error")
        cases = [
            ("no-such-conversation", 4404, "that conversation does not exist (or is not yours)"),
            ("x" * 300, 4422, "that is not a conversation id: check the link"),
            ("refused-403", 4403, "you are not allowed to open that conversation"),
            (
                "refused-401",
                4401,
                "you are not signed in (any more): sign in again, then reload the page",
            ),
            (
                "refused-409",
                4409,
                "the server refused that conversation: the app's own reason",
            ),
        ]
        for conversation, code, words in cases:
            await page.evaluate("document.getElementById('errors').replaceChildren()")
            async with page.expect_websocket() as opening:
                await page.evaluate(f"location.hash = '#/c/{conversation}'")
            socket = await opening.value
            await socket.wait_for_event("close")
            # Said once, in these words (the error frame before the close is not said apart).
            await expect(said).to_have_text([words])
            await expect(page.locator("#welcome")).to_be_visible()  # back to the start
            await expect(page.locator("#connection")).to_have_attribute("data-state", "gone")
            assert await page.evaluate("document.body.dataset.socket") == "gone", code
    assert errors == []


# -- 4. exact streams after a reload ---------------------------------------------------------------

#: Records, in ``window.streamed``, every text a streaming bubble shows from the page's start:
#: what a person saw must not depend on catching it in the short time it is on screen.
RECORD_STREAMING = """
window.streamed = [];
new MutationObserver(() => {
    const bubble = document.querySelector(".message.streaming .bubble");
    if (!bubble) return;
    window.first = window.first || bubble;  // the reply streaming when the page (re)loaded
    const text = bubble.textContent;
    if (bubble === window.first && text && window.streamed.at(-1) !== text) {
        window.streamed.push(text);
    }
}).observe(document, {childList: true, subtree: true, characterData: true});
"""


async def test_a_reload_mid_stream_shows_the_reply_from_its_start(
    tmp_path: Path, browser: Browser, errors: list[str]
) -> None:
    reply = "Let me plan how to research 'Mid-stream'."
    model = gated_model(hold_at=4)
    async with (
        running_demo(demo_config(tmp_path), model=model) as demo,
        opened(browser, demo.url, errors) as page,
    ):
        await start_conversation(page)
        await send(page, "Mid-stream")
        await model.wait_held()
        streaming = page.locator(".message.streaming .bubble")
        await expect(streaming).to_contain_text("Let me")
        await page.add_init_script(RECORD_STREAMING)
        await page.reload()
        # Held mid-reply: what the page shows now came from the catch-up alone.
        await expect(streaming).to_have_text(re.compile(r"^Let me plan "))
        await snap(page, "reload-mid-stream")
        model.release()
        final = page.locator(".message.assistant:not(.streaming) .bubble").first
        await expect(final).to_have_text(reply)
        streamed: list[str] = await page.evaluate("window.streamed")
    assert streamed[0].startswith("Let me")  # the first text after the reload: the beginning
    for before, after in itertools.pairwise(streamed):
        assert after.startswith(before)  # it only grows: no chunk lost, none twice
    assert all(reply.startswith(text) for text in streamed)
    assert errors == []


async def test_a_dropped_socket_resumes_the_reply_without_a_gap(
    tmp_path: Path, browser: Browser, errors: list[str]
) -> None:
    reply = "Let me plan how to research 'Dropped'."
    model = gated_model(hold_at=4)
    # A long grace period: the agent outlives the page's absence, so the page resumes.
    config = demo_config(tmp_path, grace_period=60.0)
    async with (
        running_demo(config, model=model) as demo,
        opened(browser, demo.url, errors) as page,
    ):
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        conversation = await start_conversation(page)
        await page.evaluate(RECORD_STREAMING)
        await send(page, "Dropped")
        await model.wait_held()
        await expect(page.locator(".message.streaming .bubble")).to_have_text(
            re.compile(r"^Let me plan ")
        )
        await page.context.set_offline(True)
        await expect(page.locator("#connection")).to_have_attribute("data-state", "offline")
        # The reply completes while the page is away: its chunks leave the replay buffer.
        model.release()
        agent = demo.services.agent_id(conversation)

        async def interrupted() -> bool:
            info = await demo.services.runtime.agent_info(agent)
            return info is not None and info.status.value == "interrupted"

        await wait_until(interrupted)
        await page.context.set_offline(False)
        final = page.locator(".message.assistant:not(.streaming) .bubble").first
        await expect(final).to_have_text(reply)
        streamed: list[str] = await page.evaluate("window.streamed")
    assert "after_seq=" in sockets[-1]  # it resumed, rather than reloading the conversation
    for before, after in itertools.pairwise(streamed):
        assert after.startswith(before)  # no chunk lost, none twice
    assert all(reply.startswith(text) for text in streamed)
    assert streamed[-1] == reply  # the whole reply, before its row was saved
    assert errors == []
