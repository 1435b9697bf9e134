"""``--dataset=digits``: scikit-learn's bundled 8x8 digits (no download)."""

from __future__ import annotations

import numpy as np

from trainer.data.arrays import Arrays
from trainer.data.splits import describe, split, standard_scaling


def load(config) -> Arrays:
    """1797 images, 64 features in 0..16; the test split held out by
    ``--test_fraction`` and ``--seed``."""
    from sklearn import datasets

    digits = datasets.load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    fraction, seed = config.test_fraction, config.seed
    x_train, x_test, y_train, y_test, note = split(x, y, fraction, seed, "the digits dataset")
    return Arrays(
        x_train, y_train, x_test, y_test, 10, None, None, "digits: 8x8 images, 64 features",
        (8, 8, 1), splits=describe("test", fraction, seed, True, note, "the 1797 examples"),
        fit_scaling=standard_scaling,
    )  # fmt: skip
