"""Layers as ``tf.Module``s, one small contract for all of them, and ``Sequential``.

The contract (``Layer``), which is all the rest of the product relies on:

* ``layer(x, training=False)``: ``x`` is ``[batch, *input_shape]``; the
  training step passes ``training=True`` (``Dropout`` drops, ``BatchNorm`` uses
  batch statistics and updates its moving averages); evaluation, ``predict``
  and the SavedModel pass ``False``.
* ``layer.build(input_shape)``: creates the variables for one example's shape
  (no batch axis), eagerly and once, so every variable exists before the first
  trace of a ``tf.function``; returns the output shape, and raises
  ``ValueError`` saying what the layer expects when the shape does not fit.
  ``layer.output_shape(input_shape)`` answers without building.
* Weights for diagnostics: ``layer.kernel`` (the weight whose distribution
  tells the story: a dense matrix, a convolution kernel, BatchNorm's scale) and
  ``layer.bias``, both ``None`` for layers without weights;
  ``layer.has_weights``; ``layer.fans`` (fan-in and fan-out of the kernel);
  ``layer.activation_name`` (``linear`` when the layer applies none), and
  ``layer.forward(x, training)`` returning ``(preactivation, output)``.

Layers compute in the dtype of their input: feed bfloat16 activations and a
float32 layer runs in bfloat16 while keeping float32 master weights.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from models import activations as activations_lib
from models import initializers

# Compiled predict functions, kept off the modules so that checkpoints and
# SavedModels of a model hold only its variables.
_PREDICT_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _seed_pair(seed: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(seed, int | np.integer):
        return int(seed), 0
    first, second = seed
    return int(first), int(second)


def _positive(label: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{label} must be a positive integer, got {value!r}")
    return int(value)


def _shape(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def _show(shape) -> str:
    return str(list(shape))


class Layer(tf.Module):
    """Base class of every layer: the contract in the module docstring.

    Subclasses implement ``output_shape``, optionally ``_create_variables``
    (called once by ``build``) and ``_call(x, training)`` (or ``forward``).
    """

    activation_name = "linear"

    def __init__(self, name: str | None = None):
        super().__init__(name=name)
        self._built_shape: tuple[int, ...] | None = None

    # -- shapes ----------------------------------------------------------------
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
        input_shape = _shape(input_shape)
        output_shape = self.output_shape(input_shape)
        if self._built_shape is not None:
            if input_shape != self._built_shape:
                raise ValueError(f"expects input {_show(self._built_shape)}")
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

    # -- calling ---------------------------------------------------------------
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

    # -- weights, for diagnostics ------------------------------------------------
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


class Normalization(Layer):
    """Fixed affine preprocessing ``(x - mean) / scale``, per feature.

    Holds the scaling fitted on the training set (e.g. scikit-learn's
    ``StandardScaler.mean_`` and ``.scale_``) as non-trainable variables, so a
    saved model takes raw features exactly as they appear in the data files.

    Shapes: ``mean`` and ``scale`` have one example's shape, ``[D]`` or
    ``[H, W, C]``; input and output are ``[batch, *that shape]``.
    """

    def __init__(self, mean, scale, name: str | None = None):
        super().__init__(name=name)
        mean = np.asarray(mean, np.float32)
        scale = np.asarray(scale, np.float32)
        if mean.ndim == 0:
            mean = mean.reshape(1)
        if mean.shape != scale.shape:
            raise ValueError(f"mean has shape {list(mean.shape)} but scale has {list(scale.shape)}")
        if not np.all(np.isfinite(scale)) or np.any(scale == 0):
            raise ValueError("scale must be finite and non-zero for every feature")
        with self.name_scope:
            self.mean = tf.Variable(mean, trainable=False, name="mean")
            self.scale = tf.Variable(scale, trainable=False, name="scale")
        self._built_shape = _shape(mean.shape)

    def output_shape(self, input_shape) -> tuple[int, ...]:
        expected = _shape(self.mean.shape)
        if _shape(input_shape) != expected:
            raise ValueError(f"expects input {_show(expected)} (the shape of its scaling)")
        return expected

    def _call(self, x, training):
        return (x - tf.cast(self.mean, x.dtype)) / tf.cast(self.scale, x.dtype)


class _KernelLayer(Layer):
    """A layer with a kernel ``w``, one bias per unit ``b`` and an activation."""

    def __init__(self, activation, init, bias_init, seed, name):
        super().__init__(name=name)
        self.activation_name = activation
        self._activation = activations_lib.get(activation)
        self._init = initializers.get(init)
        self._bias_init = initializers.get(bias_init)
        self._seed = _seed_pair(seed)

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


class Dense(_KernelLayer):
    """A fully connected layer, the notebook's ``MyLayer`` done properly.

    ``y = activation(x @ w + b)`` with ``w`` of shape ``[input_size, output_size]``
    and one bias per unit, ``b`` of shape ``[output_size]``.

    Args:
      input_size: number of input features (fan-in); ``None`` to take it from
        the previous layer when added to a ``Sequential``.
      output_size: number of units (fan-out).
      activation: name in ``models.activations`` (``linear`` for logits).
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
        self.output_size = _positive("output_size", output_size)
        if input_size is not None:
            self.build((_positive("input_size", input_size),))

    @property
    def input_size(self) -> int | None:
        return None if self._built_shape is None else self._built_shape[0]

    def output_shape(self, input_shape) -> tuple[int, ...]:
        input_shape = _shape(input_shape)
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
        # bias_add, not "+": its gradient is one BiasAddGrad op rather than a
        # broadcasting Sum/Reshape chain, and the MatMul + BiasAdd pair is what
        # TensorFlow's CPU graph rewriter fuses into one kernel.
        return tf.nn.bias_add(tf.matmul(x, tf.cast(self.w, x.dtype)), tf.cast(self.b, x.dtype))

    def forward(self, x, training=False):
        pre = self.preactivation(x)
        return pre, self._activation(pre)

    def activate(self, preactivation: tf.Tensor) -> tf.Tensor:
        """Applies this layer's activation to a pre-activation tensor."""
        return self._activation(preactivation)

    def describe(self) -> str:
        return f"dense {self.output_size} {self.activation_name}"


