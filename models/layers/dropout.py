"""``Dropout`` with masks that follow the seed and the step, so resume stays exact."""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

from models.layers.base import Layer, as_shape, seed_pair, step_stream


class Dropout(Layer):
    """Zeroes a fraction ``rate`` of its inputs while training, scaling the rest by
    ``1 / (1 - rate)``; the identity otherwise.

    The mask is drawn with a *stateless* op seeded by ``(seed, global step,
    replica)``: the same step always drops the same units, so a run killed and
    resumed from a checkpoint continues bit-identically, and no random state
    needs saving. The step comes from ``set_step_source`` (the trainer binds its
    global step); calling with ``training=True`` without one raises.

    Shapes: any; output as input.
    """

    def __init__(self, rate: float, seed: int | Sequence[int] = 0, name: str | None = None):
        super().__init__(name=name)
        rate = float(rate)
        if not (math.isfinite(rate) and 0 <= rate < 1):
            raise ValueError(f"rate must be in [0, 1), got {rate}")
        self.rate = rate
        first, second = seed_pair(seed)
        # One int64 folding both seed parts: distinct layers get distinct masks.
        self._seed = (first * 1_000_003 + second) % (2**62)
        self._step_fn = None

    def set_step_source(self, step_fn) -> None:
        # A plain function, not tracked by tf.Module (the step belongs to the trainer).
        self._step_fn = step_fn

    def output_shape(self, input_shape):
        return as_shape(input_shape)

    def _call(self, x, training):
        if not training or self.rate == 0:
            return x
        if self._step_fn is None:
            raise ValueError(
                f"{self.name}: Dropout needs the global step to draw its mask when training: "
                "train through the trainer or fit, or call model.set_step_source(fn)"
            )
        seed = tf.stack([tf.constant(self._seed, tf.int64), step_stream(self._step_fn())])
        # The mask of tf.nn.experimental.stateless_dropout (the same draws, kept where
        # u >= rate), with the 1 / (1 - rate) scale folded in: one multiply forward and
        # one backward, where its select and zeros cost 5% of a CIFAR CNN's step
        # (docs/benchmarks.md). Equal to it on finite inputs (a dropped negative value
        # is -0.0 here, +0.0 there).
        uniform = tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=x.dtype)
        scale = tf.constant(1.0 / (1.0 - self.rate), x.dtype)
        return x * (tf.cast(uniform >= self.rate, x.dtype) * scale)

    def describe(self) -> str:
        return f"dropout {self.rate:g}"

    def keras_equivalent(self):
        return "Dropout", {"rate": self.rate}, []
