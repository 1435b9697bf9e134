"""``--augment``: flips and pad-and-crop drawn from (seed, step, example), in the
training step only, resumed exactly."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from models import spec
from models.augment import Augmentation, flip, pad_and_crop

from datafiles import write_image_folder
from helpers import ROOT, checkpoint_variables, cli, latest_step


def test_the_specification_is_parsed_from_the_registry():
    assert spec.parse_augmentations("") == []
    assert spec.parse_augmentations("flip, crop:3") == [("flip", {}), ("crop", {"padding": 3})]
    assert spec.parse_augmentations("crop") == [("crop", {"padding": 4})]
    for bad, fragment in [
        ("rotate", "unknown augmentation; choose from flip, crop"),
        ("flip,flip", "given twice"),
        ("flip:2", "flip takes no value"),
        ("crop:0", "padding must be a whole number in 1..1024"),
        ("crop:x", "padding must be a whole number"),
        ("flip,,crop", "an empty name between commas"),
    ]:
        with pytest.raises(spec.SpecError, match=fragment):
            spec.parse_augmentations(bad)


def _images(n=64, height=6, width=5, channels=2):
    return np.random.default_rng(0).random((n, height, width, channels)).astype(np.float32)


def test_flip_mirrors_the_images_its_coins_choose():
    import tensorflow as tf

    images = _images()
    seed = tf.constant([5, 9], tf.int64)
    out = flip(tf.constant(images), seed).numpy()
    coins = tf.random.stateless_uniform([len(images)], seed).numpy() < 0.5
    expected = np.where(coins[:, None, None, None], images[:, :, ::-1], images)
    np.testing.assert_array_equal(out, expected)
    assert 0 < coins.sum() < len(images)


def test_pad_and_crop_cuts_each_image_at_its_own_offset():
    import tensorflow as tf

    images, padding = _images(), 2
    seed = tf.constant([1, 2], tf.int64)
    out = pad_and_crop(tf.constant(images), seed, padding).numpy()
    offsets = tf.random.stateless_uniform(
        [len(images), 2], seed, minval=0, maxval=2 * padding + 1, dtype=tf.int32
    ).numpy()
    padded = np.pad(images, [(0, 0), (padding, padding), (padding, padding), (0, 0)])
    for image, (top, left), got in zip(padded, offsets, out, strict=True):
        np.testing.assert_array_equal(got, image[top : top + 6, left : left + 5])
    assert len({tuple(o) for o in offsets}) > 10  # the offsets differ per example


def test_the_draws_follow_the_seed_and_the_step_alone():
    import tensorflow as tf

    images = tf.constant(_images())
    augment = Augmentation("flip,crop:1", seed=3)
    first = augment(images, tf.constant(7, tf.int64)).numpy()
    np.testing.assert_array_equal(first, augment(images, tf.constant(7, tf.int64)).numpy())
    assert not np.array_equal(first, augment(images, tf.constant(8, tf.int64)).numpy())
    other_seed = Augmentation("flip,crop:1", seed=4)(images, tf.constant(7, tf.int64))
    assert not np.array_equal(first, other_seed.numpy())
    compiled = tf.function(augment, jit_compile=True)(images, tf.constant(7, tf.int64))
    assert compiled.shape == images.shape
    with pytest.raises(ValueError, match="needs images"):
        augment(tf.zeros([4, 30]), tf.constant(1, tf.int64))


def test_augment_is_refused_for_flat_models_and_bad_tokens(tmp_path):
    from helpers import assert_one_line_error

    result = cli("--augment=flip", "--model=mlp", "--train_steps=1", f"--model_dir={tmp_path}")
    assert_one_line_error(result, "--augment=flip: transforms images", "--model=mlp")
    result = cli("--augment=spin", "--model=cnn", "--train_steps=1", f"--model_dir={tmp_path}")
    assert_one_line_error(result, "--augment=spin", "unknown augmentation")


def test_sigkill_with_augmented_streamed_images_then_resume_is_bit_identical(tmp_path):
    folder = write_image_folder(str(tmp_path / "data"), per_class=30, size=(8, 8))
    flags = [
        "--mode=train", "--deterministic", "--dataset=images", f"--data_dir={folder}",
        "--model=cnn", "--layers=conv3x3:4,maxpool2,flatten", "--augment=flip,crop:2",
        "--batch_size=16", "--train_steps=60", "--checkpoint_every=10", "--steps_per_loop=5",
        "--keep_checkpoints=2", "--summary_every=0",
    ]  # fmt: skip
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert cli(*flags, f"--model_dir={straight}").returncode == 0
    target = random.Random().randrange(12, 45)
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer.main", *flags, f"--model_dir={killed}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while latest_step(killed) < target and process.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 0 < latest_step(killed) < 60, f"the kill should land mid-run (target {target})"
    resumed = cli(*flags, f"--model_dir={killed}")
    assert resumed.returncode == 0 and "resuming from" in resumed.stderr, resumed.stderr
    expected = checkpoint_variables(str(straight / "checkpoints" / "ckpt-60"))
    got = checkpoint_variables(str(killed / "checkpoints" / "ckpt-60"))
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    # the augmented images are in TensorBoard (the first diagnostic step)
    first = [f for f in flags[:-1] if not f.startswith("--train_steps")]  # step 1 is diagnostic
    shown = cli(
        *first, "--train_steps=1", "--summary_every=30", f"--model_dir={tmp_path / 'shown'}"
    )
    assert shown.returncode == 0, shown.stderr
    events = [n for n in os.listdir(tmp_path / "shown" / "train") if "tfevents" in n]
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / "shown" / "train"), size_guidance={"images": 0, "tensors": 0}
    ).Reload()
    assert events and "augmented_inputs" in accumulator.Tags()["tensors"]


def test_settings_about_images_are_checked_on_the_runs_whole_configuration(tmp_path):
    """On a resume only --model_dir names the network: --augment is checked against the
    run's own (config.json), and image flags against the run's dataset."""
    from trainer import assembly, train_lib
    from trainer.errors import UsageError

    from helpers import config, train

    train(tmp_path / "run", model="cnn", layers="conv3x3:4,flatten", train_steps=2)
    resumed = train_lib.run(
        config(tmp_path / "run", augment="flip,crop:2", train_steps=4),
        explicit={"augment", "train_steps", "model_dir"},
    )
    assert resumed["global_step"] == 4
    with pytest.raises(UsageError, match=r"^--image_size=8,8: applies to --dataset=images only"):
        train(tmp_path / "digits", image_size="8,8", train_steps=1)
    with pytest.raises(UsageError, match=r"^--channels=1: applies to --dataset=images only"):
        train(tmp_path / "digits", channels=1, train_steps=1)
    full = r"^--batch_size=32 \(the 5 training examples, a full batch\): 5 examples must divide"
    with pytest.raises(UsageError, match=full):
        assembly.plan(config(tmp_path, batch_size=32), 5, 2)
