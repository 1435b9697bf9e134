"""The run folder's files besides checkpoints and summaries: config.json kept
across resumes (what may change, what may not), and results.json read back.

A resumed run keeps its saved settings unless a flag says otherwise; once it has
checkpoints, a flag that would change what the run is (network, optimizer,
data, seed, batch size) is refused in one line. No TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import os

from absl import logging

from trainer import config as config_lib
from trainer.config import Config
from trainer.errors import UsageError
from trainer.files import read_json, write_atomically, write_json

# Fields that describe how to run, not what the run is: never taken from a
# saved config.json.
_RUNTIME_FIELDS = {
    "mode",
    "model_dir",
    "export_dir",
    "device",
    "strategy",
    "cpu_devices",
    "worker_timeout",
    "jit_compile",
    "steps_per_loop",
    "log_every",
}


# Fields that make a run what it is: once it has checkpoints, a resumed run
# must keep them (the weights, the optimizer state and the data position in
# the checkpoint mean something only with these).
_IDENTITY_FIELDS = {
    "model": "the network",
    "hidden": "the network",
    "layers": "the network",
    "activation": "the network",
    "init": "the network",
    "optimizer": "the optimizer state",
    "loss": "the objective",
    "dataset": "the data",
    "label_column": "the data",
    "shuffle_buffer": "the data order",
    "image_size": "the images",
    "channels": "the images",
    "bad_images": "the images",
    "test_fraction": "the test split",
    "validation_fraction": "the validation split",
    "synthetic_examples": "the data",
    "synthetic_features": "the data",
    "synthetic_classes": "the data",
    "seed": "the data order and split",
    "batch_size": "the data position (step x batch size)",
    "best_metric": "the best-so-far record",
}


# Identity fields that matter to one dataset only (elsewhere they change nothing).
_DATASET_ONLY = {
    "label_column": "csv",
    "shuffle_buffer": "tfrecord",
    "image_size": "images",
    "channels": "images",
    "bad_images": "images",
}


def identity(config: Config) -> dict:
    """The settings a checkpoint of this run must have been written with:
    ``{name: JSON value}`` of the identity fields that matter to its dataset."""
    values = {}
    for name in _IDENTITY_FIELDS:
        if name in _DATASET_ONLY and _DATASET_ONLY[name] != config.dataset:
            continue
        value = getattr(config, name)
        values[name] = list(value) if isinstance(value, tuple) else value
    values["best_metric"] = _resolved_metric(config.best_metric, {"loss": config.loss})
    # What the exported model's classes are called (config.json's, under --mode=export).
    values["class_names"] = [str(n) for n in config.class_names] if config.class_names else None
    if config.mode in ("train", "train_and_eval") and config.data_fingerprint:
        values["data_fingerprint"] = config.data_fingerprint  # training goes on on them
    return values


def _resolved_metric(best_metric, saved: dict):
    """``--best_metric`` with ``auto`` resolved as the run's loss resolves it."""
    if best_metric != "auto":
        return best_metric
    classification = saved.get("loss", "cross_entropy") == "cross_entropy"
    return "validation_accuracy" if classification else "validation_loss"


