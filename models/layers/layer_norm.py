"""``LayerNorm``: layer normalization over the last axis (Ba, Kiros and Hinton 2016)."""

from __future__ import annotations

import tensorflow as tf

from models.layers.base import ScaleShift


class LayerNorm(ScaleShift):
    """``gamma * (x - mean) / sqrt(var + epsilon) + beta``, with the mean and
    variance of each example's last axis (each pixel's channels for images).

    The same in training and evaluation, and per example: nothing is shared
    across the batch or across replicas. Computed in float32 whatever the input's
    dtype, returned in it.

    Shapes: input ``[batch, ..., C]``; ``gamma`` and ``beta`` are ``[C]``;
    output as input.
    """

    def __init__(self, epsilon: float = 1e-3, name: str | None = None):
        super().__init__(epsilon, name=name)

    def parameter_count(self, input_shape) -> int:
        return 2 * int(input_shape[-1])  # gamma and beta

    def _call(self, x, training):
        x32 = tf.cast(x, tf.float32)
        mean, variance = tf.nn.moments(x32, axes=[-1], keepdims=True)
        normalized = (x32 - mean) * tf.math.rsqrt(variance + self.epsilon)
        return tf.cast(normalized * self.gamma + self.beta, x.dtype)

    def describe(self) -> str:
        return "layernorm"

    def keras_equivalent(self):
        arguments = {"axis": -1, "epsilon": self.epsilon}
        return "LayerNormalization", arguments, [self.gamma.numpy(), self.beta.numpy()]
