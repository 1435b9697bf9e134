"""The training recipe against Keras ``fit``: 784-100-10, Adam, cosine decay with
linear warmup, decoupled weight decay (Keras: ``CosineDecay(warmup_target=...)`` and
``AdamW``), same data, batch size and epochs, several seeds.

    python scripts/recipe_vs_keras.py --data_dir=~/mnist --epochs=15 --seeds=0,1,2

``--data_dir`` holds MNIST IDX files; without it, scikit-learn's digits are blown up
to 28x28 MNIST-format files in a temporary folder (nothing is downloaded).
Prints one line per seed and the mean eval accuracy of each.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from absl import app, flags

from trainer.data import arrays as arrays_lib
from trainer.data import mnist


def define_flags() -> None:
    """Defined only when run as a program (tests import ``keras_accuracy``)."""
    flags.DEFINE_string("data_dir", None, "MNIST IDX files (default: digits as MNIST files).")
    flags.DEFINE_integer("epochs", 15, "Epochs for both.", lower_bound=1)
    flags.DEFINE_integer("batch_size", 64, "Batch size for both.", lower_bound=1)
    flags.DEFINE_float("learning_rate", 0.005, "Peak learning rate.")
    flags.DEFINE_integer("warmup_steps", 20, "Linear warmup steps.")
    flags.DEFINE_float("weight_decay", 1e-4, "Decoupled weight decay.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (initial weights and order).")


FLAGS = flags.FLAGS


def digits_as_mnist(folder: str) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    images = np.kron(digits.images[order] * (255.0 / 16.0), np.ones((3, 3)))
    images = np.pad(images, ((0, 0), (2, 2), (2, 2))).round().astype(np.uint8)
    labels = digits.target[order].astype(np.uint8)
    for name, array in (
        ("train-images-idx3-ubyte", images[:1200]),
        ("train-labels-idx1-ubyte", labels[:1200]),
        ("t10k-images-idx3-ubyte", images[1200:]),
        ("t10k-labels-idx1-ubyte", labels[1200:]),
    ):
        magic = mnist.IMAGE_MAGIC if "images" in name else mnist.LABEL_MAGIC
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(header + array.tobytes())


def keras_accuracy(arrays, seed, epochs, batch_size, rate, warmup_steps, weight_decay):
    """Keras ``fit``'s eval accuracy for 784-100-10 sigmoid with the same recipe:
    ``CosineDecay`` over the steps after a linear warmup, and ``AdamW``."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Dense(100, activation="sigmoid", kernel_initializer="glorot_normal"),
            keras.layers.Dense(10),
        ]
    )
    steps = epochs * (len(arrays.x_train) // batch_size)
    # Keras' warmup starts at initial_learning_rate (0 here) and reaches warmup_target
    # after warmup_steps; the cosine runs over the rest, as --lr_decay_steps defaults.
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps - warmup_steps, warmup_target=rate, warmup_steps=warmup_steps
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(arrays.x_train, arrays.y_train, batch_size=batch_size, epochs=epochs, verbose=0)
    return model.evaluate(arrays.x_test, arrays.y_test, verbose=0)[1]


def main(argv) -> None:
    del argv
    from trainer import runtime

    runtime.import_tensorflow()
    from trainer import train_lib
    from trainer.config import Config

    folder = FLAGS.data_dir and os.path.expanduser(FLAGS.data_dir)
    if not folder:
        folder = tempfile.mkdtemp(prefix="digits-mnist-")
        digits_as_mnist(folder)
    base = Config(dataset="mnist", data_dir=folder)
    arrays = arrays_lib.load(base)
    ours, theirs = [], []
    for seed in map(int, FLAGS.seeds):
        config = dataclasses.replace(
            base, model_dir=tempfile.mkdtemp(prefix="recipe-"), model="notebook_mlp",
            optimizer="adam", learning_rate=FLAGS.learning_rate, lr_schedule="cosine",
            warmup_steps=FLAGS.warmup_steps, weight_decay=FLAGS.weight_decay,
            batch_size=FLAGS.batch_size, epochs=FLAGS.epochs, seed=seed, summary_every=0,
            eval_every=0, export="last", jit_compile="false",
        )  # fmt: skip
        ours.append(train_lib.run(config)["test_accuracy"])
        theirs.append(
            keras_accuracy(
                arrays, seed, FLAGS.epochs, FLAGS.batch_size, FLAGS.learning_rate,
                FLAGS.warmup_steps, FLAGS.weight_decay,
            )
        )  # fmt: skip
        print(f"seed {seed}: trainer {ours[-1]:.4f}, Keras fit {theirs[-1]:.4f}", flush=True)
    print(f"mean eval accuracy: trainer {np.mean(ours):.4f}, Keras fit {np.mean(theirs):.4f}")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    define_flags()
    app.run(main)
