"""The frozen run configuration, built from flags and written to config.json.

No TensorFlow here: a configuration is plain data, validated with messages that
name the flag, so bad input fails before anything heavy starts.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os

# The choices of the command line's enum flags (kept here, free of absl and
# TensorFlow, so scripts can share them without defining the trainer's flags).
DATASETS = ("digits", "mnist", "csv", "sin", "synthetic")
MODES = ("train", "eval", "train_and_eval", "export")
INITS = (
    "zeros",
    "ones",
    "uniform",
    "normal",
    "xavier",
    "glorot_normal",
    "xavier_uniform",
    "glorot_uniform",
    "he",
    "he_normal",
    "he_uniform",
    "lecun",
)
ACTIVATIONS = ("sigmoid", "tanh", "relu", "elu", "softplus", "linear")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam")


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
    eval_fraction: float = 0.2
    synthetic_examples: int = 8192
    synthetic_features: int = 784
    synthetic_classes: int = 10
    model: str = "mlp"
    hidden: tuple[int, ...] = (100,)
    activation: str = "sigmoid"
    init: str = "xavier"
    loss: str = "cross_entropy"
    optimizer: str = "adam"
    learning_rate: float = 0.003  # the command line's default for adam
    clip_norm: float | None = None
    batch_size: int = 32
    epochs: int | None = 20
    train_steps: int | None = None
    steps_per_loop: int | None = None
    jit_compile: str = "auto"
    device: str = "auto"
    precision: str = "float32"
    strategy: str = "default"
    cpu_devices: int = 1
    log_every: int | None = None
    eval_every: int = 0
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
    num_classes: int = 0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def architecture(self) -> dict:
        """The fields a checkpoint's variables (and their meaning) depend on."""
        return {k: getattr(self, k) for k in ("model", "hidden", "activation", "optimizer")}


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
        sizes.append(size)
    return tuple(sizes)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def default_model_dir(dataset: str, model: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{dataset}-{model}-{stamp}")


def from_flags(flag_values) -> Config:
    """Validates flag values and resolves the defaults that follow the dataset."""
    f = flag_values
    _require(f.batch_size >= 1, f"--batch_size={f.batch_size}: must be >= 1")
    if f.learning_rate is not None:
        _require(f.learning_rate > 0, f"--learning_rate={f.learning_rate}: must be > 0")
    if f.clip_norm is not None:
        _require(f.clip_norm > 0, f"--clip_norm={f.clip_norm}: must be > 0")
    if f.epochs is not None:
        _require(f.epochs >= 1, f"--epochs={f.epochs}: must be >= 1")
    if f.train_steps is not None:
        _require(f.train_steps >= 1, f"--train_steps={f.train_steps}: must be >= 1")
    if f.steps_per_loop is not None:
        _require(f.steps_per_loop >= 1, f"--steps_per_loop={f.steps_per_loop}: must be >= 1")
    if f.log_every is not None:
        _require(f.log_every >= 1, f"--log_every={f.log_every}: must be >= 1")
    for name in ("eval_every", "summary_every", "checkpoint_every"):
        value = getattr(f, name)
        _require(value >= 0, f"--{name}={value}: must be >= 0 (0 turns it off)")
    _require(f.keep_checkpoints >= 1, f"--keep_checkpoints={f.keep_checkpoints}: must be >= 1")
    _require(f.cpu_devices >= 1, f"--cpu_devices={f.cpu_devices}: must be >= 1")
    _require(0 < f.eval_fraction < 1, f"--eval_fraction={f.eval_fraction}: must be in (0, 1)")
    for name in ("synthetic_examples", "synthetic_features"):
        value = getattr(f, name)
        _require(value >= 1, f"--{name}={value}: must be >= 1")
    _require(f.synthetic_classes >= 2, f"--synthetic_classes={f.synthetic_classes}: must be >= 2")
    if f.dataset == "mnist":
        _require(bool(f.data_dir), "--data_dir: required with --dataset=mnist (the IDX files)")
        _require(os.path.isdir(f.data_dir), f"--data_dir={f.data_dir}: no such folder")
    if f.dataset == "csv":
        _require(bool(f.csv_path), "--csv_path: required with --dataset=csv")
        _require(os.path.isfile(f.csv_path), f"--csv_path={f.csv_path}: no such file")
    if f.mode in ("eval", "export"):
        _require(bool(f.model_dir), f"--model_dir: required with --mode={f.mode}")
        _require(os.path.isdir(f.model_dir), f"--model_dir={f.model_dir}: no such folder")
    hidden = parse_hidden(f.hidden)
    loss = f.loss or ("mse" if f.dataset == "sin" else "cross_entropy")
    learning_rate = f.learning_rate
    if learning_rate is None:
        learning_rate = 0.003 if f.optimizer in ("adam", "rmsprop") else 0.1
    epochs = f.epochs if f.epochs is not None else (None if f.train_steps else 20)
    # Every Config field has a flag of the same name (but the data facts filled
    # in later); only the fields resolved above differ from their flag.
    values = {
        field.name: getattr(f, field.name)
        for field in dataclasses.fields(Config)
        if field.name not in ("input_size", "num_classes")
    }
    values.update(
        model_dir=f.model_dir or default_model_dir(f.dataset, f.model),
        hidden=hidden,
        loss=loss,
        learning_rate=learning_rate,
        epochs=epochs,
    )
    return Config(**values)


def load(path: str) -> dict:
    """Reads a config.json written by a run; raises ``UsageError`` if unreadable."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"{path}: cannot read the run's config ({error})") from None
