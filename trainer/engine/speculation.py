"""Speculative calls: the guard paid once per compiled call instead of per step.

With batches that can be handed out again (``batches.rewinds``), a plain call
runs without the per-step check: it saves the state at its start and reads it
once at its end. A NaN or Inf never leaves that state once in it (``w - lr * NaN``
is NaN, an Inf weight turns the next loss NaN, the optimizers' slots and the
loss sums keep theirs, clipping turns an Inf norm into NaN gradients), so a
finite state at the end proves no step of the call was non-finite, and it
stands. Otherwise the state and the batches go back to the call's start and the
same steps run again checked, which names the step (the same batches, Dropout
masks and learning rates: all follow from the step).
"""

from __future__ import annotations

import tensorflow as tf

from trainer.engine.guard import finite_sum_check


class StateCopy:
    """Copies of ``variables`` (what a training call changes), in variables of the
    same shapes: this doubles the memory of the model and optimizer.

    Args:
      variables: the state, e.g. weights, BatchNorm's averages, the optimizer's
        slots, step count and rate, the step, the loss sums.
      strategy: the copies are made in its scope, like the originals.
    """

    def __init__(self, variables, strategy):
        self.variables = list(variables)
        with tf.init_scope(), strategy.scope():
            self.copies = [
                tf.Variable(v.read_value(), trainable=False, name="saved") for v in self.variables
            ]
        self.restore = tf.function(self._restore, autograph=False)

    def save(self) -> None:
        """Copies the state (in-graph)."""
        for saved, v in zip(self.copies, self.variables, strict=True):
            saved.assign(v)

    def _restore(self) -> None:
        for saved, v in zip(self.copies, self.variables, strict=True):
            v.assign(saved)

    def finite(self) -> tf.Tensor:
        """Whether the floating-point state is finite (``finite_sum_check``)."""
        return finite_sum_check([v for v in self.variables if v.dtype.is_floating])


def run_speculatively(iterator, num_steps: int, loop, state: StateCopy, replay, window=None):
    """``num_steps`` steps as speculative calls of ``loop``; returns whether training
    stopped (as the checked loop returns it).

    Args:
      iterator: rewindable batches.
      loop: the unchecked compiled loop ``(iterator, count) -> not finite``,
        saving ``state`` at its start.
      replay: ``(iterator, count) -> halted``, the checked steps run from where a
        non-finite call began, instead of it and every call after.
      window: ``iterator -> steps`` one call may take (XLA's prepared windows),
        or None.
    """
    done = 0
    while done < num_steps:
        point = iterator.rewind_point()
        count = num_steps - done
        if window is not None:
            count = min(count, window(iterator))
        if bool(loop(iterator, tf.constant(count, tf.int32))):
            state.restore()
            iterator.rewind(point)
            return replay(iterator, num_steps - done)
        done += count
    return False
