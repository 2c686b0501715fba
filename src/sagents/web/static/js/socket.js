// One websocket per open conversation, reconnecting with its last event number.
//
// The server numbers the events of each agent instance from 1; a reconnect passes the last
// `seq` and `instance` seen, and the server replays what was missed when that instance still
// runs ("resumed": true). Otherwise the page reloads the conversation over HTTP.
//
// Connection states, reported through onState(state, detail):
//   "connecting"    the first attempt;
//   "open"          connected;
//   "reconnecting"  the connection dropped; detail.retryIn says when the next attempt is (s);
//   "offline"       the browser says it has no network (it retries when that changes);
//   "gone"          the server refused this conversation for good: no more attempts.
// Frames sent while not open wait in order and go out on the next connection; send() says
// which happened, so that the page can tell the person.

const REFUSED_FOR_GOOD = new Set([4403, 4404, 4422]);

export class ConversationSocket {
  constructor(conversationId, onFrame, onState) {
    this.conversationId = conversationId;
    this.onFrame = onFrame;
    this.onState = onState;
    this.lastSeq = null;
    this.instance = null;
    this.closed = false;
    this.retry = 0;
    this.pending = [];
    this.refs = 0;
    this.state = "connecting";
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => this.wentOffline();
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    this.open();
  }

  setState(state, detail = {}) {
    this.state = state;
    this.onState(state, detail);
  }

  open() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = new URLSearchParams();
    if (this.lastSeq !== null && this.instance !== null) {
      query.set("after_seq", String(this.lastSeq));
      query.set("instance", String(this.instance));
    }
    const id = encodeURIComponent(this.conversationId);
    const url = `${scheme}://${location.host}/ws/conversations/${id}?${query}`;
    const ws = new WebSocket(url);
    this.ws = ws;
    this.fresh = true; // the next attached/detached frame is this connection's first
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.retry = 0;
      this.setState("open");
      for (const frame of this.pending.splice(0)) ws.send(JSON.stringify(frame));
    };
    ws.onmessage = (message) => this.receive(message.data);
    ws.onclose = (event) => this.dropped(event, ws);
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.type === "event") {
      this.instance = frame.instance;
      this.lastSeq = frame.event.seq;
    } else if (frame.type === "attached") {
      this.instance = frame.instance;
      if (!frame.resumed) this.lastSeq = null;
    } else if (frame.type === "detached") {
      this.instance = null;
      this.lastSeq = null;
    }
    const first = this.fresh && (frame.type === "attached" || frame.type === "detached");
    if (first) this.fresh = false;
    this.onFrame(frame, first);
  }

  dropped(event, ws) {
    if (this.closed || ws !== this.ws) return;
    // 44xx: the server refused this conversation for good (not found, forbidden, invalid
    // id); reconnecting would only be refused again.
    if (REFUSED_FOR_GOOD.has(event.code)) {
      this.pending = [];
      this.setState("gone");
      return;
    }
    const delay = Math.min(250 * 2 ** this.retry, 5000);
    this.retry += 1;
    if (navigator.onLine === false) this.setState("offline");
    else this.setState("reconnecting", { retryIn: Math.ceil(delay / 1000) });
    this.timer = setTimeout(() => this.open(), delay);
  }

  // Without a network the socket is dead even if it does not know yet: close it, so that
  // nothing is sent into it and lost (what is sent now waits for the next connection).
  wentOffline() {
    if (this.closed || this.state === "gone") return;
    this.setState("offline");
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.close(4000, "offline");
    }
  }

  // The network came back: no reason to wait for the back-off.
  reconnectNow() {
    if (this.closed || this.state === "open" || this.state === "gone") return;
    if (this.ws.readyState === WebSocket.CONNECTING) return; // an attempt is under way
    clearTimeout(this.timer);
    this.setState("reconnecting");
    this.open();
  }

  // Sends `frame` with a fresh `ref` (echoed by the server's answer). Returns the ref and
  // whether it went out now ("sent") or waits for the connection ("queued").
  send(frame) {
    this.refs += 1;
    const ref = `r${this.refs}`;
    const framed = { ...frame, ref };
    if (this.state === "gone") return { ref, outcome: "refused" };
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(framed));
      return { ref, outcome: "sent" };
    }
    this.pending.push(framed);
    return { ref, outcome: "queued" };
  }

  get connected() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    this.ws.close(1000);
  }
}
