"""``--dataset=images``: folders of image files, their splits, bad files and the stream."""

from __future__ import annotations

import dataclasses
import json
import os
import struct

import numpy as np
import pytest

from trainer.config import Config
from trainer.errors import DataError

from datafiles import write_file, write_image_folder
from helpers import assert_one_line_error, cli


def _open(data_dir, **settings):
    from trainer.data.image_folder import ImageFolderSource

    config = dataclasses.replace(Config(), dataset="images", data_dir=str(data_dir), **settings)
    return ImageFolderSource.open(config)


def _bmp(width: int, height: int, rgb: np.ndarray) -> bytes:
    """A 24-bit BMP (rows bottom-up, BGR, padded to 4 bytes), written by hand."""
    row = (3 * width + 3) // 4 * 4
    pixels = b"".join(
        rgb[y, :, ::-1].tobytes() + b"\0" * (row - 3 * width) for y in range(height - 1, -1, -1)
    )
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 0, 0, 0, 0)
    return header + info + pixels


def test_a_flat_folder_gives_sorted_classes_seeded_splits_and_raw_pixels(tmp_path):
    folder = write_image_folder(str(tmp_path / "data"), classes=("owl", "cat", "dog"))
    source = _open(folder)
    assert source.class_names == ("cat", "dog", "owl")
    assert source.image_shape == (12, 10, 3) and source.input_shape == (360,)
    # 36 images: 20% test (8), then 10% of the other 28 for validation (3)
    assert (source.num_train, source.num_validation, source.num_test) == (25, 3, 8)
    assert "stratified" in source.splits
    x, y = source.sample(5)
    assert x.shape == (5, 360) and x.dtype == np.float32 and x.min() >= 0 and x.max() <= 255
    assert set(y) <= {0, 1, 2}
    assert np.all(source.feature_scale == 255)
    # the same folder, the same fingerprint; another split seed, another
    assert _open(folder).fingerprint == source.fingerprint
    assert _open(folder, seed=1).fingerprint != source.fingerprint


def test_train_test_and_validation_folders_are_the_splits(tmp_path):
    folder = write_image_folder(
        str(tmp_path / "data"), splits={"train": 6, "test": 2, "validation": 3}
    )
    source = _open(folder)
    assert (source.num_train, source.num_validation, source.num_test) == (18, 9, 6)
    assert "the folder validation/" in source.splits
    without = write_image_folder(str(tmp_path / "two"), splits={"train": 10, "test": 2})
    source = _open(without)  # validation: 10% of train/
    assert (source.num_train, source.num_validation, source.num_test) == (27, 3, 6)


def test_a_changed_image_changes_the_fingerprint(tmp_path):
    folder = write_image_folder(str(tmp_path / "data"))
    before = _open(folder).fingerprint
    with open(os.path.join(folder, "dog", "000.png"), "rb") as handle:
        write_file(os.path.join(folder, "cat", "000.png"), handle.read())
    assert _open(folder).fingerprint != before


def test_sizes_and_channels_that_differ_ask_for_the_flag(tmp_path):
    import tensorflow as tf

    folder = write_image_folder(str(tmp_path / "data"))
    odd = np.zeros((8, 8, 3), np.uint8)
    write_file(os.path.join(folder, "cat", "odd.png"), tf.io.encode_png(odd).numpy())
    with pytest.raises(DataError, match="different sizes.*--image_size=HEIGHT,WIDTH"):
        _open(folder)
    source = _open(folder, image_size="8,8")
    assert source.image_shape == (8, 8, 3)
    assert source.sample(40)[0].shape == (source.num_train, 192)

    grey = write_image_folder(str(tmp_path / "grey"))
    flat = tf.io.encode_png(np.zeros((12, 10, 1), np.uint8)).numpy()
    write_file(os.path.join(grey, "cat", "g.png"), flat)
    with pytest.raises(DataError, match="different channels.*--channels"):
        _open(grey)
    assert _open(grey, channels=1).image_shape == (12, 10, 1)
    assert _open(grey, channels=3).image_shape == (12, 10, 3)


