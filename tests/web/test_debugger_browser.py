"""Browser tests of the live debugger page: Playwright driving Debian's Chromium, headless.

Each test serves a real runtime's debugger at ``/debug`` with uvicorn on 127.0.0.1 and saves a
screenshot to ``tests/web/output/<test name>.png``. Without ``/usr/bin/chromium`` they skip,
except under CI (``CI`` set), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from sagents import Runtime, Status
from sagents.web._debugger import debugger_app
from tests.web.debugger_helpers import demo_agent, host_app, serve, wait_status

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
OUTPUT = Path(__file__).parent / "output"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium); required under CI")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
        OUTPUT.mkdir(exist_ok=True)
        await page.screenshot(path=OUTPUT / f"{request.node.name}.png", full_page=True)
        assert errors == []  # no uncaught error in the page's scripts
    finally:
        await context.close()


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    async with Runtime() as rt:
        yield rt


@pytest.fixture
async def base(runtime: Runtime) -> AsyncIterator[str]:
    """The debugger's URL (``.../debug/``), refreshing its agent list every 0.1 s."""
    async with serve(host_app(debugger_app(runtime, interval=0.1))) as url:
        yield f"{url}/debug/"


async def test_agents_table_updates_live(runtime: Runtime, base: str, page: Page) -> None:
    await runtime.start_agent(demo_agent("alpha"), conversation_id="conv-1")
    await runtime.start_agent(demo_agent("beta"), inactivity_timeout=None)
    await page.goto(base)
    await expect(page.locator("#connection")).to_have_text("live")
    rows = page.locator("#agents tbody tr")
    await expect(rows).to_have_count(2)
    alpha = page.locator('#agents tbody tr[data-agent-id="alpha"]')
    await expect(alpha.locator("td.status")).to_have_text("idle")
    await expect(alpha.locator("td.conversation")).to_have_text("conv-1")
    await expect(alpha.locator("td.messages")).to_have_text("0")
    await expect(alpha.locator("td.subscribers")).to_have_text("0")
    await expect(alpha.locator("td.inactivity")).to_have_text(re.compile(r"^\d+ m \d\d s$"))
    beta = page.locator('#agents tbody tr[data-agent-id="beta"]')
    await expect(beta.locator("td.inactivity")).to_have_text("—")
    uptime = await alpha.locator("td.uptime").inner_text()
    await expect(alpha.locator("td.uptime")).not_to_have_text(uptime)  # it ticks

    # Agents that start and stop appear and vanish without a reload.
    await runtime.start_agent(demo_agent("gamma"))
    await expect(rows).to_have_count(3)
    await runtime.stop("beta")
    await expect(rows).to_have_count(2)
    await expect(page.locator("#agent-count")).to_have_text("2")
    telemetry = page.locator('#telemetry tr[data-event="sagents.agent.start"] td')
    await expect(telemetry).to_have_text("3")
    await expect(page.locator('#telemetry tr[data-event="sagents.agent.stop"] td')).to_have_text(
        "1"
    )


