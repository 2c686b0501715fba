"""The example app of the conversation router (``examples/chat_app.py``) in a real browser.

The app is the example itself, unchanged: its own toy auth, its own ``SessionConfig``, the
public ``conversation_router`` and the page that imports ``sagents-client.js``. Playwright
drives Debian's Chromium (headless); the test saves a screenshot under ``tests/web/output/``.
Without Chromium it skips, except under CI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.examples import load_example
from tests.web.conftest import OUTPUT, chromium, serving

pytestmark = pytest.mark.slow

TIMEOUT = 15_000  # ms, for every wait on the page
TOPIC = "supervision trees"
FIRST_REPLY = f"Let me plan how to research {TOPIC!r}."
LAST_REPLY = f"All done: my notes on {TOPIC!r} are saved and reviewed."

# Records every text the streamed reply showed (the page clears it once the reply is saved).
RECORD_STREAM = """
window.streamed = [];
new MutationObserver(() => {
  const live = document.getElementById("live");
  if (live && live.textContent) window.streamed.push(live.textContent);
}).observe(document, { subtree: true, childList: true, characterData: true });
"""

# What a caller without the app's auth (or with another user's) gets, asked from the page.
PROBE = """async ([path, token]) => {
  const headers = token ? { authorization: "Bearer " + token } : {};
  const http = (await fetch("/chat" + path, { headers })).status;
  const query = token ? "?token=" + token : "";
  const socket = new WebSocket(`ws://${location.host}/chat${path}/ws${query}`);
  const frames = [];
  socket.onmessage = (message) => frames.push(JSON.parse(message.data));
  const code = await new Promise((resolve) => { socket.onclose = (event) => resolve(event.code); });
  return { http, code, frames };
}"""

AS_ADA = """(path) => fetch("/chat" + path, { headers: { authorization: "Bearer token-ada" } })
  .then((reply) => reply.status)"""


@pytest.fixture
async def example_url() -> AsyncIterator[str]:
    async with serving(load_example("chat_app.py").app) as url:
        yield url


async def probe(page: Page, path: str, token: str | None) -> dict[str, Any]:
    answer: dict[str, Any] = await page.evaluate(PROBE, [path, token])
    return answer


async def test_the_example_app_chats_streams_approves_reloads_and_refuses_strangers(
    example_url: str, request: pytest.FixtureRequest
) -> None:
    errors: list[str] = []
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 900, "height": 800})
        context.set_default_timeout(TIMEOUT)
        expect.set_options(timeout=TIMEOUT)
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.add_init_script(RECORD_STREAM)
        await page.goto(f"{example_url}/?token=token-ada")
        await page.wait_for_url(lambda url: "#" in url)  # a conversation was created
        conversation = page.url.rsplit("#", 1)[1]
        log = page.locator("#log")

        # A message: the reply streams in, is saved, and the agent asks before writing.
        await page.fill("#text", TOPIC)
        await page.click("form button")
        await expect(log.locator("p.user")).to_have_text([TOPIC])
        await expect(log.locator("p.assistant").first).to_have_text(FIRST_REPLY)
        streamed: list[str] = await page.evaluate("window.streamed")
        assert any(text and FIRST_REPLY.startswith(text) for text in streamed), streamed
        approval = page.locator("#approval")
        await expect(approval).to_be_visible()
        await expect(log.locator("p.tool_call").last).to_have_text("tool: write_file")

        # A reload mid-conversation: the history comes back, and so does the approval.
        await page.reload()
        await expect(log.locator("p.user")).to_have_text([TOPIC])
        await expect(log.locator("p.assistant").first).to_have_text(FIRST_REPLY)
        await expect(approval).to_be_visible()
        await approval.locator("button").click()
        await expect(approval).to_be_hidden()
        await expect(log.locator("p.assistant").last).to_have_text(LAST_REPLY)
        OUTPUT.mkdir(exist_ok=True)
        await page.screenshot(path=str(OUTPUT / f"{request.node.name}.png"), full_page=True)

        # Without the app's auth: 401 over HTTP, close code 4401 on the socket.
        path = f"/conversations/{conversation}"
        stranger = await probe(page, path, None)
        assert stranger["http"] == 401
        assert stranger["code"] == 4401
        assert stranger["frames"] == [
            {"type": "error", "code": "unauthorized", "message": "unknown token"}
        ]
        # Another user: ada's conversation does not exist for bob (404, 4404).
        bob = await probe(page, path, "token-bob")
        assert (bob["http"], bob["code"]) == (404, 4404)
        assert [frame["code"] for frame in bob["frames"]] == ["not_found"]
        # And ada still gets it.
        assert await page.evaluate(AS_ADA, path) == 200
        await context.close()
    assert errors == []
