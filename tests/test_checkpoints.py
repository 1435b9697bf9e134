"""Checkpoints, exact resume after SIGKILL, SIGTERM, and faults that lose nothing."""

import glob
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from trainer import checkpoints as checkpoints_lib
from trainer.config import UsageError

from helpers import (
    ROOT,
    assert_one_line_error,
    checkpoint_variables,
    cli,
    latest_step,
    results,
    train,
)


def _snapshot(folder):
    return {
        p: open(p, "rb").read()
        for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
        if os.path.isfile(p) and not p.endswith(".lock")
    }


# One network with every kind of state: dense and convolution weights, Adam's
# slots, BatchNorm's moving averages and Dropout's masks (drawn from the seed and
# the step). An MLP is built by the same code, so this SIGKILL test covers it too.
EXACT_FLAGS = [
    "--mode=train",
    "--deterministic",
    "--model=cnn",
    "--layers=conv3x3:8:linear,batchnorm,relu,maxpool2,dropout:0.3,flatten,dense:32",
    "--augment=flip,crop:2",
    "--batch_size=64",
    "--train_steps=400",
    "--checkpoint_every=50",
    "--steps_per_loop=10",
    "--keep_checkpoints=2",
    "--summary_every=0",
]


def test_sigkill_at_a_random_step_then_resume_is_bit_identical(tmp_path):
    flags = EXACT_FLAGS
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert cli(*flags, f"--model_dir={straight}").returncode == 0

    target = random.Random().randrange(50, 350)
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer.main", *flags, f"--model_dir={killed}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while latest_step(killed) < target and process.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = latest_step(killed)
    assert 0 < killed_at < 400, f"the kill should land mid-run (target {target})"

    resumed = cli(*flags, f"--model_dir={killed}")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    expected = checkpoint_variables(str(straight / "checkpoints" / "ckpt-400"))
    got = checkpoint_variables(str(killed / "checkpoints" / "ckpt-400"))
    assert expected.keys() == got.keys() and len(expected) > 10
    # BatchNorm's moving averages are among them, and moved
    averages = [key for key in expected if "moving_mean" in key or "moving_variance" in key]
    assert len(averages) == 2, sorted(expected)
    assert np.any(expected[averages[0]] != 0) and np.any(expected[averages[1]] != 1)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_sigterm_saves_and_exits_143_then_resume_continues(tmp_path):
    flags = ["--train_steps=1000000", "--steps_per_loop=50", "--hidden=64", "--summary_every=0"]
    flags += ["--eval_every=0"]  # compiled calls end at multiples of 50 only
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer.main", *flags, f"--model_dir={tmp_path}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not os.path.exists(tmp_path / "checkpoints" / "checkpoint") and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr  # as a shell reports it
    assert "received SIGTERM" in stderr and "Traceback" not in stderr
    stopped_at = latest_step(tmp_path)
    assert stopped_at > 0 and stopped_at % 50 == 0
    stopped = results(tmp_path)  # says why it stopped, and where
    assert stopped["stop_reason"] == "signal" and stopped["global_step"] == stopped_at
    resumed = cli(
        *flags[1:], f"--train_steps={stopped_at + 20}", f"--model_dir={tmp_path}", "--mode=train"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"step {stopped_at})" in resumed.stderr
    assert results(tmp_path)["global_step"] == stopped_at + 20


def test_corrupt_latest_checkpoint_falls_back_and_nothing_is_deleted(tmp_path):
    train(tmp_path, train_steps=40, checkpoint_every=20, mode="train")
    data_file = glob.glob(str(tmp_path / "checkpoints" / "ckpt-40.data-*"))[0]
    with open(data_file, "r+b") as handle:
        handle.truncate(10)
    evaluated = cli("--mode=eval", f"--model_dir={tmp_path}")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "ckpt-40: unreadable" in evaluated.stderr and "falling back" in evaluated.stderr
    assert results(tmp_path)["validation_step"] == 20
    assert os.path.exists(data_file)  # eval moves nothing

    figures = train(tmp_path, train_steps=60, checkpoint_every=20, mode="train")
    assert figures["global_step"] == 60
    moved = os.listdir(tmp_path / "checkpoints" / "corrupt")
    assert sorted(moved) == ["ckpt-40.data-00000-of-00001", "ckpt-40.index"]


def test_no_readable_checkpoint_left_is_a_clear_error(tmp_path):
    train(tmp_path, train_steps=20, mode="train")
    for index in glob.glob(str(tmp_path / "checkpoints" / "*.index")):
        with open(index, "wb") as handle:
            handle.write(b"garbage")
    before = _snapshot(tmp_path / "checkpoints")
    result = cli("--mode=eval", f"--model_dir={tmp_path}")
    assert_one_line_error(result, "no readable checkpoint left", "nothing was deleted")
    assert _snapshot(tmp_path / "checkpoints") == before


def test_other_architecture_is_refused_and_nothing_is_overwritten(tmp_path):
    train(tmp_path, train_steps=20, mode="train", hidden=(32,))
    before = _snapshot(tmp_path)
    result = cli(f"--model_dir={tmp_path}", "--hidden=16", "--train_steps=40")
    assert_one_line_error(result, "--hidden=16", "--hidden=32", "new --model_dir")
    assert _snapshot(tmp_path) == before
    # Without config.json to compare with, the checkpoint's own record of the settings.
    os.remove(tmp_path / "config.json")
    result = cli(f"--model_dir={tmp_path}", "--hidden=16", "--train_steps=40")
    assert_one_line_error(result, "ckpt-20", "written with hidden=[32]", "says hidden=[16]")
    assert all(_snapshot(tmp_path)[p] == before[p] for p in before if "config.json" not in p)


def test_a_second_training_process_is_refused(tmp_path):
    with checkpoints_lib.RunLock(str(tmp_path)):
        result = cli(f"--model_dir={tmp_path}", "--train_steps=10")
        assert_one_line_error(result, "another training process", f"pid {os.getpid()}")
        with pytest.raises(UsageError, match="another training process"):
            checkpoints_lib.RunLock(str(tmp_path)).acquire()
    # released (as it is when a process dies in any way): training proceeds
    assert train(tmp_path, train_steps=10, hidden=(100,))["global_step"] == 10


SIN_FLAGS = [
    "--dataset=sin", "--activation=tanh", "--optimizer=sgd", "--mode=train", "--summary_every=0",
]  # fmt: skip


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    # the first run in-process: cheaper than a TensorFlow start-up
    train(
        tmp_path, dataset="sin", activation="tanh", optimizer="sgd", loss="mse", mode="train",
        learning_rate=0.1, train_steps=20,
    )  # fmt: skip
    before = _snapshot(tmp_path / "checkpoints")
    result = cli(*SIN_FLAGS, "--train_steps=40", "--learning_rate=1e30", f"--model_dir={tmp_path}")
    assert result.returncode == 3
    assert_one_line_error(result, "non-finite loss or gradients at step 2", "ckpt-20")
    assert _snapshot(tmp_path / "checkpoints") == before

    # With --skip_nonfinite it skips, but a run that skips step after step has
    # diverged (a skipped step changes nothing): ten in a row stop it, exit 3.
    skipped = cli(
        *SIN_FLAGS,
        "--train_steps=40",
        "--learning_rate=1e30",
        "--skip_nonfinite",
        f"--model_dir={tmp_path}",
    )
    assert skipped.returncode == 3, skipped.stderr
    assert_one_line_error(skipped, "in a row", "diverged", "ckpt-20")
    assert _snapshot(tmp_path / "checkpoints") == before


def test_skip_nonfinite_skips_bad_batches_and_trains_on():
    import models
    from trainer.engine.trainer import Trainer

    model = models.Sequential()
    model.add(models.Dense(4, 3, "linear", init="xavier", name="output"))
    program = Trainer(
        model, models.optimizers.get("sgd", 0.1), global_batch_size=8, skip_nonfinite=True
    )
    good = (tf.ones([8, 4]), tf.zeros([8], tf.int64))
    bad = (tf.fill([8, 4], float("nan")), tf.zeros([8], tf.int64))
    data = tf.data.Dataset.from_tensor_slices(
        tuple(tf.stack([b[i] for b in (good, bad, good, good, bad)]) for i in (0, 1))
    ).repeat()
    program.run_steps(iter(data), 20)
    assert int(program.global_step.numpy()) == 20
    assert int(program.guard.nonfinite_count.numpy()) == 8  # every bad batch skipped, none applied
    assert np.all(np.isfinite(model.trainable_variables[0].numpy()))


def test_uncreatable_model_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli(f"--model_dir={blocker}/run", "--train_steps=5")
    assert_one_line_error(result, f"--model_dir={blocker}/run", "cannot create")


@pytest.fixture
def tiny_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


def _fill(disk):
    """Fills ``disk`` to the last byte with a file named ``filler``."""
    try:
        with open(disk / "filler", "wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
    except OSError:
        pass


def test_full_disk_on_save_is_a_clear_error_and_earlier_checkpoints_survive(tiny_disk):
    run = tiny_disk / "run"
    flags = ["--mode=train", "--hidden=64", "--summary_every=0", f"--model_dir={run}"]
    train(run, mode="train", hidden=(64,), train_steps=20)
    _fill(tiny_disk)
    before = _snapshot(run / "checkpoints")
    result = cli(*flags, "--train_steps=40")
    assert_one_line_error(result, str(run))
    assert "No space left" in result.stderr or "cannot" in result.stderr
    assert all(_snapshot(run / "checkpoints").get(p) == before[p] for p in before)
    os.remove(tiny_disk / "filler")
    assert cli("--mode=eval", f"--model_dir={run}").returncode == 0
    assert results(run)["validation_step"] == 20


def test_eval_restores_only_the_model_without_warnings(tmp_path):
    train(tmp_path, train_steps=20, mode="train", optimizer="adam")
    result = cli("--mode=eval", f"--model_dir={tmp_path}")
    assert result.returncode == 0
    for warning in ("could not be found", "Unresolved", "unrestored"):
        assert warning not in result.stderr


def test_full_disk_while_writing_tensorboard_events_is_one_line(tiny_disk):
    run = tiny_disk / "run"
    flags = ["--mode=train", "--hidden=64", f"--model_dir={run}"]
    train(run, mode="train", hidden=(64,), train_steps=20)
    before = _snapshot(run / "checkpoints")
    _fill(tiny_disk)
    result = cli(*flags, "--train_steps=60", "--summary_every=1", "--checkpoint_every=0")
    assert_one_line_error(result, str(run))
    assert result.returncode in (1, 2), result.stderr
    assert "No space left" in result.stderr
    assert all(_snapshot(run / "checkpoints").get(p) == before[p] for p in before)
