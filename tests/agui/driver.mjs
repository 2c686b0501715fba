// One turn of a conversation through the official AG-UI client (@ag-ui/client's HttpAgent).
//
//   node driver.mjs <endpoint url> <thread id> <cookie header> <message> [decision json]
//
// Sends <message> on the thread, then answers every interrupt the run ends with by resuming with
// <decision json> (default {"type": "approve"}) for each, until a run ends without one. A fresh
// client each time: it knows nothing of the thread but what the server's snapshots tell it.
// Prints a JSON transcript on stdout: for each run, every event the client accepted (after its
// own verification of the stream), the error it raised if any, its pending interrupts and its
// state; then the messages and state the client holds at the end.

import { HttpAgent, buildResumeArray, randomUUID } from "@ag-ui/client";

const [url, threadId, cookie, text, decisionJson] = process.argv.slice(2);
const decision = JSON.parse(decisionJson ?? '{"type": "approve"}');
const agent = new HttpAgent({ url, threadId, headers: { Cookie: cookie } });
const runs = [];

async function run(parameters) {
  const events = [];
  let error = null;
  try {
    await agent.runAgent(parameters, {
      onEvent: ({ event }) => {
        events.push(structuredClone(event));
      },
    });
  } catch (exc) {
    error = String(exc?.message ?? exc);
  }
  runs.push({
    events,
    error,
    pendingInterrupts: structuredClone(agent.pendingInterrupts),
    state: structuredClone(agent.state),
  });
}

agent.addMessage({ id: randomUUID(), role: "user", content: text });
await run({ runId: randomUUID() });
for (let resumes = 0; agent.pendingInterrupts.length > 0 && resumes < 5; resumes++) {
  const answers = Object.fromEntries(
    agent.pendingInterrupts.map((i) => [i.id, { status: "resolved", payload: decision }]),
  );
  await run({ runId: randomUUID(), resume: buildResumeArray(agent.pendingInterrupts, answers) });
}
process.stdout.write(JSON.stringify({ runs, messages: agent.messages, state: agent.state }));
