"""Command-line flags, all optional; ``main`` validates them (``config.resolve``).

Their choices, defaults and help come from ``Config`` and the registries
(``models.registry``, ``trainer.data.SOURCES``): an optimizer's
hyperparameters and a schedule's options become flags of their own. This module
imports absl only, never TensorFlow, so bad flags fail before it starts.
"""

from __future__ import annotations

from absl import flags

from models import registry
from trainer import config as config_lib
from trainer.config import Config
from trainer.data import SOURCES

_DEFAULTS = Config()


def _listing(entries, text) -> str:
    return "; ".join(f"{entry.name}: {text(entry)}" for entry in entries)


def _layers_help() -> str:
    tokens = ", ".join(kind.usage.split(" ")[0] for kind in registry.LAYERS if not kind.fixed)
    return (
        "--model=cnn: comma list of layers before the output layer, e.g. "
        f"{registry.MODELS.get('cnn').layers} (the default). Tokens: {tokens}, or an "
        "activation; options after colons: an activation, sN (stride), same|valid "
        "(padding), mM (batchnorm momentum). A linear output layer with one unit per class "
        "follows (a last dense:N with N the number of classes, and no activation, is that "
        "output layer)."
    )


def _enum(name: str, help_text: str) -> None:
    flags.DEFINE_enum(name, getattr(_DEFAULTS, name), config_lib.CHOICES[name], help_text)


def _define_option_flags() -> None:
    """One flag per optimizer hyperparameter and per schedule option, default None
    (the chosen optimizer's or schedule's own)."""
    for group in config_lib.OPTION_GROUPS.values():
        for name, setting in group.settings.items():
            users = [
                f"{entry.name} {group.takes(entry.name)[name]}"
                for entry in group.entries
                if name in group.takes(entry.name)
            ]
            help_text = f"{setting.doc.capitalize()}; for --{group.chooser}={', '.join(users)}."
            define = {"int": flags.DEFINE_integer, "float": flags.DEFINE_float}
            define.get(setting.kind, flags.DEFINE_string)(group.prefix + name, None, help_text)


_enum("mode", "What to do.")
flags.DEFINE_string(
    "model_dir",
    None,
    "Run folder. One with checkpoints is resumed; default: runs/<dataset>-<model>-<time>.",
)
_enum("dataset", "Training data: " + _listing(SOURCES, lambda s: s.doc) + ".")
flags.DEFINE_string(
    "data_dir",
    None,
    "Folder with the MNIST IDX files (--dataset=mnist), written by python -m trainer.convert "
    "(--dataset=tfrecord), or of image files in a sub-folder per class (--dataset=images: "
    "<class>/..., or train/<class>/... with test/ and optionally validation/).",
)
flags.DEFINE_string(
    "csv_path",
    None,
    "CSV file with a header row, a label column and numeric feature columns (--dataset=csv).",
)
flags.DEFINE_string(
    "test_csv_path",
    None,
    "--dataset=csv: a CSV with the same columns holding the test split (default: "
    "--test_fraction of --csv_path's rows).",
)
flags.DEFINE_string(
    "validation_csv_path",
    None,
    "--dataset=csv: a CSV with the same columns holding the validation split (default: "
    "--validation_fraction of the training rows).",
)
flags.DEFINE_string(
    "label_column",
    _DEFAULTS.label_column,
    "--dataset=csv: the column holding the labels (class names, class ids, or with "
    "--loss=mse regression targets).",
)
flags.DEFINE_string(
    "train_files",
    None,
    "--dataset=tfrecord: glob of training TFRecord files (default: <data_dir>/train-*).",
)
flags.DEFINE_string(
    "validation_files",
    None,
    "--dataset=tfrecord: glob of validation TFRecord files (default: <data_dir>/validation-*).",
)
flags.DEFINE_string(
    "test_files",
    None,
    "--dataset=tfrecord: glob of test TFRecord files (default: <data_dir>/test-*; none: "
    "no test split).",
)
flags.DEFINE_alias("eval_files", "test_files")
flags.DEFINE_integer(
    "shuffle_buffer",
    _DEFAULTS.shuffle_buffer,
    "--dataset=tfrecord: examples held in the shuffle buffer (memory stays bounded).",
)
flags.DEFINE_string(
    "image_size",
    None,
    "--dataset=images: HEIGHT,WIDTH every image is resized to (bilinear); default: the "
    "images' own size when they all have the same.",
)
flags.DEFINE_integer(
    "channels",
    _DEFAULTS.channels,
    "--dataset=images: 1 (grey) or 3 (RGB) channels every image is converted to; 0: as the "
    "images store them (they must all store as many).",
)
_enum(
    "bad_images",
    "--dataset=images: what a file that is empty, not an image, truncated or undecodable "
    "does: stop (name it and exit) or skip (leave it out, and count it in the log).",
)
flags.DEFINE_float(
    "test_fraction",
    _DEFAULTS.test_fraction,
    "Share of the examples held out as the test split, stratified by class and seeded "
    "(digits, csv without --test_csv_path).",
)
flags.DEFINE_alias("eval_fraction", "test_fraction")
flags.DEFINE_float(
    "validation_fraction",
    _DEFAULTS.validation_fraction,
    "Share of the training examples held out as the validation split, stratified by class "
    "and seeded (every source held in memory, unless its validation split is given).",
)
flags.DEFINE_integer(
    "synthetic_examples", _DEFAULTS.synthetic_examples, "Examples in --dataset=synthetic."
)
flags.DEFINE_integer(
    "synthetic_features",
    _DEFAULTS.synthetic_features,
    "Features per example in --dataset=synthetic (a square number gives square images).",
)
flags.DEFINE_integer(
    "synthetic_classes", _DEFAULTS.synthetic_classes, "Classes in --dataset=synthetic."
)

