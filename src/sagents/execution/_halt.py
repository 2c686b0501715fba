"""Halting: ending a run on purpose, cleanly, with a reason.

A tool or a middleware sometimes knows the run must stop: a budget is spent, a guard tripped,
the task is done in a way the model cannot see. Raising an ordinary exception would end the run
as an *error*; :class:`Halt` ends it as a clean stop instead (``idle``, with a
:class:`~sagents.events.RunHalted` event saying why), wherever it is raised:

* in a **tool**: the call's result says the run was halted, the turn's other calls finish and
  keep their results, their state changes apply, and the run ends after the turn;
* in a **middleware hook** (``before_model``, ``after_model``) or a custom **step**: the run ends
  there, with the state as last committed.

Either way every tool call of the last model turn is answered (a call that never ran gets a
"not run: the run was halted" result), so the history stays valid for the next model call.

An exception rather than a return marker because it works the same from every place user code
runs in the loop, without threading a value back through langchain's tool machinery; the loop
catches it before its generic failure handling, so it is never reported as a failure. The class
itself lives in the error tree (``sagents._errors``), beside every other exception sagents
defines; this module is what the loop does with it.
"""

from __future__ import annotations

from sagents._errors import Halt
from sagents.events import RunHalted
from sagents.execution._result import Done
from sagents.execution._run import Run, answer_pending_calls

__all__ = ["Halt", "halted"]


#: The text of the result a halted run gives the calls that never ran.
HALTED_REASON = "the run was halted: {reason}"


def halted(run: Run, reason: str) -> Done:
    """End ``run`` because of a halt: answer the calls left without a result, drop a requested
    interrupt, say why, and return the clean result."""
    run.pending_interrupt = None
    state = run.state
    if state.interrupt is not None:
        state = state.replace(interrupt=None)
    state, results = answer_pending_calls(state, HALTED_REASON.format(reason=reason))
    if state is not run.state:
        run.commit(state, *results)
    run.sink.emit(RunHalted(agent_id=run.agent.agent_id, reason=reason))
    return Done(state=run.state, halted=reason)
