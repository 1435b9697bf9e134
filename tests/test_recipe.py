"""The training recipe: schedules, weight decay, L2, label smoothing, eval curves,
the best model and early stopping."""

from __future__ import annotations

import glob
import importlib.util
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from models import Sequential, layers, losses, optimizers, schedules
from trainer.config import Config
from trainer.data import arrays as arrays_lib
from trainer.engine.trainer import Trainer

from helpers import ROOT, train


def reference(kind, base, u, warmup=0, decay_steps=1, rate=0.1, boundaries=(), floor=0.0):
    """The learning rate of update ``u`` (1-based), written out in NumPy."""
    lr = base * (min(1.0, u / warmup) if warmup else 1.0)
    t = max(0, u - warmup)
    if kind == "piecewise":
        lr *= rate ** sum(u > b for b in boundaries)
    elif kind == "exponential":
        lr *= rate ** (t / decay_steps)
    elif kind == "cosine":
        lr *= floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * min(t, decay_steps) / decay_steps))
    return lr


@pytest.mark.parametrize(
    "kind, options",
    [
        ("constant", {}),
        ("piecewise", {"boundaries": (30, 70), "rate": 0.5}),
        ("exponential", {"decay_steps": 25, "rate": 0.3}),
        ("cosine", {"decay_steps": 80, "floor": 0.1}),
    ],
)
@pytest.mark.parametrize("warmup", [0, 20])
def test_each_schedule_matches_numpy_at_every_step(kind, options, warmup):
    names = {"decay_steps": "decay_steps", "rate": "decay_rate", "boundaries": "boundaries",
             "floor": "min_fraction"}  # fmt: skip
    schedule = schedules.Schedule(
        0.01, kind, warmup_steps=warmup, **{names[k]: v for k, v in options.items()}
    )
    got = [float(schedule(tf.constant(u, tf.int64))) for u in range(1, 121)]
    want = [reference(kind, 0.01, u, warmup, **options) for u in range(1, 121)]
    np.testing.assert_allclose(got, want, rtol=2e-6)


def test_piecewise_boundaries_read_alike_from_flag_library_and_an_old_config_json(tmp_path):
    import json

    from trainer import config as config_lib

    flag = config_lib.resolve({"lr_schedule": "piecewise", "lr_boundaries": "30, 70"})
    assert flag.lr_options == {"boundaries": [30, 70]}
    schedule = schedules.Schedule(0.1, "piecewise", boundaries="30,70")
    assert schedule.options["boundaries"] == [30, 70]
    # A config.json from before the schedule's options were grouped: its fields
    # move into lr_options, the boundaries as steps, options of other schedules dropped.
    old = tmp_path / "config.json"
    old.write_text(
        json.dumps({"lr_schedule": "piecewise", "lr_boundaries": "30,70", "lr_decay_steps": 5})
    )
    saved = config_lib.load(str(old))
    assert saved["lr_options"] == {"boundaries": [30, 70]}
    assert "lr_boundaries" not in saved and "lr_decay_steps" not in saved


def _learning_rates(model_dir) -> dict[int, float]:
    from tensorboard.backend.event_processing import event_accumulator

    rates = {}
    for path in glob.glob(os.path.join(str(model_dir), "train", "events.*")):
        events = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
        events.Reload()
        for event in events.Tensors("learning_rate"):
            rates[event.step] = float(tf.make_ndarray(event.tensor_proto))
    return rates


def test_the_applied_learning_rate_follows_the_schedule_across_a_resume(tmp_path):
    flags = {
        "lr_schedule": "cosine", "warmup_steps": 10, "learning_rate": 0.01, "log_every": 3,
        "summary_every": 1000, "histograms": False, "mode": "train", "batch_size": 64,
    }  # fmt: skip
    train(tmp_path, train_steps=24, lr_options={"decay_steps": 40}, **flags)
    train(tmp_path, train_steps=48, lr_options={"decay_steps": 40}, **flags)  # resumed at 24
    rates = _learning_rates(tmp_path)
    assert set(range(3, 49, 3)) <= set(rates)
    for step, rate in rates.items():
        want = reference("cosine", 0.01, step, warmup=10, decay_steps=40)
        assert math.isclose(rate, want, rel_tol=1e-5), (step, rate, want)


