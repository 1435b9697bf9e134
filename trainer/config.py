"""The frozen run configuration, built from flags and written to config.json.

No TensorFlow here: a configuration is plain data, validated with messages that
name the flag (or the config.json field), so bad input fails before anything
heavy starts. Every list of choices and every default lives here once; the
flags (``trainer/flags.py``) are derived from it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import stat
import types

from models import choices as model_choices  # names only: no TensorFlow
from models import spec as model_spec

# The choices of the command line's enum flags. The library's names (models,
# initializers, activations, losses, optimizers and their default learning
# rates) come from models.choices; the datasets are the trainer's own, each
# marked with whether it is a regression (whose default loss is mse).
DATASET_IS_REGRESSION = {
    "digits": False,
    "mnist": False,
    "csv": False,
    "sin": True,
    "synthetic": False,
    "tfrecord": False,  # the converter's metadata says; see dataset_is_regression
}
DATASETS = tuple(DATASET_IS_REGRESSION)
# Read as a stream of files (trainer/records.py), never whole into memory.
STREAMING_DATASETS = ("tfrecord",)
IN_MEMORY_DATASETS = tuple(name for name in DATASETS if name not in STREAMING_DATASETS)
REGRESSION_DATASETS = tuple(
    name for name, is_regression in DATASET_IS_REGRESSION.items() if is_regression
)
MODES = ("train", "eval", "train_and_eval", "export")
MODELS = model_choices.MODELS
INITS = model_choices.INITIALIZERS
ACTIVATIONS = model_choices.ACTIVATIONS
LOSSES = model_choices.LOSSES
DEFAULT_LEARNING_RATES = model_choices.DEFAULT_LEARNING_RATES
OPTIMIZERS = model_choices.OPTIMIZERS
LR_SCHEDULES = model_choices.LR_SCHEDULES
BEST_METRICS = ("auto", "eval_accuracy", "eval_loss")
EXPORT_CHOICES = ("best", "last")
JIT_CHOICES = ("auto", "true", "false")
DEVICES = ("auto", "cpu", "gpu")
PRECISIONS = ("float32", "bfloat16")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
DEFAULT_EPOCHS = 20

# Counts of steps, examples and the like are capped at int32: the compiled loop
# counts in int32, and nothing beyond it is a sensible request.
INT32_MAX = 2**31 - 1
# Seeds feed NumPy, scikit-learn and TensorFlow's stateless ops alike.
SEED_MAX = 2**31 - 1

CHOICES = {
    "mode": MODES,
    "dataset": DATASETS,
    "model": MODELS,
    "activation": ACTIVATIONS,
    "init": INITS,
    "loss": LOSSES,
    "optimizer": OPTIMIZERS,
    "lr_schedule": LR_SCHEDULES,
    "best_metric": BEST_METRICS,
    "export": EXPORT_CHOICES,
    "jit_compile": JIT_CHOICES,
    "device": DEVICES,
    "precision": PRECISIONS,
    "strategy": STRATEGIES,
}
# Integer fields: (lowest, highest) allowed value.
INT_RANGES = {
    "synthetic_examples": (1, INT32_MAX),
    "synthetic_features": (1, INT32_MAX),
    "synthetic_classes": (2, 1_000_000),
    "batch_size": (1, INT32_MAX),
    "epochs": (1, INT32_MAX),
    "train_steps": (1, INT32_MAX),
    "steps_per_loop": (1, INT32_MAX),
    "cpu_devices": (1, 1024),
    "log_every": (1, INT32_MAX),
    "eval_every": (0, INT32_MAX),
    "summary_every": (0, INT32_MAX),
    "checkpoint_every": (0, INT32_MAX),
    "keep_checkpoints": (1, 1_000_000),
    "seed": (0, SEED_MAX),
    "input_size": (0, INT32_MAX),
    "num_classes": (0, INT32_MAX),
    "shuffle_buffer": (1, INT32_MAX),
    "warmup_steps": (0, INT32_MAX),
    "lr_decay_steps": (1, INT32_MAX),
    "lr_plateau_patience": (0, INT32_MAX),
    "early_stopping_patience": (0, INT32_MAX),
}
# Float fields: a check and what it says when it fails (NaN and Inf never pass).
FLOAT_CHECKS = {
    "eval_fraction": (lambda v: 0 < v < 1, "must be in (0, 1)"),
    "learning_rate": (lambda v: v > 0, "must be a finite number > 0"),
    "clip_norm": (lambda v: v > 0, "must be a finite number > 0"),
    "worker_timeout": (lambda v: v > 0, "must be a finite number of seconds > 0"),
    "lr_decay_rate": (lambda v: v > 0, "must be a finite number > 0"),
    "lr_min_fraction": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "lr_plateau_factor": (lambda v: 0 < v < 1, "must be in (0, 1)"),
    "weight_decay": (lambda v: v >= 0, "must be a finite number >= 0"),
    "l2": (lambda v: v >= 0, "must be a finite number >= 0"),
    "label_smoothing": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
}
# Fields whose value may be None ("choose for me" or "not given").
OPTIONAL = {
    "layers",
    "activation",
    "data_dir",
    "csv_path",
    "train_files",
    "eval_files",
    "class_names",
    "clip_norm",
    "lr_decay_steps",
    "lr_boundaries",
    "eval_every",
    "epochs",
    "train_steps",
    "steps_per_loop",
    "log_every",
    "export_dir",
}
# Settings whose default follows others (the loss the dataset, the learning
# rate the optimizer): a value not given is chosen in ``resolve``.
CHOSEN_LATER = {"loss", "learning_rate"}
# Path flags: "~" is expanded (the shell does not expand it after "--flag=").
PATHS = ("model_dir", "data_dir", "csv_path", "train_files", "eval_files", "export_dir")
# TensorFlow reads checkpoints and SavedModels through file patterns, with these
# characters as wildcards: in the path of a run folder they would hide its files.
PATTERN_CHARACTERS = "*?[\\"


class UsageError(ValueError):
    """Bad input from the user: printed as one line, exit status 2."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a run. ``None`` means "choose for me"."""

    mode: str = "train_and_eval"
    model_dir: str = ""
    dataset: str = "digits"
    data_dir: str | None = None
    csv_path: str | None = None
    label_column: str = "label"
    train_files: str | None = None
    eval_files: str | None = None
    shuffle_buffer: int = 10_000
    eval_fraction: float = 0.2
    synthetic_examples: int = 8192
    synthetic_features: int = 784
    synthetic_classes: int = 10
    model: str = "mlp"
    hidden: tuple[int, ...] = (100,)
    layers: str | None = None
    activation: str | None = None
    init: str = "xavier"
    loss: str = "cross_entropy"
    optimizer: str = "adam"
    learning_rate: float = DEFAULT_LEARNING_RATES["adam"]
    clip_norm: float | None = None
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    lr_decay_steps: int | None = None
    lr_decay_rate: float = 0.1
    lr_boundaries: str | None = None
    lr_min_fraction: float = 0.0
    lr_plateau_patience: int = 0
    lr_plateau_factor: float = 0.5
    weight_decay: float = 0.0
    weight_decay_all: bool = False
    l2: float = 0.0
    label_smoothing: float = 0.0
    batch_size: int = 32
    epochs: int | None = DEFAULT_EPOCHS
    train_steps: int | None = None
    steps_per_loop: int | None = None
    jit_compile: str = "auto"
    device: str = "auto"
    precision: str = "float32"
    strategy: str = "default"
    cpu_devices: int = 1
    worker_timeout: float = 300.0
    log_every: int | None = None
    eval_every: int | None = None
    early_stopping_patience: int = 0
    best_metric: str = "auto"
    export: str = "best"
    summary_every: int = 100
    histograms: bool = True
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    seed: int = 0
    deterministic: bool = False
    export_dir: str | None = None
    skip_nonfinite: bool = False
    # Filled in from the data once it is loaded.
    input_size: int = 0
    input_shape: tuple[int, ...] = ()
    num_classes: int = 0
    # The original labels of classes 0..C-1 (strings or integers) when they are
    # not simply 0..C-1; None otherwise.
    class_names: tuple | None = None
    data_fingerprint: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


