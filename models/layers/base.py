"""The layer contract every layer keeps, and what layers with weights share.

The contract (``Layer``), which is all the rest of the product relies on:

* ``layer(x, training=False)``: ``x`` is ``[batch, *input_shape]``; the
  training step passes ``training=True`` (``Dropout`` drops, ``BatchNorm`` uses
  batch statistics and updates its moving averages); evaluation, ``predict``
  and the SavedModel pass ``False``.
* ``layer.build(input_shape)``: creates the variables for one example's shape
  (no batch axis), eagerly and once, so every variable exists before the first
  trace of a ``tf.function``; returns the output shape, and raises
  ``ValueError`` saying what the layer expects when the shape does not fit.
  ``layer.output_shape(input_shape)`` answers without building, and
  ``layer.parameter_count(input_shape)`` counts the scalars ``build`` would make.
* Weights for diagnostics: ``layer.kernel`` (the weight whose distribution
  tells the story: a dense matrix, a convolution kernel, a normalization's
  scale) and ``layer.bias``, both ``None`` for layers without weights;
  ``layer.has_weights``; ``layer.fans``; ``layer.activation_name`` (``linear``
  when the layer applies none), and ``layer.forward(x, training)`` returning
  ``(preactivation, output)``.
* ``layer.keras_equivalent()``: the Keras layer computing the same function,
  as data (``(class name, constructor arguments, weights)``), for tests and
  benchmarks that compare with Keras; the library never imports Keras.
  ``layer.keras_graph()`` is the same as a graph of Keras layers (for the
  functional API): ``[(node, input nodes, (class name, arguments, weights))]``
  in order, ``"input"`` naming the layer's input and the last node its output;
  one node, ``keras_equivalent()``, unless the layer is a composite.

Composite layers (a residual block) are made of inner layers, and the product
sees the inner layers with weights, its *parts*, one by one, as if they were
layers of the model: ``Sequential.weighted_layers`` lists them in the
composite's place, so diagnostics, TensorBoard, ``trainer.inspect``, the init
study, weight decay and L2 reach them. A composite keeps three more members:

* ``layer.parts``: its inner layers with weights, first to last (``[]`` for
  every other layer); each is named ``<composite>/<part>`` (``res_0/conv_a``:
  ``Layer._part`` makes a layer a part);
* ``layer.part_activation_names()``: per part, the activation its output goes
  through (for the saturation figure);
* ``layer.forward_parts(x, training)``: ``(output, records)``, with one
  ``(preactivation, activation)`` pair per part, each of that part's output
  shape, as ``Sequential.forward_with_activations`` keeps for plain layers.

Layers compute in the dtype of their input: feed bfloat16 activations and a
float32 layer runs in bfloat16 while keeping float32 master weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from models import activations as activations_lib
from models import initializers


def seed_pair(seed: int | Sequence[int]) -> tuple[int, int]:
    """An int or a pair of ints as a pair (the second 0 for an int)."""
    if isinstance(seed, int | np.integer):
        return int(seed), 0
    first, second = seed
    return int(first), int(second)


def step_stream(step) -> tf.Tensor:
    """The int64 stream a stateless draw of the training step ``step`` is seeded
    with: the step and the replica (``step * 4096 + replica id``), so every replica
    draws its own and the same step always draws the same (Dropout, augmentation)."""
    replica = tf.distribute.get_replica_context()
    index = replica.replica_id_in_sync_group if replica is not None else 0
    return tf.cast(step, tf.int64) * 4096 + tf.cast(index, tf.int64)


def positive(label: str, value) -> int:
    """``value`` as an int; ``ValueError`` naming ``label`` unless it is one >= 1."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{label} must be a positive integer, got {value!r}")
    return int(value)


