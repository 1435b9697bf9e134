"""``Normalization``: the training set's fitted feature scaling, inside the model."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from models.layers.base import Layer, as_shape, show


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
        self._built_shape = as_shape(mean.shape)

    def output_shape(self, input_shape) -> tuple[int, ...]:
        expected = as_shape(self.mean.shape)
        if as_shape(input_shape) != expected:
            raise ValueError(f"expects input {show(expected)} (the shape of its scaling)")
        return expected

    def _call(self, x, training):
        return (x - tf.cast(self.mean, x.dtype)) / tf.cast(self.scale, x.dtype)

    def keras_equivalent(self):
        mean, scale = self.mean.numpy(), self.scale.numpy()
        if np.any(scale <= 0):
            raise ValueError(
                f"{self.name}: Keras Normalization takes a variance, so every scale must be > 0"
            )
        # One mean and variance per input value: every axis of one example is a feature axis.
        axes = tuple(range(1, mean.ndim + 1))
        arguments = {
            "axis": axes if len(axes) > 1 else -1,
            "mean": mean,
            "variance": np.square(scale),
        }
        return "Normalization", arguments, []


class TargetScaling(tf.Module):
    """A regression's targets as the network learns them: standardized with the
    training split's ``mean`` and ``scale`` (``standardize``), and its outputs
    back in the targets' own units (``__call__``), so a saved model predicts in
    the units of the data files.

    Shapes: scalars ``mean`` and ``scale``; ``standardize`` ``[batch]`` targets,
    ``__call__`` ``[batch, 1]`` outputs.
    """

    def __init__(self, mean: float = 0.0, scale: float = 1.0, name: str = "target_scaling"):
        super().__init__(name=name)
        if not (np.isfinite(mean) and np.isfinite(scale) and scale > 0):
            raise ValueError(f"target scaling needs a finite mean and scale > 0, not {scale}")
        with self.name_scope:
            self.mean = tf.Variable(float(mean), trainable=False, name="mean")
            self.scale = tf.Variable(float(scale), trainable=False, name="scale")

    def standardize(self, y):
        return (y - tf.cast(self.mean, y.dtype)) / tf.cast(self.scale, y.dtype)

    def __call__(self, outputs):
        return outputs * tf.cast(self.scale, outputs.dtype) + tf.cast(self.mean, outputs.dtype)
