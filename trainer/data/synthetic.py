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
    """The notebook's regression: y = sin(x) for x in [0, 2 pi]; 1000 training
    points evenly spaced, 200 validation and 200 test points drawn uniformly."""
    rng = np.random.default_rng(config.seed)
    x_train = np.linspace(0, 2 * np.pi, 1000, dtype=np.float32)[:, None]
    x_held = rng.uniform(0, 2 * np.pi, size=(400, 1)).astype(np.float32)
    y_train, y_held = (np.sin(x[:, 0]).astype(np.float32) for x in (x_train, x_held))
    return Arrays(
        x_train, y_train, x_held[:200], y_held[:200], 0, None, None, "sin: points on [0, 2pi]",
        x_validation=x_held[200:], y_validation=y_held[200:],
        splits=f"validation and test: 200 points each drawn uniformly, seed {config.seed}",
        fit_scaling=standard_scaling,
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
    n_held = max(1, n // 8)  # each of validation and test
    total = n + 2 * n_held
    # Drawn in float64 then cast (12 bytes a value), for the features and the
    # teacher's logits alike.
    resources.check_memory(
        12 * (total * d + d * c + total * c),
        f"the features ({total} examples x {d} features)",
        f"--synthetic_examples={n} --synthetic_features={d}",
    )
    x, y = teacher_labelled(total, d, c, config.seed)
    return Arrays(
        x[:n], y[:n], x[n + n_held :], y[n + n_held :], c, np.zeros(d, np.float32),
        np.ones(d, np.float32), f"synthetic: {d} features, {c} classes", image_shape_of((d,)),
        x_validation=x[n : n + n_held], y_validation=y[n : n + n_held],
        splits=f"validation and test: {n_held} examples each from the same teacher",
    )  # fmt: skip