def _dense_program(optimizer, **options):
    model = Sequential(input_shape=(3,))
    model.add(layers.Dense(3, 2, activation="linear", init="xavier", seed=0, name="out"))
    return model, Trainer(model, optimizer, loss="mse", global_batch_size=4, **options)


def test_weight_decay_shrinks_kernels_and_leaves_excluded_biases_alone():
    optimizer = optimizers.get("sgd", 0.1)
    model, _ = _dense_program(optimizer)
    layer = model.weighted_layers[0]
    layer.bias.assign([0.5, -0.5])
    optimizer.set_weight_decay(0.2, [layer.kernel])
    kernel = layer.kernel.numpy()
    zeros = [tf.zeros_like(v) for v in model.trainable_variables]
    optimizer.apply_gradients(zeros, model.trainable_variables)
    np.testing.assert_allclose(layer.kernel.numpy(), kernel * (1 - 0.1 * 0.2), rtol=1e-6)
    np.testing.assert_array_equal(layer.bias.numpy(), [0.5, -0.5])


def test_l2_adds_its_gradient_to_the_kernels_only():
    optimizer = optimizers.get("sgd", 0.1)
    model, program = _dense_program(optimizer, l2=0.5)
    layer = model.weighted_layers[0]
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    # zero inputs: the data loss has no gradient for the kernel
    dataset = tf.data.Dataset.from_tensors((tf.zeros([4, 3]), tf.ones([4]))).repeat()
    program.run_steps(iter(dataset), 1)
    np.testing.assert_allclose(layer.kernel.numpy(), kernel * (1 - 0.1 * 0.5), rtol=1e-6)
    assert not np.allclose(layer.bias.numpy(), bias)  # the data gradient still moves it