def has_checkpoints(model_dir: str) -> bool:
    """Whether ``model_dir`` holds any checkpoint (``checkpoints/ckpt-*``)."""
    folder = os.path.join(model_dir, "checkpoints")
    try:
        return any(name.startswith("ckpt-") for name in os.listdir(folder))
    except OSError:
        return False


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def merge_saved_config(config: Config, explicit: set[str]) -> Config:
    """A resumed run keeps its saved settings unless a flag says otherwise.

    The saved config.json is validated field by field. Once the run has
    checkpoints, a flag that would change what the run is (network,
    optimizer, data, seed, batch size) is refused in one line; a change that
    is safe on resume (learning rate, length, cadences) is logged.

    Raises:
      UsageError: config.json is unreadable or invalid, or a flag changes
        what the run is.
    """
    path = os.path.join(config.model_dir, "config.json")
    if not os.path.lexists(path):
        return config
    saved = config_lib.load(path)
    resumed = has_checkpoints(config.model_dir)
    changes, logged = {}, []
    for field in dataclasses.fields(Config):
        name = field.name
        if name in _RUNTIME_FIELDS or name not in saved:
            continue
        value = saved[name]
        if name in config_lib.OPTION_GROUPS:
            continue  # merged option by option, below
        if (
            name in ("hidden", "input_shape", "encoded_image_shape", "class_names")
            and value is not None
        ):
            value = tuple(value)
        if name not in explicit:
            changes[name] = value
            continue
        wanted = getattr(config, name)
        if wanted == value or not resumed:
            continue
        if name == "best_metric" and _resolved_metric(wanted, saved) == _resolved_metric(
            value, saved
        ):
            continue  # auto names the same figure
        dataset = saved.get("dataset", config.dataset)
        matters = name not in _DATASET_ONLY or _DATASET_ONLY[name] == dataset
        if name in _IDENTITY_FIELDS and matters:
            raise UsageError(
                f"--{name}={_show(wanted)}: the checkpoints in {config.model_dir} were trained "
                f"with --{name}={_show(value)}, and {_IDENTITY_FIELDS[name]} must stay the same "
                "to resume; use a new --model_dir (nothing was changed)"
            )
        logged.append(f"{name} {_show(value)} -> {_show(wanted)}")
    if "train_steps" in explicit and "epochs" not in explicit:
        changes["epochs"] = None
    if "epochs" in explicit and "train_steps" not in explicit:
        changes["train_steps"] = None
    merged = dataclasses.replace(config, **changes)
    for field in config_lib.OPTION_GROUPS:
        options = _merged_options(field, saved.get(field) or {}, merged, explicit)
        if resumed and field in saved and options != saved[field]:
            logged.append(f"{field} {saved[field]} -> {options}")
        merged = dataclasses.replace(merged, **{field: options})
    if "eval_every" in explicit and merged.mode == "train_and_eval":
        config_lib.check_patience(merged)  # a saved patience with evaluations now off
    if logged:
        logging.info("resuming with changed settings: %s", "; ".join(logged))
    return merged


def _merged_options(field: str, saved: dict, config: Config, explicit: set[str]) -> dict:
    """An option group's settings: the saved ones, those given explicitly (flag by
    flag, or the whole field) in their place, less what the chosen entry does not take."""
    group = config_lib.OPTION_GROUPS[field]
    given = getattr(config, field)
    if field in explicit:
        options = dict(given)
    else:
        chosen = {k: v for k, v in given.items() if group.prefix + k in explicit}
        options = {**saved, **chosen}
    takes = group.takes(getattr(config, group.chooser))
    return {name: value for name, value in options.items() if name in takes}


def save_config(config: Config, resumed_at: int | None) -> None:
    """Writes config.json; a resumed run's earlier config.json is kept beside it
    as ``config.before-step-<N>.json`` when a setting changed."""
    path = os.path.join(config.model_dir, "config.json")
    payload = dataclasses.asdict(config)
    if resumed_at is not None and os.path.isfile(path) and not os.path.islink(path):
        try:
            saved = config_lib.load(path)
        except UsageError:
            saved = {}
        differs = any(
            saved.get(name) != (list(value) if isinstance(value, tuple) else value)
            for name, value in payload.items()
            if name not in _RUNTIME_FIELDS
        )
        if differs:
            keep = os.path.join(config.model_dir, f"config.before-step-{resumed_at}.json")
            copy = 1
            while os.path.lexists(keep):
                keep = os.path.join(
                    config.model_dir, f"config.before-step-{resumed_at}.{copy}.json"
                )
                copy += 1
            try:
                with open(path, encoding="utf-8") as handle:
                    write_atomically(keep, handle.read())
            except OSError as error:
                raise UsageError(
                    f"{keep}: cannot keep the earlier config ({error.strerror or error}); "
                    "nothing was changed"
                ) from None
            logging.info("settings changed: the earlier config is kept as %s", keep)
    write_json(path, payload)


def previous_results(model_dir: str) -> dict:
    """results.json of an earlier invocation ({} if there is none, or it is unreadable)."""
    try:
        results = read_json(os.path.join(model_dir, "results.json"))
    except (OSError, ValueError):
        return {}
    return results if isinstance(results, dict) else {}
