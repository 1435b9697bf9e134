"""Weight initializers: small seeded callables ``(shape, dtype, seed) -> Tensor``.

Every initializer draws from TensorFlow's *stateless* random ops, so the same
``seed`` (a pair of ints) always gives the same tensor, on any device, with no
hidden global state. Layers derive a distinct seed per variable.

``shape`` is ``[fan_in, fan_out]`` for a dense weight matrix, ``[K, K, C_in,
C_out]`` for a convolution kernel (fans ``K*K*C_in`` and ``K*K*C_out``, as in
Keras and the He and Glorot papers) and ``[units]`` for a bias vector (fans
``(units, units)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import tensorflow as tf

from models import registry

Initializer = Callable[..., tf.Tensor]


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of ``shape``; a kernel's window multiplies both."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    receptive = math.prod(int(d) for d in shape[:-2])
    return int(shape[-2]) * receptive, int(shape[-1]) * receptive


def zeros(shape, dtype=tf.float32, seed=(0, 0)) -> tf.Tensor:
    """All zeros: every hidden unit starts identical and stays so (symmetry)."""
    del seed
    return tf.zeros(shape, dtype)


def ones(shape, dtype=tf.float32, seed=(0, 0)) -> tf.Tensor:
    """All ones."""
    del seed
    return tf.ones(shape, dtype)


def uniform(shape, dtype=tf.float32, seed=(0, 0)) -> tf.Tensor:
    """U[0, 1), the notebook's ``tf.random.uniform`` default.

    All-positive weights make a deep sigmoid network's pre-activations grow with
    the width, saturating every unit, so gradients vanish.
    """
    return tf.random.stateless_uniform(shape, seed, minval=0.0, maxval=1.0, dtype=dtype)


def normal(shape, dtype=tf.float32, seed=(0, 0)) -> tf.Tensor:
    """N(0, 1), the notebook's ``tf.random.normal`` default."""
    return tf.random.stateless_normal(shape, seed, dtype=dtype)


def xavier(shape, dtype=tf.float32, seed=(0, 0)) -> tf.Tensor:
    """Xavier/Glorot normal: N(0, 2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    std = math.sqrt(2.0 / (fan_in + fan_out))
    return tf.random.stateless_normal(shape, seed, stddev=std, dtype=dtype)


def xavier_uniform(shape, dtype=tf.float32, seed=(0, 0)) -> tf.Tensor:
    """Xavier/Glorot uniform: U(-l, l) with l = sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return tf.random.stateless_uniform(shape, seed, minval=-limit, maxval=limit, dtype=dtype)


def he(shape, dtype=tf.float32, seed=(0, 0)) -> tf.Tensor:
    """He/Kaiming normal for ReLU: N(0, 2 / fan_in)."""
    fan_in, _ = fans(shape)
    std = math.sqrt(2.0 / fan_in)
    return tf.random.stateless_normal(shape, seed, stddev=std, dtype=dtype)


def he_uniform(shape, dtype=tf.float32, seed=(0, 0)) -> tf.Tensor:
    """He uniform: U(-l, l) with l = sqrt(6 / fan_in)."""
    fan_in, _ = fans(shape)
    limit = math.sqrt(6.0 / fan_in)
    return tf.random.stateless_uniform(shape, seed, minval=-limit, maxval=limit, dtype=dtype)


def lecun(shape, dtype=tf.float32, seed=(0, 0)) -> tf.Tensor:
    """LeCun normal: N(0, 1 / fan_in)."""
    fan_in, _ = fans(shape)
    return tf.random.stateless_normal(shape, seed, stddev=math.sqrt(1.0 / fan_in), dtype=dtype)


def get(name: str | Initializer) -> Initializer:
    """Looks an initializer up by name (``models.registry.INITIALIZERS``); a
    callable is returned as is.

    Raises:
      ValueError: for an unknown name, listing the known ones.
    """
    if callable(name):
        return name
    return registry.INITIALIZERS.load(name)
