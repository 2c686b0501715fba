"""Fuzzing the conversation websocket: random frames over a real socket to the demo server.

Each example opens a socket on a fresh conversation and sends a few random frames: binary ones,
text that is not JSON, JSON of every shape, frames nested past the parser's limit, frames of
exactly the size limit and one byte over it (ASCII and multibyte), and frames close to valid —
a real action with one field spoiled: wrong types, unknown ``type``, extra keys, empty or
unstorable text (NUL, lone surrogates), overlong ``ref``, decisions that are empty, too many,
nested too deep, with NaN or overlong keys, answers of every shape. Valid frames are sent too
(dismiss and reset among them), so the agent runs, interrupts, gets decided about, dismissed
and reset while the fuzzing goes on.

An independent oracle (:func:`expected_code`, written from the protocol in ``web/_socket.py``'s
module docs and the bounds in ``web/_limits.py``) says what each frame deserves:

* a bad frame gets exactly one error frame, with the code for what is wrong (``bad_frame``,
  ``too_large``, ``bad_json``, ``invalid``) and its ``ref`` echoed when it had a short one;
* a valid frame gets ``pong``, ``ok``, or an error a client acts on (``conflict``,
  ``invalid_decision``), never ``internal`` or ``unavailable``; a reset that would clear the
  files an identity's conversations share gets ``invalid``;
* every frame gets its reply in order, within seconds (a hang fails the test), and the socket
  stays open: afterwards a ping gets its pong and a message gets ``ok`` and runs the agent.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection

from tests.fuzz import fuzz_settings
from tests.web.conftest import Demo, demo_config, running_demo

#: The frame limit of the server under test, in bytes.
LIMIT = 4096
#: The longest message the server under test accepts, in characters.
MAX_CHARS = 1500
#: The bounds of edited tool arguments (``web/_limits.py``).
MAX_DEPTH, MAX_KEY_CHARS, MAX_STRING_CHARS = 32, 256, 200_000
#: The bounds of an answer decision: answers per decision, choices per answer.
MAX_ANSWERS, MAX_PICKED = 10, 20
#: Error codes a client acts on, the answers a valid action may get besides ``ok``.
ACTION_ERRORS = {"conflict", "invalid_decision"}

# -- the oracle ----------------------------------------------------------------------------------


def storable(value: Any) -> bool:
    return isinstance(value, str) and not any(
        c == "\x00" or "\ud800" <= c <= "\udfff" for c in value
    )


def arguments_ok(arguments: Any) -> bool:
    """Edited tool arguments within the bounds (depth, key and string length, finite, JSON)."""
    if not isinstance(arguments, dict):
        return False
    pending: list[tuple[Any, int]] = [(arguments, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            if depth > MAX_DEPTH:
                return False
            for key, item in value.items():
                if not storable(key) or len(key) > MAX_KEY_CHARS:
                    return False
                pending.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > MAX_DEPTH:
                return False
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            if not storable(value) or len(value) > MAX_STRING_CHARS:
                return False
        elif isinstance(value, float) and not math.isfinite(value):
            return False
    return True


def decision_ok(decision: Any) -> bool:
    if not isinstance(decision, dict):
        return False
    kind = decision.get("type")
    if kind == "approve":
        return set(decision) == {"type"}
    if kind == "edit":
        return set(decision) == {"type", "arguments"} and arguments_ok(decision["arguments"])
    if kind == "reject":
        message = decision.get("message")
        return set(decision) <= {"type", "message"} and (
            message is None or (storable(message) and len(message) <= 2000)
        )
    if kind == "respond":  # whether the text is long or blank enough to refuse is the core's
        return set(decision) == {"type", "message"} and storable(decision["message"])
    if kind == "answer":
        answers = decision.get("answers")
        return (
            set(decision) == {"type", "answers"}
            and isinstance(answers, list)
            and len(answers) <= MAX_ANSWERS
            and all(answer_ok(a) for a in answers)
        )
    return False


def answer_ok(answer: Any) -> bool:
    """One answer's shape: text, or a list of at most 20 texts (whether it fits its question
    is the core's check, an ``invalid_decision``)."""
    if isinstance(answer, list):
        return len(answer) <= MAX_PICKED and all(storable(a) for a in answer)
    return storable(answer)


