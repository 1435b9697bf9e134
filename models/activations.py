"""Activation functions by name, and how to tell when a unit is saturated.

Layers output *logits*: the last layer of a classifier is ``linear`` and softmax
is applied only where probabilities are asked for (``Sequential.predict``),
which keeps cross-entropy numerically stable.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from models import registry

Activation = Callable[[tf.Tensor], tf.Tensor]

# The functions ``models.registry.ACTIVATIONS`` names.
sigmoid = tf.math.sigmoid
tanh = tf.math.tanh
relu = tf.nn.relu
elu = tf.nn.elu
softplus = tf.math.softplus
linear = tf.identity

# A unit whose output is within this of a bound of its activation has a
# near-zero local derivative.
SATURATION_MARGIN = 0.01


def get(name: str) -> Activation:
    """Looks an activation up by name (``ValueError`` naming the known ones)."""
    return registry.ACTIVATIONS.load(name)


def saturation_fraction(name: str, outputs: tf.Tensor) -> tf.Tensor:
    """Fraction of saturated (sigmoid/tanh) or dead (relu) outputs.

    Args:
      name: the activation that produced ``outputs``.
      outputs: the activation outputs, any shape, e.g. ``[batch, units]``.

    Returns:
      A float32 scalar in [0, 1]: for sigmoid/tanh the fraction of outputs
      within 0.01 of a bound; for relu the fraction of exactly-zero outputs
      (dead for that example); 0 for unbounded activations.
    """
    outputs = tf.cast(outputs, tf.float32)
    saturation = registry.ACTIVATIONS.get(name).saturation
    if saturation == "dead":
        saturated = tf.equal(outputs, 0.0)
    elif saturation is not None:
        low, high = saturation
        saturated = tf.logical_or(
            outputs <= low + SATURATION_MARGIN, outputs >= high - SATURATION_MARGIN
        )
    else:
        return tf.zeros([], tf.float32)
    return tf.reduce_mean(tf.cast(saturated, tf.float32))
