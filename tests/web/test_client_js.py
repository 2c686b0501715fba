"""``sagents-client.js`` on its own, under Node: a fake ``WebSocket`` and timers the script
fires by hand, so reconnects, the queue and resuming are checked without a server, a browser
or real time. (The browser tests drive it against real servers: the demo's page and
``examples/chat_app.py``.) Skips without Node 18+ (``scripts/node`` installs it), except under
CI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any, NoReturn

import pytest

from sagents.web._router import CLIENT_FILE
from tests.web.conftest import in_ci

# Runs a scenario against the client and prints what its callbacks saw, as JSON.
SCRIPT = r"""
const sockets = [];
class FakeSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  constructor(url) {
    Object.assign(this, { url: String(url), readyState: 0, sent: [] });
    sockets.push(this);
  }
  send(text) { this.sent.push(JSON.parse(text)); }
  close(code = 1000) { this.readyState = 3; this.onclose({ code }); }
  // the server's side
  opened() { this.readyState = 1; this.onopen(); }
  frame(data) { this.onmessage({ data: JSON.stringify(data) }); }
  dropped(code) { this.readyState = 3; this.onclose({ code }); }
}
const timers = [];
globalThis.WebSocket = FakeSocket;
globalThis.setTimeout = (fn, ms) => { timers.push({ fn, ms }); return timers.length; };
globalThis.clearTimeout = () => {};

const { connect } = await import(process.argv[1]);
const seen = [];
const record = (name) => (...args) => seen.push([name, ...args]);
const chat = connect("http://app.test/chat/conversations/c1/ws?token=t", {
  onEvent: record("event"), onStatus: record("status"), onAttached: record("attached"),
  onError: record("error"), onAccepted: record("accepted"), onConnection: record("connection"),
});
const out = { seen, outcomes: {}, urls: [], sent: [], timers: [] };
out.outcomes.queuedSend = chat.send("before open");
out.outcomes.cancelOffline = chat.cancel();
sockets[0].opened();
out.outcomes.liveDecide = chat.decide([{ type: "approve" }]);
sockets[0].frame({ type: "attached", status: "running", instance: 7, resumed: false });
for (const seq of [1, 2, 3]) {
  sockets[0].frame({ type: "event", instance: 7, event: { type: "llm_deltas", seq } });
}
sockets[0].frame({ type: "event", instance: 7, event: { type: "status_changed", seq: 4,
  status: "interrupted", data: { action_requests: [{}] } } });
sockets[0].frame({ type: "ok", action: "send", ref: out.outcomes.queuedSend.ref });
const decideRef = out.outcomes.liveDecide.ref;
sockets[0].frame({ type: "error", code: "invalid_decision", message: "no", ref: decideRef });
sockets[0].dropped(1006);
out.outcomes.queuedAnswer = chat.answer(["yes"]);
out.outcomes.resetOffline = chat.reset();
timers.shift().fn();
sockets[1].opened();
sockets[1].frame({ type: "attached", status: "interrupted", instance: 7, resumed: true });
sockets[1].dropped(1011);
timers.shift().fn();
sockets[2].dropped(1006);
out.timers = timers.map((t) => t.ms);
timers.shift().fn();
sockets[3].dropped(4404);
out.outcomes.afterGone = chat.send("too late");
out.urls = sockets.map((s) => s.url);
out.sent = sockets.map((s) => s.sent);
out.pendingTimers = timers.length;
console.log(JSON.stringify(out));
"""


def _unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"the sagents-client.js tests cannot run under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node() -> str:
    """Node 18+ (``scripts/node`` installs it), as ``tests/agui/test_client.py`` needs it."""
    found = shutil.which("node")
    if found is None:
        _unavailable("Node.js 18 or later is needed (run scripts/node to install it)")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=False)
    major = version.stdout.strip().lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < 18:
        _unavailable(f"Node.js 18 or later is needed, found {version.stdout.strip()!r}")
    return found


def run(node: str) -> dict[str, Any]:
    done = subprocess.run(
        [node, "--input-type=module", "-e", SCRIPT, CLIENT_FILE.as_uri()],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_queues_offline_resumes_from_the_last_seq_and_stops_when_refused(node: str) -> None:
    out = run(node)
    seen = out["seen"]
    outcomes = out["outcomes"]
    # Actions: queued while not connected, except cancel, dismiss and reset.
    assert outcomes["queuedSend"]["outcome"] == "queued"
    assert outcomes["cancelOffline"]["outcome"] == "refused"
    assert outcomes["liveDecide"]["outcome"] == "sent"
    assert outcomes["queuedAnswer"]["outcome"] == "queued"
    assert outcomes["resetOffline"]["outcome"] == "refused"
    assert outcomes["afterGone"]["outcome"] == "refused"
    # The queue went out in order on the next connection, refs kept.
    first, second = out["sent"][0], out["sent"][1]
    assert [f["type"] for f in first] == ["send", "decide"]
    assert first[0] == {"type": "send", "text": "before open", "ref": outcomes["queuedSend"]["ref"]}
    assert second == [
        {
            "type": "decide",
            "decisions": [{"type": "answer", "answers": ["yes"]}],
            "ref": outcomes["queuedAnswer"]["ref"],
        }
    ]
    # Reconnects pass the last seq and instance seen (the app's query string kept); a
    # reconnect after a resumed attachment keeps them too.
    assert out["urls"][0] == "ws://app.test/chat/conversations/c1/ws?token=t"
    assert out["urls"][1] == "ws://app.test/chat/conversations/c1/ws?token=t&after_seq=4&instance=7"
    assert out["urls"][2] == out["urls"][1]
    # Back-off doubles; a refusal for good (4404) schedules nothing more.
    assert out["timers"] == [500]
    assert out["pendingTimers"] == 0
    # The callbacks, in order.
    connection = [(c[1], c[2]) for c in seen if c[0] == "connection"]
    assert connection[0] == ("connecting", {"queued": 1})  # the queued send, said at once
    assert ("open", {"queued": 0}) in connection
    assert ("reconnecting", {"retryIn": 1, "queued": 0}) in connection
    assert ("reconnecting", {"retryIn": 1, "queued": 1}) in connection  # the queued answer
    assert connection[-1] == ("gone", {"code": 4404, "queued": 0})
    attached = [c[1] for c in seen if c[0] == "attached"]
    assert attached == [
        {"instance": 7, "status": "running", "resumed": False, "first": True},
        {"instance": 7, "status": "interrupted", "resumed": True, "first": True},
    ]
    assert [c[1]["seq"] for c in seen if c[0] == "event"] == [1, 2, 3, 4]
    statuses = [c[1:] for c in seen if c[0] == "status"]
    assert ["interrupted", {"action_requests": [{}]}] in statuses
    assert [c[1] for c in seen if c[0] == "accepted"] == [
        {"action": "send", "ref": outcomes["queuedSend"]["ref"]}
    ]
    assert [c[1] for c in seen if c[0] == "error"] == [
        {
            "code": "invalid_decision",
            "message": "no",
            "ref": outcomes["liveDecide"]["ref"],
            "action": "decide",
        }
    ]
