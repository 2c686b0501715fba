// The pending calls of an interrupt: an approval dialog, or a small form for a call that asks
// the person questions (AskUserQuestion), one per call, and a Dismiss bar under them.
//
// What to show is read from each request, never from the interrupt's kind: a sub-agent's
// question arrives in a "sub_agent" interrupt, and its request carries the questions all the
// same. One decision per request is collected; they go out together once every request has
// one. The server checks them against the calls (answers against the questions): when it
// refuses, every dialog opens again with the reason, so the person can fix the answer.

import { el, pretty } from "./dom.js";

// The dialogs on the page and the decisions made in them so far (null until rendered).
let pending = null;

// `handlers.onDecide(decisions)` sends them and returns what happens to them, in words
// ("sending…", "queued ..."), shown under each dialog until the server answers
// (setApprovalNote); `handlers.onDismiss()` sends a dismiss and returns the same, or null
// when it sent nothing.
export function renderApprovals(interrupt, handlers) {
  const box = document.getElementById("approvals");
  box.replaceChildren();
  pending = null;
  const requests = (interrupt && interrupt.action_requests) || [];
  if (requests.length === 0) return;
  const decisions = new Array(requests.length).fill(null);
  const dialogs = [];
  const decide = (index, decision, said) => {
    decisions[index] = decision;
    const dialog = dialogs[index];
    dialog.classList.add("decided");
    dialog.querySelector(".problem").textContent = "";
    dialog.querySelector(".chosen").textContent = said || `your decision: ${decision.type}`;
    setEnabled(dialog, false);
    if (decisions.every((d) => d !== null)) setApprovalNote(handlers.onDecide(decisions));
  };
  requests.forEach((request, index) => {
    const dialog = asks(request) ? questionForm(request, index, decide) : approvalDialog(request, index, decide);
    dialogs.push(dialog);
    box.append(dialog);
  });
  const dismiss = el("button", {
    type: "button",
    class: "dismiss",
    text: "Dismiss",
    onclick: () => {
      const said = handlers.onDismiss();
      if (!said) return; // not sent (the page said why)
      dismiss.disabled = true;
      note.textContent = said;
    },
  });
  const note = el("small", {
    class: "dismiss-note",
    text: "decide nothing: the agent stops here and waits for your next message",
  });
  box.append(el("div", { class: "dismiss-bar" }, dismiss, note));
  pending = { decisions, dialogs, dismiss, note };
}

// Whether a request asks the person questions (and is shown as a form).
export function asks(request) {
  return Boolean(request && request.questions && request.questions.length);
}

export function setApprovalNote(note) {
  for (const chosen of document.querySelectorAll("#approvals .chosen")) {
    const decision = chosen.textContent.split(" — ")[0];
    if (decision) chosen.textContent = note ? `${decision} — ${note}` : decision;
  }
}

