// sagents-client.js: the browser side of sagents' conversation socket (docs/web.md).
//
// One dependency-free ES module, served by the conversation router at
// `{prefix}/sagents-client.js`:
//
//   import { connect } from "/chat/sagents-client.js";
//   const chat = connect(`/chat/conversations/${id}/ws`, {
//     onEvent: (event) => { ... },            // every agent event, in order, with its `seq`
//     onAttached: ({ first, resumed }) => { if (first && !resumed) loadSnapshot(); },
//   });
//   chat.send("Hello");
//
// The server numbers the events of each agent instance from 1. When the connection drops, the
// client reconnects with back-off, passing the last `seq` and `instance` it saw: the server
// replays what was missed if that instance still runs ("resumed"), otherwise the page reloads
// the conversation over HTTP (onAttached says which). Messages, decisions, answers and retries
// made while not connected wait in order and go out on the next connection; cancel, dismiss
// and reset are not queued (sent late, they could stop or clear what came after the click).
// A refusal for good (close codes 4400 to 4499: forbidden, not found, an invalid id...) ends
// the attempts.

/**
 * @typedef {"connecting" | "open" | "reconnecting" | "offline" | "gone" | "closed"} ConnectionState
 *   "connecting": the first attempt; "open": connected; "reconnecting": the connection dropped
 *   and the next attempt is in `retryIn` seconds; "offline": the browser has no network (it
 *   retries when that changes); "gone": the server refused the conversation for good (`code`
 *   is the close code); "closed": close() was called.
 *
 * @typedef {object} ConnectionDetail
 * @property {number} queued   actions waiting for the connection
 * @property {number} [retryIn]  seconds until the next attempt ("reconnecting")
 * @property {number} [code]   the close code that ended the attempts ("gone")
 *
 * @typedef {object} Attachment
 * @property {number | null} instance  the agent instance followed; null: none runs now, the
 *   next one is followed as soon as it starts
 * @property {string} status  the agent's status ("not_running" when instance is null)
 * @property {boolean} resumed  the missed events follow (only on the first attachment of a
 *   connection that passed afterSeq and instance)
 * @property {boolean} first  the first attachment of this connection: when it is not resumed,
 *   load the conversation over HTTP (GET {prefix}/conversations/{id})
 *
 * @typedef {object} ServerError
 * @property {string} code  "invalid", "not_found", "conflict", "invalid_decision", ...
 * @property {string} message  what went wrong, in words
 * @property {string | null} ref  the ref of the action it answers (null: the connection's)
 * @property {string | null} action  that action's type ("send", "decide", ...)
 *
 * @typedef {object} Outcome
 * @property {string} ref  echoed in the server's answer (onAccepted / onError)
 * @property {"sent" | "queued" | "refused"} outcome  refused: not connected (cancel, dismiss,
 *   reset) or the conversation is gone
 *
 * @typedef {object} ConnectOptions
 * @property {number | null} [afterSeq]  resume after this seq (with instance)
 * @property {number | null} [instance]  the instance afterSeq belongs to
 * @property {(event: any, instance: number | null) => void} [onEvent]  each agent event
 * @property {(status: string, data: any) => void} [onStatus]  the agent's status: on each
 *   attachment and each status_changed event (data: the interrupt when "interrupted")
 * @property {(attachment: Attachment) => void} [onAttached]
 * @property {(error: ServerError) => void} [onError]
 * @property {(accepted: {action: string, ref: string}) => void} [onAccepted]  an action was taken
 * @property {(state: ConnectionState, detail: ConnectionDetail) => void} [onConnection]
 * @property {number} [maxDelay]  the longest wait between attempts, in ms (default 5000)
 */

const NOOP = () => {};

/** Close codes after which reconnecting would only be refused again. */
function refusedForGood(code) {
  return code >= 4400 && code < 4500 && code !== 4408 && code !== 4429;
}

