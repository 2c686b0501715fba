// Rendering: display messages, streamed text, tool calls, todos, files, errors (the approvals
// and questions are approvals.js). Everything user- or model-provided goes through
// textContent, never innerHTML.

import { ToolCards } from "./cards.js";
import { contentText, el, pretty } from "./dom.js";
import { isRowOf } from "./queued.js";

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

// `asking`: what the agent waits for is the answer to a question, not an approval.
export function statusText(status, asking = false) {
  if (status === "interrupted" && asking) return "awaiting your answer";
  return STATUS_TEXT[status] || status;
}

export function showStatus(status, asking = false) {
  const badge = document.getElementById("agent-status");
  badge.dataset.status = status;
  badge.textContent = statusText(status, asking);
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
// (the streamed reply, a run's error, a message still queued) stay below every stored row; the
// messages queued for the next turn stay last.
export class MessageList {
  constructor(container) {
    this.container = container;
    this.rows = new Map(); // sequence -> element
    this.userSeqs = []; // sequences of user rows, ascending: they start the turns
    this.cards = new ToolCards((node, seq) => this.place(node, seq), (seq) => this.turnOf(seq));
    this.streaming = null;
    this.resetSeq = null;
  }

  // keepPending: a reload of the same conversation keeps the messages still queued.
  clear({ keepPending = false } = {}) {
    const pending = keepPending ? [...this.container.querySelectorAll(":scope > .message.pending")] : [];
    this.container.replaceChildren(...pending);
    this.rows.clear();
    this.userSeqs = [];
    this.cards.clear();
    this.streaming = null;
    this.resetSeq = null; // the sequence of the last `reset` row shown
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
    // A `reset` row starts the conversation over: what came before it is not shown.
    if (this.resetSeq !== null && row.sequence !== null && row.sequence <= this.resetSeq) return;
    if (row.type === "reset") {
      this.clear({ keepPending: true });
      this.resetSeq = row.sequence;
    }
    // A saved reply replaces its streamed twin, also when the page already had the row (the
    // snapshot and the live events can both bring it after a reload).
    if (row.type === "assistant") this.dropFinishedStream();
    if (row.sequence !== null && this.rows.has(row.sequence)) return;
    this.takeQueued(row);
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
      case "reset":
        return el(
          "div",
          { class: "message reset-divider", role: "separator" },
          el("span", {
            text:
              content.files === "clear"
                ? "Conversation reset: messages, plan and files cleared"
                : "Conversation reset: messages and plan cleared; files kept (your conversations share them)",
          }),
        );
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

  // What the agent did on its own (run_halted, follow_ups_limited): said once per kind, until
  // the next run starts.
  showNotice(text, kind = "halted") {
    for (const node of this.container.querySelectorAll(`.message.notice[data-notice="${kind}"]`)) node.remove();
    this.place(el("div", { class: "message notice", role: "status", "data-notice": kind, text }), Infinity);
    this.scroll();
  }

  clearNotices() {
    for (const node of this.container.querySelectorAll(".message.notice")) node.remove();
  }

  // -- messages queued for the next turn (message_queued; see queued.js) -----------------------

  // The sequence of the last stored row shown: a queued message's row comes after it.
  lastSeq() {
    let last = 0;
    for (const seq of this.rows.keys()) if (typeof seq === "number" && seq > last) last = seq;
    return last;
  }

  // `entry`: from queuedEntry. Shown last, marked, until its row arrives; once (a reload gets
  // it from the tab's storage and from the socket's catch-up).
  addQueued(entry) {
    const shown = `:scope > [data-queued][data-seq="${entry.seq}"]`;
    if (entry.seq !== undefined && this.container.querySelector(shown)) return;
    const kind = entry.kind === "user" || entry.kind === "assistant" ? entry.kind : "queued-other";
    const note = entry.fromTool
      ? "queued by a tool — taken up after the current reply"
      : "queued — answered after the current reply";
    const node = el(
      "div",
      {
        class: `message ${kind} queued`,
        "data-queued": entry.kind,
        "data-after-seq": entry.afterSeq,
        "data-seq": entry.seq,
        "data-instance": entry.instance,
        "data-from-tool": entry.fromTool ? "true" : null,
      },
      el("div", { class: "bubble", text: entry.text }),
      el("p", { class: "note", text: note }),
    );
    this.container.append(node);
    this.scroll();
  }

  entryOf(node) {
    const instance = node.dataset.instance;
    const seq = node.dataset.seq;
    return {
      kind: node.dataset.queued,
      text: node.querySelector(".bubble").textContent,
      fromTool: node.dataset.fromTool === "true",
      seq: seq === undefined ? undefined : Number(seq),
      afterSeq: Number(node.dataset.afterSeq),
      instance: instance === undefined ? null : Number(instance),
    };
  }

  // The messages still marked queued, oldest first (what the page keeps for a reload).
  queuedEntries() {
    return [...this.container.querySelectorAll(":scope > .message.queued")].map((node) => this.entryOf(node));
  }

  // A stored row replaces the queued message it is the row of: its turn has started.
  takeQueued(row) {
    for (const node of this.container.querySelectorAll(":scope > [data-queued]")) {
      if (isRowOf(this.entryOf(node), row)) {
        node.remove();
        return;
      }
    }
  }

  // The agent came to rest or reached the follow-up limit: every queued message is in the
  // conversation now, so the mark goes (the bubble stays until its row replaces it).
  settleQueued() {
    for (const node of this.container.querySelectorAll(":scope > .message.queued")) {
      node.classList.remove("queued");
      node.querySelector(".note").remove();
    }
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

// -- the connection and errors ----------------------------------------------------------------

const CONNECTION_TEXT = {
  reconnecting: (retryIn) =>
    `Connection lost: reconnecting${retryIn ? ` in ${retryIn} s` : "…"}. The agent's status ` +
    "above is the last one seen. Messages and approval decisions you send now are queued and " +
    "sent once the page is back online; Cancel, Dismiss and Reset need a live connection.",
  offline: () =>
    "You are offline. Messages and approval decisions you send now are queued and sent once " +
    "the page is back online; Cancel, Dismiss and Reset need a live connection.",
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
