"""One training step on one replica: forward, ``tf.GradientTape`` backward, the
gradients summed across replicas, and the update.

The loss is averaged over the *global* batch, so summing the replicas'
gradients gives the mean gradient; the update is applied in cross-replica
context (``merge_call``), since ``assign_sub`` on mirrored variables inside a
replica context fails. Three variants of one step, composed from the same
pieces: ``checked`` (the guard decides whether the update is applied),
``unchecked`` (no per-step check: speculative calls, or the guard off) and
``diagnostic`` (checked, and it returns the per-layer figures). With an
augmentation, each step first transforms its batch (``models.augment``).
"""

from __future__ import annotations

import tensorflow as tf

from models import diagnostics as diagnostics_lib


class TrainStep:
    """The step functions of one model, objective and optimizer.

    Args:
      model: a ``Sequential`` mapping ``[batch, *input_shape]`` to ``[batch, K]``.
      objective: an ``Objective``.
      optimizer: a ``models.optimizers`` optimizer, built.
      strategy: the ``tf.distribute.Strategy`` the steps run under.
      compute_dtype: ``tf.float32``, or ``tf.bfloat16`` (the forward and
        backward passes in bfloat16; variables and the loss stay float32).
      guard: the ``Guard`` of checked steps, or None (every update applied).
      metrics: the ``RunningMetrics`` each step adds its batch to.
      augmentation: a ``models.augment.Augmentation`` applied to each training
        batch, or None.
      step_fn: the int64 step being taken (the augmentation's draws read it).
    """

    def __init__(self, model, objective, optimizer, strategy, compute_dtype, guard, metrics,
                 augmentation=None, step_fn=None):  # fmt: skip
        self.model = model
        self.objective = objective
        self.optimizer = optimizer
        self.strategy = strategy
        self.compute_dtype = tf.as_dtype(compute_dtype)
        self.guard = guard
        self.metrics = metrics
        self.augmentation = augmentation or None
        self.step_fn = step_fn

    def forward(self, x, training: bool = False):
        """Model outputs ``[batch, K]`` as float32, computed in ``compute_dtype``."""
        return tf.cast(self.model(tf.cast(x, self.compute_dtype), training=training), tf.float32)

    def _gradients(self, x, y, records: bool = False):
        """``(outputs, per_example, loss_sum, grads, records)`` of one replica's
        batch, the gradients and loss sum summed over replicas; with ``records``,
        ``records`` is ``(per-layer records, the augmented batch)``."""
        if self.augmentation is not None:
            x = self.augmentation(x, self.step_fn())
        with tf.GradientTape() as tape:
            if records:
                raw, records = self.model.forward_with_activations(
                    tf.cast(x, self.compute_dtype), training=True
                )
                outputs = tf.cast(raw, tf.float32)
            else:
                outputs = self.forward(x, training=True)
            per_example, loss_sum, loss = self.objective.train_loss(y, outputs)
        grads = tape.gradient(loss, self.model.trainable_variables)
        if self.strategy.num_replicas_in_sync > 1:
            context = tf.distribute.get_replica_context()
            grads, loss_sum = context.all_reduce(tf.distribute.ReduceOp.SUM, (grads, loss_sum))
        # Replicas hold identical summed gradients here, so clipping and the
        # finiteness check agree everywhere.
        if records is not False:
            records = (records, x)
        return outputs, per_example, loss_sum, grads, records

    def _apply(self, grads, loss_sum):
        """Applies the update, through the guard when there is one; returns whether
        the step counts (a scalar bool), or None when every step does."""
        if self.guard is None:
            self._apply_unchecked(grads)
            return None
        grads, finite, grad_bound = self.guard.check(loss_sum, grads)
        tf.distribute.get_replica_context().merge_call(
            self.guard.apply, args=(grads, finite, grad_bound)
        )
        return finite

    def _apply_unchecked(self, grads) -> None:
        """Clips ``grads`` (``clip_norm``) and applies them, in cross-replica context."""
        if self.optimizer.clip_norm is not None:
            grads, _ = self.optimizer.clip(grads)
        tf.distribute.get_replica_context().merge_call(self._update, args=(grads,))

    def _update(self, strategy, grads):
        self.optimizer.apply_clipped(grads, self.model.trainable_variables, strategy)

    def checked(self, x, y) -> None:
        """The plain step (with the guard, when there is one)."""
        outputs, per_example, loss_sum, grads, _ = self._gradients(x, y)
        keep = self._apply(grads, loss_sum)
        self.metrics.update(per_example, self.objective.correct(y, outputs), keep=keep)

    def unchecked(self, x, y) -> None:
        """The plain step without the per-step check (speculative calls)."""
        outputs, per_example, _, grads, _ = self._gradients(x, y)
        self._apply_unchecked(grads)
        self.metrics.update(per_example, self.objective.correct(y, outputs))

    def diagnostic(self, x, y) -> dict:
        """The plain step, also returning this replica's ``stats``
        (``models.diagnostics.layer_statistics``), ``grads`` (summed over
        replicas), ``weights`` after the update and ``records`` (per-layer
        pre-activations and activations)."""
        variables = self.model.trainable_variables
        outputs, per_example, loss_sum, grads, (records, augmented) = self._gradients(
            x, y, records=True
        )
        before = [tf.identity(v.read_value()) for v in variables]
        with tf.control_dependencies(before):
            keep = self._apply(grads, loss_sum)
        self.metrics.update(per_example, self.objective.correct(y, outputs), keep=keep)
        after = [tf.identity(v.read_value()) for v in variables]
        stats = diagnostics_lib.layer_statistics(self.model, grads, before, after, records)
        diagnosed = {"stats": stats, "grads": grads, "weights": after, "records": records}
        if self.augmentation is not None:
            diagnosed["augmented"] = augmented[:3]  # a few images, for TensorBoard
        return diagnosed
