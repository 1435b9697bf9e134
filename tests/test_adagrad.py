"""Adagrad (``--optimizer=adagrad``) against Keras's Adagrad and NumPy, its update
bound for the NaN/Inf guard, and its hyperparameters on the command line."""

import numpy as np
import pytest
import tensorflow as tf

from models import optimizers
from trainer import config as config_lib
from trainer.errors import UsageError


def _gradients(steps=6, seed=0):
    rng = np.random.default_rng(seed)
    return [
        [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)]
        for _ in range(steps)
    ]


def test_steps_match_keras_and_numpy():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(1)
    start = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)]
    ours = [tf.Variable(v) for v in start]
    theirs = [keras.Variable(v) for v in start]
    optimizer = optimizers.get("adagrad", 0.1, initial_accumulator_value=0.2, epsilon=1e-7)
    optimizer.build(ours)
    oracle = keras.optimizers.Adagrad(0.1, initial_accumulator_value=0.2, epsilon=1e-7)
    sums = [np.full_like(v, 0.2, dtype=np.float64) for v in start]
    weights = [v.astype(np.float64) for v in start]
    for grads in _gradients():
        optimizer.apply_gradients([tf.constant(g) for g in grads], ours)
        oracle.apply_gradients(zip([tf.constant(g) for g in grads], theirs, strict=True))
        for i, g in enumerate(grads):
            sums[i] += g.astype(np.float64) ** 2
            weights[i] -= 0.1 * g / (np.sqrt(sums[i]) + 1e-7)
    for a, b, c in zip(ours, theirs, weights, strict=True):
        np.testing.assert_allclose(a.numpy(), np.asarray(b), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.numpy(), c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(optimizer.slots["accumulator"][1].numpy(), sums[1], rtol=1e-5)


@pytest.mark.parametrize("scale", [1e-30, 1e-6, 1.0, 1e6, 1e18])
@pytest.mark.parametrize("initial", [0.0, 0.1])
def test_every_update_stays_within_its_bound(scale, initial):
    rng = np.random.default_rng(2)
    var = tf.Variable(rng.normal(size=50).astype(np.float32))
    optimizer = optimizers.get("adagrad", 0.5, initial_accumulator_value=initial)
    optimizer.build([var])
    for _ in range(5):
        grad = (rng.normal(size=50) * scale).astype(np.float32)
        grad_bound = tf.constant(float(np.abs(grad).max()))
        step = tf.cast(optimizer.iterations + 1, tf.float32)
        largest, _ = optimizer.step_bound(grad_bound, tf.constant(0.0), step)
        before = var.numpy().copy()
        optimizer.apply_gradients([tf.constant(grad)], [var])
        assert np.abs(var.numpy() - before).max() <= float(largest), scale
    # Never looser than plain SGD's lr |g| / eps, nor than lr when sqrt(s) >= |g|.
    assert float(optimizer.step_bound(tf.constant(1.0), tf.constant(0.0), 1.0)[0]) <= 0.5 * 1.0002


def test_its_hyperparameters_are_flags_of_their_own():
    config = config_lib.resolve(
        {"optimizer": "adagrad", "initial_accumulator_value": 0.5, "epsilon": 1e-6}
    )
    assert config.optimizer_options == {"initial_accumulator_value": 0.5, "epsilon": 1e-6}
    assert config.learning_rate == 0.01  # its own default rate
    with pytest.raises(UsageError, match="--initial_accumulator_value=0.5: applies to "):
        config_lib.resolve({"optimizer": "adam", "initial_accumulator_value": 0.5})
    with pytest.raises(UsageError, match="--initial_accumulator_value=-1.0: must be"):
        config_lib.resolve({"optimizer": "adagrad", "initial_accumulator_value": -1.0})
