// One websocket per open conversation, reconnecting with its last event number.
//
// The server numbers the events of each agent instance from 1; a reconnect passes the last
// `seq` and `instance` seen, and the server replays what was missed when that instance still
// runs ("resumed": true). Otherwise the page reloads the conversation over HTTP.

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
    this.open();
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
    this.ws = new WebSocket(url);
    this.fresh = true; // the next attached/detached frame is this connection's first
    this.ws.onopen = () => {
      this.retry = 0;
      this.onState("open");
      for (const frame of this.pending.splice(0)) this.ws.send(JSON.stringify(frame));
    };
    this.ws.onmessage = (message) => {
      let frame;
      try {
        frame = JSON.parse(message.data);
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
    };
    this.ws.onclose = (event) => {
      if (this.closed) return;
      // 44xx: the server refused this conversation for good (not found, forbidden, invalid
      // id); reconnecting would only be refused again.
      if (event.code === 4404 || event.code === 4403 || event.code === 4422) {
        this.onState("gone");
        return;
      }
      this.onState("reconnecting");
      const delay = Math.min(250 * 2 ** this.retry, 5000);
      this.retry += 1;
      this.timer = setTimeout(() => this.open(), delay);
    };
  }

  send(frame) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
    else this.pending.push(frame);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.ws.close(1000);
  }
}
