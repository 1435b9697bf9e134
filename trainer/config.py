"""The frozen run configuration, built from flags and written to config.json.

No TensorFlow here: a configuration is plain data, validated with messages that
name the flag (or the config.json field), so bad input fails before anything
heavy starts. The choices come from the registries (``models.registry``,
``trainer.data.SOURCES``); the flags (``trainer/flags.py``) are derived from
them and from ``Config``'s defaults.

Two fields group settings that are also flags of their own, so that an
optimizer or a schedule brings its settings without a field here:
``optimizer_options`` (``--beta_2=0.99`` -> ``{"beta_2": 0.99}``) and
``lr_options`` (``--lr_decay_steps=900`` -> ``{"decay_steps": 900}``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import types

from models import registry
from models import spec as model_spec
from trainer.data import DATASETS, SOURCES
from trainer.data.image_folder import parse_size
from trainer.errors import DataError, UsageError
from trainer.files import check_input_file, is_regular_file

MODES = ("train", "eval", "train_and_eval", "export")
BEST_METRICS = ("auto", "validation_accuracy", "validation_loss")
EXPORT_CHOICES = ("best", "last")
BAD_IMAGES = ("stop", "skip")
JIT_CHOICES = ("auto", "true", "false")
DEVICES = ("auto", "cpu", "gpu")
PRECISIONS = ("float32", "bfloat16")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# Without --epochs or --train_steps: 20 epochs, and at least 500 steps (whole
# epochs), so that a small table (a few steps an epoch) is trained as well as a
# larger one.
DEFAULT_EPOCHS = 20
MIN_DEFAULT_STEPS = 500

# Counts of steps, examples and the like are capped at int32: the compiled loop
# counts in int32, and nothing beyond it is a sensible request.
INT32_MAX = 2**31 - 1
# Seeds feed NumPy, scikit-learn and TensorFlow's stateless ops alike.
SEED_MAX = 2**31 - 1

CHOICES = {
    "mode": MODES,
    "dataset": DATASETS,
    "model": registry.MODELS.names,
    "activation": registry.ACTIVATIONS.names,
    "init": registry.INITIALIZERS.names,
    "loss": registry.LOSSES.names,
    "optimizer": registry.OPTIMIZERS.names,
    "lr_schedule": registry.SCHEDULES.names,
    "best_metric": BEST_METRICS,
    "export": EXPORT_CHOICES,
    "bad_images": BAD_IMAGES,
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
    "lr_plateau_patience": (0, INT32_MAX),
    "early_stopping_patience": (0, INT32_MAX),
}
# Integer fields that take a few values only.
INT_SETS = {"channels": (0, 1, 3)}
# Float fields: what each must be (NaN and Inf never pass).
FLOAT_CHECKS = {
    "test_fraction": registry.Check(lambda v: 0 < v < 1, "must be in (0, 1)"),
    "validation_fraction": registry.Check(lambda v: 0 < v < 1, "must be in (0, 1)"),
    "learning_rate": registry.POSITIVE,
    "clip_norm": registry.POSITIVE,
    "worker_timeout": registry.Check(lambda v: v > 0, "must be a finite number of seconds > 0"),
    "lr_plateau_factor": registry.Check(lambda v: 0 < v < 1, "must be in (0, 1)"),
    "weight_decay": registry.NON_NEGATIVE,
    "l2": registry.NON_NEGATIVE,
    "label_smoothing": registry.FRACTION,
}
# Fields whose value may be None ("choose for me" or "not given").
OPTIONAL = {
    "layers",
    "activation",
    "init",
    "data_dir",
    "csv_path",
    "test_csv_path",
    "validation_csv_path",
    "train_files",
    "validation_files",
    "test_files",
    "image_size",
    "class_names",
    "clip_norm",
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
PATHS = (
    "model_dir",
    "data_dir",
    "csv_path",
    "test_csv_path",
    "validation_csv_path",
    "train_files",
    "validation_files",
    "test_files",
    "export_dir",
)
# TensorFlow reads checkpoints and SavedModels through file patterns, with these
# characters as wildcards: in the path of a run folder they would hide its files.
PATTERN_CHARACTERS = "*?[\\"


@dataclasses.dataclass(frozen=True)
class OptionGroup:
    """A Config field holding the settings of the entry another field chooses:
    each setting is the flag ``<prefix><name>``; ``chooser`` is the field naming
    the entry, found in ``entries``, whose attribute ``options`` lists the ones
    it takes with their defaults; ``settings`` says what each must be."""

    chooser: str
    prefix: str
    entries: registry.Registry
    options: str
    settings: dict

    def takes(self, chosen: str) -> dict:
        """The options of entry ``chosen``, with their defaults."""
        return getattr(self.entries.get(chosen), self.options)


OPTION_GROUPS = {
    "optimizer_options": OptionGroup(
        "optimizer", "", registry.OPTIMIZERS, "hyperparameters", registry.HYPERPARAMETERS
    ),
    "lr_options": OptionGroup(
        "lr_schedule", "lr_", registry.SCHEDULES, "options", registry.SCHEDULE_OPTIONS
    ),
}
# Flag -> (Config field, option name), for every option of every group.
OPTION_FLAGS = {
    group.prefix + name: (field, name)
    for field, group in OPTION_GROUPS.items()
    for name in group.settings
}


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a run. ``None`` means "choose for me"."""

    mode: str = "train_and_eval"
    model_dir: str = ""
    dataset: str = "digits"
    data_dir: str | None = None
    csv_path: str | None = None
    test_csv_path: str | None = None
    validation_csv_path: str | None = None
    label_column: str = "label"
    train_files: str | None = None
    validation_files: str | None = None
    test_files: str | None = None
    shuffle_buffer: int = 10_000
    image_size: str | None = None
    channels: int = 0
    bad_images: str = "stop"
    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    synthetic_examples: int = 8192
    synthetic_features: int = 784
    synthetic_classes: int = 10
    model: str = "mlp"
    hidden: tuple[int, ...] = (100,)
    layers: str | None = None
    activation: str | None = None
    init: str | None = None
    loss: str = "cross_entropy"
    optimizer: str = "adam"
    learning_rate: float = registry.OPTIMIZERS.get("adam").learning_rate
    optimizer_options: dict = dataclasses.field(default_factory=dict)
    clip_norm: float | None = None
    lr_schedule: str = "constant"
    lr_options: dict = dataclasses.field(default_factory=dict)
    warmup_steps: int = 0
    lr_plateau_patience: int = 0
    lr_plateau_factor: float = 0.5
    weight_decay: float = 0.0
    weight_decay_all: bool = False
    l2: float = 0.0
    label_smoothing: float = 0.0
    augment: str = ""
    batch_size: int = 32
    epochs: int | None = None
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
    # (H, W, C) when the examples are decoded from image files (the SavedModel
    # then also takes encoded images); () otherwise.
    encoded_image_shape: tuple[int, ...] = ()
    num_classes: int = 0
    # The original labels of classes 0..C-1 (strings or integers) when they are
    # not simply 0..C-1; None otherwise.
    class_names: tuple | None = None
    data_fingerprint: str = ""