def test_a_bmp_image_is_decoded_like_the_png_of_the_same_pixels(tmp_path):
    import tensorflow as tf

    folder = write_image_folder(str(tmp_path / "data"), formats=("png",))
    pixels = np.random.default_rng(1).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    write_file(os.path.join(folder, "cat", "000.png"), tf.io.encode_png(pixels).numpy())
    write_file(os.path.join(folder, "dog", "zzz.bmp"), _bmp(10, 12, pixels))
    source = _open(folder)
    from trainer.data import image_codec

    png = image_codec.decode(tf.io.read_file(os.path.join(folder, "cat", "000.png")), (12, 10), 3)
    bmp = image_codec.decode(tf.io.read_file(os.path.join(folder, "dog", "zzz.bmp")), (12, 10), 3)
    np.testing.assert_array_equal(png.numpy(), bmp.numpy())
    assert source.num_train + source.num_validation + source.num_test == 37


def _truncated(kind: str) -> bytes:
    import tensorflow as tf

    image = np.random.default_rng(2).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    whole = (tf.io.encode_png if kind == "png" else tf.io.encode_jpeg)(image).numpy()
    return whole[: len(whole) // 2]


BAD_FILES = {
    "text": (lambda: b"not an image at all", "not a JPEG, PNG, GIF or BMP image"),
    "empty": (lambda: b"", "an empty file"),
    "truncated_jpeg": (lambda: _truncated("jpeg"), "truncated or undecodable image"),
    "truncated_png": (lambda: _truncated("png"), "truncated or undecodable image"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_each_bad_file_is_named_or_skipped_and_counted(tmp_path, kind):
    folder = write_image_folder(str(tmp_path / "data"))
    content, problem = BAD_FILES[kind]
    path = write_file(os.path.join(folder, "dog", "bad.jpg"), content())
    with pytest.raises(DataError) as error:
        _open(folder)
    assert str(error.value).startswith(f"{path}: {problem}")
    assert "--bad_images=skip" in str(error.value) and "function_node" not in str(error.value)
    source = _open(folder, bad_images="skip")
    assert source.skipped == 1 and "1 bad files skipped" in source.description
    assert path not in source.paths and len(source.paths) == 36


def test_a_fifo_and_an_unreadable_file_are_bad_files_not_hangs(tmp_path):
    folder = write_image_folder(str(tmp_path / "data"))
    fifo = os.path.join(folder, "owl", "pipe.png")
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="pipe.png: not a regular file"):
        _open(folder)
    assert _open(folder, bad_images="skip").skipped == 1


@pytest.mark.parametrize(
    "layout, message",
    [
        ("one_class", "needs a sub-folder per class (at least 2), found 1"),
        ("empty_class", "dog: a class folder that holds no image"),
        ("empty_train_class", "train/dog: a class folder that holds no image"),
        ("test_only", "has test/ but no train/"),
        ("unknown_test_class", "a class the training folder does not have"),
    ],
)
def test_folders_that_cannot_be_a_dataset_are_refused(tmp_path, layout, message):
    root = str(tmp_path / "data")
    if layout == "one_class":
        write_image_folder(root, classes=("cat",))
    elif layout == "empty_class":
        write_image_folder(root)
        for name in os.listdir(os.path.join(root, "dog")):
            os.remove(os.path.join(root, "dog", name))
    elif layout == "empty_train_class":
        write_image_folder(root, splits={"train": 4, "test": 1})
        for name in os.listdir(os.path.join(root, "train", "dog")):
            os.remove(os.path.join(root, "train", "dog", name))
    elif layout == "test_only":
        write_image_folder(root, splits={"test": 2})
    else:
        write_image_folder(root, splits={"train": 4, "test": 1})
        write_image_folder(os.path.join(root, "test"), classes=("yak",), per_class=1)
    with pytest.raises(DataError) as error:
        _open(root)
    assert message in str(error.value)


def test_the_stream_resumes_at_the_batch_of_its_step(tmp_path):
    import tensorflow as tf

    folder = write_image_folder(str(tmp_path / "data"), per_class=20)
    source = _open(folder, test_fraction=0.1)
    context = tf.distribute.InputContext(1, 0, 1)
    whole = [x for x, _ in source._train_dataset(context, 8, seed=3, start_step=0).take(12)]
    resumed = [x for x, _ in source._train_dataset(context, 8, seed=3, start_step=7).take(5)]
    for a, b in zip(whole[7:], resumed, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # an epoch holds each training image once
    labels = [int(y[0]) for _, y in source._train_dataset(context, 1, 3, 0).take(source.num_train)]
    assert sorted(labels) == sorted(source.labels[source.indices["train"]].tolist())


def test_a_bad_file_through_the_command_line_is_one_line(tmp_path):
    folder = write_image_folder(str(tmp_path / "data"))
    write_file(os.path.join(folder, "cat", "notes.txt"), "not an image")
    result = cli(
        "--dataset=images", f"--data_dir={folder}", "--model=cnn", "--layers=conv3x3:4,flatten",
        "--train_steps=2", f"--model_dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert result.returncode == 2
    assert_one_line_error(result, "notes.txt: not a JPEG, PNG, GIF or BMP image")


def test_the_folder_and_its_converted_tfrecords_train_alike(tmp_path):
    """Whole-batch steps (the order within a batch only rounds differently): the same
    images, splits and labels give the same weights and figures from both."""
    import types

    from trainer import convert

    from helpers import checkpoint_variables, latest_step, results, train

    folder = write_image_folder(str(tmp_path / "data"), per_class=10)
    write_file(os.path.join(folder, "dog", "broken.png"), b"\x89PNG broken")
    records = str(tmp_path / "records")
    options = {"source": "images", "data_dir": folder, "output_dir": records, "num_shards": 3,
               "bad_images": "skip", "image_size": "8,8"}  # fmt: skip
    metadata = convert.convert(types.SimpleNamespace(**options))
    assert metadata["feature_dtype"] == "encoded"
    assert metadata["class_names"] == ["cat", "dog", "owl"]
    assert {s: metadata["splits"][s]["examples"] for s in metadata["splits"]} == {
        "train": 21, "validation": 3, "test": 6,
    }  # fmt: skip
    common = {"model": "cnn", "layers": "conv3x3:4,flatten", "batch_size": 21, "train_steps": 3,
              "optimizer": "sgd", "learning_rate": 0.01}  # fmt: skip
    train(tmp_path / "a", dataset="images", data_dir=folder, bad_images="skip", image_size="8,8",
          **common)  # fmt: skip
    train(tmp_path / "b", dataset="tfrecord", data_dir=records, **common)
    for run in ("a", "b"):
        with open(tmp_path / run / "config.json") as handle:
            assert json.load(handle)["class_names"] == ["cat", "dog", "owl"]
    for key in ("validation_loss", "test_loss", "test_accuracy"):
        assert results(tmp_path / "a")[key] == pytest.approx(results(tmp_path / "b")[key], 1e-4)
    weights = [
        checkpoint_variables(tmp_path / run / "checkpoints" / f"ckpt-{latest_step(tmp_path / run)}")
        for run in ("a", "b")
    ]
    assert weights[0].keys() == weights[1].keys()
    for name, value in weights[0].items():
        np.testing.assert_allclose(value, weights[1][name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_the_bytes_signature_answers_as_the_tensor_signature(tmp_path):
    """Files sent as they are (PNG, JPEG, another size, grey) are decoded and resized
    in the SavedModel as training did; a file that is no image is refused."""
    import tensorflow as tf

    from helpers import train

    folder = write_image_folder(str(tmp_path / "data"))
    result = train(tmp_path / "run", dataset="images", data_dir=folder, image_size="8,8",
                   model="cnn", layers="conv3x3:4,gap", train_steps=3)  # fmt: skip
    loaded = tf.saved_model.load(result["export_path"])
    assert set(loaded.signatures) == {"serving_default", "serving_bytes"}
    rng = np.random.default_rng(5)
    files = [
        tf.io.encode_png(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).numpy(),
        tf.io.encode_jpeg(rng.integers(0, 255, (20, 16, 3), dtype=np.uint8)).numpy(),
        tf.io.encode_png(rng.integers(0, 255, (8, 8, 1), dtype=np.uint8)).numpy(),
    ]
    expected_x = []
    for data in files:  # decoded here by TensorFlow's own ops, as the docs say
        image = tf.io.decode_image(data, expand_animations=False)
        if image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        if image.shape[:2] != (8, 8):
            image = tf.image.resize(image, [8, 8])
        expected_x.append(tf.cast(image, tf.float32))
    by_tensor = loaded.signatures["serving_default"](x=tf.stack(expected_x))
    by_bytes = loaded.signatures["serving_bytes"](image_bytes=tf.constant(files))
    np.testing.assert_allclose(
        by_bytes["probabilities"].numpy(), by_tensor["probabilities"].numpy(), atol=1e-6
    )
    assert by_bytes["classes"].numpy().tolist() == by_tensor["classes"].numpy().tolist()
    assert set(by_bytes["classes"].numpy()) <= {b"cat", b"dog", b"owl"}
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures["serving_bytes"](image_bytes=tf.constant([b"not an image"]))
    # an empty request (TensorFlow's Conv2D hands an empty batch back unchanged)
    empty = loaded.signatures["serving_bytes"](image_bytes=tf.constant([], tf.string))
    assert empty["probabilities"].shape == (0, 3) and empty["classes"].shape == (0,)


@pytest.mark.parametrize("how", ["changed", "removed"])
def test_an_image_broken_after_the_scan_is_one_line(tmp_path, monkeypatch, how):
    from trainer.data import image_folder

    from helpers import latest_step, train

    folder = write_image_folder(str(tmp_path / "data"), per_class=20)
    scan = image_folder._scan

    def scan_then_break(paths):
        found = scan(paths)
        for path in paths:  # every file: the first batch is sure to read one
            if how == "removed":
                os.remove(path)
            else:
                write_file(path, b"changed after the scan")
        return found

    monkeypatch.setattr(image_folder, "_scan", scan_then_break)
    with pytest.raises(DataError) as error:
        train(tmp_path / "run", dataset="images", data_dir=folder, model="cnn",
              layers="conv3x3:4,flatten", train_steps=4)  # fmt: skip
    message = str(error.value)
    assert message.startswith(f"--data_dir={folder}: an image could not be read mid-run")
    assert "kept the checkpoints up to none" in message and "\n" not in message
    assert latest_step(tmp_path / "run") == -1


def test_huge_images_are_refused_before_anything_is_built(tmp_path):
    from trainer import assembly

    from helpers import config

    huge = config(tmp_path, dataset="images", image_size="16384,16384", model="cnn",
                  layers="gap", batch_size=512)  # fmt: skip
    expected = r"^--image_size=16384,16384: needs .* of memory for images of 16384x16384x3"
    with pytest.raises(DataError, match=expected):
        assembly.check_memory(huge, (16384, 16384, 3), 10)
    assembly.check_memory(dataclasses.replace(huge, image_size="32,32"), (32, 32, 3), 10)


def test_mirrored_replicas_with_an_empty_share_of_the_last_batch_evaluate(tmp_path):
    """Two replicas: the last validation batch leaves one empty, and TensorFlow's Conv2D
    gives an empty batch back with its input's channels (gap would then break)."""
    folder = write_image_folder(str(tmp_path / "data"), splits={"train": 6, "validation": 1})
    result = cli(
        "--dataset=images", f"--data_dir={folder}", "--model=cnn", "--layers=conv3x3:4,gap",
        "--strategy=mirrored", "--cpu_devices=2", "--train_steps=2", "--batch_size=4",
        f"--model_dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "(3 examples)" in result.stderr  # every validation image counted once