def test_label_smoothing_is_cross_entropy_against_smoothed_targets():
    logits = tf.constant([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    labels = tf.constant([0, 2])
    plain = losses.get("cross_entropy")(labels, logits).numpy()
    np.testing.assert_allclose(losses.get("cross_entropy", 0.0)(labels, logits), plain)
    smoothed = losses.get("cross_entropy", 0.3)(labels, logits).numpy()
    targets = np.eye(3)[[0, 2]] * 0.7 + 0.1
    log_p = logits.numpy() - np.log(np.exp(logits.numpy()).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(smoothed, -(targets * log_p).sum(axis=1), rtol=1e-6)


def test_weight_decay_makes_the_trained_weights_smaller(tmp_path):
    common = {"mode": "train", "train_steps": 150, "learning_rate": 0.01, "hidden": (64,)}
    plain = train(tmp_path / "plain", **common)
    decayed = train(tmp_path / "decayed", weight_decay=0.3, **common)
    from helpers import checkpoint_variables

    def kernel_norm(folder):
        values = checkpoint_variables(folder / "checkpoints" / "ckpt-150")
        return sum(np.sum(v**2) for k, v in values.items() if "/w/" in k and "optimizer" not in k)

    assert plain["global_step"] == decayed["global_step"] == 150
    assert kernel_norm(tmp_path / "decayed") < 0.8 * kernel_norm(tmp_path / "plain")


def test_of_equal_accuracies_the_lower_validation_loss_is_the_best():
    from trainer.best_model import EvalTracker

    tracker = EvalTracker()
    assert tracker.update(0.9, 10, tiebreak=-0.5)
    assert not tracker.update(0.9, 20, tiebreak=-0.6)  # equal accuracy, higher loss
    assert tracker.update(0.9, 30, tiebreak=-0.4)  # equal accuracy, lower loss
    assert int(tracker.since_best.numpy()) == 0 and int(tracker.best_step.numpy()) == 30
    assert not tracker.update(0.8, 40, tiebreak=-0.1)  # a lower loss does not beat accuracy
    assert not tracker.update(0.9, 50)  # no loss (NaN): never a tie's winner
    assert tracker.update(0.95, 60) and int(tracker.best_step.numpy()) == 60
    assert int(tracker.since_best.numpy()) == 0
    # A loss-chosen best (no tie-break) keeps the first of equal losses.
    by_loss = EvalTracker()
    assert by_loss.update(-0.3, 1) and not by_loss.update(-0.3, 2)


def test_early_stopping_exports_the_best_model_and_says_why_it_stopped(tmp_path):
    result = train(
        tmp_path, epochs=40, learning_rate=0.01, early_stopping_patience=2, eval_every=None,
        summary_every=1000, histograms=False,
    )  # fmt: skip
    per_epoch = 1293 // 32
    assert result["stop_reason"] == "early_stop"
    best, stopped = result["best_step"], result["global_step"]
    assert best % per_epoch == 0 and best < stopped <= best + 2 * per_epoch
    assert result["export_step"] == best
    assert os.path.exists(tmp_path / "checkpoints" / "best" / f"best-{best}.index")
    # the SavedModel is the best checkpoint's model: its validation and test figures
    arrays = arrays_lib.load(Config(seed=0))
    served = tf.saved_model.load(result["export_path"]).signatures["serving_default"]
    for split in ("validation", "test"):
        x, y = getattr(arrays, f"x_{split}"), getattr(arrays, f"y_{split}")
        accuracy = np.mean(served(x=tf.constant(x))["classes"].numpy() == y)
        figure = result["best_validation_accuracy" if split == "validation" else "test_accuracy"]
        assert accuracy == pytest.approx(figure), split
    assert result["test_step"] == best and result["test_model"] == "best"
    # validation is a curve with a confusion matrix and per-class accuracy
    from tensorboard.backend.event_processing import event_accumulator

    path = glob.glob(str(tmp_path / "validation" / "events.*"))[0]
    events = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
    events.Reload()
    tags = events.Tags()["tensors"]
    assert len(events.Tensors("accuracy")) >= stopped // per_epoch
    assert {"confusion_matrix", "per_class_accuracy", "per_class_accuracy/3"} <= set(tags)
    # run again: it stays stopped
    again = train(
        tmp_path, epochs=40, learning_rate=0.01, early_stopping_patience=2, eval_every=None,
        summary_every=1000, histograms=False,
    )  # fmt: skip
    assert again["global_step"] == stopped and again["stop_reason"] == "early_stop"


def test_adam_cosine_warmup_and_weight_decay_match_keras_adamw(tmp_path):
    """784-100-10 on MNIST-format files: this trainer against Keras ``fit`` with the
    same network, schedule (cosine with linear warmup) and AdamW."""
    pytest.importorskip("keras")
    from datafiles import write_mnist

    write_mnist(str(tmp_path / "mnist"), n_train=1200)
    epochs, batch, rate, warmup, decay = 15, 64, 0.005, 20, 1e-4
    ours = train(
        tmp_path / "run", dataset="mnist", data_dir=str(tmp_path / "mnist"), model="notebook_mlp",
        optimizer="adam", learning_rate=rate, lr_schedule="cosine", warmup_steps=warmup,
        weight_decay=decay, batch_size=batch, epochs=epochs, export="last",
    )  # fmt: skip

    arrays = arrays_lib.load(Config(dataset="mnist", data_dir=str(tmp_path / "mnist")))
    spec = importlib.util.spec_from_file_location(
        "recipe_vs_keras", os.path.join(ROOT, "scripts", "recipe_vs_keras.py")
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    keras_accuracy = script.keras_accuracy(arrays, 0, epochs, batch, rate, warmup, decay)
    print(f"test accuracy: trainer {ours['test_accuracy']:.4f}, Keras fit {keras_accuracy:.4f}")
    assert ours["test_accuracy"] >= keras_accuracy - 0.01


def test_reduce_on_plateau_lowers_the_applied_rate_after_evaluations_without_progress(tmp_path):
    result = train(
        tmp_path, epochs=12, learning_rate=0.01, lr_plateau_patience=1, lr_plateau_factor=0.5,
        eval_every=None,
        summary_every=1000, histograms=False, log_every=11,
    )  # fmt: skip
    rates = _learning_rates(tmp_path)
    lowest = min(rates.values())
    assert rates[min(rates)] == pytest.approx(0.01)
    assert lowest < 0.01 and math.log2(0.01 / lowest) == pytest.approx(
        round(math.log2(0.01 / lowest))
    )
    assert result["stop_reason"] == "steps_done"
