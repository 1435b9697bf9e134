"""``Sequential``: a stack of layers, the notebook's Keras-like model.

``add`` builds each layer for the shape the previous one outputs, and refuses
one that does not fit, naming both layers and shapes. Training it is the
trainer's business (``trainer.fit``, or the command line).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from models.layers.activation import Activation
from models.layers.base import Layer, ScaleShift, as_shape, show
from models.layers.normalization import Normalization

# Compiled predict functions, kept off the modules so that checkpoints and
# SavedModels of a model hold only its variables.
_PREDICT_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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
        self._input_shape = None if input_shape is None else as_shape(input_shape)
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
            source = f"layer {index - 1} ({previous.name}) outputs {show(incoming)}"
        else:
            incoming = self._input_shape or layer.input_shape
            if incoming is None:
                raise ValueError(
                    f"layer 0 ({layer.name}) does not know its input shape: "
                    "pass input_shape=... to Sequential"
                )
            source = f"the model's input is {show(incoming)}"
        try:
            output = layer.build(incoming)
        except ValueError as error:
            expected = error.args[0] if error.args else "does not fit"
            raise ValueError(f"layer {index} ({layer.name}) {expected} but {source}") from None
        self.layers.append(layer)
        self._shapes.append(output)
        if self._input_shape is None:
            self._input_shape = as_shape(incoming)
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
        """The layers with trainable weights, first to last, a composite layer's parts
        in its place (``res_0/conv_a``, ...): what diagnostics report."""
        weighted = []
        for layer in self.layers:
            weighted += layer.parts or ([layer] if layer.has_weights else [])
        return weighted

    @property
    def decayed_kernels(self) -> list:
        """The kernels weight decay and L2 act on: dense and convolution weights, not a
        normalization's scale (BatchNorm's and LayerNorm's gamma, which ``kernel``
        reports for diagnostics)."""
        return [layer.kernel for layer in self.weighted_layers if not isinstance(layer, ScaleShift)]

    def _check_built(self):
        if not self.layers:
            raise ValueError(f"{self.name} has no layers; add() some first")

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        self._check_built()
        for layer in self.layers:
            x = layer(x, training=training)
        return x

    def _record_kinds(self) -> list[str]:
        """Per layer, what it gives the records of ``forward_with_activations`` (one
        record per entry of ``weighted_layers``): ``parts``, a composite's records, one
        per part; ``new``, a layer with weights, one record; ``activation``, an
        ``Activation`` right after a layer with weights (or after such an
        ``Activation``), which becomes the last record's activation; ``none``."""
        kinds, after_weights = [], False
        for layer in self.layers:
            if layer.parts:
                kind = "parts"
            elif layer.has_weights:
                kind = "new"
            elif isinstance(layer, Activation) and after_weights:
                kind = "activation"
            else:
                kind = "none"
            kinds.append(kind)
            after_weights = kind in ("new", "activation")
        return kinds

    def activation_names(self) -> list[str]:
        """The activation applied to each weighted layer's output: its own, or that of
        an ``Activation`` layer right after it (``conv:linear, batchnorm, relu`` gives
        ``relu`` for the batchnorm), or for a composite's part what the composite says
        (``part_activation_names``), for saturation figures."""
        names: list[str] = []
        for layer, kind in zip(self.layers, self._record_kinds(), strict=True):
            if kind == "parts":
                names += layer.part_activation_names()
            elif kind == "new":
                names.append(layer.activation_name)
            elif kind == "activation":
                names[-1] = layer.activation_name
        return names

    def forward_with_activations(self, x: tf.Tensor, training: bool = False):
        """Runs the model and keeps what each layer with weights computed.

        Returns:
          ``(outputs, records)`` where ``outputs`` is ``[batch, output_size]`` and
          ``records`` is a list, one per layer of ``weighted_layers`` (a composite's
          parts included), of ``(preactivation, activation)`` tensors of that layer's
          output shape (``[batch, units]``, ``[batch, H, W, filters]``, ...);
          ``activation`` is the output after any ``Activation`` layers right after it.
        """
        self._check_built()
        records = []
        for layer, kind in zip(self.layers, self._record_kinds(), strict=True):
            if kind == "parts":
                x, part_records = layer.forward_parts(x, training)
                records += [list(record) for record in part_records]
                continue
            pre, x = layer.forward(x, training)
            if kind == "new":
                records.append([pre, x])
            elif kind == "activation":
                records[-1][1] = x
        return x, [tuple(record) for record in records]

    def describe(self) -> str:
        """The architecture in one line, e.g. ``[8, 8, 1] -> conv 3x3x32 relu -> ...``."""
        parts = [show(self.input_shape)]
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
                f"predict expects shape {show(['n', *self.input_shape])}, got {list(x.shape)}"
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

    def count_params(self) -> int:
        """Number of trainable scalars."""
        return int(sum(np.prod(v.shape) for v in self.trainable_variables))
