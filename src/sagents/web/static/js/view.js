// Rendering: display messages, streamed text, tool calls, todos, files, approvals.
// Everything user- or model-provided goes through textContent, never innerHTML.

const STATUS_TEXT = {
  idle: "idle",
  running: "running",
  interrupted: "awaiting approval",
  cancelled: "cancelled",
  error: "error",
  paused: "paused",
  not_running: "not running",
};

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key.startsWith("data-")) node.setAttribute(key, String(value));
    else node[key] = value;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function statusText(status) {
  return STATUS_TEXT[status] || status;
}

export function showStatus(status) {
  const badge = document.getElementById("agent-status");
  badge.dataset.status = status;
  badge.textContent = statusText(status);
  document.getElementById("cancel").hidden = status !== "running";
}

function pretty(value) {
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

// -- messages ---------------------------------------------------------------------------------

export class MessageList {
  constructor(container) {
    this.container = container;
    this.rows = new Map(); // sequence -> element
    this.toolCards = new Map(); // tool_call_id -> card element
    this.toolStatus = new Map(); // tool_call_id -> live status from events
    this.streaming = null;
  }

  clear() {
    this.container.replaceChildren();
    this.rows.clear();
    this.toolCards.clear();
    this.toolStatus.clear();
    this.streaming = null;
  }

  scroll() {
    this.container.scrollTop = this.container.scrollHeight;
  }

  // A persisted display message (from a snapshot or a display_message_saved event).
  add(row) {
    if (row.sequence !== null && this.rows.has(row.sequence)) return;
    if (row.type === "assistant") this.dropFinishedStream();
    const node = this.render(row);
    if (!node) return;
    node.dataset.seq = row.sequence;
    // Keep rows in sequence order; streamed text stays below them.
    let before = null;
    for (const [seq, other] of this.rows) {
      if (seq > row.sequence && (before === null || Number(before.dataset.seq) > seq)) {
        before = other;
      }
    }
    if (before === null) before = this.container.querySelector(".message.streaming");
    this.container.insertBefore(node, before);
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
      case "tool_call":
        return this.toolCard(row);
      case "tool_result": {
        const card = this.toolCards.get(row.tool_call_id);
        if (card) {
          card.querySelector(".tool-result").textContent = content.text || "";
          card.querySelector(".tool-result").hidden = !content.text;
          this.setToolStatus(row.tool_call_id, row.status || "completed");
          return el("span", { class: "row-marker", hidden: true });
        }
        return el("div", { class: "message tool-result-row", text: `${content.name}: ${content.text}` });
      }
      default:
        return el("div", { class: `message ${row.type}`, text: content.text || pretty(content) });
    }
  }

  toolCard(row) {
    const content = row.content || {};
    const id = row.tool_call_id;
    const status = this.toolStatus.get(id) || row.status || "executing";
    const decision = row.metadata && row.metadata.decision;
    const card = el(
      "div",
      { class: "message tool-call", "data-tool-call-id": id, "data-tool": content.name, "data-status": status },
      el(
        "div",
        { class: "tool-head" },
        el("span", { class: "tool-name", text: content.name }),
        el("span", { class: "tool-status", text: status }),
        decision ? el("span", { class: "tool-decision", text: `decision: ${decision.type}` }) : null,
      ),
      el("details", {}, el("summary", { text: "arguments" }), el("pre", { class: "tool-args", text: pretty(content.arguments) })),
      el("pre", { class: "tool-result", hidden: true }),
    );
    if (id) this.toolCards.set(id, card);
    return card;
  }

  setDecision(id, decision) {
    const card = this.toolCards.get(id);
    if (!card || !decision) return;
    let label = card.querySelector(".tool-decision");
    if (!label) {
      label = el("span", { class: "tool-decision" });
      card.querySelector(".tool-head").append(label);
    }
    label.textContent = `decision: ${decision.type}`;
  }

  setToolStatus(id, status) {
    if (!id) return;
    this.toolStatus.set(id, status);
    const card = this.toolCards.get(id);
    if (card) {
      card.dataset.status = status;
      card.querySelector(".tool-status").textContent = status;
    }
  }

  // -- streamed text (llm_deltas), replaced by the saved assistant row -------------------------

  delta(text) {
    if (!text) return;
    if (!this.streaming) {
      this.streaming = el("div", { class: "message assistant streaming" }, el("div", { class: "bubble" }));
      this.container.append(this.streaming);
    }
    this.streaming.querySelector(".bubble").textContent += text;
    this.scroll();
  }

  finishStream(message) {
    if (!this.streaming) return;
    const text = contentText(message && message.data ? message.data.content : "");
    if (!text) this.streaming.remove();
    else this.streaming.classList.add("finished");
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
}

export function contentText(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .map((block) => (typeof block === "string" ? block : block && block.type === "text" ? block.text : ""))
      .join("");
  }
  return "";
}

// -- todos and files --------------------------------------------------------------------------

const TODO_MARK = { pending: "○", in_progress: "◐", completed: "●", cancelled: "×" };

export function renderTodos(todos) {
  const list = document.getElementById("todos");
  if (!todos || todos.length === 0) {
    list.replaceChildren(el("li", { class: "empty", text: "no plan yet" }));
    return;
  }
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
    if (decisions.every((d) => d !== null)) onDecide(decisions);
  };
  requests.forEach((request, index) => {
    const allowed = request.allowed_decisions || ["approve", "edit", "reject"];
    const args = el("textarea", { class: "edit-args", rows: 8, spellcheck: false, value: pretty(request.arguments) });
    const reason = el("input", { class: "reject-message", placeholder: "why? (the agent reads this)" });
    const problem = el("p", { class: "problem" });
    const editBox = el(
      "div",
      { class: "edit-box", hidden: true },
      args,
      el("button", {
        type: "button",
        class: "primary save-edit",
        text: "Approve with these arguments",
        onclick: () => {
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
        },
      }),
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
    const dialog = el(
      "div",
      { class: "approval", role: "dialog", "data-tool-call-id": request.tool_call_id, "data-tool": request.name },
      el("h4", { text: `Approve ${request.name}?` }),
      request.description ? el("p", { text: request.description }) : null,
      el("pre", { class: "approval-args", text: pretty(request.arguments) }),
      el(
        "div",
        { class: "approval-actions" },
        allowed.includes("approve")
          ? el("button", {
              type: "button",
              class: "primary approve",
              text: "Approve",
              onclick: () => decide(index, { type: "approve" }, dialog),
            })
          : null,
        allowed.includes("edit")
          ? el("button", {
              type: "button",
              class: "edit",
              text: "Edit arguments",
              onclick: () => {
                editBox.hidden = false;
                rejectBox.hidden = true;
              },
            })
          : null,
        allowed.includes("reject")
          ? el("button", {
              type: "button",
              class: "danger reject",
              text: "Reject…",
              onclick: () => {
                rejectBox.hidden = false;
                editBox.hidden = true;
              },
            })
          : null,
      ),
      editBox,
      rejectBox,
      problem,
      el("p", { class: "chosen" }),
    );
    box.append(dialog);
  });
}

export function showError(message) {
  const box = document.getElementById("errors");
  const item = el("p", { class: "error", text: message });
  box.append(item);
  setTimeout(() => item.remove(), 8000);
}
