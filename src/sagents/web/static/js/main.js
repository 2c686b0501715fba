// The chat page: the conversation list, one conversation's live view, its panels.

import { connect } from "../sagents-client.js";
import { api, socketPath } from "./api.js";
import { asks, renderApprovals, reopenApprovals, setApprovalNote } from "./approvals.js";
import { AT_REST, QUEUE_EVENTS, followUpsText, queuedEntry, recall, remember } from "./queued.js";
import {
  MessageList,
  contentText,
  el,
  hideConnection,
  markStatusStale,
  renderFiles,
  renderTodos,
  showConnection,
  showError,
  showStatus,
  statusText,
} from "./view.js";

const FILE_TOOLS = new Set(["write_file", "edit_file", "delete_file", "move_file", "edit_lines"]);

// What failed, in words, for an error frame answering one of the page's actions.
const REFUSED = {
  send: "Your message was not sent",
  decide: "Your decision was not applied",
  dismiss: "Nothing was dismissed",
  reset: "The conversation was not reset",
  cancel: "The run was not cancelled",
  retry: "The retry did not start",
};

// Why a conversation's socket was refused for good, by its close code (4000 + the HTTP status
// of the error frame sent just before it). Another code says the frame's own message.
const NOT_YOURS = "that conversation does not exist (or is not yours)";
const GONE = {
  4404: NOT_YOURS,
  4403: "you are not allowed to open that conversation",
  4401: "you are not signed in (any more): sign in again, then reload the page",
  4422: "that is not a conversation id: check the link",
};

function goneText(code, refusal) {
  if (GONE[code]) return GONE[code];
  const reason = refusal ? refusal.message || refusal.code : `close code ${code}`;
  return `the server refused that conversation: ${reason}`;
}

const state = {
  current: null, // conversation id
  socket: null, // the conversation's client (sagents-client.js)
  loaded: false, // the snapshot of the current conversation is rendered
  queue: [], // events that arrived before it was
  status: "not_running",
  instance: null, // the agent instance the socket follows
  interrupt: false, // an approval or a question is pending
  asking: false, // what is pending asks the person questions
  wasDown: false, // the connection dropped since the page opened this conversation
  attached: false, // the current connection follows the agent (not refused)
  refusal: null, // the error frame that refused the current connection, until it closes
};

const messages = new MessageList(document.getElementById("messages"));
const $ = (id) => document.getElementById(id);

// -- conversation list ------------------------------------------------------------------------

async function refreshList() {
  let data;
  try {
    data = await api.conversations();
  } catch (error) {
    showError(`could not list conversations: ${error.message}`);
    return;
  }
  const current = data.conversations.find((c) => c.id === state.current);
  if (current && $("rename-form").hidden) {
    $("conversation-title").textContent = current.title || "New conversation";
  }
  const list = $("conversations");
  list.replaceChildren(
    ...data.conversations.map((c) => {
      const open = c.id === state.current;
      const status = open ? state.status : c.status;
      const text = statusText(status, open && state.asking);
      return el(
        "li",
        { class: open ? "conversation active" : "conversation", "data-id": c.id },
        el("a", { href: `#/c/${c.id}`, text: c.title || "New conversation" }),
        el("span", { class: "status small", "data-status": status, text }),
      );
    }),
  );
}

async function createConversation() {
  try {
    const conversation = await api.create();
    location.hash = `#/c/${conversation.id}`;
  } catch (error) {
    showError(`could not create a conversation: ${error.message}`);
  }
}

// -- one conversation -------------------------------------------------------------------------

function openConversation(id) {
  const previous = state.socket;
  state.socket = null;
  state.current = id; // first: the previous socket's callbacks are ignored from now on
  if (previous) previous.close();
  state.loaded = false;
  state.queue = [];
  state.wasDown = false;
  state.attached = false;
  state.refusal = null;
  state.instance = null;
  messages.clear();
  showApprovals(null);
  renderTodos([]);
  hideConnection();
  markStatusStale(false);
  $("welcome").hidden = id !== null;
  $("chat").hidden = id === null;
  if (id === null) {
    state.socket = null;
    refreshList();
    return;
  }
  $("conversation-title").textContent = "…";
  // Callbacks of a conversation the page has left (its socket closing) are ignored.
  const current = (handler) => (...args) => {
    if (state.current === id) handler(...args);
  };
  state.socket = connect(socketPath(id), {
    onAttached: current(onAttached),
    onEvent: current(onEvent),
    onAccepted: current(onAccepted),
    onError: current(onRefusal),
    onConnection: current(onSocketState),
  });
  refreshList();
  refreshFiles();
}