# Fields filled in from the data, not from flags.
DATA_FACTS = (
    "input_size",
    "input_shape",
    "encoded_image_shape",
    "num_classes",
    "class_names",
    "data_fingerprint",
)
FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Config))
SETTING_NAMES = tuple(name for name in FIELD_NAMES if name not in DATA_FACTS)
# Every flag that is a setting: the fields, the option groups' flags in their place.
FLAG_NAMES = (
    *(name for name in SETTING_NAMES if name not in OPTION_GROUPS),
    *OPTION_FLAGS,
)
_TYPES = {f.name: str(f.type) for f in dataclasses.fields(Config)}


def parse_hidden(text: str) -> tuple[int, ...]:
    """``"500,500"`` -> ``(500, 500)``; raises ``UsageError`` naming ``--hidden``."""
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise UsageError(f"--hidden={text!r}: give at least one layer size, e.g. --hidden=100")
    if not all(parts):
        raise UsageError(f"--hidden={text}: an empty layer size between commas")
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
    if len(sizes) > model_spec.MAX_LAYERS:
        raise UsageError(f"--hidden: at most {model_spec.MAX_LAYERS} layers, got {len(sizes)}")
    return tuple(sizes)


def _sizes_problem(name: str, value) -> str | None:
    """What is wrong with ``hidden`` (layer sizes) or ``input_shape`` (one example's)."""
    if name == "encoded_image_shape" and isinstance(value, list | tuple) and len(value) != 3:
        return None if not value else "must be [] or [height, width, channels]"
    if name in ("input_shape", "encoded_image_shape"):
        if not isinstance(value, list | tuple) or len(value) > 3:
            return "must be a list of at most 3 sizes"
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= INT32_MAX for v in value
        ):
            return "sizes must be integers >= 1"
        return None
    if not isinstance(value, list | tuple) or not value:
        return "must be a non-empty list of layer sizes"
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return "layer sizes must be integers"
    if not all(v >= 1 for v in value):
        return "layer sizes must be >= 1"
    if not all(v <= INT32_MAX for v in value):
        return f"layer sizes must be <= {INT32_MAX}"
    if len(value) > model_spec.MAX_LAYERS:
        return f"at most {model_spec.MAX_LAYERS} layers, got {len(value)}"
    return None


