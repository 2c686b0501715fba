// Messages queued for the next turn (`message_queued`) and the follow-up limit
// (`follow_ups_limited`).
//
// A message that arrives while a run is in progress waits for the follow-up turn after that
// run. The page shows it last, marked, until its own display row is saved: the runtime appends
// the queued messages to the conversation right when the follow-up turn starts (or, past the
// follow-up limit, without one), so their rows are the signal every path gives. The status is
// not: a run that ends done continues with the queued messages without any status change, and
// one that ends waiting for a decision or failed says so before the follow-up's `running`.
//
// The snapshot does not hold a queued message (it is not in the agent's state yet); the
// socket's catch-up sends the `message_queued` events of the messages still waiting (an agent
// of the server's own process), so a new tab shows them too. The page also keeps the ones it
// shows in the tab's sessionStorage, for an agent whose catch-up cannot say (on another host):
// a reload shows them again, unless the snapshot holds their rows by then or the agent
// instance that queued them is no longer the one running (a stopped agent keeps its queued
// messages in its state: their rows are in the snapshot). Both name a message by its event's
// `seq`, so it is shown once.

import { contentText } from "./dom.js";

// The display row a queued message becomes, by its message type: only these two are matched
// to rows; another kind of message loses its mark when the agent comes to rest.
const ROW_TYPE = { human: "user", ai: "assistant" };

// Statuses in which no message waits for a follow-up turn: the queued ones are in the
// conversation (an `interrupted` or an `error` can be followed at once by the follow-up turn).
export const AT_REST = new Set(["idle", "cancelled", "paused", "not_running"]);

// The events that can change which messages are shown queued (kept for a reload).
export const QUEUE_EVENTS = new Set([
  "message_queued",
  "display_message_saved",
  "follow_ups_limited",
  "status_changed",
  "agent_reset",
  "agent_shutdown",
]);

const key = (conversationId) => `sagents.queued.${conversationId}`;

// What the page shows of a `message_queued` event, or null for a tool's hidden message.
// `afterSeq`: the last row the page knew of (the message's row comes after it); `instance`: the
// agent instance that queued it.
export function queuedEntry(event, { afterSeq, instance }) {
  const message = event.message;
  if (!message) return null;
  return {
    kind: ROW_TYPE[message.type] || "other",
    text: contentText(message.data ? message.data.content : ""),
    fromTool: event.from_tool === true,
    seq: event.seq,
    afterSeq,
    instance,
  };
}

// Whether the stored `row` is the display row of the queued `entry`.
export function isRowOf(entry, row) {
  const text = row.content ? row.content.text : undefined;
  return row.type === entry.kind && text === entry.text && row.sequence > entry.afterSeq;
}

// Keep the queued messages shown for `conversationId` (none: forget them).
export function remember(conversationId, entries) {
  try {
    if (entries.length) sessionStorage.setItem(key(conversationId), JSON.stringify(entries));
    else sessionStorage.removeItem(key(conversationId));
  } catch {
    // storage full or disabled: a reload shows them once their rows are saved
  }
}

// The queued messages of `conversationId` that still wait, given its freshly loaded snapshot.
export function recall(conversationId, snapshot) {
  let entries;
  try {
    entries = JSON.parse(sessionStorage.getItem(key(conversationId)) || "[]");
  } catch {
    return [];
  }
  // Queued messages wait only while a run is in progress or a decision is pending; at rest the
  // agent has added them to the conversation (their rows are in the snapshot or on their way).
  const busy = snapshot.status === "running" || snapshot.status === "interrupted";
  if (!Array.isArray(entries) || !busy) return [];
  const rows = [...snapshot.messages];
  return entries.filter((entry) => {
    if (entry.instance !== snapshot.instance) return false;
    const row = rows.findIndex((candidate) => candidate && isRowOf(entry, candidate));
    if (row === -1) return true;
    rows[row] = null; // one row settles one message
    return false;
  });
}

// The notice of `follow_ups_limited`, in words.
export function followUpsText({ max_follow_ups: limit, added }) {
  const what = added === 1 ? "1 message was" : `${added} messages were`;
  const why =
    limit === 0
      ? "follow-up turns are turned off"
      : `the follow-up limit (${limit} ${limit === 1 ? "turn" : "turns"} in a row) was reached`;
  return `${what} added without an answer: ${why}. Send a message to continue.`;
}
