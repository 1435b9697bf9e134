import numpy as np
import pytest
import tensorflow as tf

from models import losses


def _np_cross_entropy(labels, logits):
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_softmax[np.arange(len(labels)), labels]


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 10)).astype(np.float32) * 3
    labels = rng.integers(0, 10, size=16)
    got = losses.cross_entropy_per_example(tf.constant(labels), tf.constant(logits)).numpy()
    np.testing.assert_allclose(got, _np_cross_entropy(labels, logits), rtol=1e-5, atol=1e-6)
    one_hot = np.eye(10, dtype=np.float32)[labels]
    got_one_hot = losses.cross_entropy(tf.constant(one_hot), tf.constant(logits)).numpy()
    np.testing.assert_allclose(got_one_hot, _np_cross_entropy(labels, logits).mean(), rtol=1e-5)


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_cross_entropy_is_finite_for_extreme_logits(scale):
    logits = np.array([[scale, -scale, 0.0], [0.0, scale, -scale]], np.float32)
    labels = np.array([0, 2])
    got = losses.cross_entropy_per_example(tf.constant(labels), tf.constant(logits)).numpy()
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, _np_cross_entropy(labels, logits), rtol=1e-6)
    with tf.GradientTape() as tape:
        t = tf.constant(logits)
        tape.watch(t)
        loss = losses.cross_entropy(tf.constant(labels), t)
    assert np.all(np.isfinite(tape.gradient(loss, t).numpy()))


def test_mse_matches_numpy_for_targets_and_one_hot_labels():
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(8, 1)).astype(np.float32)
    target = rng.normal(size=8).astype(np.float32)
    np.testing.assert_allclose(
        losses.mse(tf.constant(target), tf.constant(pred)).numpy(),
        np.mean((pred[:, 0] - target) ** 2),
        rtol=1e-6,
    )
    pred10 = rng.normal(size=(8, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=8)
    np.testing.assert_allclose(
        losses.mse(tf.constant(labels), tf.constant(pred10)).numpy(),
        np.mean((pred10 - np.eye(10)[labels]) ** 2),
        rtol=1e-6,
    )
    big = np.full((2, 1), 1e4, np.float32)
    assert np.isfinite(losses.mse(tf.constant([-1e4, 1e4]), tf.constant(big)).numpy())


def test_accuracy():
    logits = tf.constant([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert losses.accuracy(tf.constant([1, 0, 0]), logits).numpy() == pytest.approx(2 / 3)


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        losses.get("hinge")
