// Rendering: display messages, streamed text, tool calls, todos, files, approvals, errors.
// Everything user- or model-provided goes through textContent, never innerHTML.

import { ToolCards } from "./cards.js";
import { contentText, el, pretty } from "./dom.js";

export { contentText, el };

const STATUS_TEXT = {
  idle: "idle",
  running: "running",
  interrupted: "awaiting approval",
  cancelled: "cancelled",
  error: "error",
  paused: "paused",
  not_running: "not running",
};

export function statusText(status) {
  return STATUS_TEXT[status] || status;
}

export function showStatus(status) {
  const badge = document.getElementById("agent-status");
  badge.dataset.status = status;
  badge.textContent = statusText(status);
  document.getElementById("cancel").hidden = status !== "running";
}

// While the page is not connected the badge only tells what the agent was doing last.
export function markStatusStale(stale) {
  const badge = document.getElementById("agent-status");
  if (stale) {
    badge.dataset.stale = "true";
    badge.title = "last known status: the page is not connected";
  } else {
    delete badge.dataset.stale;
    badge.title = "";
  }
}

// -- messages ---------------------------------------------------------------------------------

// The conversation's rows, kept in the order of their stored `sequence`. Elements without one
// (the streamed reply, a run's error, a message still queued) stay below every stored row.
export class MessageList {
  constructor(container) {
    this.container = container;
    this.rows = new Map(); // sequence -> element
    this.userSeqs = []; // sequences of user rows, ascending: they start the turns
    this.cards = new ToolCards((node, seq) => this.place(node, seq), (seq) => this.turnOf(seq));
    this.streaming = null;
  }

  // keepPending: a reload of the same conversation keeps the messages still queued.
  clear({ keepPending = false } = {}) {
    const pending = keepPending ? [...this.container.querySelectorAll(":scope > .message.pending")] : [];
    this.container.replaceChildren(...pending);
    this.rows.clear();
    this.userSeqs = [];
    this.cards.clear();
    this.streaming = null;
  }

  scroll() {
    this.container.scrollTop = this.container.scrollHeight;
  }

  // Insert `node` before the first stored row with a larger sequence, or before the tail.
  place(node, seq) {
    let before = null;
    for (const child of this.container.children) {
      if (child === node) continue;
      if (child.dataset.seq === undefined || Number(child.dataset.seq) > seq) {
        before = child;
        break;
      }
    }
    this.container.insertBefore(node, before);
  }

  turnOf(seq) {
    let turn = 0;
    for (const user of this.userSeqs) if (user < seq) turn = user;
    return turn;
  }

  // A persisted display message (from a snapshot or a display_message_saved event).
  add(row) {
    // A saved reply replaces its streamed twin, also when the page already had the row (the
    // snapshot and the live events can both bring it after a reload).
    if (row.type === "assistant") this.dropFinishedStream();
    if (row.sequence !== null && this.rows.has(row.sequence)) return;
    if (row.type === "user") {
      this.userSeqs.push(row.sequence);
      this.userSeqs.sort((a, b) => a - b);
    }
    if (row.type === "tool_call") {
      const node = this.cards.add(row);
      this.rows.set(row.sequence, node);
      this.scroll();
      return;
    }
    const node = this.render(row);
    node.dataset.seq = row.sequence;
    this.place(node, row.sequence);
    this.rows.set(row.sequence, node);
    this.scroll();
  }

  render(row) {
    const content = row.content || {};
    switch (row.type) {
      case "user":
        return el("div", { class: "message user" }, el("div", { class: "bubble", text: content.text }));
      case "assistant":
        return el("div", { class: "message assistant" }, el("div", { class: "bubble", text: content.text }));
      case "thinking":
        return el("div", { class: "message thinking", text: content.text });
      case "tool_result":
        if (this.cards.result(row)) return el("span", { class: "row-marker", hidden: true });
        return el("div", { class: "message tool-result-row", text: `${content.name}: ${content.text}` });
      default:
        return el("div", { class: `message ${row.type}`, text: content.text || pretty(content) });
    }
  }

  // -- streamed text (llm_deltas), replaced by the saved assistant row -------------------------