def _options_problem(field: str, value) -> str | None:
    group = OPTION_GROUPS[field]
    if not isinstance(value, dict):
        return "must be an object of settings"
    for name, option in value.items():
        if name not in group.settings:
            return f"{name!r} is not one of {', '.join(group.settings)}"
        problem = group.settings[name].problem(option)
        if problem:
            return f"{name} {problem}"
    return None


def _structured_problem(name: str, value) -> str | None:
    """What is wrong with a value of a field that is not a plain number or string."""
    if name in ("augment", "layers"):  # the grammars of models.spec
        if not isinstance(value, str):
            return "must be a string"
        parse = model_spec.parse_augmentations if name == "augment" else model_spec.parse
        try:
            parse(value)
        except model_spec.SpecError as error:
            return str(error)
        return None
    if name in ("input_shape", "encoded_image_shape", "hidden"):
        return _sizes_problem(name, value)
    if name == "class_names":
        if not isinstance(value, list | tuple) or not value:
            return "must be a non-empty list of labels"
        kinds = {type(v) for v in value}
        if kinds not in ({str}, {int}) or len(set(value)) != len(value):
            return "must be distinct labels, all strings or all integers"
        return None
    return _options_problem(name, value)


def field_problem(name: str, value) -> str | None:
    """What is wrong with ``value`` for Config field ``name`` (None if nothing).

    The same rules hold for a flag and for a value read back from config.json,
    so a hand-edited config.json is checked as strictly as the command line.
    """
    if name not in _TYPES:
        return "is not a setting of this trainer"
    if value is None:
        return None if name in OPTIONAL else "must be given (null is not allowed)"
    structured = ("layers", "augment", "input_shape", "encoded_image_shape", "hidden")
    if name in (*structured, "class_names", *OPTION_GROUPS):
        return _structured_problem(name, value)
    if name in CHOICES:
        return None if value in CHOICES[name] else f"must be one of {', '.join(CHOICES[name])}"
    if name in INT_SETS:
        allowed = INT_SETS[name]
        ok = isinstance(value, int) and not isinstance(value, bool) and value in allowed
        return None if ok else f"must be one of {', '.join(map(str, allowed))}"
    if name == "image_size":
        if not isinstance(value, str):
            return "must be a string HEIGHT,WIDTH"
        try:
            parse_size(value)
        except ValueError as error:
            return str(error)
        return None
    if name in INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        low, high = INT_RANGES[name]
        return (
            f"must be >= {low}" if value < low else f"must be <= {high}" if value > high else None
        )
    if name in FLOAT_CHECKS:
        return FLOAT_CHECKS[name].problem(value)
    if "bool" in _TYPES[name]:
        return None if isinstance(value, bool) else "must be true or false"
    if not isinstance(value, str):
        return "must be a string"
    return "must not contain a NUL character" if "\0" in value else None


