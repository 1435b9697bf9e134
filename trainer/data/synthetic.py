"""``--dataset=sin`` (the notebook's regression) and ``--dataset=synthetic``
(random data of a given shape, for benchmarks)."""

from __future__ import annotations

import numpy as np

from trainer import resources
from trainer.data.arrays import Arrays, image_shape_of
from trainer.data.splits import standard_scaling
from trainer.errors import DataError


# -- sin(x) regression and synthetic data ----------------------------------------
def load_sin(config) -> Arrays:
    """The notebook's regression: y = sin(x) for x in [0, 2 pi]."""
    rng = np.random.default_rng(config.seed)
    x_train = np.linspace(0, 2 * np.pi, 1000, dtype=np.float32)[:, None]
    x_eval = rng.uniform(0, 2 * np.pi, size=(200, 1)).astype(np.float32)
    y_train = np.sin(x_train[:, 0]).astype(np.float32)
    y_eval = np.sin(x_eval[:, 0]).astype(np.float32)
    mean, scale = standard_scaling(x_train)
    return Arrays(
        x_train, y_train, x_eval, y_eval, 0, mean, scale,
        "sin: 1000 train / 200 eval points on [0, 2pi]",
    )  # fmt: skip


def teacher_labelled(examples: int, features: int, classes: int, seed: int):
    """Gaussian features labelled by a random linear teacher: ``x ~ N(0, 1)``
    float32 ``[examples, features]`` and int64 ``y = argmax(x @ T)`` ``[examples]``,
    ``T ~ N(0, 1)`` ``[features, classes]``, both drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(examples, features)).astype(np.float32)
    teacher = rng.normal(size=(features, classes)).astype(np.float32)
    return x, np.argmax(x @ teacher, axis=1).astype(np.int64)


def load_synthetic(config) -> Arrays:
    """Gaussian features labelled by a random linear teacher (learnable)."""
    n, d, c = config.synthetic_examples, config.synthetic_features, config.synthetic_classes
    for name, value, least in (
        ("synthetic_examples", n, 1),
        ("synthetic_features", d, 1),
        ("synthetic_classes", c, 2),
    ):
        if value < least:
            raise DataError(f"--{name}={value}: must be >= {least}")
    n_eval = max(1, n // 8)
    total = n + n_eval
    # Drawn in float64 then cast (12 bytes a value), for the features and the
    # teacher's logits alike.
    resources.check_memory(
        12 * (total * d + d * c + total * c),
        f"the features ({total} examples x {d} features)",
        f"--synthetic_examples={n} --synthetic_features={d}",
    )
    x, y = teacher_labelled(total, d, c, config.seed)
    return Arrays(
        x[:n], y[:n], x[n:], y[n:], c, np.zeros(d, np.float32), np.ones(d, np.float32),
        f"synthetic: {n} train / {n_eval} eval, {d} features, {c} classes", image_shape_of((d,)),
    )  # fmt: skip