def as_shape(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def show(shape) -> str:
    return str(list(shape))


class Layer(tf.Module):
    """Base class of every layer: the contract in the module docstring.

    Subclasses implement ``output_shape``, optionally ``_create_variables``
    (called once by ``build``) and ``_call(x, training)`` (or ``forward``).
    """

    activation_name = "linear"
    _owner: str | None = None  # the name of the composite layer this one is a part of

    def __init__(self, name: str | None = None):
        super().__init__(name=name)
        self._built_shape: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        """The layer's name (``conv_0``); ``<composite>/<part>`` (``res_0/conv_a``) for
        an inner layer of a composite layer."""
        own = super().name
        return f"{self._owner}/{own}" if self._owner else own

    def _part(self, layer: Layer) -> Layer:
        """Makes ``layer`` an inner layer of this one (its name goes under this one's);
        returns it."""
        layer._owner = self.name
        return layer

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """One example's input shape once built (``None`` before)."""
        return self._built_shape

    def output_shape(self, input_shape) -> tuple[int, ...]:
        """One example's output shape for ``input_shape``; ``ValueError`` if it does not fit."""
        raise NotImplementedError

    def build(self, input_shape) -> tuple[int, ...]:
        """Creates the variables for ``input_shape`` (once); returns the output shape.

        Raises:
          ValueError: the shape does not fit this layer, or it was built for another.
        """
        input_shape = as_shape(input_shape)
        output_shape = self.output_shape(input_shape)
        if self._built_shape is not None:
            if input_shape != self._built_shape:
                raise ValueError(f"expects input {show(self._built_shape)}")
            return output_shape
        with self.name_scope:
            self._create_variables(input_shape)
        self._built_shape = input_shape
        return output_shape

    def _create_variables(self, input_shape: tuple[int, ...]) -> None:
        del input_shape

    def parameter_count(self, input_shape) -> int:
        """Scalars of the variables ``build(input_shape)`` creates (computed, not built)."""
        del input_shape
        return 0

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.forward(x, training)[1]

    def forward(self, x: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """``(preactivation, output)``; the same tensor for layers without an activation."""
        self._check_built()
        output = self._call(x, training)
        return output, output

    def _call(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        raise NotImplementedError

    def _check_built(self) -> None:
        if self._built_shape is None:
            raise ValueError(
                f"layer {self.name} is not built: add it to a Sequential with a known "
                "input shape, or call build(input_shape)"
            )

    def set_step_source(self, step_fn) -> None:
        """Tells a layer whose training behaviour depends on the step where to read it.

        ``step_fn()`` returns the int64 global step; layers that need no step ignore it.
        """
        del step_fn

    @property
    def kernel(self) -> tf.Variable | None:
        return None

    @property
    def bias(self) -> tf.Variable | None:
        return None

    @property
    def has_weights(self) -> bool:
        return self.kernel is not None

    @property
    def fans(self) -> tuple[int, int]:
        """``(fan_in, fan_out)`` of the kernel, as the initializers compute them."""
        if self.kernel is None:
            return 0, 0
        return initializers.fans(self.kernel.shape.as_list())

    def describe(self) -> str:
        """A short token for logs, e.g. ``dense 100 sigmoid``."""
        return self.name

    def keras_equivalent(self) -> tuple[str, dict, list[np.ndarray]]:
        """``(class name in keras.layers, constructor arguments, weights in the order
        its set_weights takes)`` of the Keras layer computing the same function."""
        raise NotImplementedError(f"{type(self).__name__} has no Keras equivalent")

    def keras_graph(self) -> list[tuple[str, tuple[str, ...], tuple[str, dict, list]]]:
        """The Keras layers computing the same function, as a graph: ``[(node, input
        nodes, keras_equivalent-like triple)]`` in order; ``"input"`` is the layer's
        input, the last node its output."""
        return [("output", ("input",), self.keras_equivalent())]

    # -- composite layers (see the module docstring); a plain layer has no parts ------
    @property
    def parts(self) -> list[Layer]:
        """A composite's inner layers with weights, first to last; ``[]`` here."""
        return []

    def part_activation_names(self) -> list[str]:
        """Per part, the activation its output goes through."""
        return []

    def forward_parts(self, x: tf.Tensor, training: bool = False):
        """``(output, [(preactivation, activation)] per part)``."""
        raise NotImplementedError(f"{type(self).__name__} is not a composite layer")


class KernelLayer(Layer):
    """A layer with a kernel ``w``, one bias per unit ``b`` and an activation."""

    def __init__(self, activation, init, bias_init, seed, name):
        super().__init__(name=name)
        self.activation_name = activation
        self._activation = activations_lib.get(activation)
        self._init = initializers.get(init)
        self._bias_init = initializers.get(bias_init)
        self._seed = seed_pair(seed)

    def _make_weights(self, kernel_shape, units: int) -> None:
        # The weight and the bias draw from distinct seeds derived from the layer's.
        first, second = self._seed
        self.w = tf.Variable(
            self._init(list(kernel_shape), tf.float32, (first, 2 * second)), name="w"
        )
        self.b = tf.Variable(
            self._bias_init([units], tf.float32, (first, 2 * second + 1)), name="b"
        )

    @property
    def kernel(self):
        return getattr(self, "w", None)

    @property
    def bias(self):
        return getattr(self, "b", None)

    def _weights(self) -> list[np.ndarray]:
        return [self.w.numpy(), self.b.numpy()]


class ScaleShift(Layer):
    """A normalization with a learnt scale ``gamma`` and shift ``beta`` per channel
    of the last axis (the kernel and bias diagnostics report), keeping its input's
    shape; ``epsilon`` guards its division."""

    def __init__(self, epsilon: float, name: str | None = None):
        super().__init__(name=name)
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        self.epsilon = float(epsilon)

    def output_shape(self, input_shape):
        input_shape = as_shape(input_shape)
        if not input_shape:
            raise ValueError("expects at least one feature axis")
        return input_shape

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


def check_padding(padding: str) -> str:
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    return padding


def _spatial_output(size: int, window: int, stride: int, padding: str) -> int:
    if padding == "same":
        return math.ceil(size / stride)
    return (size - window) // stride + 1 if size >= window else 0


def image_output(input_shape, window: int, stride: int, padding: str, channels: int):
    """The ``(H', W', channels)`` a ``window`` x ``window`` sliding window makes of
    ``[H, W, C]`` examples; ``ValueError`` if they are not images or none fits."""
    input_shape = as_shape(input_shape)
    if len(input_shape) != 3:
        raise ValueError("expects images [height, width, channels]")
    height, width, _ = input_shape
    out = (
        _spatial_output(height, window, stride, padding),
        _spatial_output(width, window, stride, padding),
    )
    if min(out) < 1:
        raise ValueError(
            f"has no output with a {window}x{window} window and {padding} padding on "
            f"{height}x{width} images (use same padding, a smaller window or fewer poolings)"
        )
    return (*out, channels)