async def test_selected_agent_shows_streams_and_state(
    runtime: Runtime, base: str, page: Page
) -> None:
    handle = await runtime.start_agent(demo_agent("alpha"))
    await page.goto(base)
    alpha = page.locator('#agents tbody tr[data-agent-id="alpha"]')
    await alpha.click()
    await expect(alpha).to_have_class(re.compile("selected"))
    await expect(page.locator("#detail-id")).to_have_text("alpha")
    # The page follows both channels: two subscriptions show up in the table.
    await expect(alpha.locator("td.subscribers")).to_have_text("2")

    await handle.add_message("asyncio supervision")
    await wait_status(runtime, "alpha", Status.INTERRUPTED)
    main = page.locator("#events-main")
    debug = page.locator("#events-debug")
    await expect(main.locator('li[data-type="status_changed"]').first).to_contain_text("running")
    await expect(main.locator('li[data-type="llm_deltas"]').first).to_be_visible()
    await expect(main.locator('li[data-type="todos_updated"]').first).to_contain_text("3 todos")
    await expect(main.locator('li[data-type="status_changed"]').last).to_contain_text("interrupted")
    await expect(debug.locator('li[data-type="agent_state_update"]').first).to_be_visible()
    await expect(page.locator("#detail-status")).to_have_text("interrupted")

    # The state: messages, todos, interrupt, metadata.
    messages = page.locator("#messages li")
    await expect(messages.first).to_contain_text("asyncio supervision")
    await expect(page.locator("#messages li.ai .tool-call").first).to_contain_text("write_todos")
    await expect(page.locator("#todos li")).to_have_count(3)
    # The whole tool batch waits for the approval, so the plan is still at its first step.
    await expect(page.locator("#todos li").first).to_have_attribute("data-status", "in_progress")
    await expect(page.locator("#interrupt")).to_contain_text("write_file")
    await expect(page.locator("#metadata")).to_have_text(re.compile(r"^\{"))
    # The middleware, each with its configuration's summary behind a click.
    middleware = page.locator("#middleware li")
    await expect(middleware).to_have_count(3)
    await expect(page.locator("#middleware-count")).to_have_text("3")
    hitl = page.locator("#middleware li[data-key=human_in_the_loop]")
    await hitl.locator("summary").click()
    await expect(hitl.locator("th")).to_have_text(["interrupt_on"])
    await expect(hitl.locator("td")).to_have_text(["{'write_file': True}"])

    # An event opens to its full JSON.
    first = main.locator("li").first
    await first.locator("summary").click()
    await expect(first.locator("pre")).to_contain_text('"agent_id": "alpha"')
    await expect(
        page.locator('#telemetry tr[data-event="sagents.execution.interrupt"] td')
    ).to_have_text("1")


async def test_cancel_button_cancels_the_run(runtime: Runtime, base: str, page: Page) -> None:
    handle = await runtime.start_agent(demo_agent("slow", delay=0.2))
    await page.goto(f"{base}#slow")  # the address names the agent to follow
    await expect(page.locator("#detail-id")).to_have_text("slow")
    cancel = page.locator("#cancel")
    await expect(cancel).to_be_disabled()  # nothing runs yet
    await handle.add_message("a long topic")
    await expect(page.locator("#detail-status")).to_have_text("running")
    await expect(page.locator("#events-main li[data-type=llm_deltas]").first).to_be_visible()
    await cancel.click()
    await expect(page.locator("#notice")).to_have_text("Cancelled the run of slow.")
    await wait_status(runtime, "slow", Status.CANCELLED)
    await expect(page.locator("#detail-status")).to_have_text("cancelled")
    await expect(cancel).to_be_disabled()


async def test_stop_button_stops_the_agent(runtime: Runtime, base: str, page: Page) -> None:
    await runtime.start_agent(demo_agent("alpha"))
    await runtime.start_agent(demo_agent("beta"))
    await page.goto(base)
    await page.locator('#agents tbody tr[data-agent-id="alpha"]').click()
    await expect(page.locator("#agents tbody tr[data-agent-id=alpha] td.subscribers")).to_have_text(
        "2"
    )
    await page.locator("#stop").click()
    await expect(page.locator("#events-main li[data-type=agent_shutdown]")).to_contain_text(
        "debugger"
    )
    await expect(page.locator("#agents tbody tr")).to_have_count(1)
    await expect(page.locator("#detail-status")).to_have_text("not running")
    await expect(page.locator("#stop")).to_be_disabled()
    assert runtime.list_running_agents() == ["beta"]


async def test_token_mode_page(runtime: Runtime, browser: Browser, page: Page) -> None:
    await runtime.start_agent(demo_agent("alpha"))
    async with serve(host_app(debugger_app(runtime, token="s3cret", interval=0.1))) as url:
        refused = await page.goto(f"{url}/debug/")
        assert refused is not None
        assert refused.status == 401
        await page.goto(f"{url}/debug/?token=s3cret")
        assert page.url == f"{url}/debug/"  # the token left the address bar for a cookie
        await expect(page.locator("#connection")).to_have_text("live")
        await expect(page.locator("#agents tbody tr")).to_have_count(1)
        await page.locator("#agents tbody tr").click()
        await expect(page.locator("#messages")).to_be_visible()
        await expect(page.locator("#notice")).to_have_text("")
