"""The polynomial learning-rate schedule (``--lr_schedule=polynomial``) against
NumPy and Keras's PolynomialDecay, and its options on the command line."""

import numpy as np
import pytest
import tensorflow as tf

from models import schedules
from trainer import config as config_lib
from trainer.errors import UsageError


def reference(u, base, warmup, decay_steps, min_fraction, power):
    """The rate of update ``u`` (1-based), written out in NumPy."""
    rate = base * (min(1.0, u / warmup) if warmup else 1.0)
    t = max(0, u - warmup)
    remaining = 1.0 - min(t, decay_steps) / decay_steps
    return rate * (min_fraction + (1.0 - min_fraction) * remaining**power)


@pytest.mark.parametrize("power", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("warmup", [0, 20])
def test_it_matches_numpy_at_every_step(power, warmup):
    schedule = schedules.Schedule(
        0.01, "polynomial", warmup, decay_steps=80, min_fraction=0.1, power=power
    )
    got = [float(schedule(tf.constant(u, tf.int64))) for u in range(1, 131)]
    want = [reference(u, 0.01, warmup, 80, 0.1, power) for u in range(1, 131)]
    np.testing.assert_allclose(got, want, rtol=2e-6)
    assert got[-1] == pytest.approx(0.001)  # after decay_steps: min_fraction x the base


def test_it_matches_keras_polynomial_decay():
    keras = pytest.importorskip("keras")
    oracle = keras.optimizers.schedules.PolynomialDecay(
        0.01, decay_steps=50, end_learning_rate=0.002, power=1.5
    )
    ours = schedules.Schedule(0.01, "polynomial", decay_steps=50, min_fraction=0.2, power=1.5)
    for u in (1, 10, 25, 49, 50, 51, 90):
        # Without warmup the decay runs over t = u, as Keras's over its step.
        np.testing.assert_allclose(float(ours(tf.constant(u))), float(oracle(u)), rtol=1e-5)


def test_its_options_are_flags_and_its_decay_defaults_to_the_rest_of_the_run(tmp_path):
    config = config_lib.resolve({"lr_schedule": "polynomial", "lr_power": 2.0})
    assert config.lr_options == {"power": 2.0}
    with pytest.raises(UsageError, match="--lr_power=2.0: applies to --lr_schedule=polynomial"):
        config_lib.resolve({"lr_schedule": "cosine", "lr_power": 2.0})
    with pytest.raises(UsageError, match="--lr_power=0.0: must be a finite number > 0"):
        config_lib.resolve({"lr_schedule": "polynomial", "lr_power": 0.0})
    from trainer.assembly import make_schedule

    schedule = make_schedule(config_lib.resolve({"lr_schedule": "polynomial"}), 500, 44)
    assert schedule.options == {"decay_steps": 500, "min_fraction": 0.0, "power": 1.0}