_enum(
    "model",
    "Network: "
    + _listing(registry.MODELS, lambda m: f"{m.doc}{f' ({m.layers})' if m.layers else ''}")
    + ".",
)
flags.DEFINE_string(
    "hidden",
    ",".join(map(str, _DEFAULTS.hidden)),
    "--model=mlp: comma list of hidden layer sizes, e.g. 500,500,500.",
)
flags.DEFINE_string("layers", None, _layers_help())
flags.DEFINE_enum(
    "activation",
    None,
    config_lib.CHOICES["activation"],
    "Hidden-layer activation; default by model: "
    + ", ".join(f"{m.name} {m.activation}" for m in registry.MODELS)
    + ".",
)
flags.DEFINE_enum(
    "init",
    None,
    config_lib.CHOICES["init"],
    "Weight initializer (fans from the kernel shape for convolutions); default by model: "
    + ", ".join(f"{m.name} {m.init}" for m in registry.MODELS)
    + ".",
)
flags.DEFINE_enum("loss", None, config_lib.CHOICES["loss"], "Loss; default follows the dataset.")
_enum("optimizer", "Optimizer: " + _listing(registry.OPTIMIZERS, lambda o: o.doc) + ".")
flags.DEFINE_float(
    "learning_rate",
    None,
    "Step size; default by optimizer: "
    + ", ".join(f"{o.name} {o.learning_rate:g}" for o in registry.OPTIMIZERS)
    + ".",
)
flags.DEFINE_float("clip_norm", None, "Clip gradients to this global L2 norm.")
_enum(
    "lr_schedule",
    "Learning rate by step, computed in-graph: "
    + _listing(registry.SCHEDULES, lambda s: s.doc)
    + ".",
)
_define_option_flags()
flags.DEFINE_integer(
    "warmup_steps", _DEFAULTS.warmup_steps, "Linear warmup of the learning rate (steps)."
)
flags.DEFINE_integer(
    "lr_plateau_patience",
    _DEFAULTS.lr_plateau_patience,
    "Reduce-on-plateau: evaluations without improving --best_metric before the rate is "
    "multiplied by --lr_plateau_factor (0 = off).",
)
flags.DEFINE_float("lr_plateau_factor", _DEFAULTS.lr_plateau_factor, "Reduce-on-plateau factor.")
flags.DEFINE_float(
    "weight_decay",
    _DEFAULTS.weight_decay,
    "Decoupled weight decay (AdamW-style, any optimizer): w -= lr * decay * w each step.",
)
flags.DEFINE_boolean(
    "weight_decay_all",
    _DEFAULTS.weight_decay_all,
    "Decay biases and BatchNorm parameters too (default: kernels only).",
)
flags.DEFINE_float("l2", _DEFAULTS.l2, "L2 penalty l2/2 * sum(kernel^2) added to the loss.")
flags.DEFINE_float(
    "label_smoothing", _DEFAULTS.label_smoothing, "Label smoothing for cross-entropy (0..1)."
)
flags.DEFINE_string(
    "augment",
    _DEFAULTS.augment,
    "Random transformations of training images, comma list in order: "
    + "; ".join(
        f"{a.name}{':' + a.option.upper() if a.option else ''} ({a.doc}"
        + (f"; default {a.default})" if a.option else ")")
        for a in registry.AUGMENTATIONS
    )
    + ". Drawn from the seed, the step and the example (resume stays exact); off in "
    "evaluation and the export. E.g. flip,crop:4.",
)