/** The socket URL for `url`: relative to the page, http(s) turned into ws(s). */
function socketUrl(url) {
  const base = typeof location === "undefined" ? undefined : location.href;
  const resolved = new URL(url, base);
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  if (resolved.protocol === "https:") resolved.protocol = "wss:";
  return resolved;
}

/** One conversation's socket, as returned by {@link connect}. */
export class ConversationClient {
  /**
   * @param {string} url
   * @param {ConnectOptions} [options]
   */
  constructor(url, options = {}) {
    this.url = socketUrl(url);
    this.on = {
      event: options.onEvent || NOOP,
      status: options.onStatus || NOOP,
      attached: options.onAttached || NOOP,
      error: options.onError || NOOP,
      accepted: options.onAccepted || NOOP,
      connection: options.onConnection || NOOP,
    };
    this.maxDelay = options.maxDelay ?? 5000;
    /** @type {number | null} the last event's seq seen */
    this.lastSeq = options.afterSeq ?? null;
    /** @type {number | null} the instance lastSeq belongs to */
    this.instance = options.instance ?? null;
    /** @type {ConnectionState} */
    this.state = "connecting";
    this.attempts = 0; // failed attempts since the last open (the back-off)
    this.pending = [];
    this.actions = new Map(); // ref -> action type, until the server answers
    this.refs = 0;
    this.closed = false;
    this.timer = null;
    this.ws = null;
    this.fresh = true;
    this.detail = {};
    this.onOnline = () => this.#reconnectNow();
    this.onOffline = () => this.#wentOffline();
    if (typeof window !== "undefined") {
      window.addEventListener("online", this.onOnline);
      window.addEventListener("offline", this.onOffline);
    }
    // No callback before connect() returns: the first one is "open" (or why not).
    this.#open();
  }

  /** True while the socket is open (actions go out at once). */
  get connected() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** How many actions wait for the connection. */
  get queued() {
    return this.pending.length;
  }

  // -- actions --------------------------------------------------------------------------------

  /** Send a user message (queued while not connected). @param {string} text @returns {Outcome} */
  send(text) {
    return this.#act({ type: "send", text }, true);
  }

  /**
   * Decide on the pending calls, one decision per call, in order (queued while not connected):
   * {type: "approve"}, {type: "edit", arguments}, {type: "reject", message?},
   * {type: "respond", message}, {type: "answer", answers}.
   * @param {object[]} decisions @returns {Outcome}
   */
  decide(decisions) {
    return this.#act({ type: "decide", decisions }, true);
  }

  /**
   * Answer a pending question: one answer per question, in order (a choice or text, or a list
   * of choices). Shorthand for decide([{type: "answer", answers}]).
   * @param {(string | string[])[]} answers @returns {Outcome}
   */
  answer(answers) {
    return this.decide([{ type: "answer", answers }]);
  }

  /** Run again after a run that ended in an error (queued while not connected). @returns {Outcome} */
  retry() {
    return this.#act({ type: "retry" }, true);
  }

  /** Clear the pending approval or question without deciding (not queued). @returns {Outcome} */
  dismiss() {
    return this.#act({ type: "dismiss" }, false);
  }

  /** Cancel the run in progress (not queued). @returns {Outcome} */
  cancel() {
    return this.#act({ type: "cancel" }, false);
  }

  /**
   * Start the conversation over (not queued). @param {"keep" | "clear"} [files] @returns {Outcome}
   */
  reset(files = "keep") {
    return this.#act({ type: "reset", files }, false);
  }

