// Tool call cards, and the fold that gathers a turn's plan updates (write_todos) into one line.
//
// A card says what really happened to its call. The stored row alone cannot: a call saved
// while its turn waits for an approval is stored as "executing" although it has not run, and
// an edited call keeps the model's arguments. So a card's status comes from, in order: an end
// the page saw or read (completed, failed...), a start the page saw (tool_execution_started),
// and otherwise the agent's state — behind a pending approval it is "waiting", in a run it
// may be running, and once the agent stopped a call that never ended did not run.

import { el, pretty } from "./dom.js";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

const LABEL = {
  executing: "running",
  completed: "done",
  failed: "failed",
  cancelled: "cancelled",
  rejected: "rejected: not run",
  interrupted: "awaiting your approval",
  asking: "awaiting your answer",
  waiting: "waiting: not run yet",
  not_run: "not run",
};

// Shown on a fold's line, the least finished first.
const FOLD_ORDER = ["failed", "interrupted", "waiting", "executing", "not_run", "rejected", "cancelled"];

function sameJson(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

// A person's decision on a call, in words: the answers to its questions, the reply given in
// place of the tool, or the kind of decision.
function decisionText(decision) {
  if (decision.type === "answer" && Array.isArray(decision.answers)) {
    const shown = decision.answers.map((answer) => (Array.isArray(answer) ? answer.join(", ") : String(answer)));
    return `answered: ${shown.join(" · ")}`;
  }
  if (decision.type === "respond") return `replied: ${decision.message || ""}`;
  return `decision: ${decision.type}`;
}

export class ToolCards {
  // place(node, seq) puts a top-level node in sequence order; turnOf(seq) names its turn.
  constructor(place, turnOf) {
    this.place = place;
    this.turnOf = turnOf;
    this.records = new Map(); // tool_call_id -> {card, row, live, decision, original}
    this.early = new Map(); // tool_call_id -> what events said before the card was saved
    this.folds = new Map(); // turn (sequence of its user row) -> fold element
    this.agent = { status: "not_running", interrupt: false };
    this.asking = new Set(); // tool_call_ids of pending calls that ask the person questions
  }

  clear() {
    this.records.clear();
    this.early.clear();
    this.folds.clear();
    this.asking.clear();
  }

  // A stored tool_call row: its card, placed (inside the turn's fold for write_todos).
  add(row) {
    const content = row.content || {};
    const card = this.card(row);
    card.dataset.seq = row.sequence;
    if (content.name !== "write_todos") {
      this.place(card, row.sequence);
      return card;
    }
    const fold = this.foldFor(row.sequence);
    const body = fold.querySelector(".fold-body");
    const after = [...body.children].find((other) => Number(other.dataset.seq) > row.sequence);
    body.insertBefore(card, after || null);
    this.updateFold(fold);
    return card;
  }

  card(row) {
    const content = row.content || {};
    const card = el(
      "div",
      { class: "message tool-call", "data-tool-call-id": row.tool_call_id, "data-tool": content.name },
      el(
        "div",
        { class: "tool-head" },
        el("span", { class: "tool-name", text: content.name }),
        el("span", { class: "tool-status" }),
        el("span", { class: "tool-edited", text: "arguments edited before it ran", hidden: true }),
      ),
      el(
        "details",
        { class: "tool-arguments" },
        el("summary", { text: "arguments" }),
        el("pre", { class: "tool-args", text: pretty(content.arguments) }),
        el(
          "div",
          { class: "tool-original", hidden: true },
          el("small", { text: "the model's original arguments:" }),
          el("pre", { class: "tool-args-original" }),
        ),
      ),
      el("pre", { class: "tool-result", hidden: true }),
    );
    const record = { card, row: row.status, live: null, decision: null, original: content.arguments };
    const id = row.tool_call_id;
    if (id) {
      const early = this.early.get(id);
      this.early.delete(id);
      this.records.set(id, record);
      if (early && early.live) record.live = early.live;
      if (early && early.args) this.ranWith(record, early.args);
    }
    if (row.metadata && row.metadata.decision) this.decide(record, row.metadata.decision);
    this.render(record);
    return card;
  }

  // -- what events and updated rows say -------------------------------------------------------

  // The tool started, with the arguments it really runs with (an edit changed them).
  started(id, args) {
    this.setLive(id, "executing", args);
  }

  setLive(id, status, args = null) {
    if (!id) return;
    const record = this.records.get(id);
    if (!record) {
      const early = this.early.get(id) || {};
      if (!TERMINAL.has(early.live)) early.live = status;
      if (args) early.args = args;
      this.early.set(id, early);
      return;
    }
    if (!TERMINAL.has(record.live)) record.live = status;
    if (args) this.ranWith(record, args);
    this.render(record);
  }

  // A stored tool_call row changed (display_message_updated): its status or its decision.
  update(row) {
    const record = this.records.get(row.tool_call_id);
    if (!record) return;
    if (row.status) record.row = row.status;
    if (row.metadata && row.metadata.decision) this.decide(record, row.metadata.decision);
    this.render(record);
  }

  // A tool_result row: shown in its call's card. False when the page has no such card.
  result(row) {
    const record = this.records.get(row.tool_call_id);
    if (!record) return false;
    const content = row.content || {};
    const result = record.card.querySelector(".tool-result");
    result.textContent = content.text || "";
    result.hidden = !content.text;
    const status = row.status || "completed";
    if (TERMINAL.has(status)) record.live = status;
    this.render(record);
    return true;
  }

  setDecision(id, decision) {
    const record = this.records.get(id);
    if (!record || !decision) return;
    this.decide(record, decision);
    this.render(record);
  }

  // The pending calls that wait for answers rather than an approval.
  setAsking(ids) {
    this.asking = new Set(ids);
  }

  // The agent's status and whether an approval is pending decide what an unfinished call is.
  setAgent(status, interrupt) {
    this.agent = { status, interrupt };
    for (const record of this.records.values()) this.render(record);
  }

  // -- rendering --------------------------------------------------------------------------------

  decide(record, decision) {
    record.decision = decision.type;
    let label = record.card.querySelector(".tool-decision");
    if (!label) {
      label = el("span", { class: "tool-decision" });
      record.card.querySelector(".tool-head").append(label);
    }
    label.textContent = decisionText(decision);
    if (decision.type === "edit" && decision.arguments) this.ranWith(record, decision.arguments);
  }

  // Show the arguments the call runs with, and the model's own when they differ.
  ranWith(record, args) {
    if (sameJson(args, record.original)) return;
    const card = record.card;
    card.dataset.edited = "true";
    card.querySelector(".tool-args").textContent = pretty(args);
    card.querySelector(".tool-arguments > summary").textContent = "arguments (edited)";
    card.querySelector(".tool-edited").hidden = false;
    card.querySelector(".tool-original").hidden = false;
    card.querySelector(".tool-args-original").textContent = pretty(record.original);
  }

  shown(record) {
    const { row, live } = record;
    const ended = TERMINAL.has(live) ? live : TERMINAL.has(row) ? row : null;
    if (ended) return ended === "failed" && record.decision === "reject" ? "rejected" : ended;
    if (live === "executing") return "executing"; // the page saw it start
    const asked = live === "interrupted" || row === "interrupted";
    if (this.agent.interrupt) return asked ? "interrupted" : "waiting";
    if (this.agent.status === "running") return asked ? "waiting" : "executing";
    return "not_run";
  }

  render(record) {
    const status = this.shown(record);
    record.card.dataset.status = status;
    const asking = status === "interrupted" && this.asking.has(record.card.dataset.toolCallId);
    record.card.querySelector(".tool-status").textContent = LABEL[asking ? "asking" : status] || status;
    const fold = record.card.closest(".todo-fold");
    if (fold) this.updateFold(fold);
  }

  // -- the plan fold: one line per turn, opened on click ----------------------------------------

  foldFor(seq) {
    const turn = this.turnOf(seq);
    let fold = this.folds.get(turn);
    if (!fold) {
      fold = el(
        "details",
        { class: "message todo-fold", "data-turn": turn },
        el("summary", {}, el("span", { class: "fold-title" }), " ", el("span", { class: "fold-status" })),
        el("div", { class: "fold-body" }),
      );
      this.folds.set(turn, fold);
    }
    // At the place of the turn's first plan update.
    if (fold.dataset.seq === undefined || seq < Number(fold.dataset.seq)) {
      fold.dataset.seq = seq;
      this.place(fold, seq);
    }
    return fold;
  }

  updateFold(fold) {
    const statuses = [...fold.querySelectorAll(".tool-call")].map((card) => card.dataset.status);
    const count = statuses.length;
    fold.querySelector(".fold-title").textContent = count === 1 ? "plan updated" : `plan updated ${count} times`;
    const notable = FOLD_ORDER.find((status) => statuses.includes(status));
    const status = fold.querySelector(".fold-status");
    status.dataset.status = notable || "completed";
    if (!notable) {
      status.textContent = "· all done";
      return;
    }
    const number = statuses.filter((s) => s === notable).length;
    status.textContent = `· ${number} ${LABEL[notable]}`;
  }
}