  delta(text) {
    if (!text) return;
    if (!this.streaming) {
      this.streaming = el("div", { class: "message assistant streaming" }, el("div", { class: "bubble" }));
      this.place(this.streaming, Infinity);
    }
    this.streaming.querySelector(".bubble").textContent += text;
    this.scroll();
  }

  // The model's whole message: its text replaces the streamed one, which may lack the chunks a
  // resumed socket never got (the replay buffer keeps the message, not its deltas).
  finishStream(message) {
    const text = contentText(message && message.data ? message.data.content : "");
    if (!text) {
      if (this.streaming) this.streaming.remove();
      this.streaming = null;
      return;
    }
    if (!this.streaming) this.delta(text);
    this.streaming.querySelector(".bubble").textContent = text;
    this.streaming.classList.add("finished");
    this.streaming = null;
  }

  dropFinishedStream() {
    const finished = this.container.querySelector(".message.streaming.finished");
    if (finished) finished.remove();
  }

  dropStreams() {
    for (const node of this.container.querySelectorAll(".message.streaming")) node.remove();
    this.streaming = null;
  }

  // -- a run that failed ------------------------------------------------------------------------

  showRunError(text, onRetry) {
    this.clearRunError();
    const node = el(
      "div",
      { class: "message run-error", role: "alert" },
      el("h4", { text: "The agent stopped with an error" }),
      el("p", { class: "error-text", text }),
      el("button", { type: "button", class: "primary retry", text: "Retry", onclick: onRetry }),
    );
    this.place(node, Infinity);
    this.scroll();
  }

  hasRunError() {
    return this.container.querySelector(".run-error") !== null;
  }

  clearRunError() {
    for (const node of this.container.querySelectorAll(".run-error")) node.remove();
  }

  // -- messages sent while the page is not connected --------------------------------------------

  addPending(ref, text) {
    const node = el(
      "div",
      { class: "message user pending", "data-ref": ref },
      el("div", { class: "bubble", text }),
      el("p", { class: "note", text: "queued: sent when the connection is back" }),
    );
    this.place(node, Infinity);
    this.scroll();
  }

  // The server took the message (its stored row is on the page by now) or refused it.
  settlePending(ref, refusal) {
    const node = this.container.querySelector(`.message.pending[data-ref="${CSS.escape(ref)}"]`);
    if (!node) return;
    if (refusal === null) {
      node.remove();
      return;
    }
    node.classList.replace("pending", "refused");
    node.querySelector(".note").textContent = `not sent: ${refusal}`;
  }
}

// -- todos and files --------------------------------------------------------------------------

const TODO_MARK = { pending: "○", in_progress: "◐", completed: "●", cancelled: "×" };

export function renderTodos(todos) {
  const list = document.getElementById("todos");
  const progress = document.getElementById("plan-progress");
  if (!todos || todos.length === 0) {
    list.replaceChildren(el("li", { class: "empty", text: "no plan yet" }));
    progress.textContent = "";
    return;
  }
  // Shown on the drawer's toggle too, so a phone sees the plan move with the panel closed.
  const done = todos.filter((todo) => todo.status === "completed").length;
  progress.textContent = `${done}/${todos.length}`;
  list.replaceChildren(
    ...todos.map((todo) =>
      el(
        "li",
        { class: "todo", "data-status": todo.status, "data-id": todo.id },
        el("span", { class: "mark", text: TODO_MARK[todo.status] || "·" }),
        el("span", { class: "todo-text", text: todo.content }),
      ),
    ),
  );
}

export function renderFiles(files, onOpen) {
  const list = document.getElementById("files");
  if (!files || files.length === 0) {
    list.replaceChildren(el("li", { class: "empty", text: "no files yet" }));
    return;
  }
  list.replaceChildren(
    ...files.map((file) =>
      el(
        "li",
        { class: "file", "data-path": file.path },
        el("button", { type: "button", class: "link", text: file.path, onclick: () => onOpen(file.path) }),
        el("small", { text: ` ${file.size} B` }),
      ),
    ),
  );
}

// -- approvals: one dialog per pending call ---------------------------------------------------