// The server refused the decisions (or the dismiss): nothing changed, so every dialog is
// usable again, with the reason in words (an answer that does not fit its question, say).
export function reopenApprovals(reason) {
  if (!pending) return;
  pending.decisions.fill(null);
  pending.dismiss.disabled = false;
  pending.note.textContent = "decide nothing: the agent stops here and waits for your next message";
  for (const dialog of pending.dialogs) {
    dialog.classList.remove("decided");
    dialog.querySelector(".chosen").textContent = "";
    dialog.querySelector(".problem").textContent = `not applied: ${reason}`;
    for (const field of dialog.querySelectorAll(".question.invalid")) field.classList.remove("invalid");
    setEnabled(dialog, true);
  }
  // The server names the answer it refused ("decision 0 for 'ask_user', answer 2 (to ...)"):
  // that question is marked.
  const which = /decision (\d+) for .*?answer (\d+) \(to /.exec(reason);
  const dialog = which ? pending.dialogs[Number(which[1])] : null;
  const field = dialog ? dialog.querySelectorAll(".question")[Number(which[2])] : null;
  if (field) field.classList.add("invalid");
}

function setEnabled(dialog, enabled) {
  for (const control of dialog.querySelectorAll("button, input, textarea")) control.disabled = !enabled;
}

// -- an approval ------------------------------------------------------------------------------

function approvalDialog(request, index, decide) {
  const allowed = request.allowed_decisions || ["approve", "edit", "reject"];
  const args = el("textarea", { class: "edit-args", rows: 8, spellcheck: false, value: pretty(request.arguments) });
  const reason = el("input", { class: "reject-message", placeholder: "why? (the agent reads this)" });
  const problem = el("p", { class: "problem", role: "alert" });
  const saveEdit = () => {
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
    decide(index, { type: "edit", arguments: parsed });
  };
  const editBox = el(
    "div",
    { class: "edit-box", hidden: true },
    args,
    el("button", { type: "button", class: "primary save-edit", text: "Approve with these arguments", onclick: saveEdit }),
  );
  const rejectBox = el(
    "div",
    { class: "reject-box", hidden: true },
    reason,
    el("button", {
      type: "button",
      class: "danger confirm-reject",
      text: "Reject",
      onclick: () => decide(index, { type: "reject", message: reason.value || null }),
    }),
  );
  const reply = replyBox(index, decide, "the tool's result, in your words (the agent reads this)");
  const show = (box) => {
    for (const other of [editBox, rejectBox, reply]) other.hidden = other !== box;
  };
  const button = (kind, attrs) => (allowed.includes(kind) ? el("button", { type: "button", ...attrs }) : null);
  return el(
    "div",
    { class: "approval", role: "dialog", "data-tool-call-id": request.tool_call_id, "data-tool": request.name },
    el("h4", { text: `Approve ${request.name}?` }),
    request.description ? el("p", { text: request.description }) : null,
    el("pre", { class: "approval-args", text: pretty(request.arguments) }),
    el(
      "div",
      { class: "approval-actions" },
      button("approve", { class: "primary approve", text: "Approve", onclick: () => decide(index, { type: "approve" }) }),
      button("edit", { class: "edit", text: "Edit arguments", onclick: () => show(editBox) }),
      button("respond", { class: "reply", text: "Reply instead…", onclick: () => show(reply) }),
      button("reject", { class: "danger reject", text: "Reject…", onclick: () => show(rejectBox) }),
    ),
    editBox,
    rejectBox,
    reply,
    problem,
    el("p", { class: "chosen" }),
  );
}

// "Reply instead": the person answers in words, in place of the call or of its questions.
function replyBox(index, decide, placeholder) {
  const text = el("textarea", { class: "reply-message", rows: 2, placeholder });
  return el(
    "div",
    { class: "reply-box", hidden: true },
    text,
    el("button", {
      type: "button",
      class: "primary send-reply",
      text: "Send reply",
      onclick: () => decide(index, { type: "respond", message: text.value.trim() }, "your reply"),
    }),
  );
}

// -- a call that asks questions ---------------------------------------------------------------

function questionForm(request, index, decide) {
  const allowed = request.allowed_decisions || ["answer", "respond", "reject"];
  const readers = []; // one per question: () => its answer as the form holds it
  const fields = request.questions.map((question, position) => {
    const name = `question-${index}-${position}`;
    const [field, read] = questionField(question, name);
    readers.push(read);
    return field;
  });
  // Whatever the form holds is sent: the server says, in words, what does not fit.
  const send = () => decide(index, { type: "answer", answers: readers.map((read) => read()) }, "your answers");
  const reply = replyBox(index, decide, "answer in your own words instead (the agent reads this)");
  const button = (kind, attrs) => (allowed.includes(kind) ? el("button", { type: "button", ...attrs }) : null);
  return el(
    "form",
    {
      class: "approval ask-form",
      role: "dialog",
      "aria-label": "questions from the agent",
      "data-tool-call-id": request.tool_call_id,
      "data-tool": request.name,
      onsubmit: (event) => {
        event.preventDefault(); // Enter in a text field sends the answers, where allowed
        if (allowed.includes("answer")) send();
      },
    },
    el("h4", { text: request.questions.length === 1 ? "The agent asks you" : "The agent asks you a few questions" }),
    ...fields,
    el(
      "div",
      { class: "approval-actions" },
      allowed.includes("answer") ? el("button", { type: "submit", class: "primary send-answers", text: "Send answers" }) : null,
      button("respond", {
        class: "reply",
        text: "Reply instead",
        onclick: () => {
          reply.hidden = !reply.hidden;
        },
      }),
      button("reject", {
        class: "skip",
        text: "Skip",
        title: "decline to answer: the agent carries on without your answers",
        onclick: () => decide(index, { type: "reject" }, "skipped"),
      }),
    ),
    reply,
    el("p", { class: "problem", role: "alert" }),
    el("p", { class: "chosen" }),
  );
}

const RECOMMENDED = "recommended";

// One question's inputs, and a function reading its answer: a choice, a list of choices, text.
function questionField(question, name) {
  const type = question.type || "free_text";
  const fieldset = el("fieldset", { class: "question", "data-type": type }, el("legend", { text: question.question }));
  if (type === "free_text") {
    const input = el("input", {
      type: "text",
      class: "free-text",
      name,
      placeholder: question.recommended || "your answer",
      "aria-label": question.question,
    });
    fieldset.append(input);
    if (question.choices && question.choices.length) {
      fieldset.append(
        el(
          "div",
          { class: "suggestions" },
          el("small", { text: "suggestions:" }),
          ...question.choices.map((choice) =>
            el("button", {
              type: "button",
              class: "suggestion",
              text: choice,
              onclick: () => {
                input.value = choice;
              },
            }),
          ),
        ),
      );
    }
    return [fieldset, () => input.value.trim()];
  }
  const multiple = type === "multiple_choice";
  const kind = multiple ? "checkbox" : "radio";
  const choices = el("div", { class: "choices" });
  fieldset.append(choices);
  const boxes = question.choices.map((choice) => {
    const input = el("input", { type: kind, name, value: choice, checked: choice === question.recommended });
    choices.append(
      el(
        "label",
        { class: choice === question.recommended ? "choice recommended" : "choice" },
        input,
        el("span", { text: choice }),
        choice === question.recommended ? el("small", { class: "recommended-mark", text: RECOMMENDED }) : null,
      ),
    );
    return input;
  });
  let other = null;
  let otherText = null;
  if (question.allow_other) {
    other = el("input", { type: kind, name, value: "", class: "other-choice" });
    otherText = el("input", {
      type: "text",
      class: "other-text",
      placeholder: "your own answer",
      "aria-label": `${question.question} (your own answer)`,
      oninput: () => {
        other.checked = true;
      },
    });
    choices.append(el("label", { class: "choice other" }, other, el("span", { text: "Other:" }), otherText));
  }
  const read = () => {
    const own = other && other.checked ? [otherText.value.trim()] : [];
    const picked = [...boxes.filter((box) => box.checked).map((box) => box.value), ...own];
    if (multiple) return picked;
    return picked.length ? picked[0] : "";
  };
  return [fieldset, read];
}
