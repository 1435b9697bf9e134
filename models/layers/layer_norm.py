"""``LayerNorm``: layer normalization over the last axis (Ba, Kiros and Hinton 2016)."""

from __future__ import annotations

import math

import tensorflow as tf

from models.layers.base import Layer, as_shape


class LayerNorm(Layer):
    """``gamma * (x - mean) / sqrt(var + epsilon) + beta``, with the mean and
    variance of each example's last axis (each pixel's channels for images).

    The same in training and evaluation, and per example: nothing is shared
    across the batch or across replicas. Computed in float32 whatever the input's
    dtype, returned in it.

    Shapes: input ``[batch, ..., C]``; ``gamma`` and ``beta`` are ``[C]``;
    output as input.
    """

    def __init__(self, epsilon: float = 1e-3, name: str | None = None):
        super().__init__(name=name)
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        self.epsilon = float(epsilon)

    def output_shape(self, input_shape):
        input_shape = as_shape(input_shape)
        if not input_shape:
            raise ValueError("expects at least one feature axis")
        return input_shape

    def parameter_count(self, input_shape) -> int:
        return 2 * int(input_shape[-1])  # gamma and beta

    def _create_variables(self, input_shape):
        channels = input_shape[-1]
        self.gamma = tf.Variable(tf.ones([channels]), name="gamma")
        self.beta = tf.Variable(tf.zeros([channels]), name="beta")

    @property
    def kernel(self):
        return getattr(self, "gamma", None)

    @property
    def bias(self):
        return getattr(self, "beta", None)

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