async function loadSnapshot() {
  const id = state.current;
  let snapshot;
  try {
    snapshot = await api.snapshot(id);
  } catch (error) {
    if (error.status === 404) {
      showError(NOT_YOURS);
      location.hash = "";
      return;
    }
    showError(`could not load the conversation: ${error.message}`);
    return;
  }
  if (id !== state.current) return;
  messages.clear({ keepPending: true });
  $("conversation-title").textContent = snapshot.conversation.title || "New conversation";
  // Rows are a transcript: a conversation that was reset shows what follows its last reset.
  const rows = snapshot.messages;
  const from = rows.map((row) => row.type).lastIndexOf("reset");
  for (const row of rows.slice(Math.max(from, 0))) messages.add(row);
  for (const entry of recall(id, snapshot)) messages.addQueued(entry);
  renderTodos(snapshot.todos);
  const pending = snapshot.status === "interrupted" || snapshot.status === "not_running";
  showApprovals(pending ? snapshot.interrupt : null);
  setStatus(snapshot.status);
  state.loaded = true;
  rememberQueued();
  for (const event of state.queue.splice(0)) applyEvent(event);
  // The socket replays a recent run's error; an older one is only known by the status.
  if (state.status === "error" && !messages.hasRunError()) {
    messages.showRunError("The last run ended in an error (the server's log has the details).", retry);
  }
}

function onSocketState(socketState, detail) {
  document.body.dataset.socket = socketState;
  // A connection that opens is not attached yet: an error frame before it attaches refuses it.
  state.attached = false;
  const refusal = state.refusal;
  state.refusal = null;
  markStatusStale(socketState !== "open" && socketState !== "connecting");
  if (socketState === "open" || socketState === "connecting") {
    if (socketState === "open" && state.wasDown) showBackOnline();
    else hideConnection();
    return;
  }
  state.wasDown = true;
  showConnection(socketState, detail.retryIn);
  if (socketState === "gone") {
    showError(goneText(detail.code, refusal));
    location.hash = "";
  } else if (refusal) {
    // Refused for now (the storage is unavailable, say): the client tries again.
    showError(`The server refused the connection: ${refusal.message || refusal.code}`);
  }
}

function showBackOnline() {
  showConnection("open");
  setTimeout(() => {
    if (state.socket && state.socket.state === "open") hideConnection();
  }, 3000);
}

// The socket follows an agent instance, or waits for the next one (instance null). The first
// attachment of a connection that did not resume means: load the conversation over HTTP.
function onAttached({ instance, status, resumed, first }) {
  state.attached = true;
  state.instance = instance;
  if (first && !resumed) {
    state.loaded = false;
    loadSnapshot();
  }
  if (instance === null) setStatus("not_running");
  else if (state.loaded) setStatus(status);
}

function onEvent(event) {
  if (!state.loaded) state.queue.push(event);
  else applyEvent(event);
}

function onAccepted({ action, ref }) {
  if (action === "send") {
    messages.settlePending(ref, null);
    refreshList();
  }
  if (action === "decide") setApprovalNote("sent");
}

// Every error frame is told to the person, in words, with what it was answering.
function onRefusal(error) {
  const kind = error.action;
  if (!kind && !state.attached) {
    // The frame that refuses the connection, just before its close: told once, when the
    // socket closes (onSocketState), in words that depend on the close code.
    state.refusal = error;
    return;
  }
  const reason = error.message || error.code || "the server refused it";
  showError(`${REFUSED[kind] || "The server refused a request"}: ${reason}`);
  if (kind === "send") messages.settlePending(error.ref, reason);
  // Nothing changed: the dialogs and forms are usable again, with the reason.
  if (kind === "decide" || kind === "dismiss") reopenApprovals(reason);
  if (kind === "retry") messages.showRunError(reason, retry);
}

function setStatus(status) {
  state.status = status;
  if (AT_REST.has(status)) messages.settleQueued();
  showStatus(status, state.asking);
  messages.cards.setAgent(status, state.interrupt);
  const item = document.querySelector(`#conversations li[data-id="${state.current}"] .status`);
  if (item) {
    item.dataset.status = status;
    item.textContent = statusText(status, state.asking);
  }
}

function showApprovals(interrupt) {
  const requests = (interrupt && interrupt.action_requests) || [];
  state.interrupt = requests.length > 0;
  state.asking = requests.some(asks);
  renderApprovals(interrupt, { onDecide: decide, onDismiss: dismiss });
  messages.cards.setAsking(requests.filter(asks).map((request) => request.tool_call_id));
  messages.cards.setAgent(state.status, state.interrupt);
}

