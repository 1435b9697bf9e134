"""Layers as ``tf.Module``s: ``Normalization``, ``Dense`` and ``Sequential``.

Variables are created eagerly in ``__init__`` (sizes are always known), so every
variable exists before the first trace of a ``tf.function``. Variables compute
in the dtype of their input: feed bfloat16 activations and a float32 layer runs
its matmul in bfloat16 while keeping float32 master weights.
"""

from __future__ import annotations

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


class Normalization(tf.Module):
    """Fixed affine preprocessing ``(x - mean) / scale``, per feature.

    Holds the scaling fitted on the training set (e.g. scikit-learn's
    ``StandardScaler.mean_`` and ``.scale_``) as non-trainable variables, so a
    saved model takes raw features exactly as they appear in the data files.

    Shapes: input ``[batch, size]``, output ``[batch, size]``.
    """

    def __init__(self, mean, scale, name: str | None = None):
        super().__init__(name=name)
        mean = np.asarray(mean, np.float32).reshape(-1)
        scale = np.asarray(scale, np.float32).reshape(-1)
        if mean.shape != scale.shape:
            raise ValueError(f"mean has {mean.size} features but scale has {scale.size}")
        if not np.all(np.isfinite(scale)) or np.any(scale == 0):
            raise ValueError("scale must be finite and non-zero for every feature")
        self.input_size = self.output_size = int(mean.size)
        self.activation_name = "linear"
        with self.name_scope:
            self.mean = tf.Variable(mean, trainable=False, name="mean")
            self.scale = tf.Variable(scale, trainable=False, name="scale")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        mean = tf.cast(self.mean, x.dtype)
        scale = tf.cast(self.scale, x.dtype)
        return (x - mean) / scale


class Dense(tf.Module):
    """A fully connected layer, the notebook's ``MyLayer`` done properly.

    ``y = activation(x @ w + b)`` with ``w`` of shape ``[input_size, output_size]``
    and one bias per unit, ``b`` of shape ``[output_size]``.

    Args:
      input_size: number of input features (fan-in).
      output_size: number of units (fan-out).
      activation: name in ``models.activations`` (``linear`` for logits).
      init: weight initializer name or callable ``(shape, dtype, seed)``.
      bias_init: bias initializer name or callable.
      seed: int or pair of ints; the weight and bias use distinct derived seeds.
      name: module name; variables read ``<name>/w`` and ``<name>/b``.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        activation: str = "linear",
        init="xavier",
        bias_init="zeros",
        seed: int | Sequence[int] = 0,
        name: str | None = None,
    ):
        super().__init__(name=name)
        for label, size in (("input_size", input_size), ("output_size", output_size)):
            if not isinstance(size, int | np.integer) or size < 1:
                raise ValueError(f"{label} must be a positive integer, got {size!r}")
        self.input_size = int(input_size)
        self.output_size = int(output_size)
        self.activation_name = activation
        self._activation = activations_lib.get(activation)
        first, second = _seed_pair(seed)
        weight_init = initializers.get(init)
        bias_initializer = initializers.get(bias_init)
        with self.name_scope:
            self.w = tf.Variable(
                weight_init([self.input_size, self.output_size], tf.float32, (first, 2 * second)),
                name="w",
            )
            self.b = tf.Variable(
                bias_initializer([self.output_size], tf.float32, (first, 2 * second + 1)),
                name="b",
            )

    def preactivation(self, x: tf.Tensor) -> tf.Tensor:
        """``x @ w + b``; ``x`` is ``[batch, input_size]``, result ``[batch, output_size]``."""
        return tf.matmul(x, tf.cast(self.w, x.dtype)) + tf.cast(self.b, x.dtype)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self._activation(self.preactivation(x))

    def activate(self, preactivation: tf.Tensor) -> tf.Tensor:
        """Applies this layer's activation to a pre-activation tensor."""
        return self._activation(preactivation)


class Sequential(tf.Module):
    """A stack of layers, the notebook's Keras-like ``Sequential``.

    ``add`` checks that sizes chain; ``__call__`` returns the last layer's raw
    output (logits for a classifier); ``predict`` applies the output head:
    softmax over classes when the model has several outputs, identity for a
    single regression output (override with ``head``).

    Shapes: input ``[batch, input_size]``; output ``[batch, output_size]``.
    """

    def __init__(self, layers: Sequence[tf.Module] = (), head: str = "auto", name=None):
        super().__init__(name=name)
        if head not in ("auto", "softmax", "sigmoid", "identity"):
            raise ValueError(f"unknown head {head!r}; choose auto, softmax, sigmoid or identity")
        self.head = head
        self.layers = []
        for layer in layers:
            self.add(layer)

    def add(self, layer: tf.Module) -> Sequential:
        """Appends ``layer``; raises ``ValueError`` if its input size does not chain."""
        if self.layers:
            previous = self.layers[-1]
            if layer.input_size != previous.output_size:
                raise ValueError(
                    f"layer {len(self.layers)} ({layer.name}) expects {layer.input_size} inputs "
                    f"but layer {len(self.layers) - 1} ({previous.name}) outputs "
                    f"{previous.output_size}"
                )
        self.layers.append(layer)
        return self

    @property
    def input_size(self) -> int:
        self._check_built()
        return self.layers[0].input_size

    @property
    def output_size(self) -> int:
        self._check_built()
        return self.layers[-1].output_size

    @property
    def dense_layers(self) -> list[Dense]:
        """The trainable ``Dense`` layers, first to last."""
        return [layer for layer in self.layers if isinstance(layer, Dense)]

    def _check_built(self):
        if not self.layers:
            raise ValueError(f"{self.name} has no layers; add() some first")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        self._check_built()
        for layer in self.layers:
            x = layer(x)
        return x

    def forward_with_activations(self, x: tf.Tensor):
        """Runs the model and keeps what each ``Dense`` layer computed.

        Returns:
          ``(outputs, records)`` where ``outputs`` is ``[batch, output_size]`` and
          ``records`` is a list, one per Dense layer, of ``(preactivation,
          activation)`` tensors of shape ``[batch, units]``.
        """
        self._check_built()
        records = []
        for layer in self.layers:
            if isinstance(layer, Dense):
                pre = layer.preactivation(x)
                x = layer.activate(pre)
                records.append((pre, x))
            else:
                x = layer(x)
        return x, records

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
        compiled function; ``x`` is array-like ``[n, input_size]``.
        """
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"predict expects shape [n, {self.input_size}], got {list(x.shape)}")
        predict_fn = _PREDICT_FNS.get(self)
        if predict_fn is None:
            predict_fn = tf.function(lambda inputs: self.apply_head(self(inputs)))
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
