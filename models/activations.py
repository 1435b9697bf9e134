"""Activation functions by name, and how to tell when a unit is saturated.

Layers output *logits*: the last layer of a classifier is ``linear`` and softmax
is applied only where probabilities are asked for (``Sequential.predict``),
which keeps cross-entropy numerically stable.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from models import choices

Activation = Callable[[tf.Tensor], tf.Tensor]

ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": tf.math.sigmoid,
    "tanh": tf.math.tanh,
    "relu": tf.nn.relu,
    "elu": tf.nn.elu,
    "softplus": tf.math.softplus,
    "linear": tf.identity,
}
choices.check_registry("activation", ACTIVATIONS, choices.ACTIVATIONS)

# Output bounds of the bounded activations: a unit whose output is within
# SATURATION_MARGIN of a bound has a near-zero local derivative.
BOUNDS: dict[str, tuple[float, float]] = {
    "sigmoid": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
}
SATURATION_MARGIN = 0.01


def get(name: str) -> Activation:
    """Looks an activation up by name.

    Raises:
      ValueError: for an unknown name, listing the known ones.
    """
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(sorted(ACTIVATIONS))}"
        ) from None


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
    if name in BOUNDS:
        low, high = BOUNDS[name]
        saturated = tf.logical_or(
            outputs <= low + SATURATION_MARGIN, outputs >= high - SATURATION_MARGIN
        )
    elif name == "relu":
        saturated = tf.equal(outputs, 0.0)
    else:
        return tf.zeros([], tf.float32)
    return tf.reduce_mean(tf.cast(saturated, tf.float32))
