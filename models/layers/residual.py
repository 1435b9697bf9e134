"""``ResidualBlock``: He et al. 2016's basic residual block, a composite layer."""

from __future__ import annotations

from collections.abc import Sequence

from models.layers.activation import Activation
from models.layers.base import Layer, as_shape, image_output, positive, seed_pair
from models.layers.batch_norm import BatchNorm
from models.layers.conv import Conv2D


class ResidualBlock(Layer):
    """``activation(bn_b(conv_b(activation(bn_a(conv_a(x))))) + shortcut(x))``.

    ``conv_a`` (K x K, stride S) and ``conv_b`` (K x K, stride 1) are linear
    ``Conv2D``s with ``same`` padding, each followed by a ``BatchNorm``. The
    shortcut is the identity when the block keeps the shape (S = 1 and C = F),
    else a projection: a 1 x 1 ``Conv2D`` with stride S (``shortcut``) and a
    ``BatchNorm`` (``shortcut_bn``). With ``activation="relu"`` this is the
    block of He et al.'s CIFAR networks (option B shortcuts).

    A composite layer (``models.layers.base``): its parts, reported one by one as
    ``<name>/conv_a``, ``bn_a``, ``conv_b``, ``bn_b`` (and ``shortcut``,
    ``shortcut_bn``), are ordinary layers held as attributes, so their variables,
    BatchNorm's moving averages included, are checkpointed and exported with it.

    Args:
      filters: F, the output channels.
      kernel_size: K (3 for ``res3x3``).
      strides: S, of ``conv_a`` and the projection.
      activation: after ``bn_a`` and after the sum.
      init: initializer of the convolutions' kernels (their biases start at 0).
      seed: the block's seed; its convolutions draw from distinct seeds derived
        from it, none of which a plain layer's seed ``(s, k)`` (k < 1024) gives.
      momentum: of the block's ``BatchNorm`` layers.

    Shapes: input ``[batch, H, W, C]``; output ``[batch, ceil(H / S), ceil(W /
    S), F]``.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        strides: int = 1,
        activation: str = "relu",
        init="xavier",
        seed: int | Sequence[int] = 0,
        momentum: float = 0.99,
        name: str | None = None,
    ):
        super().__init__(name=name)
        self.filters = positive("filters", filters)
        self.kernel_size = positive("kernel_size", kernel_size)
        self.strides = positive("strides", strides)
        self.activation_name = activation
        self.momentum = momentum
        self._init = init
        first, second = seed_pair(seed)
        self._seeds = [(first, (second + 1) * 1024 + i) for i in range(3)]
        k = self.kernel_size
        with self.name_scope:  # the parts' variables read <name>/conv_a/w, ...
            self.conv_a = self._part(self._conv(k, self.strides, 0, "conv_a"))
            self.bn_a = self._part(BatchNorm(momentum, name="bn_a"))
            self.act_a = self._part(Activation(activation, name="act_a"))
            self.conv_b = self._part(self._conv(k, 1, 1, "conv_b"))
            self.bn_b = self._part(BatchNorm(momentum, name="bn_b"))
            self.act = self._part(Activation(activation, name="act"))
        self.shortcut: Conv2D | None = None  # made by build when the shape changes
        self.shortcut_bn: BatchNorm | None = None

    def _conv(self, kernel_size: int, strides: int, number: int, name: str) -> Conv2D:
        return Conv2D(
            self.filters,
            kernel_size,
            strides,
            "same",
            "linear",
            self._init,
            seed=self._seeds[number],
            name=name,
        )

    def output_shape(self, input_shape):
        return image_output(input_shape, self.kernel_size, self.strides, "same", self.filters)

    def projects(self, input_shape) -> bool:
        """Whether the shortcut is a projection for examples of ``input_shape``."""
        return self.strides != 1 or as_shape(input_shape)[-1] != self.filters

    def _projection(self) -> tuple[Conv2D, BatchNorm]:
        return (
            self._part(self._conv(1, self.strides, 2, "shortcut")),
            self._part(BatchNorm(self.momentum, name="shortcut_bn")),
        )

    def parameter_count(self, input_shape) -> int:
        middle = self.output_shape(input_shape)
        total = self.conv_a.parameter_count(input_shape) + self.conv_b.parameter_count(middle)
        total += self.bn_a.parameter_count(middle) + self.bn_b.parameter_count(middle)
        if self.projects(input_shape):
            shortcut, shortcut_bn = self._projection()  # counted, not kept
            total += shortcut.parameter_count(input_shape) + shortcut_bn.parameter_count(middle)
        return total

    def _create_variables(self, input_shape):
        middle = self.conv_a.build(input_shape)
        for layer in (self.bn_a, self.act_a, self.conv_b, self.bn_b, self.act):
            layer.build(middle)
        if self.projects(input_shape):
            self.shortcut, self.shortcut_bn = self._projection()
            self.shortcut_bn.build(self.shortcut.build(input_shape))

    @property
    def parts(self) -> list[Layer]:
        if self.input_shape is None:
            return []
        shortcut = [self.shortcut, self.shortcut_bn] if self.shortcut is not None else []
        return [self.conv_a, self.bn_a, self.conv_b, self.bn_b, *shortcut]

    def part_activation_names(self) -> list[str]:
        # conv_a and conv_b feed a BatchNorm; bn_a goes through the activation, and
        # bn_b and the projection's BatchNorm through the sum and the activation.
        act = self.activation_name
        shortcut = ["linear", act] if self.shortcut is not None else []
        return ["linear", act, "linear", act, *shortcut]

    def _run(self, x, training):
        """``(sum, output, records)``: the sum before the last activation, the block's
        output, and the parts' records."""
        self._check_built()
        a = self.conv_a(x, training)
        b = self.bn_a(a, training)
        h = self.act_a(b, training)
        c = self.conv_b(h, training)
        d = self.bn_b(c, training)
        if self.shortcut is None:
            s = t = x
        else:
            s = self.shortcut(x, training)
            t = self.shortcut_bn(s, training)
        total = d + t
        output = self.act(total, training)
        records = [(a, a), (b, h), (c, c), (d, output)]
        if self.shortcut is not None:
            records += [(s, s), (t, output)]
        return total, output, records

    def forward(self, x, training=False):
        total, output, _ = self._run(x, training)
        return total, output

    def forward_parts(self, x, training=False):
        _, output, records = self._run(x, training)
        return output, records

    def set_step_source(self, step_fn) -> None:
        for layer in (self.conv_a, self.bn_a, self.act_a, self.conv_b, self.bn_b, self.act):
            layer.set_step_source(step_fn)
        for layer in (self.shortcut, self.shortcut_bn):
            if layer is not None:
                layer.set_step_source(step_fn)

    def describe(self) -> str:
        """``res{conv 3x3x32 s2 linear, batchnorm, relu, conv 3x3x32 linear, batchnorm |
        conv 1x1x32 s2 linear, batchnorm} relu``: the main path | the shortcut."""
        main = [self.conv_a, self.bn_a, self.act_a, self.conv_b, self.bn_b]
        shortcut = [self.shortcut, self.shortcut_bn] if self.shortcut is not None else []
        main_text = ", ".join(layer.describe() for layer in main)
        shortcut_text = ", ".join(layer.describe() for layer in shortcut) or "identity"
        return f"res{{{main_text} | {shortcut_text}}} {self.activation_name}"

    def keras_equivalent(self):
        raise NotImplementedError(
            "a residual block is several Keras layers joined by an Add: see keras_graph()"
        )

    def keras_graph(self):
        self._check_built()
        nodes = [
            ("conv_a", ("input",), self.conv_a.keras_equivalent()),
            ("bn_a", ("conv_a",), self.bn_a.keras_equivalent()),
            ("act_a", ("bn_a",), self.act_a.keras_equivalent()),
            ("conv_b", ("act_a",), self.conv_b.keras_equivalent()),
            ("bn_b", ("conv_b",), self.bn_b.keras_equivalent()),
        ]
        shortcut = "input"
        if self.shortcut is not None:
            nodes += [
                ("shortcut", ("input",), self.shortcut.keras_equivalent()),
                ("shortcut_bn", ("shortcut",), self.shortcut_bn.keras_equivalent()),
            ]
            shortcut = "shortcut_bn"
        nodes += [
            ("add", ("bn_b", shortcut), ("Add", {}, [])),
            ("act", ("add",), self.act.keras_equivalent()),
        ]
        return nodes