  /** Close the socket for good. */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (typeof window !== "undefined") {
      window.removeEventListener("online", this.onOnline);
      window.removeEventListener("offline", this.onOffline);
    }
    this.pending = [];
    if (this.ws) this.ws.close(1000);
    this.#setState("closed");
  }

  #act(frame, queueable) {
    this.refs += 1;
    const ref = `r${this.refs}`;
    const framed = { ...frame, ref };
    if (this.closed || this.state === "gone") return { ref, outcome: "refused" };
    if (this.connected) {
      this.actions.set(ref, frame.type);
      this.ws.send(JSON.stringify(framed));
      return { ref, outcome: "sent" };
    }
    if (!queueable) return { ref, outcome: "refused" };
    this.actions.set(ref, frame.type);
    this.pending.push(framed);
    this.#setState(this.state, this.detail);
    return { ref, outcome: "queued" };
  }

  // -- the connection -------------------------------------------------------------------------

  #setState(state, detail = {}) {
    this.state = state;
    this.detail = detail;
    this.on.connection(state, { ...detail, queued: this.pending.length });
  }

  #open() {
    const url = new URL(this.url);
    if (this.lastSeq !== null && this.instance !== null) {
      url.searchParams.set("after_seq", String(this.lastSeq));
      url.searchParams.set("instance", String(this.instance));
    }
    const ws = new WebSocket(url);
    this.ws = ws;
    this.fresh = true; // the next attachment is this connection's first
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.attempts = 0;
      const waiting = this.pending.splice(0);
      this.#setState("open");
      for (const frame of waiting) ws.send(JSON.stringify(frame));
    };
    ws.onmessage = (message) => {
      if (ws === this.ws && !this.closed) this.#receive(message.data);
    };
    ws.onclose = (event) => this.#dropped(event, ws);
  }

  #receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    switch (frame.type) {
      case "event":
        this.instance = frame.instance;
        this.lastSeq = frame.event.seq;
        this.on.event(frame.event, frame.instance);
        if (frame.event.type === "status_changed") this.on.status(frame.event.status, frame.event.data);
        if (frame.event.type === "agent_shutdown") this.on.status("not_running", null);
        break;
      case "attached":
      case "detached": {
        const attached = frame.type === "attached";
        this.instance = attached ? frame.instance : null;
        if (!attached || !frame.resumed) this.lastSeq = null;
        const first = this.fresh;
        this.fresh = false;
        this.on.attached({
          instance: this.instance,
          status: frame.status,
          resumed: attached && frame.resumed === true,
          first,
        });
        this.on.status(frame.status, null);
        break;
      }
      case "ok":
        this.actions.delete(frame.ref);
        this.on.accepted({ action: frame.action, ref: frame.ref });
        break;
      case "error": {
        const action = frame.ref ? this.actions.get(frame.ref) || null : null;
        if (frame.ref) this.actions.delete(frame.ref);
        this.on.error({ code: frame.code, message: frame.message, ref: frame.ref || null, action });
        break;
      }
      default:
        break; // "pong", and frames of later versions
    }
  }

  #dropped(event, ws) {
    if (this.closed || ws !== this.ws) return;
    if (refusedForGood(event.code)) {
      this.pending = [];
      this.actions.clear();
      this.#setState("gone", { code: event.code });
      return;
    }
    const delay = Math.min(250 * 2 ** this.attempts, this.maxDelay);
    this.attempts += 1;
    if (typeof navigator !== "undefined" && navigator.onLine === false) this.#setState("offline");
    else this.#setState("reconnecting", { retryIn: Math.ceil(delay / 1000) });
    this.timer = setTimeout(() => this.#open(), delay);
  }

  // Without a network the socket is dead even if it does not know yet: close it, so that
  // nothing is sent into it and lost (what is sent now waits for the next connection).
  #wentOffline() {
    if (this.closed || this.state === "gone") return;
    this.#setState("offline");
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.close(4000, "offline");
    }
  }

  // The network came back: no reason to wait for the back-off.
  #reconnectNow() {
    if (this.closed || this.state === "open" || this.state === "gone") return;
    if (this.ws.readyState === WebSocket.CONNECTING) return; // an attempt is under way
    clearTimeout(this.timer);
    this.#setState("reconnecting");
    this.#open();
  }
}

/**
 * Open a conversation's socket, `{prefix}/conversations/{id}/ws` (relative to the page, or a
 * ws(s):// or http(s):// URL; its query string is kept: e.g. a token for the app's auth).
 * @param {string} url
 * @param {ConnectOptions} [options]
 * @returns {ConversationClient}
 */
export function connect(url, options = {}) {
  return new ConversationClient(url, options);
}