#: Each action's required fields, and the ones it may have besides ``type`` and ``ref``.
_FIELDS: dict[str, set[str]] = {
    "send": {"text"},
    "cancel": set(),
    "decide": {"decisions"},
    "dismiss": set(),
    "reset": set(),
    "retry": set(),
    "ping": set(),
}
_OPTIONAL = {"reset": {"files"}}


def frame_ok(raw: Any) -> bool:
    """Whether a decoded frame is a valid action (``send``, ``cancel``, ``decide``,
    ``dismiss``, ``reset``, ``retry``, ``ping``)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        return False
    fields = _FIELDS.get(raw["type"])
    if fields is None or not fields <= set(raw):
        return False
    if set(raw) - fields - _OPTIONAL.get(raw["type"], set()) - {"type", "ref"}:
        return False
    if raw["type"] == "reset" and raw.get("files", "keep") not in ("keep", "clear"):
        return False
    ref = raw.get("ref")
    if ref is not None and not (isinstance(ref, str) and len(ref) <= 64):
        return False
    if raw["type"] == "send":
        text = raw["text"]
        return storable(text) and 1 <= len(text) <= MAX_CHARS
    if raw["type"] == "decide":
        decisions = raw["decisions"]
        return (
            isinstance(decisions, list)
            and 1 <= len(decisions) <= 100
            and all(decision_ok(d) for d in decisions)
        )
    return True


def expected_code(frame: str | bytes) -> tuple[str | None, Any]:
    """The error code ``frame`` deserves (None: it is valid) and its decoded JSON."""
    if isinstance(frame, bytes):
        return "bad_frame", None
    if len(frame.encode()) > LIMIT:
        return "too_large", None
    try:
        raw = json.loads(frame)
    except (ValueError, RecursionError):
        return "bad_json", None
    return (None if frame_ok(raw) else "invalid"), raw


def echoed_ref(raw: Any) -> str | None:
    ref = raw.get("ref") if isinstance(raw, dict) else None
    return ref if isinstance(ref, str) and len(ref) <= 64 else None


# -- frames --------------------------------------------------------------------------------------

_odd_text = st.text(
    st.characters()
    | st.characters(categories=["Cs"])
    | st.sampled_from(["\x00", "\u2028", "é", "🦀", '"', "\\"]),
    max_size=16,
)
_clean_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=40
)
_refs = st.none() | st.text(max_size=64) | st.text(min_size=65, max_size=80) | st.integers()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _odd_text,  # NaN/inf included
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(_odd_text, children, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def nested(draw: st.DrawFn) -> Any:
    """Arguments nested around the depth bound (30 to 40 levels), or far past it (300 to 600:
    deep, yet well within what the JSON parser takes, whatever stack it runs on)."""
    value: Any = draw(st.none() | st.integers() | _odd_text)
    for level in range(draw(st.integers(30, 40) | st.integers(300, 600))):
        value = {"k": value} if level % 2 else [value]
    return {"deep": value}


#: Paths an edit may point the demo's ``write_file`` at: escapes, drive letters, backslashes.
hostile_paths = st.one_of(
    st.sampled_from(
        [
            "/notes/fuzz.md",
            "../outside.md",
            "/notes/../../outside.md",
            "/notes/./a.md",
            "C:/x.md",
            "c:\\x.md",
            "/notes\\..\\x.md",
            "~/x.md",
            "//server/share.md",
            "/" + "é" * 130,
            "/notes/" + "a" * 300,
            "/notes/.sagents-abcdefgh.tmp",
        ]
    ),
    st.lists(st.sampled_from(["..", ".", "", "notes", "a\\b", "C:", "🦀", " "]), max_size=5).map(
        "/".join
    ),
    _odd_text,
)
edited_arguments = (
    st.fixed_dictionaries({"file_path": hostile_paths, "content": _odd_text})
    | st.dictionaries(_odd_text | st.text(min_size=250, max_size=260), json_values, max_size=3)
    | nested()
)
_answers = st.lists(_clean_text | st.lists(_clean_text, max_size=3), max_size=4)
valid_decisions = st.one_of(
    st.just({"type": "approve"}),
    st.builds(lambda a: {"type": "edit", "arguments": a}, edited_arguments),
    st.builds(lambda m: {"type": "reject", "message": m}, st.none() | _clean_text),
    st.just({"type": "reject"}),
    st.builds(lambda m: {"type": "respond", "message": m}, _clean_text | st.just(" ")),
    st.builds(lambda a: {"type": "answer", "answers": a}, _answers),
)
valid_decide_frames = st.builds(
    lambda decisions, ref: {"type": "decide", "decisions": decisions, "ref": ref},
    st.lists(valid_decisions, min_size=1, max_size=3),
    st.none() | st.text(max_size=64),
)
valid_frames = st.one_of(
    st.builds(lambda ref: {"type": "ping", "ref": ref}, st.none() | st.text(max_size=64)),
    st.just({"type": "cancel"}),
    st.builds(lambda text: {"type": "send", "text": text}, _clean_text),
    valid_decide_frames,
    st.just({"type": "dismiss"}),
    st.sampled_from([{"type": "reset"}, {"type": "reset", "files": "keep"}]),
    st.just({"type": "reset", "files": "clear"}),
)
_keys = st.sampled_from(
    ["type", "ref", "text", "decisions", "arguments", "message", "answers", "files", "data"]
)


@st.composite
def spoiled_frames(draw: st.DrawFn, valid: st.SearchStrategy[Any] = valid_frames) -> Any:
    """A valid frame with one thing wrong (or, by chance, still right)."""
    frame = dict(draw(valid))
    how = draw(st.sampled_from(["field", "drop", "extra", "ref", "type", "decision", "long"]))
    if how == "field":
        frame[draw(st.sampled_from(sorted(frame)))] = draw(json_values)
    elif how == "drop":
        del frame[draw(st.sampled_from(sorted(frame)))]
    elif how == "extra":
        frame[draw(_keys | _odd_text)] = draw(json_values)
    elif how == "ref":
        frame["ref"] = draw(_refs | json_values)
    elif how == "type":
        frame["type"] = draw(
            st.sampled_from(
                ["Send", "send ", "PING", "decision", "approve", "", "launch", "Reset", "answer"]
            )
            | json_values
        )
    elif how == "decision":
        decisions = draw(
            st.lists(
                valid_decisions
                | json_values.map(lambda v: {"type": "edit", "arguments": v})
                | st.dictionaries(_keys, json_values, max_size=3),
                max_size=3,
            )
            | st.just([{"type": "approve"}] * 101)
            | json_values
        )
        frame = {
            "type": "decide",
            "decisions": decisions,
            **({"ref": frame["ref"]} if "ref" in frame else {}),
        }
    else:
        char = draw(st.sampled_from(["x", "é", "🦀", "\x00", "\ud800"]))
        frame = {"type": "send", "text": char * draw(st.integers(MAX_CHARS - 1, MAX_CHARS + 2))}
    return frame


def encode(value: Any, ascii_only: bool) -> str:
    """JSON text as a client sends it: escaped, or raw UTF-8 where it can be encoded."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8: only its escape can travel
        text = json.dumps(value)
    return text