// `onDecide(decisions)` sends them and returns what happens to them, in words ("sent",
// "queued ..."), shown under each dialog until the server answers (setApprovalNote).
export function renderApprovals(interrupt, onDecide) {
  const box = document.getElementById("approvals");
  box.replaceChildren();
  if (!interrupt || !interrupt.action_requests || interrupt.action_requests.length === 0) return;
  const requests = interrupt.action_requests;
  const decisions = new Array(requests.length).fill(null);
  const decide = (index, decision, dialog) => {
    decisions[index] = decision;
    dialog.classList.add("decided");
    dialog.querySelector(".chosen").textContent = `your decision: ${decision.type}`;
    for (const button of dialog.querySelectorAll("button")) button.disabled = true;
    if (decisions.every((d) => d !== null)) setApprovalNote(onDecide(decisions));
  };
  requests.forEach((request, index) => box.append(approvalDialog(request, index, decide)));
}

export function setApprovalNote(note) {
  for (const chosen of document.querySelectorAll("#approvals .chosen")) {
    const decision = chosen.textContent.split(" — ")[0];
    if (decision) chosen.textContent = note ? `${decision} — ${note}` : decision;
  }
}

function approvalDialog(request, index, decide) {
  const allowed = request.allowed_decisions || ["approve", "edit", "reject"];
  const args = el("textarea", { class: "edit-args", rows: 8, spellcheck: false, value: pretty(request.arguments) });
  const reason = el("input", { class: "reject-message", placeholder: "why? (the agent reads this)" });
  const problem = el("p", { class: "problem" });
  const saveEdit = () => {
    let parsed;
    try {
      parsed = JSON.parse(args.value);
    } catch {
      problem.textContent = "the arguments are not valid JSON";
      return;
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      problem.textContent = "the arguments must be a JSON object";
      return;
    }
    decide(index, { type: "edit", arguments: parsed }, dialog);
  };
  const editBox = el(
    "div",
    { class: "edit-box", hidden: true },
    args,
    el("button", { type: "button", class: "primary save-edit", text: "Approve with these arguments", onclick: saveEdit }),
  );
  const rejectBox = el(
    "div",
    { class: "reject-box", hidden: true },
    reason,
    el("button", {
      type: "button",
      class: "danger confirm-reject",
      text: "Reject",
      onclick: () => decide(index, { type: "reject", message: reason.value || null }, dialog),
    }),
  );
  const show = (box) => {
    editBox.hidden = box !== editBox;
    rejectBox.hidden = box !== rejectBox;
  };
  const button = (kind, attrs) => (allowed.includes(kind) ? el("button", { type: "button", ...attrs }) : null);
  const dialog = el(
    "div",
    { class: "approval", role: "dialog", "data-tool-call-id": request.tool_call_id, "data-tool": request.name },
    el("h4", { text: `Approve ${request.name}?` }),
    request.description ? el("p", { text: request.description }) : null,
    el("pre", { class: "approval-args", text: pretty(request.arguments) }),
    el(
      "div",
      { class: "approval-actions" },
      button("approve", { class: "primary approve", text: "Approve", onclick: () => decide(index, { type: "approve" }, dialog) }),
      button("edit", { class: "edit", text: "Edit arguments", onclick: () => show(editBox) }),
      button("reject", { class: "danger reject", text: "Reject…", onclick: () => show(rejectBox) }),
    ),
    editBox,
    rejectBox,
    problem,
    el("p", { class: "chosen" }),
  );
  return dialog;
}

// -- the connection and errors ----------------------------------------------------------------

const CONNECTION_TEXT = {
  reconnecting: (retryIn) =>
    `Connection lost: reconnecting${retryIn ? ` in ${retryIn} s` : "…"}. The agent's status ` +
    "above is the last one seen. Messages and approval decisions you send now are queued and " +
    "sent once the page is back online; Cancel needs a live connection.",
  offline: () =>
    "You are offline. Messages and approval decisions you send now are queued and sent once " +
    "the page is back online; Cancel needs a live connection.",
  gone: () => "This conversation is no longer available.",
  open: () => "Back online.",
};

export function showConnection(state, retryIn = 0) {
  const banner = document.getElementById("connection");
  banner.dataset.state = state;
  const text = CONNECTION_TEXT[state];
  banner.hidden = !text;
  if (text) banner.textContent = text(retryIn);
}

export function hideConnection() {
  document.getElementById("connection").hidden = true;
}

export function showError(message) {
  const box = document.getElementById("errors");
  const item = el("p", { class: "error", text: message });
  box.append(item);
  setTimeout(() => item.remove(), 8000);
}
