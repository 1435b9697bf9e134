"""A folder of images, this trainer against Keras: accuracy and training speed.

Both train the same network from the same initial weights (the from-scratch
model's weights copied into its Keras twin, ``contenders.keras_model``), with the
same batch size, optimizer, learning rate and epochs, on the same folder:

* the trainer: ``python -m trainer.main --dataset=images`` (files decoded as
  streamed by ``tf.data``; validation: 10% of ``train/``, seeded);
* Keras: ``keras.utils.image_dataset_from_directory`` on ``train/`` (its own 10%
  validation subset, seeded) with ``.prefetch``, ``fit`` with
  ``--keras_steps_per_execution`` (the fastest setting of scripts/benchmark.py
  for convolutions); with ``--keras_cache`` also ``.cache()`` (decoded images
  kept in memory after the first epoch).

Accuracy is the last model's on ``test/`` (the same files for both). Speed is
training examples per second after the first epoch (tracing excluded): the
trainer's ``examples_per_sec``, Keras's epochs 2.. timed by a callback.

    python scripts/images_vs_keras.py --data_dir=/tmp/cifar10-jpg-dev --model=cifar_cnn \\
        --epochs=10 --out_dir=/tmp/images_vs_keras
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402


def define_flags() -> None:
    flags.DEFINE_string("data_dir", None, "Folder with train/<class>/ and test/<class>/ images.")
    flags.DEFINE_string("model", "cifar_cnn", "--model for the trainer (a preset, or cnn).")
    flags.DEFINE_string("layers", None, "--layers with --model=cnn.")
    flags.DEFINE_string("init", "glorot_uniform", "Initializer (Keras's default: glorot_uniform).")
    flags.DEFINE_integer("epochs", 10, "Epochs for both.", lower_bound=2)
    flags.DEFINE_integer("batch_size", 64, "Batch size for both.", lower_bound=1)
    flags.DEFINE_float("learning_rate", 0.001, "Adam's learning rate for both.")
    flags.DEFINE_integer("seed", 0, "Initial weights and orders.")
    flags.DEFINE_integer("keras_steps_per_execution", 50, "Keras fit's steps_per_execution.")
    flags.DEFINE_boolean("keras_cache", False, "Also time Keras with .cache() on its dataset.")
    flags.DEFINE_list("contenders", ["trainer", "keras"], "Which to run.")
    flags.DEFINE_string("out_dir", "/tmp/images_vs_keras", "Run folders and summary.json.")


FLAGS = flags.FLAGS


def run_trainer(out_dir: str) -> dict:
    model_dir = os.path.join(out_dir, "trainer")
    command = [
        sys.executable, "-m", "trainer.main", "--dataset=images", f"--data_dir={FLAGS.data_dir}",
        f"--model={FLAGS.model}", f"--init={FLAGS.init}", f"--epochs={FLAGS.epochs}",
        f"--batch_size={FLAGS.batch_size}", "--optimizer=adam",
        f"--learning_rate={FLAGS.learning_rate}", f"--seed={FLAGS.seed}", "--export=last",
        "--eval_every=0", "--summary_every=0", f"--model_dir={model_dir}",
    ]  # fmt: skip
    if FLAGS.layers:
        command.append(f"--layers={FLAGS.layers}")
    started = time.time()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the trainer failed: {done.stderr.strip().splitlines()[-1]}")
    with open(os.path.join(model_dir, "results.json")) as handle:
        results = json.load(handle)
    return {
        "test_accuracy": results["test_accuracy"],
        "examples_per_sec": results["examples_per_sec"],
        "train_examples": results["splits"]["train"],
        "wall_s": round(time.time() - started, 1),
    }


def _reference(image_shape, classes: int):
    """The from-scratch model whose weights both start from (pixels scaled by 255 inside)."""
    from models import zoo

    normalization = (np.zeros(image_shape, np.float32), np.full(image_shape, 255.0, np.float32))
    return zoo.build(
        FLAGS.model, image_shape, classes, init=FLAGS.init, seed=FLAGS.seed,
        normalization=normalization, layers=FLAGS.layers,
    )  # fmt: skip


def run_keras(cache: bool) -> dict:
    import keras
    import tensorflow as tf
    from contenders import keras_model

    train_dir = os.path.join(FLAGS.data_dir, "train")
    common = {"batch_size": FLAGS.batch_size, "seed": FLAGS.seed, "label_mode": "int"}
    # the images' own size (the trainer's default): one file's
    some_class = sorted(os.listdir(train_dir))[0]
    some_file = sorted(os.listdir(os.path.join(train_dir, some_class)))[0]
    decoded = tf.io.decode_image(tf.io.read_file(os.path.join(train_dir, some_class, some_file)))
    size = tuple(int(d) for d in decoded.shape[:2])
    train, _ = keras.utils.image_dataset_from_directory(
        train_dir, **common, image_size=size, validation_split=0.1, subset="both"
    )
    test = keras.utils.image_dataset_from_directory(
        os.path.join(FLAGS.data_dir, "test"), **common, image_size=size, shuffle=False
    )
    classes = len(train.class_names)
    count = int(sum(int(tf.shape(y)[0]) for _, y in train))
    if cache:
        train = train.cache()
    train = train.prefetch(tf.data.AUTOTUNE)
    model = keras_model(_reference((*size, int(decoded.shape[-1])), classes))
    model.compile(
        optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=FLAGS.keras_steps_per_execution,
    )
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.started)

    model.fit(train, epochs=FLAGS.epochs, callbacks=[Timer()], verbose=0)
    _, accuracy = model.evaluate(test, verbose=0)
    return {
        "test_accuracy": float(accuracy),
        "examples_per_sec": count * (len(times) - 1) / sum(times[1:]),
        "train_examples": count,
    }


def main(argv) -> None:
    del argv
    if not FLAGS.data_dir or not os.path.isdir(os.path.join(FLAGS.data_dir, "train")):
        sys.exit("--data_dir: a folder with train/<class>/ and test/<class>/ images")
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    summary = {"flags": {name: FLAGS[name].value for name in (
        "data_dir", "model", "layers", "init", "epochs", "batch_size", "learning_rate", "seed",
        "keras_steps_per_execution")}}  # fmt: skip
    if "trainer" in FLAGS.contenders:
        summary["trainer"] = run_trainer(FLAGS.out_dir)
    if "keras" in FLAGS.contenders:
        summary["keras"] = run_keras(cache=False)
        if FLAGS.keras_cache:
            summary["keras_cache"] = run_keras(cache=True)
    for name in ("trainer", "keras", "keras_cache"):
        if name in summary:
            figures = summary[name]
            print(
                f"{name:12s} test accuracy {figures['test_accuracy']:.4f}  "
                f"{figures['examples_per_sec']:8.0f} examples/s"
            )
    if "trainer" in summary and "keras" in summary:
        ratio = summary["trainer"]["examples_per_sec"] / summary["keras"]["examples_per_sec"]
        gap = summary["trainer"]["test_accuracy"] - summary["keras"]["test_accuracy"]
        summary["speed_ratio"], summary["accuracy_gap"] = ratio, gap
        print(f"trainer / keras speed {ratio:.2f}x, accuracy difference {gap:+.4f}")
    with open(os.path.join(FLAGS.out_dir, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