@st.composite
def sized(draw: st.DrawFn) -> str:
    """A frame padded with JSON whitespace to the byte limit, one under or one over."""
    text = encode(draw(valid_frames | spoiled_frames()), draw(st.booleans()))
    target = LIMIT + draw(st.sampled_from([-1, 0, 1]))
    if draw(st.booleans()):
        filler = "é" * ((target - len(text.encode())) // 2)  # two bytes each, inside a string
        frame = {"type": "send", "text": filler or "x"}
        text = encode(frame, ascii_only=False)
    return text + " " * max(target - len(text.encode()), 0)


@st.composite
def deep_text(draw: st.DrawFn) -> str:
    """Nesting a parser takes (up to 200) or refuses (2,000 and more), never in between: the
    parser's limit depends on the stack depth it runs at."""
    depth = draw(st.integers(1, 200) | st.integers(2_000, 2_040))
    opening, closing = draw(st.sampled_from([("[", "]"), ('{"k":', "}")]))
    return opening * depth + "1" + closing * depth


frames = st.one_of(
    st.binary(max_size=40) | st.sampled_from([b'{"type": "ping"}', b"\xff\xfe"]),
    st.text(max_size=40),  # mostly not JSON
    st.builds(encode, json_values, st.booleans()),
    st.builds(encode, valid_frames, st.booleans()),
    st.builds(encode, spoiled_frames(), st.booleans()),
    st.builds(encode, spoiled_frames(), st.booleans()),
    sized(),
    deep_text(),
)

# -- the server ----------------------------------------------------------------------------------


@dataclass
class Visitor:
    """A browser on the demo server; ``waiting`` is a conversation kept for decisions."""

    demo: Demo
    client: httpx.AsyncClient
    waiting: str | None = None

    async def conversation(self) -> str:
        response = await self.client.post("/api/conversations", json={})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


@pytest.fixture
async def visitor(tmp_path: Path) -> AsyncIterator[Visitor]:
    """The demo server (one per test, shared by its examples) and one browser identity."""
    config = demo_config(tmp_path, max_frame_bytes=LIMIT, max_message_chars=MAX_CHARS)
    async with running_demo(config) as demo, demo.client() as client:
        yield Visitor(demo=demo, client=client)


async def reply(ws: ClientConnection) -> dict[str, Any]:
    """The next reply frame (``error``, ``ok`` or ``pong``), skipping events; a hang fails."""
    async with asyncio.timeout(10):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] in ("error", "ok", "pong"):
                return dict(frame)
            assert frame["type"] in ("event", "attached", "detached"), frame


