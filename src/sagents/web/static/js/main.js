// The chat page: the conversation list, one conversation's live view, its panels.

import { api } from "./api.js";
import { ConversationSocket } from "./socket.js";
import {
  MessageList,
  contentText,
  el,
  renderApprovals,
  renderFiles,
  renderTodos,
  showError,
  showStatus,
  statusText,
} from "./view.js";

const FILE_TOOLS = new Set(["write_file", "edit_file", "delete_file", "move_file", "edit_lines"]);

const state = {
  current: null, // conversation id
  socket: null,
  loaded: false, // the snapshot of the current conversation is rendered
  queue: [], // event frames that arrived before it was
  status: "not_running",
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
      const status = c.id === state.current ? state.status : c.status;
      return el(
        "li",
        { class: c.id === state.current ? "conversation active" : "conversation", "data-id": c.id },
        el("a", { href: `#/c/${c.id}`, text: c.title || "New conversation" }),
        el("span", { class: "status small", "data-status": status, text: statusText(status) }),
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
  if (state.socket) state.socket.close();
  state.current = id;
  state.loaded = false;
  state.queue = [];
  messages.clear();
  renderApprovals(null);
  renderTodos([]);
  $("welcome").hidden = id !== null;
  $("chat").hidden = id === null;
  if (id === null) {
    state.socket = null;
    refreshList();
    return;
  }
  $("conversation-title").textContent = "…";
  state.socket = new ConversationSocket(id, onFrame, onSocketState);
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
      showError("that conversation does not exist (or is not yours)");
      location.hash = "";
      return;
    }
    showError(`could not load the conversation: ${error.message}`);
    return;
  }
  if (id !== state.current) return;
  messages.clear();
  $("conversation-title").textContent = snapshot.conversation.title || "New conversation";
  for (const row of snapshot.messages) messages.add(row);
  renderTodos(snapshot.todos);
  renderApprovals(snapshot.status === "interrupted" || snapshot.status === "not_running" ? snapshot.interrupt : null, decide);
  setStatus(snapshot.status);
  state.loaded = true;
  for (const frame of state.queue.splice(0)) applyEvent(frame.event);
}

function onSocketState(socketState) {
  document.body.dataset.socket = socketState;
  if (socketState === "gone") {
    showError("that conversation does not exist (or is not yours)");
    location.hash = "";
  }
}

function onFrame(frame, first) {
  switch (frame.type) {
    case "attached":
    case "detached":
      if (first && !frame.resumed) {
        state.loaded = false;
        loadSnapshot();
      }
      if (frame.type === "detached") setStatus("not_running");
      else if (state.loaded) setStatus(frame.status);
      break;
    case "event":
      if (!state.loaded) state.queue.push(frame);
      else applyEvent(frame.event);
      break;
    case "error":
      // A refused socket is reported once, by onSocketState("gone").
      if (frame.code !== "not_found") showError(frame.message);
      break;
    case "ok":
      if (frame.action === "send") refreshList();
      break;
    default:
      break;
  }
}

function setStatus(status) {
  state.status = status;
  showStatus(status);
  const item = document.querySelector(`#conversations li[data-id="${state.current}"] .status`);
  if (item) {
    item.dataset.status = status;
    item.textContent = statusText(status);
  }
}

function applyEvent(event) {
  switch (event.type) {
    case "status_changed":
      setStatus(event.status);
      if (event.status === "interrupted") {
        renderApprovals(event.data, decide);
        for (const request of (event.data && event.data.action_requests) || []) {
          messages.setToolStatus(request.tool_call_id, "interrupted");
        }
      } else {
        renderApprovals(null);
      }
      if (event.status !== "running") {
        messages.dropStreams();
        refreshList();
        refreshFiles();
        refreshDecisions();
      }
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
    case "display_message_updated": {
      // A stored row changed: a tool call's status, or the decision a person made on it.
      const row = event.display_message;
      if (row.type === "tool_call" && row.tool_call_id) {
        if (row.status) messages.setToolStatus(row.tool_call_id, row.status);
        if (row.metadata && row.metadata.decision) messages.setDecision(row.tool_call_id, row.metadata.decision);
      }
      break;
    }
    case "tool_execution_started":
      messages.setToolStatus(event.tool_call_id, "executing");
      break;
    case "tool_execution_completed":
      messages.setToolStatus(event.tool_call_id, "completed");
      if (FILE_TOOLS.has(event.name)) refreshFiles();
      break;
    case "tool_execution_failed":
      messages.setToolStatus(event.tool_call_id, "failed");
      break;
    case "todos_updated":
      renderTodos(event.todos);
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
        messages.setDecision(row.tool_call_id, row.metadata.decision);
      }
    }
  } catch {
    // the next reload shows them
  }
}

function decide(decisions) {
  state.socket.send({ type: "decide", decisions });
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

// -- wiring -----------------------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/c\/([A-Za-z0-9_-]+)$/);
  const id = match ? match[1] : null;
  if (id !== state.current || id === null) openConversation(id);
}

$("new-conversation").addEventListener("click", createConversation);
$("welcome-start").addEventListener("click", createConversation);

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("message-input");
  const text = input.value.trim();
  if (!text || !state.socket) return;
  state.socket.send({ type: "send", text });
  input.value = "";
});

$("message-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

$("cancel").addEventListener("click", () => state.socket && state.socket.send({ type: "cancel" }));

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
