// The live debugger page: one websocket for the agent list, telemetry and the selected agent's
// events; fetch() for the state and the stop / cancel actions. URLs are relative to <base>, so
// the page works wherever the debugger is mounted.
import {
  appendEvent,
  renderAgents,
  renderMiddleware,
  renderState,
  renderTelemetry,
  renderTodos,
} from "./render.js";

const $ = (id) => document.getElementById(id);
const nodes = {
  connection: $("connection"),
  agents: $("agents").tBodies[0],
  agentCount: $("agent-count"),
  noAgents: $("no-agents"),
  telemetry: $("telemetry").tBodies[0],
  detail: $("detail"),
  detailId: $("detail-id"),
  detailStatus: $("detail-status"),
  notice: $("notice"),
  messages: $("messages"),
  messageCount: $("message-count"),
  todos: $("todos"),
  interrupt: $("interrupt"),
  metadata: $("metadata"),
  middleware: $("middleware"),
  middlewareCount: $("middleware-count"),
  events: { main: $("events-main"), debug: $("events-debug") },
  eventCounts: { main: $("main-count"), debug: $("debug-count") },
};

const page = { selected: null, socket: null, retries: 0, rows: [], counts: { main: 0, debug: 0 } };

function setConnection(state, text) {
  nodes.connection.dataset.state = state;
  nodes.connection.textContent = text;
}

function notice(text, kind = "info") {
  nodes.notice.textContent = text;
  nodes.notice.dataset.kind = kind;
}

function agentUrl(id, action = "") {
  return `api/agents/${encodeURIComponent(id)}${action ? `/${action}` : ""}`;
}

async function request(url, options = {}) {
  // The answer's JSON body, or {error} for a failed request (network down, server gone).
  try {
    const response = await fetch(url, { headers: { Accept: "application/json" }, ...options });
    const body = await response.json().catch(() => ({}));
    return response.ok ? body : { error: body.error ?? `HTTP ${response.status}` };
  } catch (error) {
    return { error: `request failed: ${error.message}` };
  }
}

async function fetchState() {
  const id = page.selected;
  if (id === null) return;
  const body = await request(agentUrl(id));
  if (id !== page.selected) return;
  if (body.error) notice(body.error, "warning");
  else {
    renderState(nodes, body.state);
    renderMiddleware(nodes.middleware, nodes.middlewareCount, body.middleware ?? []);
  }
}

let stateTimer = null;
function refreshStateSoon() {
  // Several status changes arrive together; read the state once (each read counts as activity).
  clearTimeout(stateTimer);
  stateTimer = setTimeout(fetchState, 100);
}

async function act(action) {
  const id = page.selected;
  if (id === null) return;
  const body = await request(agentUrl(id, action), { method: "POST" });
  if (body.error) notice(body.error, "error");
  else notice(action === "stop" ? `Stopped ${id}.` : `Cancelled the run of ${id}.`);
}

function showStatus() {
  const row = page.rows.find((r) => r.id === page.selected);
  nodes.detailStatus.textContent = row ? row.status : "not running";
  nodes.detailStatus.dataset.status = row ? row.status : "stopped";
  nodes.cancel.disabled = !row || row.status !== "running";
  nodes.stop.disabled = !row;
}

function select(id) {
  if (id === page.selected) return;
  page.selected = id;
  page.counts = { main: 0, debug: 0 };
  for (const channel of ["main", "debug"]) {
    nodes.events[channel].replaceChildren();
    nodes.eventCounts[channel].textContent = "0";
  }
  nodes.detail.hidden = false;
  nodes.detailId.textContent = id;
  renderState(nodes, { messages: [], todos: [], metadata: {}, interrupt: null });
  renderMiddleware(nodes.middleware, nodes.middlewareCount, []);
  notice("");
  history.replaceState(null, "", `#${encodeURIComponent(id)}`);
  for (const tr of nodes.agents.rows) tr.classList.toggle("selected", tr.dataset.agentId === id);
  showStatus();
  send({ type: "select", agent_id: id });
  fetchState();
}

function send(message) {
  if (page.socket?.readyState === WebSocket.OPEN) page.socket.send(JSON.stringify(message));
}

function onEvent(message) {
  if (message.agent_id !== page.selected) return; // from the previous selection
  const { channel, event } = message;
  page.counts[channel] += 1;
  nodes.eventCounts[channel].textContent = String(page.counts[channel]);
  appendEvent(nodes.events[channel], event);
  switch (event.type) {
    case "agent_state_update":
    case "state_restored":
      renderState(nodes, event.state);
      break;
    case "todos_updated":
      renderTodos(nodes.todos, event.todos);
      break;
    case "status_changed":
      refreshStateSoon();
      break;
    case "agent_shutdown":
      notice(`The agent shut down (${event.reason}).`, "warning");
      break;
    default:
  }
}

function onMessage(message) {
  switch (message.type) {
    case "agents":
      page.rows = message.agents;
      renderAgents(nodes.agents, message.agents, page.selected, select);
      nodes.agentCount.textContent = String(message.agents.length);
      nodes.noAgents.hidden = message.agents.length > 0;
      renderTelemetry(nodes.telemetry, message.telemetry);
      if (!message.ready) setConnection("degraded", "runtime not ready");
      else if (nodes.connection.dataset.state !== "live") setConnection("live", "live");
      if (page.selected !== null) showStatus();
      break;
    case "event":
      onEvent(message);
      break;
    case "error":
      notice(message.error, "error");
      break;
    default:
  }
}

function connect() {
  const url = new URL("ws", document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (page.selected !== null) url.searchParams.set("agent_id", page.selected);
  const socket = new WebSocket(url);
  page.socket = socket;
  socket.addEventListener("open", () => {
    page.retries = 0;
    setConnection("live", "live");
  });
  socket.addEventListener("message", (e) => onMessage(JSON.parse(e.data)));
  socket.addEventListener("close", () => {
    if (page.socket !== socket) return;
    const delay = Math.min(5000, 250 * 2 ** page.retries++);
    setConnection("disconnected", `disconnected — retrying in ${(delay / 1000).toFixed(1)} s`);
    setTimeout(connect, delay);
  });
}

nodes.refresh = $("refresh");
nodes.cancel = $("cancel");
nodes.stop = $("stop");
nodes.refresh.addEventListener("click", fetchState);
nodes.cancel.addEventListener("click", () => act("cancel"));
nodes.stop.addEventListener("click", () => act("stop"));

const initial = decodeURIComponent(location.hash.slice(1));
if (initial) select(initial); // before connecting, so the socket follows it from the start
connect();