def check_reply(frame: str | bytes, answer: dict[str, Any]) -> None:
    code, raw = expected_code(frame)
    shown = repr(frame[:200])
    if code is not None:
        event(f"bad: {code}")
        assert answer["type"] == "error", (shown, answer)
        assert answer["code"] == code, (shown, answer)
        assert isinstance(answer["message"], str), answer
        assert answer["message"], answer
        assert answer["ref"] == echoed_ref(raw), (shown, answer)
        return
    event(f"valid {raw['type']}: {answer['type']} {answer.get('code', '')}")
    assert answer.get("ref") == raw.get("ref"), (shown, answer)
    if raw["type"] == "ping":
        assert answer["type"] == "pong", (shown, answer)
    elif raw["type"] == "reset" and raw.get("files") == "clear":
        # The demo's files are shared by an identity's conversations: never cleared by one.
        assert answer["type"] == "error", (shown, answer)
        assert answer["code"] == "invalid", (shown, answer)
    elif answer["type"] == "ok":
        assert answer["action"] == raw["type"], (shown, answer)
    else:
        assert answer["type"] == "error", (shown, answer)
        assert answer["code"] in ACTION_ERRORS, (shown, answer)


# -- tests ---------------------------------------------------------------------------------------


@given(batch=st.lists(frames, min_size=1, max_size=6), run_after=st.integers(0, 3))
@fuzz_settings(16)
async def test_every_frame_gets_its_reply_and_the_socket_stays_usable(
    visitor: Visitor, batch: list[str | bytes], run_after: int
) -> None:
    demo, client = visitor.demo, visitor.client
    conversation = await visitor.conversation()
    async with demo.socket(client, conversation) as ws:
        for frame in batch:
            await ws.send(frame)
            check_reply(frame, await reply(ws))
        # Still open, still served: a ping gets its pong...
        await ws.send(json.dumps({"type": "ping", "ref": "still-there"}))
        assert await reply(ws) == {"type": "pong", "ref": "still-there"}
        if run_after:
            return
        # ... and (in one example in four: starting an agent costs a few hundred milliseconds)
        # a message is accepted and runs the agent.
        await ws.send(json.dumps({"type": "send", "text": "Still fine?", "ref": "last"}))
        assert await reply(ws) == {"type": "ok", "action": "send", "ref": "last"}
        async with asyncio.timeout(10):
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "event" and frame["event"]["type"] == "status_changed":
                    break