def _typed(kind: str, text: str):
    """A value written as text, as the type ``kind`` names (text if it is not one)."""
    try:
        if "bool" in kind:
            return {"true": True, "false": False}.get(text.lower(), text)
        if "int" in kind and "float" not in kind:
            return int(text)
        if "float" in kind:
            return float(text)
    except ValueError:
        return text
    return text


def flag_problem(name: str, text: str) -> str | None:
    """What is wrong with flag ``--name=text`` on its own (None if nothing)."""
    if name in OPTION_FLAGS:
        field, option = OPTION_FLAGS[name]
        setting = OPTION_GROUPS[field].settings[option]
        return setting.problem(text if setting.kind == "steps" else _typed(setting.kind, text))
    if name == "hidden":
        try:
            parse_hidden(text)
        except UsageError as error:
            return str(error).partition(": ")[2]
        return None
    return field_problem(name, _typed(_TYPES.get(name, ""), text))


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


def _show(value) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def _group_options(values: dict) -> None:
    """Moves the option flags given (not None) into their groups' fields, in place,
    each checked on its own."""
    for field in OPTION_GROUPS:
        values[field] = dict(values.get(field) or {})
    for flag, (field, name) in OPTION_FLAGS.items():
        given = values.pop(flag, None)
        if given is None:
            continue
        setting = OPTION_GROUPS[field].settings[name]
        problem = setting.problem(given)
        _require(problem is None, f"--{flag}={_show(given)}: {problem}")
        values[field][name] = setting.value(given)


def _check_options(values: dict) -> None:
    """Each option given applies to the chosen entry, and the required ones are given."""
    for field, group in OPTION_GROUPS.items():
        chosen = values[group.chooser]
        takes = group.takes(chosen)
        for name, value in values[field].items():
            if name not in takes:
                users = [e.name for e in group.entries if name in group.takes(e.name)]
                raise UsageError(
                    f"--{group.prefix}{name}={_show(value)}: applies to "
                    f"--{group.chooser}={'|'.join(users)} only"
                )
        for name, default in takes.items():
            if default is None and name not in values[field]:
                setting = group.settings[name]
                example = (
                    f", e.g. --{group.prefix}{name}=3000,6000" if setting.kind == "steps" else ""
                )
                flag = f"--{group.prefix}{name}"
                raise UsageError(
                    f"--{group.chooser}={chosen}: give {flag} ({setting.doc}){example}"
                )


def resolve(values: dict) -> Config:
    """Validates plain setting values and resolves the defaults that follow others.

    Args:
      values: ``{setting: value}`` as given on the command line (flags, the
        option groups' flags among them, or the groups' fields); missing ones
        take ``Config``'s defaults, ``None`` means "choose for me".

    Raises:
      UsageError: a value is out of range, of the wrong kind, or inconsistent.
    """
    values = dict(values)
    unknown = sorted(set(values) - set(SETTING_NAMES) - set(OPTION_FLAGS))
    _require(not unknown, f"unknown settings: {', '.join(unknown)}")
    _group_options(values)
    defaults = dataclasses.asdict(Config())
    for name in SETTING_NAMES:
        values.setdefault(name, None if name in OPTIONAL | CHOSEN_LATER else defaults[name])
    for name in PATHS:
        values[name] = expand_path(values[name])
    hidden = values["hidden"]
    values["hidden"] = parse_hidden(
        ",".join(map(str, hidden)) if isinstance(hidden, list | tuple) else hidden
    )
    _fill_defaults(values)
    for name in SETTING_NAMES:
        problem = field_problem(name, values[name])
        _require(problem is None, f"--{name}={_show(values[name])}: {problem}")
    _check_options(values)
    _check_consistent(types.SimpleNamespace(**values))
    return Config(**values)


