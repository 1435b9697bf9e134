"""``--dataset=digits``: scikit-learn's bundled 8x8 digits (no download)."""

from __future__ import annotations

import numpy as np

from trainer.data.arrays import Arrays
from trainer.data.splits import split, standard_scaling


def load(config) -> Arrays:
    """1797 images, 64 features in 0..16, split by ``--eval_fraction`` and ``--seed``."""
    from sklearn import datasets

    digits = datasets.load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_eval, y_train, y_eval, note = split(
        x, y, config.eval_fraction, config.seed, "the digits dataset"
    )
    mean, scale = standard_scaling(x_train)
    return Arrays(
        x_train, y_train, x_eval, y_eval, 10, mean, scale,
        f"digits: {len(x_train)} train / {len(x_eval)} eval, 64 features{note}", (8, 8, 1),
    )  # fmt: skip