@given(batch=st.lists(st.builds(encode, spoiled_frames(), st.booleans()) | sized(), max_size=8))
@fuzz_settings(10)
async def test_a_burst_of_frames_is_answered_in_order(visitor: Visitor, batch: list[str]) -> None:
    """Frames sent back to back, without waiting: one reply each, in the order sent."""
    demo, client = visitor.demo, visitor.client
    conversation = await visitor.conversation()
    async with demo.socket(client, conversation) as ws:
        tagged = [*batch, json.dumps({"type": "ping", "ref": "end"})]
        for frame in tagged:
            await ws.send(frame)
        answers = [await reply(ws) for _ in tagged]
        for frame, answer in zip(tagged, answers, strict=True):
            check_reply(frame, answer)
        assert answers[-1] == {"type": "pong", "ref": "end"}


@st.composite
def decide_frames(draw: st.DrawFn) -> str:
    """A decide frame, valid (one decision, as the demo's pending call needs) or spoiled."""
    if draw(st.booleans()):
        frame: dict[str, Any] = {"type": "decide", "decisions": [draw(valid_decisions)]}
        if draw(st.booleans()):
            frame["ref"] = draw(st.text(max_size=64))
    else:
        frame = draw(spoiled_frames(valid_decide_frames))
    return encode(frame, draw(st.booleans()))


def files_outside(root: Path, data: Path, files: Path) -> list[Path]:
    """Files under ``root`` other than the demo's own (its database, right in ``data``) and
    those under ``files``."""
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and path.parent != data and files not in path.parents
    ]


@given(batch=st.lists(decide_frames(), min_size=1, max_size=4))
@fuzz_settings(6)
async def test_decide_frames_against_a_waiting_agent_never_write_outside_its_files(
    visitor: Visitor, batch: list[str]
) -> None:
    """Random decisions reach an agent that waits for approval of a ``write_file``; edits
    point it anywhere. Each frame gets its reply, and no file lands outside the files of the
    identity."""
    demo, client = visitor.demo, visitor.client
    if visitor.waiting is None:
        visitor.waiting = await visitor.conversation()
    conversation = visitor.waiting
    async with demo.socket(client, conversation) as ws:
        snapshot = (await client.get(f"/api/conversations/{conversation}")).json()
        if snapshot["status"] != "interrupted":
            await ws.send(json.dumps({"type": "send", "text": "Fuzz notes", "ref": "setup"}))
            async with asyncio.timeout(20):
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "error":
                        raise AssertionError(f"the setup message was refused: {frame}")
                    if frame["type"] == "event" and frame["event"].get("status") == "interrupted":
                        break
        for frame in batch:
            await ws.send(frame)
            check_reply(frame, await reply(ws))
        await ws.send(json.dumps({"type": "ping", "ref": "after"}))
        assert await reply(ws) == {"type": "pong", "ref": "after"}
    data = demo.config.data_dir
    scope = (await client.get("/api/me")).json()["identity"]
    assert files_outside(data.parent, data, data / "files" / scope) == []
