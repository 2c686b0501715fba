"""A chat app on sagents' conversation router, in one file (docs/web.md, "Use it in your own app").

    python examples/chat_app.py          # then open http://127.0.0.1:8000/?token=token-ada

The app brings its own auth (a toy one: a bearer token, or ``?token=`` for the websocket, which
browsers open without headers) and its own ``SessionConfig``: the web demo's agent (todos,
files, an approval before every write) on the offline scripted model, so no API key is needed.
The page is below: it imports the router's JavaScript client. Needs ``sagents[web]``.
"""

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Header, HTTPException, Query
from fastapi.responses import HTMLResponse

from sagents import LocalPresence, Runtime, SessionConfig, SingleFactoryRouter
from sagents.persistence import MemoryPersistence
from sagents.web import DemoFactory, build_model, conversation_router

TOKENS = {"token-ada": "ada", "token-bob": "bob"}


def user(authorization: str = Header(""), token: str = Query("")) -> str:
    """Your auth goes here: the scope every conversation of the caller belongs to."""
    found = TOKENS.get(token or authorization.removeprefix("Bearer "))
    if found is None:
        raise HTTPException(401, "unknown token")
    return found


store = MemoryPersistence()  # conversations, states and display messages (SqlPersistence too)
config = SessionConfig(
    factory_router=SingleFactoryRouter(DemoFactory(build_model(None, delay=0.02))),
    agent_persistence=store,
    display_message_persistence=store,
    presence=LocalPresence(),  # each open page is a viewer: the agent stops after the last
)
runtime = Runtime()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with runtime:
        yield


app = FastAPI(lifespan=lifespan)
app.include_router(conversation_router(runtime, config, scope=user), prefix="/chat")


@app.get("/", response_class=HTMLResponse)
def page() -> str:
    return PAGE


PAGE = """<!doctype html><meta charset="utf-8"><title>sagents chat</title>
<style>body{font:16px system-ui;max-width:42em;margin:2em auto}.user{font-weight:bold}
.tool_call{color:#666}#live{color:#888}</style>
<div id="log"></div><p id="live"></p>
<p id="approval" hidden>The agent asks before writing a file. <button>Approve</button></p>
<form><input id="text" size="40" placeholder="A topic to research"> <button>Send</button></form>
<script type="module">
import { connect } from "/chat/sagents-client.js";
const token = new URLSearchParams(location.search).get("token") || "";
const $ = (selector) => document.querySelector(selector);
const api = async (path, method = "GET") => {
  const headers = { authorization: "Bearer " + token };
  const reply = await fetch("/chat" + path, { method, headers });
  if (!reply.ok) throw new Error(`${reply.status}: ${await reply.text()}`);
  return reply.json();
};
const id = location.hash.slice(1) || (await api("/conversations", "POST")).id;
location.hash = id;
let pending = [];  // the calls waiting for approval
const ask = (interrupt) => {
  pending = interrupt ? interrupt.action_requests : [];
  $("#approval").hidden = pending.length === 0;
};
const show = (row) => {  // a display message: a user or assistant text, a tool call
  if (document.getElementById("row-" + row.sequence)) return;
  const text = row.type === "tool_call" ? "tool: " + row.content.name : row.content.text;
  if (!text || row.type === "tool_result") return;
  const p = document.createElement("p");
  Object.assign(p, { id: "row-" + row.sequence, className: row.type, textContent: text });
  p.dataset.seq = row.sequence;  // in order, whether it came live or with the snapshot
  const next = [...$("#log").children].find((other) => +other.dataset.seq > row.sequence);
  $("#log").insertBefore(p, next || null);
};
const load = async () => {  // as saved: on open, and when a reconnect could not resume
  const snapshot = await api("/conversations/" + id);
  snapshot.messages.forEach(show);
  ask(snapshot.interrupt);
};
const chat = connect(`/chat/conversations/${id}/ws?token=${token}`, {
  onAttached: ({ first, resumed }) => first && !resumed && load(),
  onEvent: (event) => {
    const live = $("#live");  // the reply as it streams, until it is saved
    if (event.type === "llm_deltas") live.append(...event.deltas.map((d) => d.data.content));
    if (event.type !== "display_message_saved") return;
    live.textContent = "";
    show(event.display_message);
  },
  onStatus: (status, data) => (status !== "interrupted" ? ask(null) : data && ask(data)),
});
$("form").onsubmit = (event) => {
  event.preventDefault();
  chat.send($("#text").value);
  $("#text").value = "";
};
$("#approval button").onclick = () => chat.decide(pending.map(() => ({ type: "approve" })));
</script>"""

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