function applyEvent(event) {
  switch (event.type) {
    case "status_changed":
      onStatusChanged(event);
      break;
    case "chain_error":
      messages.showRunError(event.error, retry);
      break;
    case "llm_deltas":
      for (const delta of event.deltas) messages.delta(contentText(delta.data ? delta.data.content : ""));
      break;
    case "llm_message":
      messages.finishStream(event.message);
      break;
    case "display_message_saved":
      messages.add(event.display_message);
      break;
    case "display_message_updated":
      // A stored row changed: a tool call's status, or the decision a person made on it.
      if (event.display_message.type === "tool_call") messages.cards.update(event.display_message);
      break;
    case "tool_execution_started":
      messages.cards.started(event.tool_call_id, event.arguments);
      break;
    case "tool_execution_completed":
      messages.cards.setLive(event.tool_call_id, "completed");
      if (FILE_TOOLS.has(event.name)) refreshFiles();
      break;
    case "tool_execution_failed":
      messages.cards.setLive(event.tool_call_id, "failed");
      break;
    case "todos_updated":
      renderTodos(event.todos);
      break;
    case "agent_reset":
      // Back to a fresh state: its `reset` row (a divider) follows as a display message.
      messages.clear({ keepPending: true });
      renderTodos([]);
      showApprovals(null);
      break;
    case "run_halted":
      messages.showNotice(`Stopped: ${event.reason}`);
      break;
    case "message_queued": {
      const entry = queuedEntry(event, { afterSeq: messages.lastSeq(), instance: state.instance });
      if (entry) messages.addQueued(entry);
      break;
    }
    case "follow_ups_limited":
      // The queued messages enter the conversation without a run: nothing answers them.
      messages.settleQueued();
      messages.showNotice(followUpsText(event), "follow-ups");
      break;
    case "agent_shutdown":
      setStatus("not_running");
      document.body.dataset.lastShutdown = event.reason;
      refreshList();
      break;
    case "subscription_overflow":
      if (event.reload) {
        state.loaded = false;
        loadSnapshot();
      }
      break;
    default:
      break;
  }
  if (QUEUE_EVENTS.has(event.type)) rememberQueued();
}

// The messages shown queued, kept for a reload of this tab (see queued.js). Not before the
// conversation is loaded: its snapshot first restores the ones kept.
function rememberQueued() {
  if (state.loaded && state.current) remember(state.current, messages.queuedEntries());
}

function onStatusChanged(event) {
  const interrupt = event.status === "interrupted" ? event.data : null;
  showApprovals(interrupt);
  for (const request of (interrupt && interrupt.action_requests) || []) {
    messages.cards.setLive(request.tool_call_id, "interrupted");
  }
  setStatus(event.status);
  if (event.status === "running") {
    messages.clearRunError();
    messages.clearNotices();
  }
  if (event.status === "error") {
    const reason = typeof event.data === "string" && event.data ? event.data : "the run failed";
    messages.showRunError(reason, retry);
  }
  if (event.status !== "running") {
    messages.dropStreams();
    refreshList();
    refreshFiles();
    refreshDecisions();
  }
}

// Decisions also arrive as display_message_updated events; reading them back once a run has
// ended covers a tab that was disconnected when they were recorded.
async function refreshDecisions() {
  const id = state.current;
  try {
    const snapshot = await api.snapshot(id);
    if (id !== state.current) return;
    for (const row of snapshot.messages) {
      if (row.type === "tool_call" && row.metadata && row.metadata.decision) {
        messages.cards.setDecision(row.tool_call_id, row.metadata.decision);
      }
    }
  } catch {
    // the next reload shows them
  }
}

// -- actions ----------------------------------------------------------------------------------

// Takes an action through the client; returns its ref and whether it went out now or waits
// in the client's queue, or null when it was refused (the conversation is gone).
function act(kind, ...args) {
  if (!state.socket) return null;
  const sent = state.socket[kind](...args);
  if (sent.outcome === "refused") {
    showError(`${REFUSED[kind]}: this conversation is no longer available`);
    return null;
  }
  return sent;
}

function decide(decisions) {
  const sent = act("decide", decisions);
  if (!sent) return "not sent";
  return sent.outcome === "queued" ? "queued: sent when the connection is back" : "sending…";
}

function retry() {
  for (const button of document.querySelectorAll(".run-error button.retry")) {
    button.disabled = true;
    button.textContent = "Retrying…";
  }
  act("retry");
}

function sendMessage(text) {
  const sent = act("send", text);
  if (sent && sent.outcome === "queued") messages.addPending(sent.ref, text);
  return sent !== null;
}

