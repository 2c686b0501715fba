// DOM rendering for the debugger page. Data is always set with textContent, never as HTML:
// messages and tool arguments come from models and users.

const MAX_EVENTS = 300;

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

export function formatSeconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 60) return `${value.toFixed(1)} s`;
  const minutes = Math.floor(value / 60);
  const seconds = Math.floor(value % 60).toString().padStart(2, "0");
  if (minutes < 60) return `${minutes} m ${seconds} s`;
  return `${Math.floor(minutes / 60)} h ${(minutes % 60).toString().padStart(2, "0")} m`;
}

export function renderAgents(tbody, rows, selected, onSelect) {
  const cells = (row) => [
    ["id", row.id],
    ["status", row.has_interrupt ? `${row.status} (approval pending)` : row.status],
    ["messages num", String(row.message_count)],
    ["uptime num", formatSeconds(row.uptime)],
    ["viewers num", String(row.viewer_count)],
    ["subscribers num", String(row.subscriber_count)],
    ["inactivity num", formatSeconds(row.inactivity_remaining)],
    ["conversation", row.conversation_id ?? "—"],
    ["host", row.node ?? "—"],
  ];
  // The host column shows only for agents on a cluster (a Ray backend names each host).
  tbody.closest("table")?.classList.toggle("clustered", rows.some((row) => row.node));
  tbody.replaceChildren(
    ...rows.map((row) => {
      const tr = el("tr", { "data-agent-id": row.id, "data-status": row.status, tabIndex: 0 });
      if (row.id === selected) tr.classList.add("selected");
      for (const [name, text] of cells(row)) tr.append(el("td", { class: name, text, title: text }));
      tr.addEventListener("click", () => onSelect(row.id));
      tr.addEventListener("keydown", (e) => e.key === "Enter" && onSelect(row.id));
      return tr;
    }),
  );
}

export function renderTelemetry(tbody, counters) {
  tbody.replaceChildren(
    ...Object.entries(counters).map(([name, count]) =>
      el(
        "tr",
        { "data-event": name, class: count ? "" : "zero" },
        el("th", { text: name.replace(/^sagents\./, "") }),
        el("td", { class: "num", text: String(count) }),
      ),
    ),
  );
}

function contentText(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((part) => (typeof part === "string" ? part : part.text ?? "")).join("");
  }
  return JSON.stringify(content);
}

function messageItem(message) {
  const data = message.data ?? {};
  const item = el("li", { class: `message ${message.type}`, "data-type": message.type });
  const role = message.type === "tool" ? `tool ${data.name ?? ""}` : message.type;
  item.append(el("span", { class: "role", text: role }));
  const text = contentText(data.content);
  if (text) item.append(el("span", { class: "content", text }));
  for (const call of data.tool_calls ?? []) {
    item.append(el("code", { class: "tool-call", text: `${call.name}(${JSON.stringify(call.args)})` }));
  }
  return item;
}

export function renderState(nodes, state) {
  const messages = state.messages ?? [];
  nodes.messages.replaceChildren(...messages.map(messageItem));
  nodes.messageCount.textContent = String(messages.length);
  renderTodos(nodes.todos, state.todos ?? []);
  nodes.interrupt.textContent = state.interrupt ? JSON.stringify(state.interrupt, null, 2) : "none";
  nodes.interrupt.classList.toggle("pending", Boolean(state.interrupt));
  nodes.metadata.textContent = JSON.stringify(state.metadata ?? {}, null, 2);
}

// Each middleware with its debug_summary(): a key/value table, or text shown as it is.
export function renderMiddleware(list, count, middleware) {
  count.textContent = String(middleware.length);
  if (!middleware.length) {
    list.replaceChildren(el("li", { class: "empty", text: "no middleware" }));
    return;
  }
  list.replaceChildren(
    ...middleware.map((mw) => {
      const body =
        typeof mw.summary === "string"
          ? el("pre", { class: "json", text: mw.summary })
          : el(
              "table",
              { class: "summary" },
              el(
                "tbody",
                {},
                ...Object.entries(mw.summary ?? {}).map(([key, value]) =>
                  el(
                    "tr",
                    {},
                    el("th", { text: key }),
                    el("td", { text: typeof value === "string" ? value : JSON.stringify(value) }),
                  ),
                ),
              ),
            );
      return el(
        "li",
        { "data-key": mw.key },
        el("details", {}, el("summary", { text: `${mw.name} (${mw.key})` }), body),
      );
    }),
  );
}

export function renderTodos(list, todos) {
  if (!todos.length) {
    list.replaceChildren(el("li", { class: "empty", text: "no todos" }));
    return;
  }
  list.replaceChildren(
    ...todos.map((todo) =>
      el("li", { class: `todo ${todo.status}`, "data-status": todo.status, text: todo.content }),
    ),
  );
}

function summary(event) {
  switch (event.type) {
    case "status_changed":
      return event.status;
    case "llm_deltas":
      return event.deltas.map((d) => contentText(d.data?.content ?? "")).join("");
    case "llm_message":
      return contentText(event.message.data?.content ?? "");
    case "tool_call_identified":
    case "tool_execution_started":
    case "tool_execution_completed":
      return event.name;
    case "tool_execution_failed":
      return `${event.name}: ${event.error}`;
    case "todos_updated":
      return `${event.todos.length} todos`;
    case "agent_shutdown":
      return event.reason;
    case "agent_state_update":
      return `${event.state.messages.length} messages`;
    case "middleware_action":
      return event.middleware;
    case "subscription_overflow":
      return `${event.dropped} events dropped`;
    case "chain_error":
    case "llm_error":
    case "persistence_error":
      return event.error;
    default:
      return "";
  }
}

export function appendEvent(list, event) {
  const text = summary(event);
  const item = el(
    "li",
    { class: `event ${event.type}`, "data-type": event.type },
    el(
      "details",
      {},
      el(
        "summary",
        {},
        el("span", { class: "seq", text: `#${event.seq}` }),
        el("span", { class: "type", text: event.type }),
        el("span", { class: "summary", text: text.length > 120 ? `${text.slice(0, 120)}…` : text }),
      ),
      el("pre", { class: "json", text: JSON.stringify(event, null, 2) }),
    ),
  );
  list.append(item);
  while (list.childElementCount > MAX_EVENTS) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}
