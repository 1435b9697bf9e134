"""The compiled inner loops: ``num_steps`` training steps in one ``tf.while_loop``.

Each loop is traced once per run (``num_steps`` is a tensor, never a Python
int), without AutoGraph (converting the step's Python code was most of the
tracing time of a deep network). Its kind says what surrounds the steps:

* ``checked``: every step checked by the guard; the guard's bounds are read at
  the start and the weights once at the end (``Guard.begin_call``/``end_call``);
* ``speculative``: no per-step check; the state is saved at the start and read
  once at the end (``speculation``);
* ``unguarded``: neither (the guard off, to measure what it costs).

With ``prepared`` the loop reads ``iterator.next_prepared()`` and XLA compiles
it whole, batches and steps in one executable (``run_windows`` calls it window
by window).
"""

from __future__ import annotations

import collections

import tensorflow as tf


def make_loop(
    kind: str,
    step_fn,
    *,
    global_step: tf.Variable,
    strategy,
    before_step=None,
    after_step=None,
    guard=None,
    state=None,
    prepared: bool = False,
    counts: collections.Counter | None = None,
    name: str = "train_loop",
):
    """The loop function ``(iterator, num_steps) -> halted`` (a scalar bool).

    Args:
      kind: ``checked``, ``speculative`` or ``unguarded`` (module docstring).
      step_fn: the replica step ``(x, y) -> outputs``, run by ``strategy.run``.
      global_step: incremented after every step; ``step = global_step + 1`` is
        the step being taken.
      before_step: ``before_step(step)`` in-graph before each step (the
        learning rate of that update).
      after_step: ``after_step(step, outputs)`` in-graph after each step.
      guard: the ``Guard`` (checked loops; speculative ones keep its
        ``weights_finite`` flag).
      state: the ``StateCopy`` of a speculative loop.
      prepared: read prepared batches (XLA over the whole loop).
      counts: traces are counted there under ``name``.

    Returns what the caller acts on: checked, whether the guard stopped training;
    speculative, whether the call left anything non-finite behind.
    """

    def loop(iterator, num_steps):
        if counts is not None:
            counts[name] += 1
        if not isinstance(num_steps, tf.Tensor):
            raise TypeError("num_steps must be a tensor; a Python int would retrace per value")

        def body(i):
            x, y = iterator.next_prepared() if prepared else next(iterator)
            step = global_step + 1
            if before_step is not None:
                before_step(step)
            outputs = strategy.run(step_fn, args=(x, y))
            if after_step is not None:
                after_step(step, outputs)
            global_step.assign_add(1)
            return (i + 1,)

        def keep_going(i):
            going = i < tf.cast(num_steps, tf.int32)
            return guard.keep_going(i, going) if kind == "checked" else going

        if kind == "checked":
            guard.begin_call()
        elif kind == "speculative":
            state.save()
        tf.while_loop(keep_going, body, (tf.constant(0),))
        if kind == "checked":
            return guard.end_call()
        if kind == "speculative":
            clean = state.finite()
            guard.weights_finite.assign(clean)
            return tf.logical_not(clean)
        return tf.constant(False)

    jit = {"jit_compile": True} if prepared else {}
    loop.__name__ = name  # the graph's name in TensorBoard's Graphs dashboard
    return tf.function(loop, autograph=False, **jit)


def run_windows(loop, iterator, num_steps: int, window, global_step) -> bool:
    """``num_steps`` steps of an XLA-compiled ``loop`` over prepared windows.

    Window by window: ``window(iterator)`` prepares the next batches in a
    graph-mode call (for ``MemoryBatches`` the shuffle of new epochs, which has
    no XLA kernel) and says how many; the loop takes up to that many. Returns
    what the loop returns once it is true; a window that took no step also ends
    the call.
    """
    done = 0
    while done < num_steps:
        count = min(num_steps - done, window(iterator))
        before = int(global_step.numpy())
        if bool(loop(iterator, tf.constant(count, tf.int32))):
            return True
        taken = int(global_step.numpy()) - before
        if taken <= 0:
            return False
        done += taken
    return False