def _spatial_output(size: int, window: int, stride: int, padding: str) -> int:
    if padding == "same":
        return math.ceil(size / stride)
    return (size - window) // stride + 1 if size >= window else 0


def _check_padding(padding: str) -> str:
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    return padding


def _image_output(input_shape, window: int, stride: int, padding: str, channels: int):
    input_shape = _shape(input_shape)
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


class Conv2D(_KernelLayer):
    """A 2-D convolution over NHWC images: ``activation(conv(x, w) + b)``.

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
        self.filters = _positive("filters", filters)
        self.kernel_size = _positive("kernel_size", kernel_size)
        self.strides = _positive("strides", strides)
        self.padding = _check_padding(padding)
        self._in_channels = None if in_channels is None else _positive("in_channels", in_channels)

    def output_shape(self, input_shape):
        out = _image_output(input_shape, self.kernel_size, self.strides, self.padding, self.filters)
        channels = _shape(input_shape)[-1]
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
        return f"conv {k}x{k}x{self.filters} {self.activation_name}"


class _Pool2D(Layer):
    _op = None
    _label = ""

    def __init__(
        self, pool_size: int = 2, strides: int | None = None, padding: str = "valid", name=None
    ):
        super().__init__(name=name)
        self.pool_size = _positive("pool_size", pool_size)
        self.strides = self.pool_size if strides is None else _positive("strides", strides)
        self.padding = _check_padding(padding)

    def output_shape(self, input_shape):
        channels = _shape(input_shape)[-1] if len(_shape(input_shape)) == 3 else 0
        return _image_output(input_shape, self.pool_size, self.strides, self.padding, channels)

    def _call(self, x, training):
        return type(self)._op(x, self.pool_size, self.strides, self.padding.upper())

    def describe(self) -> str:
        return f"{self._label} {self.pool_size}x{self.pool_size}"


class MaxPool2D(_Pool2D):
    """The largest value of each ``pool_size`` x ``pool_size`` window, per channel.

    Shapes: input ``[batch, H, W, C]``, output ``[batch, H', W', C]`` (``H' =
    floor((H - pool) / stride) + 1`` with ``valid`` padding, ``ceil(H / stride)``
    with ``same``).
    """

    _op = staticmethod(tf.nn.max_pool2d)
    _label = "maxpool"


class AvgPool2D(_Pool2D):
    """The mean of each window, per channel (shapes as ``MaxPool2D``)."""

    _op = staticmethod(tf.nn.avg_pool2d)
    _label = "avgpool"


class Flatten(Layer):
    """``[batch, *shape]`` -> ``[batch, prod(shape)]``, in row-major (NHWC) order."""

    def output_shape(self, input_shape):
        return (int(np.prod(_shape(input_shape), dtype=np.int64)),)

    def _call(self, x, training):
        return tf.reshape(x, [-1, self.output_shape(self._built_shape)[0]])

    def describe(self) -> str:
        return "flatten"


class Activation(Layer):
    """An activation on its own, e.g. after a ``BatchNorm`` (any shape)."""

    def __init__(self, activation: str, name: str | None = None):
        super().__init__(name=name)
        self.activation_name = activation
        self._activation = activations_lib.get(activation)

    def output_shape(self, input_shape):
        return _shape(input_shape)

    def _call(self, x, training):
        return self._activation(x)

    def describe(self) -> str:
        return self.activation_name


class Dropout(Layer):
    """Zeroes a fraction ``rate`` of its inputs while training, scaling the rest by
    ``1 / (1 - rate)``; the identity otherwise.

    The mask is drawn with a *stateless* op seeded by ``(seed, global step,
    replica)``: the same step always drops the same units, so a run killed and
    resumed from a checkpoint continues bit-identically, and no random state
    needs saving. The step comes from ``set_step_source`` (``TrainingProgram``
    binds its global step); calling with ``training=True`` without one raises.

    Shapes: any; output as input.
    """

    def __init__(self, rate: float, seed: int | Sequence[int] = 0, name: str | None = None):
        super().__init__(name=name)
        rate = float(rate)
        if not (math.isfinite(rate) and 0 <= rate < 1):
            raise ValueError(f"rate must be in [0, 1), got {rate}")
        self.rate = rate
        first, second = _seed_pair(seed)
        # One int64 folding both seed parts: distinct layers get distinct masks.
        self._seed = (first * 1_000_003 + second) % (2**62)
        self._step_fn = None

    def set_step_source(self, step_fn) -> None:
        # A plain function, not tracked by tf.Module (the step belongs to the trainer).
        self._step_fn = step_fn

    def output_shape(self, input_shape):
        return _shape(input_shape)

    def _call(self, x, training):
        if not training or self.rate == 0:
            return x
        if self._step_fn is None:
            raise ValueError(
                f"{self.name}: Dropout needs the global step to draw its mask when training: "
                "train through TrainingProgram or fit, or call model.set_step_source(fn)"
            )
        step = tf.cast(self._step_fn(), tf.int64)
        replica = tf.distribute.get_replica_context()
        index = replica.replica_id_in_sync_group if replica is not None else 0
        stream = step * 4096 + tf.cast(index, tf.int64)
        seed = tf.stack([tf.constant(self._seed, tf.int64), stream])
        return tf.nn.experimental.stateless_dropout(x, rate=self.rate, seed=seed)

    def describe(self) -> str:
        return f"dropout {self.rate:g}"


class BatchNorm(Layer):
    """Batch normalization over every axis but the last (channels or features).

    Training: ``gamma * (x - mean_B) / sqrt(var_B + epsilon) + beta`` with the
    batch's statistics, which also move the averages ``moving_mean`` and
    ``moving_variance`` by ``1 - momentum``. Evaluation and the SavedModel use
    the moving averages. Under ``tf.distribute`` the batch statistics are
    all-reduced, so every replica normalizes with the global batch's. A batch
    whose statistics are not finite leaves the moving averages as they were.

    Shapes: input ``[batch, ..., C]``; ``gamma``, ``beta`` and the moving
    averages are ``[C]``; output as input.
    """

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3, name: str | None = None):
        super().__init__(name=name)
        if not (math.isfinite(momentum) and 0 <= momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def output_shape(self, input_shape):
        input_shape = _shape(input_shape)
        if not input_shape:
            raise ValueError("expects at least one feature axis")
        return input_shape

    def parameter_count(self, input_shape) -> int:
        return 4 * int(input_shape[-1])  # gamma, beta and the two moving averages

    def _create_variables(self, input_shape):
        channels = input_shape[-1]
        self.gamma = tf.Variable(tf.ones([channels]), name="gamma")
        self.beta = tf.Variable(tf.zeros([channels]), name="beta")
        # Each replica updates its own copy with the same (all-reduced) figures;
        # reading them outside a replica gives their mean, as Keras does.
        on_read = {
            "trainable": False,
            "synchronization": tf.VariableSynchronization.ON_READ,
            "aggregation": tf.VariableAggregation.MEAN,
        }
        self.moving_mean = tf.Variable(tf.zeros([channels]), name="moving_mean", **on_read)
        self.moving_variance = tf.Variable(tf.ones([channels]), name="moving_variance", **on_read)

    @property
    def kernel(self):
        return getattr(self, "gamma", None)

    @property
    def bias(self):
        return getattr(self, "beta", None)

    def _batch_moments(self, x32):
        axes = list(range(len(x32.shape) - 1))
        count = tf.cast(tf.reduce_prod(tf.shape(x32)[:-1]), tf.float32)
        total = tf.reduce_sum(x32, axis=axes)
        squares = tf.reduce_sum(tf.square(x32), axis=axes)
        replica = tf.distribute.get_replica_context()
        strategy = tf.distribute.get_strategy()
        if replica is not None and strategy.num_replicas_in_sync > 1:
            total, squares, count = replica.all_reduce(
                tf.distribute.ReduceOp.SUM, (total, squares, count)
            )
        mean = total / count
        variance = tf.maximum(squares / count - tf.square(mean), 0.0)
        return mean, variance

    def _call(self, x, training):
        x32 = tf.cast(x, tf.float32)
        if training:
            mean, variance = self._batch_moments(x32)
            finite = tf.logical_and(
                tf.reduce_all(tf.math.is_finite(mean)), tf.reduce_all(tf.math.is_finite(variance))
            )
            keep = self.momentum
            for moving, value in ((self.moving_mean, mean), (self.moving_variance, variance)):
                updated = keep * moving + (1.0 - keep) * value
                moving.assign(tf.where(finite, updated, moving))
        else:
            mean, variance = self.moving_mean, self.moving_variance
        scale = self.gamma * tf.math.rsqrt(variance + self.epsilon)
        offset = self.beta - mean * scale
        return tf.cast(x32 * scale + offset, x.dtype)

    def describe(self) -> str:
        return "batchnorm"


class Sequential(tf.Module):
    """A stack of layers, the notebook's Keras-like ``Sequential``.

    ``add`` builds each layer for the shape the previous one outputs, and
    refuses one that does not fit with a ``ValueError`` naming both layers and
    shapes; ``__call__`` returns the last layer's raw output (logits for a
    classifier); ``predict`` applies the output head: softmax over classes when
    the model has several outputs, identity for a single regression output
    (override with ``head``).

    Args:
      layers: layers to ``add``, first to last.
      head: ``auto``, ``softmax``, ``sigmoid`` or ``identity``.
      input_shape: one example's shape, ``[D]`` or ``[H, W, C]``; needed when
        the first layer does not know it (a ``Dense`` built with an
        ``input_size`` does).

    Shapes: input ``[batch, *input_shape]``; output ``[batch, output_size]``.
    """

    def __init__(
        self,
        layers: Sequence[tf.Module] = (),
        head: str = "auto",
        input_shape: Sequence[int] | None = None,
        name=None,
    ):
        super().__init__(name=name)
        if head not in ("auto", "softmax", "sigmoid", "identity"):
            raise ValueError(f"unknown head {head!r}; choose auto, softmax, sigmoid or identity")
        self.head = head
        self._input_shape = None if input_shape is None else _shape(input_shape)
        self._shapes: list[tuple[int, ...]] = []
        self.layers = []
        for layer in layers:
            self.add(layer)

    def add(self, layer: Layer) -> Sequential:
        """Appends ``layer``, built for the previous output shape.

        Raises:
          ValueError: the layer does not fit that shape, naming both layers and shapes.
        """
        index = len(self.layers)
        if self.layers:
            incoming = self._shapes[-1]
            previous = self.layers[-1]
            source = f"layer {index - 1} ({previous.name}) outputs {_show(incoming)}"
        else:
            incoming = self._input_shape or layer.input_shape
            if incoming is None:
                raise ValueError(
                    f"layer 0 ({layer.name}) does not know its input shape: "
                    "pass input_shape=... to Sequential"
                )
            source = f"the model's input is {_show(incoming)}"
        try:
            output = layer.build(incoming)
        except ValueError as error:
            expected = error.args[0] if error.args else "does not fit"
            raise ValueError(f"layer {index} ({layer.name}) {expected} but {source}") from None
        self.layers.append(layer)
        self._shapes.append(output)
        if self._input_shape is None:
            self._input_shape = _shape(incoming)
        return self

    def set_step_source(self, step_fn) -> None:
        """Gives every layer the global step (``Dropout`` seeds its mask with it)."""
        for layer in self.layers:
            layer.set_step_source(step_fn)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's input shape, ``(D,)`` or ``(H, W, C)``."""
        self._check_built()
        return self._input_shape

    @property
    def input_size(self) -> int:
        """Number of raw input values per example (``D``, or ``H * W * C``)."""
        return int(np.prod(self.input_shape, dtype=np.int64))

    @property
    def output_size(self) -> int:
        self._check_built()
        return self._shapes[-1][-1]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Each layer's output shape for one example, first to last."""
        return list(self._shapes)

    @property
    def weighted_layers(self) -> list[Layer]:
        """The layers with trainable weights, first to last (what diagnostics report)."""
        return [layer for layer in self.layers if layer.has_weights]

    def _check_built(self):
        if not self.layers:
            raise ValueError(f"{self.name} has no layers; add() some first")

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        self._check_built()
        for layer in self.layers:
            x = layer(x, training=training)
        return x

    def _activation_runs(self) -> list[tuple[int, list[int]]]:
        """``[(weighted layer index, [indices of the Activation layers right after it])]``."""
        runs = []
        for index, layer in enumerate(self.layers):
            if layer.has_weights:
                runs.append((index, []))
            elif (
                isinstance(layer, Activation)
                and runs
                and runs[-1][0] + len(runs[-1][1]) + 1 == index
            ):
                runs[-1][1].append(index)
        return runs

    def activation_names(self) -> list[str]:
        """The activation applied to each weighted layer's output: its own, or that of
        an ``Activation`` layer right after it (``conv:linear, batchnorm, relu`` gives
        ``relu`` for the batchnorm), for saturation figures."""
        names = []
        for index, following in self._activation_runs():
            names.append(
                self.layers[following[-1]].activation_name
                if following
                else self.layers[index].activation_name
            )
        return names

    def forward_with_activations(self, x: tf.Tensor, training: bool = False):
        """Runs the model and keeps what each layer with weights computed.

        Returns:
          ``(outputs, records)`` where ``outputs`` is ``[batch, output_size]`` and
          ``records`` is a list, one per layer of ``weighted_layers``, of
          ``(preactivation, activation)`` tensors of that layer's output shape
          (``[batch, units]``, ``[batch, H, W, filters]``, ...); ``activation`` is
          the output after any ``Activation`` layers right after it.
        """
        self._check_built()
        owner = {}
        for number, (index, following) in enumerate(self._activation_runs()):
            owner[index] = number
            for position in following:
                owner[position] = number
        records = []
        for index, layer in enumerate(self.layers):
            pre, x = layer.forward(x, training)
            if layer.has_weights:
                records.append([pre, x])
            elif index in owner:
                records[owner[index]][1] = x
        return x, [tuple(record) for record in records]

    def describe(self) -> str:
        """The architecture in one line, e.g. ``[8, 8, 1] -> conv 3x3x32 relu -> ...``."""
        parts = [_show(self.input_shape)]
        parts += [layer.describe() for layer in self.layers if not isinstance(layer, Normalization)]
        return " -> ".join(parts)

    def head_name(self) -> str:
        """The resolved output head: ``softmax`` or ``identity`` (or ``sigmoid``)."""
        if self.head != "auto":
            return self.head
        return "softmax" if self.output_size > 1 else "identity"

    def apply_head(self, outputs: tf.Tensor) -> tf.Tensor:
        """Maps raw outputs ``[batch, output_size]`` to probabilities or predictions."""
        head = self.head_name()
        outputs = tf.cast(outputs, tf.float32)
        if head == "softmax":
            return tf.nn.softmax(outputs, axis=-1)
        if head == "sigmoid":
            return tf.math.sigmoid(outputs)
        return outputs

    def predict(self, x, batch_size: int | None = None) -> np.ndarray:
        """Probabilities ``[n, classes]`` (softmax head) or predictions ``[n, 1]``.

        Runs in batches of ``batch_size`` (all at once when ``None``) through a
        compiled function in inference mode; ``x`` is array-like ``[n,
        *input_shape]``.
        """
        x = np.asarray(x, np.float32)
        if x.ndim < 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"predict expects shape {_show(['n', *self.input_shape])}, got {list(x.shape)}"
            )
        predict_fn = _PREDICT_FNS.get(self)
        if predict_fn is None:
            predict_fn = tf.function(lambda inputs: self.apply_head(self(inputs, training=False)))
            _PREDICT_FNS[self] = predict_fn
        batch_size = batch_size or max(len(x), 1)
        chunks = [
            predict_fn(tf.constant(x[i : i + batch_size])) for i in range(0, len(x), batch_size)
        ]
        if not chunks:
            return np.zeros([0, self.output_size], np.float32)
        return np.concatenate([c.numpy() for c in chunks])

    def fit(self, x, y, **kwargs):
        """Trains this model in place; see ``models.training.fit`` for arguments."""
        from models import training

        return training.fit(self, x, y, **kwargs)

    def count_params(self) -> int:
        """Number of trainable scalars."""
        return int(sum(np.prod(v.shape) for v in self.trainable_variables))