def _fill_defaults(values: dict) -> None:
    """The defaults that follow other settings, in place."""
    model = values["model"]
    takes = registry.MODELS.get(model).takes if model in registry.MODELS else None
    if values["layers"] is not None and takes != "layers":
        raise UsageError(
            f"--layers: applies to --model=cnn only (--model={model} has its own layers)"
        )
    if takes == "layers" and values["layers"] is not None and not str(values["layers"]).strip():
        raise UsageError(
            f"--layers: empty; --model={model} needs its layers, e.g. "
            f"--layers={registry.MODELS.get(model).layers}"
        )
    values.update(model_defaults(model, values["layers"], values["activation"], values["init"]))
    if values["loss"] is None:
        values["loss"] = "mse" if dataset_is_regression(values) else "cross_entropy"
    if values["learning_rate"] is None and values["optimizer"] in registry.OPTIMIZERS:
        values["learning_rate"] = registry.OPTIMIZERS.get(values["optimizer"]).learning_rate
    if not values["model_dir"]:  # eval and export need a run folder: no default
        training = values["mode"] in ("train", "train_and_eval")
        values["model_dir"] = (
            default_model_dir(str(values["dataset"]), str(model)) if training else ""
        )


def _check_data_flags(f) -> None:
    source = SOURCES.get(f.dataset)
    for group in source.needs:
        if not any(getattr(f, flag) for flag in group):
            given = " or ".join(f"--{flag}" for flag in group)
            raise UsageError(f"{given}: required with --dataset={f.dataset} ({source.doc})")
    for flag, kind in source.paths.items():
        path = getattr(f, flag)
        if path and kind == "folder":
            _require(os.path.isdir(path), f"--{flag}={path}: no such folder")
        elif path:
            try:  # a folder, /dev/null or a FIFO named as what it is
                check_input_file(path, f"--{flag}={path}", "CSV file")
            except DataError as error:
                raise UsageError(str(error)) from None


def _check_folders(f) -> None:
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


def _check_consistent(f) -> None:
    _check_data_flags(f)
    _check_folders(f)
    check_patience(f)
    _check_distinct_splits(f)
    if f.label_smoothing and f.loss != "cross_entropy":
        raise UsageError(
            f"--label_smoothing={f.label_smoothing}: applies to --loss=cross_entropy only"
        )


_CSV_SPLITS = ("csv_path", "validation_csv_path", "test_csv_path")


def _check_distinct_splits(f) -> None:
    """Refuses one CSV (or one glob of files) given for two splits: the test split
    would then choose, or be trained on."""
    for kind in (_CSV_SPLITS, ("train_files", "validation_files", "test_files")):
        given = [(flag, getattr(f, flag)) for flag in kind if getattr(f, flag, None)]
        seen = {}
        for flag, value in given:
            key = _same_file_key(value) if kind[0] == "csv_path" else value
            if key in seen:
                raise UsageError(
                    f"--{flag}={value}: the same as --{seen[key]}; each split needs rows "
                    "of its own (the test split must never train or choose)"
                )
            seen[key] = flag
    csvs = [(flag, getattr(f, flag)) for flag in _CSV_SPLITS if getattr(f, flag, None)]
    for i, (flag, value) in enumerate(csvs):
        for earlier, other in csvs[:i]:
            if _same_contents(value, other):
                raise UsageError(
                    f"--{flag}={value}: holds the same rows as --{earlier}={other}; each "
                    "split needs rows of its own (the test split must never train or choose)"
                )


def _same_contents(a: str, b: str) -> bool:
    """Whether two regular files hold the same bytes (read only when their sizes agree)."""
    try:
        if not (is_regular_file(a) and is_regular_file(b)):
            return False
        if os.path.getsize(a) != os.path.getsize(b):
            return False
        with open(a, "rb") as first, open(b, "rb") as second:
            while True:
                block = first.read(1 << 20)
                if block != second.read(1 << 20):
                    return False
                if not block:
                    return True
    except (OSError, ValueError):
        return False


def _same_file_key(path: str):
    """What two paths of one file share, hard and symbolic links included."""
    try:
        info = os.stat(path)
        return (info.st_dev, info.st_ino)
    except (OSError, ValueError):
        return os.path.realpath(path)


def check_patience(f) -> None:
    """Refuses a patience (early stopping, reduce-on-plateau) in a run without
    evaluations, where it would never act."""
    for patience in ("early_stopping_patience", "lr_plateau_patience"):
        if getattr(f, patience) and (f.mode != "train_and_eval" or f.eval_every == 0):
            raise UsageError(
                f"--{patience}={getattr(f, patience)}: counts evaluations, and "
                + (f"--mode={f.mode} makes none (--mode=train_and_eval does)"
                   if f.mode != "train_and_eval" else "--eval_every=0 turns them off")
            )  # fmt: skip