// A cancel is not queued: sent late, it could stop a run started after the person clicked.
function cancelRun() {
  if (!state.socket) return;
  if (!state.socket.connected) {
    showError("Not cancelled: the page is not connected, and a cancel is not queued. Try again once it is back online.");
    return;
  }
  act("cancel");
}

// Neither is a dismiss or a reset: sent late, they could clear what came after the click.
function liveOnly(what) {
  if (state.socket && state.socket.connected) return true;
  showError(`${what}: the page is not connected. Try again once it is back online.`);
  return false;
}

// Returns what happens, in words, or null when nothing was sent.
function dismiss() {
  if (!liveOnly("Not dismissed")) return null;
  return act("dismiss") ? "dismissing…" : null;
}

// The demo's files are shared by all conversations of this browser, so a reset keeps them
// (the server refuses to clear them).
function resetConversation() {
  if (liveOnly("Not reset")) act("reset", "keep");
}

// -- files ------------------------------------------------------------------------------------

async function refreshFiles() {
  try {
    const data = await api.files();
    renderFiles(data.files, openFile);
  } catch (error) {
    showError(`could not list files: ${error.message}`);
  }
}

async function openFile(path) {
  try {
    const file = await api.file(path);
    const view = $("file-view");
    view.hidden = false;
    view.dataset.path = file.path;
    view.textContent = file.content;
  } catch (error) {
    showError(`could not open ${path}: ${error.message}`);
  }
}

// -- drawers (narrow screens): the conversation list, the plan and files ----------------------

function setDrawer(name) {
  document.body.dataset.drawer = name || "";
  $("toggle-conversations").setAttribute("aria-expanded", String(name === "conversations"));
  $("toggle-panels").setAttribute("aria-expanded", String(name === "panels"));
  $("backdrop").hidden = !name;
}

function toggleDrawer(name) {
  setDrawer(document.body.dataset.drawer === name ? null : name);
}

// -- wiring -----------------------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/c\/([A-Za-z0-9_-]+)$/);
  const id = match ? match[1] : null;
  setDrawer(null);
  if (id !== state.current || id === null) openConversation(id);
}

$("new-conversation").addEventListener("click", createConversation);
$("welcome-start").addEventListener("click", createConversation);
$("toggle-conversations").addEventListener("click", () => toggleDrawer("conversations"));
$("toggle-panels").addEventListener("click", () => toggleDrawer("panels"));
$("backdrop").addEventListener("click", () => setDrawer(null));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") setDrawer(null);
});

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("message-input");
  const text = input.value.trim();
  if (!text || !state.socket) return;
  if (sendMessage(text)) input.value = "";
});

$("message-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

$("cancel").addEventListener("click", cancelRun);

$("rename").addEventListener("click", () => {
  $("rename-form").hidden = false;
  $("conversation-title").hidden = true;
  $("rename").hidden = true;
  $("rename-input").value = $("conversation-title").textContent;
  $("rename-input").focus();
});

$("rename-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const title = $("rename-input").value.trim();
  $("rename-form").hidden = true;
  $("conversation-title").hidden = false;
  $("rename").hidden = false;
  if (!title) return;
  try {
    const conversation = await api.rename(state.current, title);
    $("conversation-title").textContent = conversation.title;
    refreshList();
  } catch (error) {
    showError(`could not rename: ${error.message}`);
  }
});

// Two clicks, as for Delete: the first one asks, for a few seconds.
let resetTimer = null;
function unarmReset() {
  clearTimeout(resetTimer);
  $("reset").dataset.confirm = "";
  $("reset").textContent = "Reset";
}

$("reset").addEventListener("click", () => {
  const button = $("reset");
  if (button.dataset.confirm !== "yes") {
    button.dataset.confirm = "yes";
    button.textContent = "Really reset? Files stay";
    resetTimer = setTimeout(unarmReset, 4000);
    return;
  }
  unarmReset();
  resetConversation();
});

$("delete").addEventListener("click", async () => {
  const button = $("delete");
  if (button.dataset.confirm !== "yes") {
    button.dataset.confirm = "yes";
    button.textContent = "Really delete?";
    setTimeout(() => {
      button.dataset.confirm = "";
      button.textContent = "Delete";
    }, 4000);
    return;
  }
  button.dataset.confirm = "";
  button.textContent = "Delete";
  try {
    await api.remove(state.current);
    location.hash = "";
    openConversation(null);
  } catch (error) {
    showError(`could not delete: ${error.message}`);
  }
});

window.addEventListener("hashchange", route);

api
  .me()
  .then((me) => {
    $("identity").textContent = `you: ${me.identity.slice(0, 8)}`;
  })
  .catch(() => {});
route();
