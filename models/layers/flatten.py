"""``Flatten``: ``[batch, *shape]`` -> ``[batch, prod(shape)]``."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from models.layers.base import Layer, as_shape


class Flatten(Layer):
    """Flattens each example in row-major (NHWC) order."""

    def output_shape(self, input_shape):
        return (int(np.prod(as_shape(input_shape), dtype=np.int64)),)

    def _call(self, x, training):
        return tf.reshape(x, [-1, self.output_shape(self._built_shape)[0]])

    def describe(self) -> str:
        return "flatten"

    def keras_equivalent(self):
        return "Flatten", {}, []
