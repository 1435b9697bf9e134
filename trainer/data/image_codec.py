"""Encoded images (JPEG, PNG, GIF, BMP) to the float tensors a model takes, in-graph.

One function (``decode``) serves every reader of encoded images: the image
folder's stream, TFRecords that keep the encoded bytes, and the SavedModel's
signature that takes image files, so a served image is decoded and resized
exactly as training did. TensorFlow's own decoders read the format from the
bytes (not the file name); the first frame of an animated GIF is taken.
"""

from __future__ import annotations

import tensorflow as tf


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """``[H, W, c]`` uint8 as stored -> ``[H, W, channels]``.

    ``channels`` 1 makes grey levels (the luma of RGB, alpha dropped); 3 makes
    RGB (grey repeated, alpha dropped); 2 or 4 (grey or RGB with alpha) keep
    images that store as many.
    """
    if channels not in (1, 3):
        return tf.ensure_shape(image, [None, None, channels])
    stored = tf.shape(image)[-1]
    if channels == 1:
        image = tf.cond(
            stored >= 3,
            lambda: tf.image.rgb_to_grayscale(image[..., :3]),
            lambda: image[..., :1],
        )
    else:
        image = tf.cond(
            stored >= 3,
            lambda: image[..., :3],
            lambda: tf.image.grayscale_to_rgb(image[..., :1]),
        )
    return tf.ensure_shape(image, [None, None, channels])


def decode(contents: tf.Tensor, size: tuple[int, int], channels: int) -> tf.Tensor:
    """One encoded image -> float32 ``[height, width, channels]`` in [0, 255].

    Args:
      contents: a string scalar, the file's bytes.
      size: ``(height, width)``; an image of another size is resized
        (bilinear, as Keras's ``image_dataset_from_directory``), one of this
        size is kept as decoded.
      channels: 1 or 3 (converted to), or 2 or 4 (as every image of the data stores).
    """
    image = tf.io.decode_image(contents, channels=0, expand_animations=False)
    image = to_channels(image, channels)
    height, width = size
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width))
    image = tf.cond(
        same,
        lambda: tf.cast(image, tf.float32),
        lambda: tf.image.resize(image, [height, width], method="bilinear"),
    )
    return tf.ensure_shape(image, [height, width, channels])


def decode_batch(contents: tf.Tensor, size: tuple[int, int], channels: int) -> tf.Tensor:
    """Encoded images ``[B]`` -> float32 ``[B, height, width, channels]`` (``decode`` each)."""
    height, width = size
    return tf.map_fn(
        lambda one: decode(one, size, channels),
        contents,
        fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32),
    )


def facts(contents: tf.Tensor) -> tf.Tensor:
    """int64 ``[4]`` of one encoded image: height, width, stored channels, and a
    62-bit hash of the bytes (the fingerprint's share of the file)."""
    image = tf.io.decode_image(contents, channels=0, expand_animations=False)
    shape = tf.cast(tf.shape(image), tf.int64)
    digest = tf.strings.to_hash_bucket_fast(contents, 2**62)
    return tf.concat([shape, [digest]], axis=0)
