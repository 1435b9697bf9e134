"""Running sums of a loss, correct predictions and examples, in one variable."""

from __future__ import annotations

import math

import tensorflow as tf


class RunningMetrics(tf.Module):
    """Sums of loss, correct predictions and examples since the last reset.

    The three sums live in one ``[3]`` variable (summed across replicas when
    read), so a step adds to them with a single ``assign_add``.
    """

    def __init__(self, name: str):
        super().__init__(name=name)
        with self.name_scope:
            # [loss_sum, correct_sum, count]
            self.sums = tf.Variable(
                tf.zeros([3]),
                trainable=False,
                name="sums",
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )

    def update(self, per_example_loss, correct, keep=None):
        """Adds a batch: ``per_example_loss`` and ``correct`` are ``[batch]``.

        ``keep`` (a scalar bool tensor, optional): when false the batch adds
        nothing (a skipped, non-finite step), decided in-graph without a
        conditional.
        """
        count = per_example_loss.shape[0]  # static when batches are (drop_remainder)
        if count is None:
            count = tf.cast(tf.shape(per_example_loss)[0], tf.float32)
        batch = tf.stack(
            [tf.reduce_sum(per_example_loss), tf.reduce_sum(correct), tf.cast(count, tf.float32)]
        )
        if keep is not None:  # where, not multiply: 0 * NaN would be NaN
            batch = tf.where(keep, batch, tf.zeros_like(batch))
        self.sums.assign_add(batch)

    def reset(self):
        self.sums.assign(tf.zeros_like(self.sums))

    def result(self) -> dict[str, float]:
        """``{"loss", "accuracy", "count"}`` as Python floats (nan when empty)."""
        loss_sum, correct_sum, count = (float(v) for v in self.sums.numpy())
        if count == 0:
            return {"loss": math.nan, "accuracy": math.nan, "count": 0.0}
        return {"loss": loss_sum / count, "accuracy": correct_sum / count, "count": count}
