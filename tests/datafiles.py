"""Writers for small MNIST-format IDX files and Kaggle-layout CSV files."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """The IDX encoding of a uint8 array (magic 0x0803 for 3-D, 0x0801 for 1-D)."""
    array = np.asarray(array, np.uint8)
    magic = magic if magic is not None else 0x0800 | array.ndim
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: str, array: np.ndarray, magic: int | None = None, gz: bool = False) -> str:
    data = idx_bytes(array, magic)
    if gz:
        path += ".gz"
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        with open(path, "wb") as handle:
            handle.write(data)
    return path


def digits_as_mnist(n_train: int = 1400, seed: int = 0):
    """scikit-learn's 8x8 digits blown up to 28x28 pixels in 0..255.

    Returns ``(train_images [n,28,28], train_labels [n], test_images, test_labels)``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    images = digits.images[order] * (255.0 / 16.0)
    big = np.kron(images, np.ones((3, 3)))  # 24x24
    big = np.pad(big, ((0, 0), (2, 2), (2, 2))).round().astype(np.uint8)
    labels = digits.target[order].astype(np.uint8)
    return big[:n_train], labels[:n_train], big[n_train:], labels[n_train:]


def write_mnist(folder: str, gz: bool = False, n_train: int = 1400) -> dict:
    """Writes the four MNIST files into ``folder``; returns their paths by role."""
    os.makedirs(folder, exist_ok=True)
    train_x, train_y, test_x, test_y = digits_as_mnist(n_train)
    return {
        "train_images": write_idx(os.path.join(folder, "train-images-idx3-ubyte"), train_x, gz=gz),
        "train_labels": write_idx(os.path.join(folder, "train-labels-idx1-ubyte"), train_y, gz=gz),
        "eval_images": write_idx(os.path.join(folder, "t10k-images-idx3-ubyte"), test_x, gz=gz),
        "eval_labels": write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte"), test_y, gz=gz),
    }


def write_csv(path: str, n: int = 200, features: int = 16, seed: int = 0, rows=None) -> str:
    """A Kaggle digit-recognizer style CSV: ``label,pixel0,...``; ``rows`` overrides data."""
    rng = np.random.default_rng(seed)
    header = ",".join(["label"] + [f"pixel{i}" for i in range(features)])
    if rows is None:
        labels = np.arange(n) % 10
        pixels = rng.integers(0, 256, size=(n, features))
        pixels[:, 0] = labels * 25  # learnable
        rows = [",".join(map(str, [label, *p])) for label, p in zip(labels, pixels)]
    with open(path, "w") as handle:
        handle.write(header + "\n" + "\n".join(rows) + "\n")
    return path


def write_file(path: str, content: str | bytes) -> str:
    """Writes ``content`` exactly: ``str`` as UTF-8 with ``\\n`` kept, ``bytes`` as they are."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    with open(path, "wb") as handle:
        handle.write(data)
    return str(path)


def write_gz_bytes(path: str, data: bytes) -> str:
    """Gzips ``data`` into ``path`` (which should end in ``.gz``)."""
    with gzip.open(path, "wb") as handle:
        handle.write(data)
    return str(path)


def write_image_folder(
    folder: str,
    classes=("cat", "dog", "owl"),
    per_class: int = 12,
    size=(12, 10),
    seed: int = 0,
    formats=("png", "jpg"),
    splits=None,
) -> str:
    """Writes ``folder/[<split>/]<class>/<i>.<format>`` images with TensorFlow's
    encoders: RGB noise with one channel raised per class (learnable), PNG and JPEG
    alternating. ``splits``: ``{"train": n, "test": n, ...}`` images per class per
    split folder; else ``per_class`` images in a flat layout."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    layout = splits or {"": per_class}
    for split, count in layout.items():
        for label, name in enumerate(classes):
            where = os.path.join(folder, split, name)
            os.makedirs(where, exist_ok=True)
            for i in range(count):
                image = (rng.random((*size, 3)) * 120).astype(np.uint8)
                image[..., label % 3] += 120
                kind = formats[i % len(formats)]
                encoded = tf.io.encode_png(image) if kind == "png" else tf.io.encode_jpeg(image)
                write_file(os.path.join(where, f"{i:03d}.{kind}"), encoded.numpy())
    return folder
