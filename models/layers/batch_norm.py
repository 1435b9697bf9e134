"""``BatchNorm``: batch normalization, all-reduced across replicas."""

from __future__ import annotations

import math

import tensorflow as tf

from models.layers.base import ScaleShift


class BatchNorm(ScaleShift):
    """Batch normalization over every axis but the last (channels or features).

    Training: ``gamma * (x - mean_B) / sqrt(var_B + epsilon) + beta`` with the
    batch's statistics, which also move the averages ``moving_mean`` and
    ``moving_variance`` by ``1 - momentum``. Evaluation and the SavedModel use
    the moving averages. Under ``tf.distribute`` the batch statistics are
    all-reduced, so every replica normalizes with the global batch's. A batch
    whose statistics are not finite leaves the moving averages as they were.

    Shapes: input ``[batch, ..., C]``; ``gamma``, ``beta`` and the moving
    averages are ``[C]``; output as input.
    """

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3, name: str | None = None):
        super().__init__(epsilon, name=name)
        if not (math.isfinite(momentum) and 0 <= momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)

    def parameter_count(self, input_shape) -> int:
        return 4 * int(input_shape[-1])  # gamma, beta and the two moving averages

    def _create_variables(self, input_shape):
        super()._create_variables(input_shape)
        channels = input_shape[-1]
        # Each replica updates its own copy with the same (all-reduced) figures;
        # reading them outside a replica gives their mean, as Keras does.
        on_read = {
            "trainable": False,
            "synchronization": tf.VariableSynchronization.ON_READ,
            "aggregation": tf.VariableAggregation.MEAN,
        }
        self.moving_mean = tf.Variable(tf.zeros([channels]), name="moving_mean", **on_read)
        self.moving_variance = tf.Variable(tf.ones([channels]), name="moving_variance", **on_read)

    def _batch_moments(self, x32):
        axes = list(range(len(x32.shape) - 1))
        count = tf.cast(tf.reduce_prod(tf.shape(x32)[:-1]), tf.float32)
        total = tf.reduce_sum(x32, axis=axes)
        squares = tf.reduce_sum(tf.square(x32), axis=axes)
        replica = tf.distribute.get_replica_context()
        strategy = tf.distribute.get_strategy()
        if replica is not None and strategy.num_replicas_in_sync > 1:
            total, squares, count = replica.all_reduce(
                tf.distribute.ReduceOp.SUM, (total, squares, count)
            )
        mean = total / count
        variance = tf.maximum(squares / count - tf.square(mean), 0.0)
        return mean, variance

    def _call(self, x, training):
        x32 = tf.cast(x, tf.float32)
        if training:
            mean, variance = self._batch_moments(x32)
            finite = tf.logical_and(
                tf.reduce_all(tf.math.is_finite(mean)), tf.reduce_all(tf.math.is_finite(variance))
            )
            keep = self.momentum
            for moving, value in ((self.moving_mean, mean), (self.moving_variance, variance)):
                updated = keep * moving + (1.0 - keep) * value
                moving.assign(tf.where(finite, updated, moving))
        else:
            mean, variance = self.moving_mean, self.moving_variance
        scale = self.gamma * tf.math.rsqrt(variance + self.epsilon)
        offset = self.beta - mean * scale
        return tf.cast(x32 * scale + offset, x.dtype)

    def describe(self) -> str:
        return "batchnorm"

    def keras_equivalent(self):
        arguments = {"momentum": self.momentum, "epsilon": self.epsilon}
        weights = [self.gamma, self.beta, self.moving_mean, self.moving_variance]
        return "BatchNormalization", arguments, [v.numpy() for v in weights]