# Fields filled in from the data, not from flags.
DATA_FACTS = ("input_size", "input_shape", "num_classes", "class_names", "data_fingerprint")
FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Config))
FLAG_NAMES = tuple(name for name in FIELD_NAMES if name not in DATA_FACTS)


def parse_hidden(text: str) -> tuple[int, ...]:
    """``"500,500"`` -> ``(500, 500)``; raises ``UsageError`` naming ``--hidden``."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UsageError(f"--hidden={text!r}: give at least one layer size, e.g. --hidden=100")
    sizes = []
    for part in parts:
        try:
            size = int(part)
        except ValueError:
            raise UsageError(f"--hidden={text}: {part!r} is not an integer") from None
        if size < 1:
            raise UsageError(f"--hidden={text}: layer sizes must be >= 1, got {size}")
        if size > INT32_MAX:
            raise UsageError(f"--hidden={text}: layer sizes must be <= {INT32_MAX}, got {size}")
        sizes.append(size)
    return tuple(sizes)


def field_problem(name: str, value) -> str | None:
    """What is wrong with ``value`` for Config field ``name`` (None if nothing).

    The same rules hold for a flag and for a value read back from config.json,
    so a hand-edited config.json is checked as strictly as the command line.
    """
    field_type = {f.name: f.type for f in dataclasses.fields(Config)}.get(name)
    if field_type is None:
        return "is not a setting of this trainer"
    if value is None:
        return None if name in OPTIONAL else "must be given (null is not allowed)"
    if name == "layers":
        if not isinstance(value, str):
            return "must be a string"
        try:
            model_spec.parse(value)
        except model_spec.SpecError as error:
            return str(error)
        return None
    if name == "input_shape":
        if not isinstance(value, list | tuple) or len(value) > 3:
            return "must be a list of at most 3 sizes"
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= INT32_MAX for v in value
        ):
            return "sizes must be integers >= 1"
        return None
    if name == "class_names":
        if not isinstance(value, list | tuple) or not value:
            return "must be a non-empty list of labels"
        kinds = {type(v) for v in value}
        if kinds not in ({str}, {int}) or len(set(value)) != len(value):
            return "must be distinct labels, all strings or all integers"
        return None
    if name == "lr_boundaries":
        if not isinstance(value, str):
            return "must be a comma list of steps"
        try:
            steps = [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            return "must be a comma list of whole steps, e.g. 3000,6000"
        if not steps or steps != sorted(set(steps)) or steps[0] < 1:
            return "must be increasing steps >= 1, e.g. 3000,6000"
        return None
    if name == "hidden":
        if not isinstance(value, list | tuple) or not value:
            return "must be a non-empty list of layer sizes"
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return "layer sizes must be integers"
        if not all(v >= 1 for v in value):
            return "layer sizes must be >= 1"
        if not all(v <= INT32_MAX for v in value):
            return f"layer sizes must be <= {INT32_MAX}"
        return None
    if name in CHOICES:
        if value not in CHOICES[name]:
            return f"must be one of {', '.join(CHOICES[name])}"
        return None
    if name in INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        low, high = INT_RANGES[name]
        if value < low:
            return f"must be >= {low}"
        if value > high:
            return f"must be <= {high}"
        return None
    if name in FLOAT_CHECKS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number"
        check, message = FLOAT_CHECKS[name]
        if not math.isfinite(value) or not check(value):
            return message
        return None
    if "bool" in str(field_type):
        return None if isinstance(value, bool) else "must be true or false"
    if not isinstance(value, str):
        return "must be a string"
    if "\0" in value:
        return "must not contain a NUL character"
    return None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def default_model_dir(dataset: str, model: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{dataset}-{model}-{stamp}")


def expand_path(path: str | None) -> str | None:
    """``~`` and ``~user`` expanded (the shell leaves ``--flag=~/x`` alone)."""
    return os.path.expanduser(path) if path else path


def from_flags(flag_values) -> Config:
    """``resolve`` on the flags' values (any object with one attribute per flag)."""
    return resolve({name: getattr(flag_values, name) for name in FLAG_NAMES})


