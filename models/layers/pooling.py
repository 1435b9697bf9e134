"""Pooling over square windows of NHWC images, ``MaxPool2D`` and ``AvgPool2D``, and
over whole images, ``GlobalAvgPool2D``."""

from __future__ import annotations

import tensorflow as tf

from models.layers.base import Layer, as_shape, check_padding, image_output, positive


class Pool2D(Layer):
    """What the pools share: window, stride, padding and the shape arithmetic.

    Shapes: input ``[batch, H, W, C]``, output ``[batch, H', W', C]`` (``H' =
    floor((H - pool) / stride) + 1`` with ``valid`` padding, ``ceil(H / stride)``
    with ``same``).
    """

    _op = None
    _label = ""
    _keras_class = ""

    def __init__(
        self, pool_size: int = 2, strides: int | None = None, padding: str = "valid", name=None
    ):
        super().__init__(name=name)
        self.pool_size = positive("pool_size", pool_size)
        self.strides = self.pool_size if strides is None else positive("strides", strides)
        self.padding = check_padding(padding)

    def output_shape(self, input_shape):
        shape = as_shape(input_shape)
        channels = shape[-1] if len(shape) == 3 else 0
        return image_output(input_shape, self.pool_size, self.strides, self.padding, channels)

    def _call(self, x, training):
        return type(self)._op(x, self.pool_size, self.strides, self.padding.upper())

    def describe(self) -> str:
        return f"{self._label} {self.pool_size}x{self.pool_size}"

    def keras_equivalent(self):
        arguments = {"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}
        return self._keras_class, arguments, []


class MaxPool2D(Pool2D):
    """The largest value of each ``pool_size`` x ``pool_size`` window, per channel."""

    _op = staticmethod(tf.nn.max_pool2d)
    _label = "maxpool"
    _keras_class = "MaxPooling2D"


class AvgPool2D(Pool2D):
    """The mean of each window, per channel."""

    _op = staticmethod(tf.nn.avg_pool2d)
    _label = "avgpool"
    _keras_class = "AveragePooling2D"


class GlobalAvgPool2D(Layer):
    """The mean of each channel over the whole image (global average pooling).

    Computed in float32 whatever the input's dtype, returned in it.

    Shapes: input ``[batch, H, W, C]``, output ``[batch, C]``.
    """

    def output_shape(self, input_shape):
        shape = as_shape(input_shape)
        if len(shape) != 3:
            raise ValueError("expects images [height, width, channels]")
        return (shape[-1],)

    def _call(self, x, training):
        return tf.cast(tf.reduce_mean(tf.cast(x, tf.float32), axis=[1, 2]), x.dtype)

    def describe(self) -> str:
        return "gap"

    def keras_equivalent(self):
        return "GlobalAveragePooling2D", {}, []
