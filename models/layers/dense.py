"""``Dense``: the fully connected layer, the notebook's ``MyLayer`` done properly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from models.layers.base import KernelLayer, as_shape, positive


class Dense(KernelLayer):
    """``y = activation(x @ w + b)`` with ``w`` of shape ``[input_size, output_size]``
    and one bias per unit, ``b`` of shape ``[output_size]``.

    Args:
      input_size: number of input features (fan-in); ``None`` to take it from
        the previous layer when added to a ``Sequential``.
      output_size: number of units (fan-out).
      activation: name in ``models.registry.ACTIVATIONS`` (``linear`` for logits).
      init: weight initializer name or callable ``(shape, dtype, seed)``.
      bias_init: bias initializer name or callable.
      seed: int or pair of ints; the weight and bias use distinct derived seeds.
      name: module name; variables read ``<name>/w`` and ``<name>/b``.
    """

    def __init__(
        self,
        input_size: int | None = None,
        output_size: int = 1,
        activation: str = "linear",
        init="xavier",
        bias_init="zeros",
        seed: int | Sequence[int] = 0,
        name: str | None = None,
    ):
        super().__init__(activation, init, bias_init, seed, name)
        self.output_size = positive("output_size", output_size)
        if input_size is not None:
            self.build((positive("input_size", input_size),))

    @property
    def input_size(self) -> int | None:
        return None if self._built_shape is None else self._built_shape[0]

    def output_shape(self, input_shape) -> tuple[int, ...]:
        input_shape = as_shape(input_shape)
        if self._built_shape is not None and input_shape != self._built_shape:
            raise ValueError(f"expects {self._built_shape[0]} inputs")
        if len(input_shape) != 1:
            raise ValueError("expects flat inputs [features] (put a flatten before it)")
        return (self.output_size,)

    def parameter_count(self, input_shape) -> int:
        return (int(np.prod(input_shape, dtype=np.int64)) + 1) * self.output_size

    def _create_variables(self, input_shape):
        self._make_weights([input_shape[0], self.output_size], self.output_size)

    def preactivation(self, x: tf.Tensor) -> tf.Tensor:
        """``x @ w + b``; ``x`` is ``[batch, input_size]``, result ``[batch, output_size]``."""
        self._check_built()
        # bias_add, not "+": its gradient is one BiasAddGrad op, and MatMul + BiasAdd
        # is the pair TensorFlow's CPU graph rewriter fuses into one kernel.
        return tf.nn.bias_add(tf.matmul(x, tf.cast(self.w, x.dtype)), tf.cast(self.b, x.dtype))

    def forward(self, x, training=False):
        pre = self.preactivation(x)
        return pre, self._activation(pre)

    def describe(self) -> str:
        return f"dense {self.output_size} {self.activation_name}"

    def keras_equivalent(self):
        return (
            "Dense",
            {"units": self.output_size, "activation": self.activation_name},
            (self._weights()),
        )
