"""``Conv2D``: a 2-D convolution over NHWC images."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from models.layers.base import KernelLayer, as_shape, check_padding, image_output, positive


class Conv2D(KernelLayer):
    """``activation(conv(x, w) + b)``.

    Args:
      filters: output channels F.
      kernel_size: K, for a K x K kernel ``w`` of shape ``[K, K, C_in, F]``.
      strides: step of the window in both directions.
      padding: ``same`` (output ``ceil(H / stride)``) or ``valid``.
      activation, init, bias_init, seed: as for ``Dense``; initializers take
        fan-in ``K*K*C_in`` and fan-out ``K*K*F`` from the kernel shape.
      in_channels: C_in; ``None`` to take it from the previous layer.

    Shapes: input ``[batch, H, W, C_in]``, output ``[batch, H', W', F]``.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        strides: int = 1,
        padding: str = "same",
        activation: str = "linear",
        init="xavier",
        bias_init="zeros",
        seed: int | Sequence[int] = 0,
        in_channels: int | None = None,
        name: str | None = None,
    ):
        super().__init__(activation, init, bias_init, seed, name)
        self.filters = positive("filters", filters)
        self.kernel_size = positive("kernel_size", kernel_size)
        self.strides = positive("strides", strides)
        self.padding = check_padding(padding)
        self._in_channels = None if in_channels is None else positive("in_channels", in_channels)

    def output_shape(self, input_shape):
        out = image_output(input_shape, self.kernel_size, self.strides, self.padding, self.filters)
        channels = as_shape(input_shape)[-1]
        if self._in_channels is not None and channels != self._in_channels:
            raise ValueError(f"expects {self._in_channels} input channels, not {channels}")
        return out

    def parameter_count(self, input_shape) -> int:
        return (self.kernel_size**2 * int(input_shape[-1]) + 1) * self.filters

    def _create_variables(self, input_shape):
        k = self.kernel_size
        self._in_channels = input_shape[-1]
        self._make_weights([k, k, input_shape[-1], self.filters], self.filters)

    def forward(self, x, training=False):
        self._check_built()
        pre = tf.nn.bias_add(  # as Dense: one BiasAddGrad, and Conv2D + BiasAdd fuse
            tf.nn.conv2d(x, tf.cast(self.w, x.dtype), self.strides, self.padding.upper()),
            tf.cast(self.b, x.dtype),
        )
        return pre, self._activation(pre)

    def describe(self) -> str:
        k = self.kernel_size
        stride = f" s{self.strides}" if self.strides != 1 else ""
        return f"conv {k}x{k}x{self.filters}{stride} {self.activation_name}"

    def keras_equivalent(self):
        arguments = {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "activation": self.activation_name,
        }
        return "Conv2D", arguments, self._weights()
