"""The offline demo scenario: a scripted model that plans, writes a file, and needs approval.

It is a stateless ``responder`` (the next reply is derived from the conversation so far), so one
model instance serves any number of conversations at once, as the web demo needs. For each user
message it walks the same path, exercising the three core middleware:

1. plan three todos (``write_todos``);
2. save notes with ``write_file`` — protected by HumanInTheLoop in the demo, so the run pauses;
3. read the notes back, then tick the last todo;
4. answer. A rejected write ends with an answer that says so.

A message containing "ask me" takes a side path instead, for the ``AskUserQuestion`` middleware:
the model asks three questions (single choice with "other", multiple choice, free text with
suggestions) and answers with what the person picked, replied or declined. The keyword keeps
the default walk unchanged for every other message.
"""

from __future__ import annotations

import re
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from sagents.execution._scripted_model import Fail, Reply, ScriptedChatModel, ToolCall

__all__ = ["demo_model"]


def _todos(*statuses: str) -> dict[str, Any]:
    items = [("research", "Research the topic"), ("write", "Write notes"), ("review", "Review")]
    return {
        "todos": [
            {"id": todo_id, "content": content, "status": status}
            for (todo_id, content), status in zip(items, statuses, strict=True)
        ],
        "merge": True,
    }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "notes"


_ASK = re.compile(r"\bask me\b", re.IGNORECASE)
_ASK_WORDS = re.compile(r"\b(?:please\s+)?ask me(?:\s+(?:about|on))?\b", re.IGNORECASE)


def _questions(topic: str) -> list[dict[str, Any]]:
    # "Please ask me about supervision": the notes would be on supervision.
    subject = _ASK_WORDS.sub(" ", topic).strip(" \t\n?!.,:;")
    name = f"{_slug(subject)}.md"
    return [
        {
            "question": "How deep should my notes go?",
            "choices": ["A short summary", "A detailed outline", "Only the key terms"],
            "recommended": "A short summary",
            "allow_other": True,
        },
        {
            "question": "Which sections do you want?",
            "type": "multiple_choice",
            "choices": ["Background", "Key ideas", "Open questions", "Sources"],
            "recommended": "Key ideas",
        },
        {
            "question": "What should the notes file be called?",
            "type": "free_text",
            "choices": list(dict.fromkeys([name, "notes.md", "my-notes.md"]))[:2],
            "recommended": name,
        },
    ]


def _ask(topic: str, after: list[BaseMessage]) -> Reply:
    """The "ask me" path: ask, then say what came back."""
    asked = next((m for m in after if isinstance(m, ToolMessage) and m.name == "ask_user"), None)
    if asked is None:
        return Reply(
            text="Before I start, a few questions.",
            tool_calls=[ToolCall(name="ask_user", args={"questions": _questions(topic)})],
        )
    artifact = asked.artifact
    if not isinstance(artifact, dict) or not isinstance(artifact.get("answers"), list):
        return Reply(text=f"Understood ({asked.content}). I will use sensible defaults.")
    shown = []
    for pair in artifact["answers"]:
        answer = pair["answer"]
        shown.append(answer if isinstance(answer, str) else ", ".join(answer))
    return Reply(text=f"Thank you! Noted: {'; '.join(shown)}.")


def _respond(messages: list[BaseMessage]) -> Reply | Fail:
    start = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1)
    if start < 0:
        return Reply(text="Hello! Send me a topic and I will research it and take notes.")
    topic = str(messages[start].content).strip() or "your topic"
    if _ASK.search(topic):
        return _ask(topic, messages[start + 1 :])
    path = f"/notes/{_slug(topic)}.md"
    results = [m for m in messages[start + 1 :] if isinstance(m, ToolMessage)]
    done = {m.name: m for m in results}
    write = done.get("write_file")
    if not done:
        return Reply(
            text=f"Let me plan how to research {topic!r}.",
            tool_calls=[
                ToolCall(name="write_todos", args=_todos("in_progress", "pending", "pending"))
            ],
        )
    if write is None:
        notes = f"# {topic}\n\n- Key idea: supervise every agent.\n- Open question: scaling.\n"
        return Reply(
            text="I researched it; now I will save my notes.",
            tool_calls=[
                ToolCall(name="write_todos", args=_todos("completed", "in_progress", "pending")),
                ToolCall(name="write_file", args={"file_path": path, "content": notes}),
            ],
        )
    if write.status == "error":
        return Reply(text=f"Understood, I did not save the notes ({write.content}).")
    if "read_file" not in done:
        # The history holds the arguments the write really ran with (a human may have edited
        # them before approving).
        saved_path = next(
            (
                str(call["args"].get("file_path", path))
                for m in messages[start:]
                if isinstance(m, AIMessage)
                for call in m.tool_calls
                if call["name"] == "write_file"
            ),
            path,
        )
        return Reply(
            text="Saved. Let me review what I wrote.",
            tool_calls=[
                ToolCall(name="write_todos", args=_todos("completed", "completed", "in_progress")),
                ToolCall(name="read_file", args={"file_path": saved_path}),
            ],
        )
    if sum(m.name == "write_todos" for m in results) < 4:
        return Reply(
            text="The notes read well.",
            tool_calls=[ToolCall(name="write_todos", args=_todos(*["completed"] * 3))],
        )
    return Reply(text=f"All done: my notes on {topic!r} are saved and reviewed.")


def demo_model(*, delay: float = 0.0) -> ScriptedChatModel:
    """The scripted model of the demo; ``delay`` slows each streamed chunk (seconds)."""
    if delay <= 0:
        return ScriptedChatModel(responder=_respond, record_prompts=False)

    def slow(messages: list[BaseMessage]) -> Reply | Fail:
        reply = _respond(messages)
        if isinstance(reply, Reply):
            return Reply(text=reply.text, tool_calls=reply.tool_calls, delay=delay, chunk_size=4)
        return reply

    return ScriptedChatModel(responder=slow, record_prompts=False)