def resolve(values: dict) -> Config:
    """Validates plain setting values and resolves the defaults that follow others.

    Args:
      values: ``{field name: value}`` as given on the command line; missing
        fields take ``Config``'s defaults, ``None`` means "choose for me".

    Raises:
      UsageError: a value is out of range, of the wrong kind, or inconsistent.
    """
    values = dict(values)
    unknown = sorted(set(values) - set(FLAG_NAMES))
    _require(not unknown, f"unknown settings: {', '.join(unknown)}")
    defaults = dataclasses.asdict(Config())
    for name in FLAG_NAMES:
        values.setdefault(name, None if name in OPTIONAL | CHOSEN_LATER else defaults[name])
    for name in PATHS:
        values[name] = expand_path(values[name])
    values["hidden"] = parse_hidden(
        ",".join(map(str, values["hidden"]))
        if isinstance(values["hidden"], list | tuple)
        else values["hidden"]
    )
    if values["layers"] is not None and values["model"] != "cnn":
        raise UsageError(
            f"--layers: applies to --model=cnn only (--model={values['model']} has its own layers)"
        )
    values.update(model_defaults(values["model"], values["layers"], values["activation"]))
    if values["loss"] is None:
        values["loss"] = "mse" if dataset_is_regression(values) else "cross_entropy"
    if values["learning_rate"] is None:
        values["learning_rate"] = DEFAULT_LEARNING_RATES.get(values["optimizer"], 0.1)
    if not values["model_dir"]:  # eval and export need a run folder: no default
        training = values["mode"] in ("train", "train_and_eval")
        values["model_dir"] = (
            default_model_dir(str(values["dataset"]), str(values["model"])) if training else ""
        )
    for name in FLAG_NAMES:
        problem = field_problem(name, values[name])
        _require(problem is None, f"--{name}={_show(values[name])}: {problem}")
    f = types.SimpleNamespace(**values)
    if f.dataset == "mnist":
        _require(bool(f.data_dir), "--data_dir: required with --dataset=mnist (the IDX files)")
        _require(os.path.isdir(f.data_dir), f"--data_dir={f.data_dir}: no such folder")
    if f.dataset == "csv":
        _require(bool(f.csv_path), "--csv_path: required with --dataset=csv")
        _require(os.path.isfile(f.csv_path), f"--csv_path={f.csv_path}: no such file")
    if f.dataset == "tfrecord":
        _require(
            bool(f.data_dir or f.train_files),
            "--dataset=tfrecord: give --data_dir (a folder written by python -m trainer.convert) "
            "or --train_files (a glob of TFRecord files)",
        )
        if f.data_dir:
            _require(os.path.isdir(f.data_dir), f"--data_dir={f.data_dir}: no such folder")
    if f.mode in ("eval", "export"):
        _require(bool(f.model_dir), f"--model_dir: required with --mode={f.mode}")
        _require(os.path.isdir(f.model_dir), f"--model_dir={f.model_dir}: no such folder")
    for name in ("model_dir", "export_dir"):
        path = getattr(f, name)
        if not path:
            continue
        _require(
            not os.path.exists(path) or os.path.isdir(path),
            f"--{name}={path}: is a file, not a folder",
        )
        wildcards = sorted(set(PATTERN_CHARACTERS) & set(path))
        _require(
            not wildcards,
            f"--{name}={path}: TensorFlow reads checkpoints and SavedModels through file "
            f"patterns, so the path must not contain {' '.join(wildcards)}; use another folder",
        )
    if f.model_dir and os.path.isdir(f.model_dir):
        _require(
            os.access(f.model_dir, os.R_OK | os.X_OK),
            f"--model_dir={f.model_dir}: cannot read the folder (permission denied)",
        )
    if f.lr_schedule == "piecewise":
        _require(
            bool(f.lr_boundaries),
            "--lr_schedule=piecewise: give --lr_boundaries (steps where the rate is "
            "multiplied by --lr_decay_rate), e.g. --lr_boundaries=3000,6000",
        )
    elif f.lr_boundaries:
        raise UsageError("--lr_boundaries: applies to --lr_schedule=piecewise only")
    if f.label_smoothing and f.loss != "cross_entropy":
        raise UsageError(
            f"--label_smoothing={f.label_smoothing}: applies to --loss=cross_entropy only"
        )
    if values["epochs"] is None and not values["train_steps"]:
        values["epochs"] = DEFAULT_EPOCHS
    return Config(**values)