def dataset_is_regression(values: dict) -> bool:
    """Whether the data of these settings are a regression (their default loss is mse)."""
    name = values.get("dataset")
    return name in SOURCES and SOURCES.get(name).is_regression(values)


def model_defaults(
    model: str, layers: str | None, activation: str | None, init: str | None = None
) -> dict:
    """``{"layers", "activation", "init"}`` with the defaults that follow ``--model``
    filled in: the default specification of a model that takes one, the model's own
    activation and initializer."""
    if model not in registry.MODELS:
        return {"layers": layers, "activation": activation, "init": init}
    kind = registry.MODELS.get(model)
    if kind.takes == "layers" and layers is None:
        layers = kind.layers
    return {
        "layers": layers,
        "activation": activation or kind.activation,
        "init": init or kind.init,
    }


def complete(config: Config) -> Config:
    """``config`` with the defaults that follow ``--model`` filled in (for a
    ``Config`` made directly rather than through ``resolve``)."""
    return dataclasses.replace(
        config, **model_defaults(config.model, config.layers, config.activation, config.init)
    )


# config.json fields of earlier versions, now named for the split they hold.
_RENAMED_FIELDS = {"eval_fraction": "test_fraction", "eval_files": "test_files"}
_RENAMED_VALUES = {
    "best_metric": {"eval_accuracy": "validation_accuracy", "eval_loss": "validation_loss"}
}
# config.json fields of earlier versions, now options of the schedule.
_RENAMED = {
    "lr_decay_steps": "decay_steps",
    "lr_decay_rate": "decay_rate",
    "lr_boundaries": "boundaries",
    "lr_min_fraction": "min_fraction",
}


def _migrate(saved: dict) -> dict:
    """An earlier version's config.json in this version's fields."""
    saved = dict(saved)
    for old, new in _RENAMED_FIELDS.items():
        if old in saved and new not in saved:
            saved[new] = saved.pop(old)
    for name, renamed in _RENAMED_VALUES.items():
        if isinstance(saved.get(name), str):
            saved[name] = renamed.get(saved[name], saved[name])
    if not any(name in saved for name in _RENAMED) or "lr_options" in saved:
        return saved
    schedule = saved.get("lr_schedule")
    takes = registry.SCHEDULES.get(schedule).options if schedule in registry.SCHEDULES else {}
    options = {}
    for old, new in _RENAMED.items():
        value = saved.pop(old, None)
        if value is not None and new in takes:
            options[new] = registry.SCHEDULE_OPTIONS[new].value(value)
    saved["lr_options"] = options
    return saved


def load(path: str) -> dict:
    """Reads a config.json written by a run and checks every value in it.

    Raises:
      UsageError: the file cannot be read, is not a JSON object, or holds a
        value of the wrong kind or out of range (named with the field).
    """
    if os.path.exists(path) and not is_regular_file(path):
        raise UsageError(f"{path}: not a regular file; remove it or put the run's config back")
    try:
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path}: cannot read the run's config ({error})") from None
    except RecursionError:
        raise UsageError(f"{path}: cannot read the run's config (nested too deeply)") from None
    if not isinstance(saved, dict):
        raise UsageError(f"{path}: not a JSON object of settings")
    saved = _migrate(saved)
    unknown = sorted(name for name in saved if name not in FIELD_NAMES)
    if unknown:
        raise UsageError(
            f"{path}: {', '.join(map(json.dumps, unknown))[:120]}: not a setting of this "
            "version (a typo?); fix or remove the file"
        )
    names, count = saved.get("class_names"), saved.get("num_classes")
    if isinstance(names, list) and isinstance(count, int) and names and len(names) != count:
        raise UsageError(
            f"{path}: {len(names)} class_names for num_classes {count}; fix or remove the file"
        )
    for name, value in saved.items():
        problem = field_problem(name, value)
        if problem:
            raise UsageError(
                f"{path}: {json.dumps(name)}: {json.dumps(value)[:80]} {problem}; "
                "fix or remove the file"
            )
    return saved
