"""``Activation``: an activation on its own, e.g. after a ``BatchNorm``."""

from __future__ import annotations

from models import activations as activations_lib
from models.layers.base import Layer, as_shape


class Activation(Layer):
    """Applies ``activation`` elementwise (any shape)."""

    def __init__(self, activation: str, name: str | None = None):
        super().__init__(name=name)
        self.activation_name = activation
        self._activation = activations_lib.get(activation)

    def output_shape(self, input_shape):
        return as_shape(input_shape)

    def _call(self, x, training):
        return self._activation(x)

    def describe(self) -> str:
        return self.activation_name

    def keras_equivalent(self):
        return "Activation", {"activation": self.activation_name}, []
