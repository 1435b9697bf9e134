"""Command-line flags (SPEC §3). All optional; ``main`` validates them.

This module imports absl only, never TensorFlow, so ``main`` can decide how
verbose TensorFlow's start-up should be before importing it.
"""

from __future__ import annotations

from absl import flags

from trainer.config import (
    ACTIVATIONS,
    DATASETS,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATES,
    DEVICES,
    INITS,
    JIT_CHOICES,
    LOSSES,
    MODELS,
    MODES,
    OPTIMIZERS,
    PRECISIONS,
    STRATEGIES,
)

_RATES = ", ".join(f"{name} {rate:g}" for name, rate in DEFAULT_LEARNING_RATES.items())

flags.DEFINE_enum("mode", "train_and_eval", MODES, "What to do.")
flags.DEFINE_string(
    "model_dir",
    None,
    "Run folder. One with checkpoints is resumed; default: runs/<dataset>-<model>-<time>.",
)
flags.DEFINE_enum("dataset", "digits", DATASETS, "Training data.")
flags.DEFINE_string("data_dir", None, "Folder with the MNIST IDX files (for --dataset=mnist).")
flags.DEFINE_string("csv_path", None, "Kaggle digit-recognizer CSV file (for --dataset=csv).")
flags.DEFINE_float("eval_fraction", 0.2, "Share held out for eval (digits, csv).")
flags.DEFINE_integer("synthetic_examples", 8192, "Examples in --dataset=synthetic.")
flags.DEFINE_integer("synthetic_features", 784, "Features per example in --dataset=synthetic.")
flags.DEFINE_integer("synthetic_classes", 10, "Classes in --dataset=synthetic.")

flags.DEFINE_enum("model", "mlp", MODELS, "Network: no hidden layer, or an MLP.")
flags.DEFINE_string("hidden", "100", "Comma list of hidden layer sizes, e.g. 500,500,500.")
flags.DEFINE_enum("activation", "sigmoid", ACTIVATIONS, "Hidden-layer activation.")
flags.DEFINE_enum("init", "xavier", INITS, "Weight initializer.")
flags.DEFINE_enum("loss", None, LOSSES, "Loss; default follows the dataset.")
flags.DEFINE_enum("optimizer", "adam", OPTIMIZERS, "Optimizer.")
flags.DEFINE_float("learning_rate", None, f"Step size; default by optimizer: {_RATES}.")
flags.DEFINE_float("clip_norm", None, "Clip gradients to this global L2 norm.")

flags.DEFINE_integer("batch_size", 32, "Global batch size; >= the training set is full batch.")
flags.DEFINE_integer("epochs", None, f"Passes over the training set (default {DEFAULT_EPOCHS}).")
flags.DEFINE_integer("train_steps", None, "Training steps; wins over --epochs.")
flags.DEFINE_integer("steps_per_loop", None, "Steps per compiled call; default: chosen.")
flags.DEFINE_enum("jit_compile", "auto", JIT_CHOICES, "XLA for the single step.")
flags.DEFINE_enum("device", "auto", DEVICES, "Where to run.")
flags.DEFINE_enum("precision", "float32", PRECISIONS, "Compute precision.")
flags.DEFINE_enum("strategy", "default", STRATEGIES, "tf.distribute strategy.")
flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into this many logical devices.")
flags.DEFINE_float(
    "worker_timeout",
    300.0,
    "--strategy=multi_worker: seconds to wait for every worker to join before giving up.",
)

flags.DEFINE_integer("log_every", None, "Progress line cadence in steps; default ~10 per run.")
flags.DEFINE_integer("eval_every", 0, "Evaluate every N steps during training (0: at the end).")
flags.DEFINE_integer("summary_every", 100, "TensorBoard cadence in steps (0 = off).")
flags.DEFINE_boolean("histograms", True, "Write weight/gradient/activation histograms.")
flags.DEFINE_integer("checkpoint_every", 1000, "Checkpoint cadence in steps (0 = only at end).")
flags.DEFINE_integer("keep_checkpoints", 3, "How many checkpoints to keep.")
flags.DEFINE_integer("seed", 0, "Seed for initialization, data order and splits.")
flags.DEFINE_boolean(
    "skip_nonfinite", False, "Skip steps with NaN/Inf loss or gradients instead of stopping."
)
flags.DEFINE_boolean("deterministic", False, "Bit-reproducible ops (tf.config op determinism).")
flags.DEFINE_string("export_dir", None, "Where --mode=export writes (default <model_dir>/export).")
flags.DEFINE_boolean("tf_verbose", False, "Show TensorFlow's C++ start-up messages.")

FLAGS = flags.FLAGS