flags.DEFINE_integer(
    "batch_size", _DEFAULTS.batch_size, "Global batch size; >= the training set is full batch."
)
flags.DEFINE_integer(
    "epochs",
    None,
    f"Passes over the training set (default {config_lib.DEFAULT_EPOCHS}, or more to train at "
    f"least {config_lib.MIN_DEFAULT_STEPS} steps).",
)
flags.DEFINE_integer("train_steps", None, "Training steps; wins over --epochs.")
flags.DEFINE_integer("steps_per_loop", None, "Steps per compiled call; default: chosen.")
_enum(
    "jit_compile",
    "XLA for the whole compiled call (in-memory batches) or the single step; auto: the log says.",
)
_enum("device", "Where to run.")
_enum("precision", "Compute precision.")
_enum("strategy", "tf.distribute strategy.")
flags.DEFINE_integer(
    "cpu_devices", _DEFAULTS.cpu_devices, "Split the CPU into this many logical devices."
)
flags.DEFINE_float(
    "worker_timeout",
    _DEFAULTS.worker_timeout,
    "--strategy=multi_worker: seconds to wait for every worker to join before giving up.",
)

flags.DEFINE_integer("log_every", None, "Progress line cadence in steps; default ~10 per run.")
flags.DEFINE_integer(
    "eval_every",
    None,
    "Evaluate on the validation split every N steps during training (default: once per "
    "epoch with --mode=train_and_eval, or every few epochs to evaluate at most 25 times; "
    "0: only at the end).",
)
flags.DEFINE_integer(
    "early_stopping_patience",
    _DEFAULTS.early_stopping_patience,
    "Stop after this many evaluations without improving --best_metric (0 = never).",
)
_enum(
    "best_metric",
    "What makes a checkpoint the best, on the validation split (auto: validation_accuracy, "
    "or validation_loss for a regression).",
)
_enum("export", "Which model training exports: the best checkpoint's, or the last step's.")
flags.DEFINE_integer(
    "summary_every", _DEFAULTS.summary_every, "TensorBoard cadence in steps (0 = off)."
)
flags.DEFINE_boolean(
    "histograms", _DEFAULTS.histograms, "Write weight/gradient/activation histograms."
)
flags.DEFINE_integer(
    "checkpoint_every",
    _DEFAULTS.checkpoint_every,
    "Checkpoint cadence in steps (0 = only at end).",
)
flags.DEFINE_integer(
    "keep_checkpoints", _DEFAULTS.keep_checkpoints, "How many checkpoints to keep."
)
flags.DEFINE_integer(
    "seed", _DEFAULTS.seed, "Seed for initialization, dropout masks, data order and splits."
)
flags.DEFINE_boolean(
    "skip_nonfinite",
    _DEFAULTS.skip_nonfinite,
    "Skip steps with NaN/Inf loss or gradients instead of stopping.",
)
flags.DEFINE_boolean(
    "deterministic", _DEFAULTS.deterministic, "Bit-reproducible ops (tf.config op determinism)."
)
flags.DEFINE_string("export_dir", None, "Where --mode=export writes (default <model_dir>/export).")
flags.DEFINE_boolean("tf_verbose", False, "Show TensorFlow's C++ start-up messages.")

FLAGS = flags.FLAGS
