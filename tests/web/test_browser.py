"""The chat page in a real browser (Playwright driving Debian's Chromium, headless).

Each test saves a screenshot as ``tests/web/output/<test name>.png``. Without Chromium the tests
skip, except under CI (``CI`` set), where a missing browser is a failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from sagents.web._identity import COOKIE_NAME
from tests.web.conftest import OUTPUT, Demo, StartDemo, chromium, wait_until

pytestmark = pytest.mark.slow

TIMEOUT = 15_000  # ms, for every wait on the page


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(viewport={"width": 1300, "height": 850})
    context.set_default_timeout(TIMEOUT)
    expect.set_options(timeout=TIMEOUT)
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture
def errors() -> list[str]:
    return []


async def open_page(context: BrowserContext, url: str, errors: list[str]) -> Page:
    page = await context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(url)
    return page


async def shot(page: Page, request: pytest.FixtureRequest) -> Path:
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / f"{request.node.name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def new_conversation(page: Page) -> str:
    before = page.url
    await page.click("#new-conversation")
    await expect(page.locator("#chat")).to_be_visible()
    await page.wait_for_url(lambda url: "#/c/" in url and url != before)
    conversation = page.url.rsplit("/", 1)[-1]
    await expect(page.locator(f'#conversations li.active[data-id="{conversation}"]')).to_have_count(
        1
    )
    return conversation


async def send(page: Page, text: str) -> None:
    await page.fill("#message-input", text)
    await page.click("#send")


async def until_approval(page: Page) -> None:
    await expect(page.locator(".approval")).to_have_count(1)
    await expect(page.locator("#agent-status")).to_have_attribute("data-status", "interrupted")


async def until_idle(page: Page) -> None:
    await expect(page.locator("#agent-status")).to_have_attribute("data-status", "idle")


async def until_done(page: Page) -> None:
    """The run is over and every row of it is on the page (rows are saved after the status)."""
    await until_idle(page)
    final = page.locator(".message.assistant:not(.streaming) .bubble").last
    await expect(final).to_contain_text("All done")
    decision = page.locator(".tool-call[data-tool=write_file] .tool-decision").last
    await expect(decision).to_have_text("decision: approve")


def identity_client(demo: Demo, cookies: list[dict[str, str]]) -> httpx.AsyncClient:
    value = next(c["value"] for c in cookies if c["name"] == COOKIE_NAME)
    return httpx.AsyncClient(base_url=demo.url, cookies={COOKIE_NAME: value})


async def test_first_start_shows_the_welcome(
    demo: Demo, context: BrowserContext, errors: list[str], request: pytest.FixtureRequest
) -> None:
    page = await open_page(context, demo.url, errors)
    await expect(page.locator("#welcome")).to_be_visible()
    await expect(page.locator("#chat")).to_be_hidden()
    await expect(page.locator("#todos")).to_have_text("no plan yet")
    await expect(page.locator("#files")).to_have_text("no files yet")
    await expect(page.locator("#identity")).to_contain_text("you: ")
    await expect(page.locator("#conversations li")).to_have_count(0)
    await shot(page, request)
    assert errors == []


#: Records every text a streaming bubble shows, in ``window.streamed``: whether the page showed
#: a partial reply must not depend on catching it in the short time it is on screen.
RECORD_STREAMING = """() => {
    window.streamed = [];
    new MutationObserver(() => {
        for (const bubble of document.querySelectorAll(".message.streaming .bubble")) {
            window.streamed.push(bubble.textContent);
        }
    }).observe(document.querySelector("#messages"), {
        childList: true, subtree: true, characterData: true,
    });
}"""


async def test_send_a_message_and_see_the_reply_stream(
    demo: Demo, context: BrowserContext, errors: list[str], request: pytest.FixtureRequest
) -> None:
    reply = "Let me plan how to research 'Supervision trees'."
    page = await open_page(context, demo.url, errors)
    await new_conversation(page)
    await page.evaluate(RECORD_STREAMING)
    await send(page, "Supervision trees")
    await expect(page.locator(".message.user .bubble")).to_have_text("Supervision trees")
    await expect(page.locator(".message.assistant:not(.streaming) .bubble").first).to_have_text(
        reply
    )
    # Tokens arrived one chunk at a time into a streaming bubble before the message was saved.
    streamed: list[str] = await page.evaluate("window.streamed")
    assert any(text.startswith("Let me") and len(text) < len(reply) for text in streamed)
    await expect(page.locator(".tool-call[data-tool=write_todos]").first).to_have_attribute(
        "data-status", "completed"
    )
    await until_approval(page)
    await expect(page.locator("#conversations li.active a")).to_have_text("Supervision trees")
    await shot(page, request)
    assert errors == []


async def test_the_todo_panel_fills(
    demo: Demo, context: BrowserContext, errors: list[str], request: pytest.FixtureRequest
) -> None:
    page = await open_page(context, demo.url, errors)
    await new_conversation(page)
    await send(page, "Todos")
    todos = page.locator("#todos li.todo")
    await expect(todos).to_have_count(3)
    await expect(todos.first).to_have_attribute("data-status", "in_progress")
    await expect(todos.nth(1)).to_have_attribute("data-status", "pending")
    await expect(todos.first).to_contain_text("Research the topic")
    await until_approval(page)
    await page.click(".approval button.approve")
    await until_idle(page)
    for i in range(3):
        await expect(todos.nth(i)).to_have_attribute("data-status", "completed")
    await shot(page, request)
    assert errors == []


async def test_approve_a_write_and_see_the_file(
    demo: Demo, context: BrowserContext, errors: list[str], request: pytest.FixtureRequest
) -> None:
    page = await open_page(context, demo.url, errors)
    await new_conversation(page)
    await send(page, "Approvals")
    await until_approval(page)
    dialog = page.locator(".approval")
    await expect(dialog).to_have_attribute("data-tool", "write_file")
    await expect(dialog.locator(".approval-args")).to_contain_text("/notes/approvals.md")
    await expect(page.locator(".tool-call[data-tool=write_file]")).to_have_attribute(
        "data-status", "interrupted"
    )
    await expect(page.locator("#files li.file")).to_have_count(0)
    await dialog.locator("button.approve").click()
    file = page.locator('#files li.file[data-path="/notes/approvals.md"]')
    await expect(file).to_have_count(1)
    await expect(page.locator(".tool-call[data-tool=write_file]")).to_have_attribute(
        "data-status", "completed"
    )
    await until_idle(page)
    await expect(page.locator(".approval")).to_have_count(0)
    await file.locator("button").click()
    await expect(page.locator("#file-view")).to_contain_text("# Approvals")
    await expect(page.locator(".message.assistant .bubble").last).to_contain_text("All done")
    await shot(page, request)
    assert errors == []


async def test_edit_a_call_s_arguments(
    demo: Demo, context: BrowserContext, errors: list[str], request: pytest.FixtureRequest
) -> None:
    page = await open_page(context, demo.url, errors)
    await new_conversation(page)
    await send(page, "Editing")
    await until_approval(page)
    await page.click(".approval button.edit")
    editor = page.locator(".approval textarea.edit-args")
    await expect(editor).to_be_visible()
    original = await editor.input_value()
    await editor.fill("not json")
    await page.click(".approval button.save-edit")
    await expect(page.locator(".approval .problem")).to_have_text(
        "the arguments are not valid JSON"
    )
    await editor.fill(original.replace("/notes/editing.md", "/notes/edited-by-a-human.md"))
    await shot(page, request)
    await page.click(".approval button.save-edit")
    await expect(
        page.locator('#files li.file[data-path="/notes/edited-by-a-human.md"]')
    ).to_have_count(1)
    await expect(page.locator('#files li.file[data-path="/notes/editing.md"]')).to_have_count(0)
    await until_idle(page)
    # The model read back the file at the path the human chose.
    await expect(page.locator(".tool-call[data-tool=read_file] .tool-args")).to_contain_text(
        "/notes/edited-by-a-human.md"
    )
    await page.reload()
    await expect(page.locator(".tool-call[data-tool=write_file] .tool-decision")).to_have_text(
        "decision: edit"
    )
    await shot(page, request)
    assert errors == []


async def test_reject_with_a_message(
    demo: Demo, context: BrowserContext, errors: list[str], request: pytest.FixtureRequest
) -> None:
    page = await open_page(context, demo.url, errors)
    await new_conversation(page)
    await send(page, "Rejection")
    await until_approval(page)
    await page.click(".approval button.reject")
    await page.fill(".approval input.reject-message", "not in that folder")
    await page.click(".approval button.confirm-reject")
    await until_idle(page)
    await expect(page.locator(".message.assistant .bubble").last).to_contain_text(
        "I did not save the notes"
    )
    await expect(page.locator(".message.assistant .bubble").last).to_contain_text(
        "not in that folder"
    )
    await expect(page.locator("#files li.file")).to_have_count(0)
    await shot(page, request)
    assert errors == []


async def test_reload_restores_everything(
    demo: Demo, context: BrowserContext, errors: list[str], request: pytest.FixtureRequest
) -> None:
    page = await open_page(context, demo.url, errors)
    await new_conversation(page)
    await send(page, "Reloading")
    await until_approval(page)
    # Reloading while approval is pending brings the dialog back.
    await page.reload()
    await until_approval(page)
    await expect(page.locator(".message.user .bubble")).to_have_text("Reloading")
    await page.click(".approval button.approve")
    await until_done(page)
    before = await page.locator("#messages .message").count()
    texts = await page.locator("#messages .message").all_text_contents()
    await page.reload()
    await until_idle(page)
    await expect(page.locator("#messages .message")).to_have_count(before)
    assert await page.locator("#messages .message").all_text_contents() == texts
    await expect(page.locator("#todos li.todo[data-status=completed]")).to_have_count(3)
    await expect(page.locator('#files li.file[data-path="/notes/reloading.md"]')).to_have_count(1)
    await expect(page.locator("#conversation-title")).to_have_text("Reloading")
    await shot(page, request)
    assert errors == []


async def test_two_tabs_stay_in_sync(
    demo: Demo, context: BrowserContext, errors: list[str], request: pytest.FixtureRequest
) -> None:
    one = await open_page(context, demo.url, errors)
    conversation = await new_conversation(one)
    two = await open_page(context, f"{demo.url}/#/c/{conversation}", errors)
    await expect(two.locator("#agent-status")).to_have_attribute("data-status", "not_running")
    await send(one, "Two tabs")
    await expect(two.locator(".message.user .bubble")).to_have_text("Two tabs")
    await until_approval(two)
    await until_approval(one)
    await two.click(".approval button.approve")  # decided in one tab ...
    await until_done(one)  # ... seen in the other
    await until_done(two)
    await expect(one.locator(".approval")).to_have_count(0)
    await expect(one.locator('#files li.file[data-path="/notes/two-tabs.md"]')).to_have_count(1)
    assert await one.locator("#messages .message").all_text_contents() == (
        await two.locator("#messages .message").all_text_contents()
    )
    await shot(two, request)
    assert errors == []


async def test_closing_all_tabs_stops_the_agent_and_a_message_restores_it(
    start_demo: StartDemo,
    context: BrowserContext,
    errors: list[str],
    request: pytest.FixtureRequest,
) -> None:
    demo = await start_demo(debugger=True)
    one = await open_page(context, demo.url, errors)
    conversation = await new_conversation(one)
    two = await open_page(context, f"{demo.url}/#/c/{conversation}", errors)
    await send(one, "Presence")
    await until_approval(one)
    await one.click(".approval button.approve")
    await until_done(two)
    before = await two.locator("#messages .message").count()
    agent_id = f"conversation-{conversation}"
    async with httpx.AsyncClient(base_url=demo.url) as operator:
        # The operator's view (/debug) lists the agent with its two viewers.
        agents = (await operator.get("/debug/api/agents")).json()["agents"]
        assert [(a["id"], a["viewer_count"]) for a in agents] == [(agent_id, 2)]
        await one.close()
        await two.close()

        async def gone() -> bool:
            return not (await operator.get("/debug/api/agents")).json()["agents"]

        await wait_until(gone)
    async with identity_client(demo, await context.cookies()) as client:
        response = await client.get(f"/api/conversations/{conversation}")
        assert response.json()["status"] == "not_running"
    page = await open_page(context, f"{demo.url}/#/c/{conversation}", errors)
    await expect(page.locator("#agent-status")).to_have_attribute("data-status", "not_running")
    await expect(page.locator("#agent-status")).to_have_text("not running")
    await expect(page.locator("#messages .message")).to_have_count(before)
    await send(page, "Back again")
    await until_approval(page)
    await page.click(".approval button.approve")
    await until_idle(page)
    await expect(page.locator(".message.user .bubble")).to_have_text(["Presence", "Back again"])
    # The restored agent remembered the first exchange: the new file sits beside the old one.
    await expect(page.locator("#files li.file")).to_have_count(2)
    await shot(page, request)
    assert errors == []


async def test_cancel_while_running(
    start_demo: StartDemo,
    context: BrowserContext,
    errors: list[str],
    request: pytest.FixtureRequest,
) -> None:
    # A chunk a minute: the run is still streaming when the click lands, however slow the
    # machine (the cancel ends the wait at once).
    demo = await start_demo(model_delay=60.0)
    page = await open_page(context, demo.url, errors)
    await new_conversation(page)
    await expect(page.locator("#cancel")).to_be_hidden()
    await send(page, "Cancel me")
    await expect(page.locator("#agent-status")).to_have_attribute("data-status", "running")
    await page.click("#cancel")
    await expect(page.locator("#agent-status")).to_have_attribute("data-status", "cancelled")
    await expect(page.locator("#cancel")).to_be_hidden()
    await shot(page, request)
    assert errors == []


async def test_rename_and_delete_conversations(
    demo: Demo, context: BrowserContext, errors: list[str], request: pytest.FixtureRequest
) -> None:
    page = await open_page(context, demo.url, errors)
    first = await new_conversation(page)
    second = await new_conversation(page)
    await expect(page.locator("#conversations li")).to_have_count(2)
    await page.click("#rename")
    await page.fill("#rename-input", "My research")
    await page.press("#rename-input", "Enter")
    await expect(page.locator("#conversation-title")).to_have_text("My research")
    await expect(page.locator(f'#conversations li[data-id="{second}"] a')).to_have_text(
        "My research"
    )
    await shot(page, request)
    await page.click(f'#conversations li[data-id="{first}"] a')
    await page.click("#delete")
    await expect(page.locator("#delete")).to_have_text("Really delete?")
    await page.click("#delete")
    await expect(page.locator("#welcome")).to_be_visible()
    await expect(page.locator("#conversations li")).to_have_count(1)
    await expect(page.locator("#conversations li a")).to_have_text("My research")
    assert errors == []


async def test_another_identity_is_refused(
    demo: Demo,
    browser: Browser,
    context: BrowserContext,
    errors: list[str],
    request: pytest.FixtureRequest,
) -> None:
    owner = await open_page(context, demo.url, errors)
    conversation = await new_conversation(owner)
    await send(owner, "Private")
    await until_approval(owner)
    other_context = await browser.new_context(viewport={"width": 1300, "height": 850})
    try:
        other = await other_context.new_page()
        await other.goto(f"{demo.url}/#/c/{conversation}")
        await expect(other.locator("#errors .error")).to_have_text(
            "that conversation does not exist (or is not yours)"
        )
        await expect(other.locator("#welcome")).to_be_visible()
        await expect(other.locator("#chat")).to_be_hidden()
        await expect(other.locator("#conversations li")).to_have_count(0)
        await expect(other.locator("text=Private")).to_have_count(0)
        await shot(other, request)
        async with identity_client(demo, await other_context.cookies()) as client:
            response = await client.get(f"/api/conversations/{conversation}")
            assert response.status_code == 404
    finally:
        await other_context.close()
    assert errors == []
