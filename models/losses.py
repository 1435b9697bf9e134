"""Losses and metrics, computed per example and averaged by the caller.

``cross_entropy`` works from logits with the log-sum-exp trick, so it stays
finite for any finite logits (the notebook's ``log(softmax + 1e-12)`` does not).
Labels may be integer class ids ``[batch]`` or one-hot ``[batch, classes]``.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from models import registry


def _labels_as_one_hot(labels: tf.Tensor, num_classes: int, dtype) -> tf.Tensor:
    if labels.shape.rank == 1:
        return tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=dtype)
    return tf.cast(labels, dtype)


def cross_entropy_per_example(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy from logits.

    Args:
      labels: int class ids ``[batch]`` or one-hot/probabilities ``[batch, C]``.
      logits: unnormalized scores ``[batch, C]``.

    Returns:
      float32 ``[batch]``: ``logsumexp(logits) - sum(labels * logits)``,
      computed by TensorFlow's fused kernels (one op forward, its gradient
      ``softmax - labels`` from the same op), which subtract the row maximum
      first. Integer labels must lie in ``[0, C)``: out of range, the CPU
      kernel fails with "Received a label value of ... outside the valid range".
    """
    logits = tf.cast(logits, tf.float32)
    if labels.shape.rank == 1:
        if labels.dtype not in (tf.int32, tf.int64):
            labels = tf.cast(labels, tf.int64)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.nn.softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.float32), logits=logits
    )


def mse_per_example(targets: tf.Tensor, predictions: tf.Tensor) -> tf.Tensor:
    """Squared error averaged over outputs.

    Args:
      targets: ``[batch]`` or ``[batch, K]`` (int labels are one-hot encoded to
        ``K`` outputs, as the notebook's MSE-on-one-hot classifier does).
      predictions: ``[batch, K]``.

    Returns:
      float32 ``[batch]``.
    """
    predictions = tf.cast(predictions, tf.float32)
    if targets.dtype.is_integer and predictions.shape[-1] != 1:
        targets = _labels_as_one_hot(targets, predictions.shape[-1], tf.float32)
    targets = tf.cast(targets, tf.float32)
    if targets.shape.rank == 1:
        targets = targets[:, None]
    return tf.reduce_mean(tf.square(predictions - targets), axis=-1)


def cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean softmax cross-entropy over the batch; a float32 scalar."""
    return tf.reduce_mean(cross_entropy_per_example(labels, logits))


def mse(targets: tf.Tensor, predictions: tf.Tensor) -> tf.Tensor:
    """Mean squared error over the batch; a float32 scalar."""
    return tf.reduce_mean(mse_per_example(targets, predictions))


def correct_per_example(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """1.0 where ``argmax(logits)`` equals the label, else 0.0; float32 ``[batch]``."""
    if labels.shape.rank == 2:
        labels = tf.argmax(labels, axis=-1)
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int64)
    return tf.cast(tf.equal(predicted, tf.cast(labels, tf.int64)), tf.float32)


def accuracy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Fraction of correct predictions in the batch; a float32 scalar."""
    return tf.reduce_mean(correct_per_example(labels, logits))


def smoothed_cross_entropy(smoothing: float):
    """Cross-entropy against labels smoothed toward uniform: the target of the
    true class is ``1 - smoothing + smoothing / C``, every other ``smoothing / C``.

    Returns:
      a per-example loss ``(labels, logits) -> float32 [batch]``.
    """
    if not 0 <= smoothing < 1:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")

    def loss(labels, logits):
        logits = tf.cast(logits, tf.float32)
        classes = logits.shape[-1]
        targets = _labels_as_one_hot(labels, classes, tf.float32)
        targets = targets * (1.0 - smoothing) + smoothing / classes
        return tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)

    return loss


def get(name: str, label_smoothing: float = 0.0) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The per-example loss ``(targets, outputs) -> [batch]`` of that name in
    ``models.registry.LOSSES`` (``label_smoothing`` applies to cross-entropy only).

    Raises:
      ValueError: for an unknown name, listing the known ones.
    """
    loss = registry.LOSSES.load(name)
    if label_smoothing and name == "cross_entropy":
        return smoothed_cross_entropy(label_smoothing)
    return loss
