"""Data augmentation drawn statelessly, so a resumed run sees the same batches.

``Augmentation`` applies the transformations ``--augment`` names
(``models.registry.AUGMENTATIONS``) to a batch of training images inside the
compiled step. Every random choice comes from a stateless op seeded by ``(seed,
transformation, step, replica)`` and indexed by the example's position in the
batch: the same step always transforms the same images the same way, so a
run killed and resumed continues bit-identically and nothing needs saving.
Evaluation and the SavedModel never see it (only the training step applies it).
"""

from __future__ import annotations

import tensorflow as tf

from models import registry
from models import spec as spec_lib
from models.layers.base import step_stream


def flip(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Mirrors each image of ``[B, H, W, C]`` left-right with probability 1/2."""
    coin = tf.random.stateless_uniform(tf.shape(images)[:1], seed) < 0.5
    return tf.where(coin[:, None, None, None], tf.reverse(images, axis=[2]), images)


def pad_and_crop(images: tf.Tensor, seed: tf.Tensor, padding: int = 4) -> tf.Tensor:
    """Pads ``[B, H, W, C]`` with ``padding`` zeros on every side and crops each image
    back to ``H x W`` at its own random offset (He et al. 2016's CIFAR recipe).

    The crop is two gathers with per-example indices (no per-image loop, and XLA
    compiles it without recompiling per offset).
    """
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    offsets = tf.random.stateless_uniform(
        tf.stack([tf.shape(images)[0], 2]), seed, minval=0, maxval=2 * padding + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(height)[None, :]  # [B, H]
    columns = offsets[:, 1:] + tf.range(width)[None, :]  # [B, W]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)  # [B, H, W + 2p, C]
    return tf.gather(cropped, columns, axis=2, batch_dims=1)  # [B, H, W, C]


class Augmentation:
    """The transformations of an ``--augment`` specification, in its order.

    Args:
      specification: e.g. ``"flip,crop:4"`` (``models.spec.parse_augmentations``).
      seed: the run's seed.

    ``augmentation(images, step)``: ``images`` ``[B, H, W, C]`` of one replica,
    ``step`` the int64 global step being taken; returns the transformed batch.
    """

    def __init__(self, specification: str, seed: int = 0):
        self.specification = specification
        self.steps = [
            (registry.AUGMENTATIONS.load(name), options)
            for name, options in spec_lib.parse_augmentations(specification)
        ]
        self.seed = int(seed)

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __call__(self, images: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        if images.shape.rank != 4:
            raise ValueError(
                f"--augment={self.specification}: needs images [batch, height, width, "
                f"channels], got {images.shape}"
            )
        stream = step_stream(step)
        for number, (transform, options) in enumerate(self.steps):
            seed = tf.stack([tf.constant(self.seed * 1_000_003 + 7919 * (number + 1), tf.int64),
                             stream])  # fmt: skip
            images = transform(images, seed, **options)
        return images