def dataset_is_regression(values: dict) -> bool:
    """Whether the data of these settings are a regression (their default loss is mse):
    fixed per dataset, except TFRecords, whose converter's metadata.json says."""
    dataset = values.get("dataset")
    if dataset == "tfrecord" and values.get("data_dir"):
        try:
            with open(os.path.join(values["data_dir"], "metadata.json"), encoding="utf-8") as f:
                metadata = json.load(f)
            return isinstance(metadata, dict) and metadata.get("task") == "regression"
        except (OSError, ValueError, RecursionError):
            return False  # reported with its file when the data are read
    return dataset in REGRESSION_DATASETS


def model_defaults(model: str, layers: str | None, activation: str | None) -> dict:
    """``{"layers", "activation"}`` with the defaults that follow ``--model`` filled in:
    the default specification for ``cnn``, the model's own activation."""
    if model == "cnn" and layers is None:
        layers = model_choices.DEFAULT_CNN_LAYERS
    if activation is None and model in MODELS:
        activation = model_choices.default_activation(model)
    return {"layers": layers, "activation": activation}


def complete(config: Config) -> Config:
    """``config`` with the defaults that follow ``--model`` filled in (for a
    ``Config`` made directly rather than through ``resolve``)."""
    return dataclasses.replace(
        config, **model_defaults(config.model, config.layers, config.activation)
    )


def _show(value) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def load(path: str) -> dict:
    """Reads a config.json written by a run and checks every value in it.

    Raises:
      UsageError: the file cannot be read, is not a JSON object, or holds a
        value of the wrong kind or out of range (named with the field).
    """
    try:
        # A FIFO would block and a device never end: only a regular file is read.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise UsageError(f"{path}: not a regular file; remove it or put the run's config back")
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path}: cannot read the run's config ({error})") from None
    except RecursionError:
        raise UsageError(f"{path}: cannot read the run's config (nested too deeply)") from None
    if not isinstance(saved, dict):
        raise UsageError(f"{path}: not a JSON object of settings")
    for name, value in saved.items():
        if name not in FIELD_NAMES:
            continue  # written by another version: ignored
        problem = field_problem(name, value)
        if problem:
            raise UsageError(
                f"{path}: {json.dumps(name)}: {json.dumps(value)[:80]} {problem}; "
                "fix or remove the file"
            )
    return saved
