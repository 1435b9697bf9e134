"""The NaN/Inf guard: no update computed from a NaN or Inf is ever applied, and
the step is named.

Each checked step pays for one check of its loss and gradients (``check``); the
update then sits in the step's one conditional (``apply``), whose other branch
counts the skipped step. The weights are not read after every update: each
optimizer bounds its update elementwise from a bound on the gradients
(``Optimizer.step_bound``), so a scalar ``weight_bound >= max |w|`` grows by a
few scalar ops per step. While ``parameters x weight_bound < 1e38`` no weight
can be NaN/Inf or sum past float32's range, so the loop goes on
(``keep_going``); past that it stops after the step and the weights are read
(``end_call``), which names the step whose update broke them. An optimizer
without a bound has its weights read after every update instead.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import logging

from models.optimizers.base import largest_norm
from trainer.errors import NonFiniteError

# With skip_nonfinite, this many skipped steps in a row end the loop: the
# weights themselves are then what makes every step non-finite.
MAX_SKIPPED_IN_A_ROW = 10


def finite_sum_check(tensors) -> tf.Tensor:
    """Whether every element is finite, paid for with one ``reduce_sum`` per tensor.

    A NaN or an Inf anywhere makes the total non-finite, so a finite total proves
    every element finite. Finite values whose sum passes float32's range (about
    3.4e38) also count as non-finite: for weights that large the run has
    diverged. Returns a scalar bool.
    """
    total = tf.add_n([tf.reduce_sum(tf.cast(t, tf.float32)) for t in tensors])
    return tf.math.is_finite(total)


def gradient_check(loss_sum, grads) -> tuple[tf.Tensor, tf.Tensor]:
    """One step's check: ``(finite, grad_bound)``, float32 scalars.

    One ``L2Loss`` (sum of squares / 2) per gradient, added up: NaN or Inf in
    the loss or any gradient makes the total non-finite, and so do finite
    gradients whose squares pass float32's range (elements from about 1.8e19).
    ``grad_bound``, the gradients' global L2 norm, is >= every element's
    magnitude. (``tf.linalg.global_norm`` computes the same with two ops more.)
    """
    total = tf.add_n([tf.nn.l2_loss(tf.cast(g, tf.float32)) for g in grads])
    grad_bound = tf.sqrt(2.0 * total)
    return tf.math.is_finite(loss_sum + grad_bound), grad_bound


def matvec_gradient_check(loss_sum, grads) -> tuple[tf.Tensor, tf.Tensor]:
    """One step's check under XLA: ``(finite, grad_bound)``, float32 scalars.

    The gradients' L1 norm, each gradient's absolute values summed by a
    matrix-vector product with ones (``[m, n] @ [n]``; vectors summed directly),
    which XLA's CPU backend emits as one fused loop, faster than its reduction
    of the same values (docs/benchmarks.md). NaN or Inf anywhere, or magnitudes
    summing past float32's range, make it non-finite; the L1 norm is >= every
    element's magnitude.
    """
    parts = []
    for g in grads:
        magnitudes = tf.abs(tf.cast(g, tf.float32))
        if magnitudes.shape.rank and magnitudes.shape.rank >= 2:
            width = magnitudes.shape[-1]
            magnitudes = tf.linalg.matvec(tf.reshape(magnitudes, [-1, width]), tf.ones([width]))
        parts.append(tf.reduce_sum(magnitudes))
    total = tf.add_n(parts)
    return tf.math.is_finite(loss_sum + total), total


class Guard(tf.Module):
    """The guard's state and its in-graph pieces, for one model and optimizer.

    Args:
      model: its ``trainable_variables`` are the weights guarded.
      optimizer: bounds its updates (``step_bound``), clips (``clip_norm``).
      global_step: the int64 step variable (the step being taken is one more).
      skip_nonfinite: skip steps with NaN/Inf loss or gradients and go on;
        ``MAX_SKIPPED_IN_A_ROW`` in a row stop the loop all the same.
      xla: the steps run under XLA (the check is then ``matvec_gradient_check``).

    Variables (create under the strategy's scope): ``nonfinite_count`` and
    ``first_nonfinite_step`` (steps not applied, since the last report),
    ``skipped_in_a_row``, ``nonfinite_weights_step`` (the step whose finite
    update left a weight non-finite; -1 while none did), ``weights_finite``
    (read at the end of the last call), ``weight_bound`` and ``slot_bound``.
    """

    def __init__(
        self, model, optimizer, global_step, skip_nonfinite: bool = False, xla: bool = False
    ):
        super().__init__(name="guard")
        self.model = model
        self.optimizer = optimizer
        self.global_step = global_step
        self.skip_nonfinite = bool(skip_nonfinite)
        self.xla = bool(xla)
        self.nonfinite_count = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.first_nonfinite_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.skipped_in_a_row = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.nonfinite_weights_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.weights_finite = tf.Variable(True, trainable=False)
        self.weight_bound = tf.Variable(np.inf, trainable=False, dtype=tf.float32)
        self.slot_bound = tf.Variable(np.inf, trainable=False, dtype=tf.float32)
        parameters = sum(v.shape.num_elements() for v in model.trainable_variables)
        # Below this bound, |sum of all weights| < 1e38 < float32's range.
        self.weight_bound_limit = 1e38 / max(parameters, 1)

    # -- in the step (replica context) -------------------------------------------
    def check(self, loss_sum, grads):
        """``(grads, finite, grad_bound)``: the gradients to apply (clipped with
        ``clip_norm``, whose norm then serves as the check), whether the step is
        finite, and a bound >= max |g| of what is applied."""
        if self.optimizer.clip_norm is not None:
            grads, norm = self.optimizer.clip(grads)
            finite = tf.math.is_finite(norm + loss_sum)
            return grads, finite, tf.minimum(norm, self.optimizer.clip_norm) * (1.0 + 1e-5)
        check = matvec_gradient_check if self.xla else gradient_check
        finite, grad_bound = check(loss_sum, grads)
        return grads, finite, grad_bound

    # -- the update (cross-replica context) --------------------------------------
    def apply(self, strategy, grads, finite, grad_bound):
        """Applies the update when ``finite``; keeps the counters and bounds.

        One conditional per step, around the update (XLA turns it into selects
        folded into each variable's update).
        """
        optimizer = self.optimizer
        variables = self.model.trainable_variables
        finite = strategy.experimental_local_results(finite)[0]
        grad_bound = strategy.experimental_local_results(grad_bound)[0]
        # The bounds of this update, from the step number and rate it will use
        # (read before the conditional changes them).
        bounds = optimizer.step_bound(
            grad_bound, self.slot_bound, tf.cast(optimizer.iterations + 1, tf.float32)
        )
        if bounds is not None:
            largest, slot_bound = bounds
            weight_bound = self.weight_bound + largest
            if optimizer.weight_decay:
                weight_bound = self.weight_bound * optimizer.decay_factor() + largest

        def apply():
            optimizer.apply_clipped(grads, variables, strategy)
            self.skipped_in_a_row.assign(0)
            return tf.constant(True)

        def skip():
            self.nonfinite_count.assign_add(1)
            self.skipped_in_a_row.assign_add(1)
            first = self.first_nonfinite_step
            first.assign(tf.where(first < 0, self.global_step + 1, first))
            return tf.constant(False)

        tf.cond(finite, apply, skip)
        if bounds is None:  # nothing bounds the update: read the weights after it
            self.weight_bound.assign(tf.where(finite_sum_check(variables), 0.0, np.inf))
            return
        # (1 + 1e-5): room for float32's rounding in the update and in this sum.
        self.weight_bound.assign(tf.where(finite, weight_bound * (1.0 + 1e-5), self.weight_bound))
        if optimizer.bound_slot is not None:
            self.slot_bound.assign(tf.where(finite, slot_bound * (1.0 + 1e-5), self.slot_bound))

    # -- around the loop of a compiled call ----------------------------------------
    def begin_call(self):
        """Sets the bounds from the weights and slots themselves (once per call:
        they may have been restored or assigned since the last one)."""
        self.weight_bound.assign(largest_norm(self.model.trainable_variables))
        self.slot_bound.assign(self.optimizer.slot_norm())

    def keep_going(self, i, going):
        """Whether the loop takes step ``i`` of the call (``going``: it has steps left).

        A step is taken while the weights provably stay finite; the first one also
        when the previous call found them finite (so every call makes progress,
        even with weights too large to bound); never after the guard's stop.
        """
        trusted = tf.logical_or(
            self.weight_bound < self.weight_bound_limit,
            tf.logical_and(i == 0, self.weights_finite),
        )
        going = tf.logical_and(going, trusted)
        if self.skip_nonfinite:
            return tf.logical_and(going, self.skipped_in_a_row < MAX_SKIPPED_IN_A_ROW)
        return tf.logical_and(going, tf.equal(self.nonfinite_count, 0))

    def end_call(self):
        """Reads the weights once; marks the step whose update broke them. Returns
        whether the guard stopped training (a bound near its limit alone does not:
        the next call reads it afresh)."""
        weights_finite = finite_sum_check(self.model.trainable_variables)
        self.weights_finite.assign(weights_finite)
        marked = self.nonfinite_weights_step
        broke = tf.logical_and(marked < 0, tf.logical_not(weights_finite))
        marked.assign(tf.where(broke, self.global_step, marked))
        return tf.logical_or(self._halted(), tf.logical_not(weights_finite))

    def _halted(self):
        if self.skip_nonfinite:
            return self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW
        return self.nonfinite_count > 0

    # -- eagerly, between calls ----------------------------------------------------------
    def stopped(self) -> bool:
        """Whether the guard has stopped training and not been reset."""
        return bool(self._halted().numpy())

    def report(self, step: int) -> None:
        """After a call ending at ``step``: raises ``NonFiniteError`` when the guard
        stopped training, else logs the steps it skipped and forgets them.

        The error's text holds ``{checkpoint}`` for the last good checkpoint,
        which the caller fills in (``NonFiniteError.with_checkpoint``).
        """
        weights_step = int(self.nonfinite_weights_step.numpy())
        if weights_step >= 0:
            raise NonFiniteError(
                f"the update of step {weights_step} left non-finite weights (NaN/Inf, or "
                "summing past float32's range); training stopped without saving (last good "
                "checkpoint: {checkpoint}); lower --learning_rate or set --clip_norm"
            )
        bad = int(self.nonfinite_count.numpy())
        if not bad:
            return
        first = int(self.first_nonfinite_step.numpy())
        if not self.skip_nonfinite:
            raise NonFiniteError(
                f"non-finite loss or gradients at step {first}; training stopped without "
                "saving (last good checkpoint: {checkpoint}); lower --learning_rate, set "
                "--clip_norm, or pass --skip_nonfinite to skip such steps"
            )
        in_a_row = int(self.skipped_in_a_row.numpy())
        if in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise NonFiniteError(
                f"non-finite loss or gradients at every step from step {step - in_a_row + 1} "
                f"to {step} ({in_a_row} in a row, more than --skip_nonfinite skips): training "
                "has diverged; stopped without saving (last good checkpoint: {checkpoint}); "
                "lower --learning_rate or set --clip_norm"
            )
        logging.warning(
            "skipped %d step(s) with non-finite loss or gradients (first at step %d)", bad, first
        )
        self.reset_reported()

    def reset_reported(self) -> None:
        """Forgets skipped steps once reported (the count in a row is kept)."""
        self.nonfinite_count.assign(0)
        self.first_nonfinite_step.assign(-1)
