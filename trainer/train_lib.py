"""Assembles a run: config -> runtime -> data + model + optimizer -> controller.

``run(config, explicit)`` is what ``python -m trainer.main`` calls; tests call
it too. It writes the run folder of SPEC §4.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import stat
import time

import numpy as np
from absl import logging

from trainer import cli
from trainer import config as config_lib
from trainer.config import Config, UsageError
from trainer.files import write_atomically

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
    "eval_fraction": "the train/eval split",
    "synthetic_examples": "the data",
    "synthetic_features": "the data",
    "synthetic_classes": "the data",
    "seed": "the data order and split",
    "batch_size": "the data position (step x batch size)",
}
# Identity fields that matter to one dataset only (elsewhere they change nothing).
_DATASET_ONLY = {"label_column": "csv", "shuffle_buffer": "tfrecord"}


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
        if name in ("hidden", "input_shape", "class_names") and value is not None:
            value = tuple(value)
        if name not in explicit:
            changes[name] = value
            continue
        wanted = getattr(config, name)
        if wanted == value or not resumed:
            continue
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
    if logged:
        logging.info("resuming with changed settings: %s", "; ".join(logged))
    merged = dataclasses.replace(config, **changes)
    if merged.epochs is None and not merged.train_steps:  # as resolve() does for the flags
        merged = dataclasses.replace(merged, epochs=config_lib.DEFAULT_EPOCHS)
    return merged


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


def write_json(path: str, payload: dict) -> None:
    """Writes JSON atomically (fresh temporary file + rename): a crash never leaves
    half a file, a planted link is replaced rather than followed, and a failed
    write leaves no temporary file behind."""
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    try:
        write_atomically(path, text)
    except OSError as error:
        raise UsageError(f"{path}: cannot write ({error.strerror or error})") from None


def prepare_model_dir(model_dir: str) -> None:
    cli.writable_folder(model_dir, f"--model_dir={model_dir}")


def _model_flag(config: Config) -> str:
    """The flag that chose the network, to name in an error."""
    return f"--layers={config.layers}" if config.model == "cnn" else f"--model={config.model}"


def input_shape_of(config: Config) -> tuple[int, ...]:
    """One example's shape for the model: ``config.input_shape``, or ``(input_size,)``
    for a config.json written before shapes were recorded."""
    return tuple(config.input_shape) or (int(config.input_size),)


def build_model(config: Config, input_shape, num_outputs: int, normalization=None):
    """The network of ``config`` for examples of ``input_shape``.

    Raises:
      UsageError: the layers do not fit the data, naming the flag and the token.
    """
    from models import zoo

    try:
        return zoo.build(
            config.model,
            input_shape,
            num_outputs,
            hidden=config.hidden,
            activation=config.activation,
            init=config.init,
            seed=config.seed,
            normalization=normalization,
            layers=config.layers,
        )
    except ValueError as error:
        raise UsageError(f"{_model_flag(config)}: {error}") from None


def check_memory(config: Config, input_shape, num_outputs: int) -> None:
    """Refuses a network whose shapes do not chain, or whose weights, gradients
    and optimizer slots cannot fit, before any variable is made.

    Raises:
      UsageError: naming the flag, and the size of the network and the memory it needs.
    """
    from models import optimizers, zoo
    from trainer import data as data_lib

    try:
        _, params = zoo.plan(
            config.model, input_shape, num_outputs, hidden=config.hidden, layers=config.layers
        )
    except ValueError as error:
        raise UsageError(f"{_model_flag(config)}: {error}") from None
    # weights, gradients, optimizer slots, and a copy around each update
    needed = params * 4 * (3 + optimizers.slot_count(config.optimizer))
    flag = f"--hidden={_show(config.hidden)}" if config.model == "mlp" else _model_flag(config)
    data_lib.check_memory(
        needed,
        f"a network of {params:,} parameters with --optimizer={config.optimizer} "
        "(use smaller layers)",
        flag,
    )


def make_schedule(config: Config, total_steps: int, num_train: int, batch: int):
    """The ``models.schedules.Schedule`` of ``--lr_schedule`` and its flags.

    ``--lr_decay_steps`` defaults to the steps after warmup (cosine) or one
    epoch (exponential).

    Raises:
      UsageError: naming ``--lr_schedule`` and what the schedule refused
        (e.g. boundaries that do not increase).
    """
    from models import schedules

    decay_steps = config.lr_decay_steps
    if decay_steps is None:
        if config.lr_schedule == "cosine":
            decay_steps = max(1, total_steps - config.warmup_steps)
        elif config.lr_schedule == "exponential":
            decay_steps = max(1, num_train // max(1, batch))
    boundaries = [int(b) for b in (config.lr_boundaries or "").split(",") if b.strip()]
    try:
        return schedules.Schedule(
            config.learning_rate,
            config.lr_schedule,
            warmup_steps=config.warmup_steps,
            decay_steps=decay_steps,
            decay_rate=config.lr_decay_rate,
            boundaries=boundaries,
            min_fraction=config.lr_min_fraction,
        )
    except ValueError as error:
        raise UsageError(f"--lr_schedule={config.lr_schedule}: {error}") from None


def _finite_or_none(value):
    return value if isinstance(value, float | int) and math.isfinite(value) else None


class Run:
    """One run's objects, built in the strategy's scope.

    With ``load_data=False`` (export) the model's sizes come from the saved
    config.json and its feature scaling from the checkpoint.
    """

    def __init__(self, config: Config, load_data: bool = True):
        from models import optimizers, zoo
        from models.training import TrainingProgram
        from trainer import checkpoints as checkpoints_lib
        from trainer import data as data_lib
        from trainer import runtime, sources
        from trainer import summaries as summaries_lib

        self.started = time.time()
        config = config_lib.complete(config)
        if load_data:
            self.source = sources.open_source(config)
            logging.info("data: %s", self.source.description)
            fingerprint = self.source.fingerprint
            if (
                config.mode in ("train", "train_and_eval")
                and config.data_fingerprint
                and config.data_fingerprint != fingerprint
                and has_checkpoints(config.model_dir)
            ):
                raise UsageError(
                    f"--model_dir={config.model_dir}: the training data differ from those this "
                    f"run was trained on (fingerprint {fingerprint}, the run's "
                    f"{config.data_fingerprint}: another or a changed file, or another split); "
                    "use a new --model_dir (nothing was changed)"
                )
            if zoo.uses_images(config.model, config.layers):
                # Convolutional models take [H, W, C] examples (a view of the same data).
                self.source = self.source.as_images()
            config = sources.replace_facts(config, self.source)
            normalization = (self.source.feature_mean, self.source.feature_scale)
            num_train = self.source.num_train
        else:
            self.source = None
            if not config.input_size:
                raise UsageError(f"--model_dir={config.model_dir}: no config.json from training")
            shape = input_shape_of(config)
            normalization = (np.zeros(shape), np.ones(shape))
            num_train = config.batch_size
        check_memory(config, input_shape_of(config), config.num_classes or 1)
        self.runtime = runtime.setup(config)
        self.config = config
        if config.loss == "cross_entropy" and not config.num_classes:
            raise UsageError(f"--loss=cross_entropy: --dataset={config.dataset} is a regression")
        if config.best_metric == "eval_accuracy" and config.loss != "cross_entropy":
            raise UsageError(
                f"--best_metric=eval_accuracy: --loss={config.loss} has no accuracy; "
                "use --best_metric=eval_loss"
            )
        batch = data_lib.effective_batch_size(config.batch_size, num_train)
        if batch % self.runtime.num_replicas:
            raise UsageError(
                f"--batch_size={batch}: must divide evenly over "
                f"{self.runtime.num_replicas} replicas"
            )
        num_outputs = config.num_classes or 1
        from trainer import controller as controller_lib

        self.total_steps = controller_lib.total_steps(config, num_train)
        # multi_worker: creating the variables waits for the other workers (guard_workers).
        with runtime.guard_workers(config, "model"), self.runtime.strategy.scope():
            self.model = build_model(config, input_shape_of(config), num_outputs, normalization)
            self.optimizer = optimizers.get(
                config.optimizer, config.learning_rate, config.clip_norm
            )
            decayed = (
                self.model.trainable_variables
                if config.weight_decay_all
                else [layer.kernel for layer in self.model.weighted_layers]
            )
            self.optimizer.set_weight_decay(config.weight_decay, decayed)
            self.schedule = make_schedule(config, self.total_steps, num_train, batch)
            self.tracker = controller_lib.EvalTracker()
            self.program = TrainingProgram(
                self.model,
                self.optimizer,
                loss=config.loss,
                global_batch_size=batch,
                compute_dtype=self.runtime.compute_dtype,
                jit_compile=self.runtime.jit_compile,
                strategy=self.runtime.strategy,
                skip_nonfinite=config.skip_nonfinite,
                diagnose_every=config.summary_every,
                summary_fn=summaries_lib.step_summary_fn(config.histograms)
                if self.runtime.is_chief
                else None,
                schedule=self.schedule,
                l2=config.l2,
                label_smoothing=config.label_smoothing,
            )
        logging.info(
            "model: %s %s, %d parameters; optimizer %s (learning rate %s%s); loss %s%s",
            config.model,
            self.model.describe(),
            self.model.count_params(),
            config.optimizer,
            self.schedule.describe(),
            f", weight decay {config.weight_decay:g}" if config.weight_decay else "",
            config.loss,
            "".join(
                f", {name} {value:g}"
                for name, value in (
                    ("L2", config.l2),
                    ("label smoothing", config.label_smoothing),
                )
                if value
            ),
        )
        folder = checkpoints_lib.checkpoint_dir(config.model_dir)
        # Every worker joins each save; only the chief's files count (see Checkpoints).
        scratch = None
        if not self.runtime.is_chief:
            scratch = os.path.join(folder, f".worker-{self.runtime.task.rpartition(':')[2]}")
        self.checkpoints = checkpoints_lib.Checkpoints(
            folder,
            keep=config.keep_checkpoints,
            scratch_directory=scratch,
            model=self.model,
            optimizer=self.optimizer,
            global_step=self.program.global_step,
            schedule=self.schedule,
            tracker=self.tracker,
        )


def run(config: Config, explicit: set[str] = frozenset()) -> dict:
    """Runs ``config.mode`` and returns the figures written to results.json."""
    from trainer import checkpoints as checkpoints_lib
    from trainer import runtime

    config = merge_saved_config(config, set(explicit))
    try:
        if config.mode in ("train", "train_and_eval"):
            # Other workers of a multi-worker run share the chief's folder, not its lock.
            chief = runtime.is_chief_task(*runtime.tf_config_task(config))
            prepare_model_dir(config.model_dir)
            if chief:
                with checkpoints_lib.RunLock(config.model_dir):
                    return _run(config)
        return _run(config)
    except _input_errors(config) as error:
        raise _input_problem(config, error) from None
    except _peer_errors(config) as error:
        raise PeerLostError(config, error) from None


def _input_errors(config: Config) -> tuple:
    """The TensorFlow errors a stream of files raises mid-run on a bad record."""
    if config.dataset != "tfrecord":
        return ()
    import tensorflow as tf

    return (tf.errors.DataLossError, tf.errors.InvalidArgumentError)


def _input_problem(config: Config, error: Exception) -> Exception:
    """One line for a record that failed mid-run, or ``error`` itself when it is
    not about the input."""
    import tensorflow as tf

    from trainer import checkpoints as checkpoints_lib
    from trainer.data import DataError
    from trainer.records import _read_problem

    text = cli.one_line(error, limit=100_000)  # searched whole; the messages quote parts
    input_ops = ("ParseExample", "DecodeRaw", "Feature", "record", "label value")
    if isinstance(error, tf.errors.InvalidArgumentError) and not any(w in text for w in input_ops):
        return error
    latest = tf.train.latest_checkpoint(checkpoints_lib.checkpoint_dir(config.model_dir))
    where = (
        f"--data_dir={config.data_dir}"
        if config.data_dir
        else f"--train_files={config.train_files}"
    )
    kept = f"kept the checkpoints up to {os.path.basename(latest) if latest else 'none'}"
    label = re.search(
        r"label value of (-?\d+) which is outside the valid range of \[0, (\d+)\)", text
    )
    if label:  # the fused cross-entropy kernel checks every label it is given
        return DataError(
            f"{where}: a record has label {label.group(1)}, outside the {label.group(2)} "
            f"classes of the dataset's metadata (0..{int(label.group(2)) - 1}); {kept}; "
            "convert the data again"
        )
    return DataError(
        f"{where}: a record could not be read: {_read_problem(error)}; {kept}; "
        "convert the data again"
    )


class PeerLostError(Exception):
    """A multi-worker run lost another worker; the checkpoints already saved are kept."""

    def __init__(self, config: Config, error: Exception):
        import tensorflow as tf

        from trainer import checkpoints as checkpoints_lib

        cause = cli.one_line(error, limit=200)
        latest = tf.train.latest_checkpoint(checkpoints_lib.checkpoint_dir(config.model_dir))
        super().__init__(
            f"--strategy=multi_worker: lost contact with another worker "
            f"({type(error).__name__}: {cause}); kept the checkpoints up to "
            f"{os.path.basename(latest) if latest else 'none'}: start every worker again "
            "with the same command to resume"
        )


def _peer_errors(config: Config) -> tuple:
    """The TensorFlow errors that mean a peer worker is gone (only under multi_worker)."""
    if config.strategy != "multi_worker":
        return ()
    import tensorflow as tf

    errors = tf.errors
    return (
        errors.UnavailableError,
        errors.DeadlineExceededError,
        errors.CancelledError,
        errors.AbortedError,
        errors.InternalError,
        errors.FailedPreconditionError,
    )


def _check_same_start(run_: Run) -> None:
    """Refuses to train when the workers restored different steps.

    That happens when ``--model_dir`` is not one shared folder: workers would
    then train from different weights and silently diverge.
    """
    if run_.runtime.num_workers < 2:
        return
    import tensorflow as tf

    strategy = run_.runtime.strategy
    step = float(run_.program.global_step.numpy())
    local = strategy.experimental_distribute_values_from_function(
        lambda _: tf.constant([step], tf.float64)
    )
    steps = sorted({int(s) for s in strategy.gather(local, axis=0).numpy()})
    if len(steps) > 1:
        raise UsageError(
            f"--model_dir={run_.config.model_dir}: the workers resumed from different steps "
            f"({', '.join(map(str, steps))}); every worker must read the chief's checkpoints: "
            "put --model_dir on storage all hosts share"
        )


def _previous_results(model_dir: str) -> dict:
    path = os.path.join(model_dir, "results.json")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block, a device never end
            return {}
        with open(path) as handle:
            results = json.load(handle)
    except (OSError, ValueError, RecursionError):
        return {}
    return results if isinstance(results, dict) else {}


def _export_if_new(run_: Run, previous: dict, trained: bool) -> tuple[str | None, int]:
    """Exports the model ``--export`` asks for (the best checkpoint's when there is
    one, else the last step's) unless that very step is already exported.

    Returns:
      ``(export path or None, the step of the exported weights)``.
    """
    from trainer import controller as controller_lib
    from trainer import export as export_lib

    step = int(run_.program.global_step.numpy())
    best = run_.checkpoints.best if run_.config.export == "best" else None
    best_step = int(run_.tracker.best_step.numpy())
    if best and best_step >= 0 and best_step != step:
        run_.checkpoints.restore(best, only={"model": run_.model})
        logging.info("export: the best checkpoint's model (step %d of %d)", best_step, step)
        step = best_step
    earlier = previous.get("export_path")
    if not trained and previous.get("export_step") == step and earlier and os.path.isdir(earlier):
        logging.info("export: step %d is already exported as %s", step, earlier)
        return earlier, step
    sample = run_.source.sample()[0] if run_.source is not None else None
    controller_lib.check_finite_model(run_.model, f"step {step}", run_.checkpoints.latest, sample)
    return export_lib.export_run(run_) or None, step


def _run(config: Config) -> dict:
    from trainer import controller as controller_lib
    from trainer import export as export_lib
    from trainer import runtime

    run_ = Run(config, load_data=config.mode != "export")
    config = run_.config
    previous = _previous_results(config.model_dir)
    if config.mode in ("eval", "export"):
        path = run_.checkpoints.restore_latest(
            only={"model": run_.model, "global_step": run_.program.global_step}
        )
        if path is None:
            raise UsageError(f"--model_dir={config.model_dir}: no checkpoint to {config.mode}")
        if config.mode == "export":
            controller_lib.check_finite_model(run_.model, os.path.basename(path), path)
            return {"export_path": export_lib.export_run(run_)}
    else:
        # multi_worker: restoring and comparing steps wait for the other workers.
        with runtime.guard_workers(config, "start"):
            path = run_.checkpoints.restore_latest(move_corrupt=run_.runtime.is_chief)
        if path:
            # The flags (or the saved config) decide the learning rate, not the checkpoint.
            run_.optimizer.learning_rate.assign(config.learning_rate)
            logging.info("resuming from %s (step %d)", path, int(run_.program.global_step.numpy()))
        with runtime.guard_workers(config, "start"):
            _check_same_start(run_)
        if run_.runtime.is_chief:
            save_config(config, resumed_at=int(run_.program.global_step.numpy()) if path else None)

    steps = controller_lib.total_steps(config, run_.source.num_train)
    log_every = config.log_every or max(1, steps // 10)
    steps_per_loop = config.steps_per_loop or min(log_every, 1000)
    controller = controller_lib.Controller(
        config,
        run_.program,
        run_.source,
        run_.runtime,
        run_.checkpoints,
        steps_per_loop,
        log_every,
        tracker=run_.tracker,
        schedule=run_.schedule,
    )
    export_path = export_step = None
    trained = False
    if config.mode in ("train", "train_and_eval"):
        start = controller.step
        try:
            controller.train(steps)
        except (controller_lib.TrainingStopped, controller_lib.NonFiniteError) as error:
            reason = "signal" if isinstance(error, controller_lib.TrainingStopped) else "non_finite"
            controller.stop_reason = reason
            trained = controller.step != start
            results = _results(config, run_, controller, steps_per_loop, previous, trained)
            _write_results(config, run_, results, quiet=True)
            raise
        trained = controller.step != start
    if config.mode in ("eval", "train_and_eval"):
        if controller.last_eval_step != controller.step:
            controller.evaluate()
        if config.mode == "train_and_eval" and trained:
            controller.after_final_eval(controller.step)
    if config.mode in ("train", "train_and_eval") and run_.runtime.is_chief:
        export_path, export_step = _export_if_new(run_, previous, trained)
    results = _results(config, run_, controller, steps_per_loop, previous, trained)
    if export_path:
        results.update(export_path=export_path, export_step=export_step)
    return _write_results(config, run_, results)


def _results(
    config: Config, run_: Run, controller, steps_per_loop: int, previous: dict, trained: bool
) -> dict:
    """results.json's figures: this invocation's, or the earlier ones that still hold.

    Training figures are replaced only when this invocation trained; eval
    figures are kept only while they are of the current step (a run trained
    on without evaluating has no current eval figures).
    """
    results = dict(previous)
    step = controller.step
    results["global_step"] = step
    if trained:
        results.update(
            train_loss=_finite_or_none(controller.last_train["loss"]),
            examples_per_sec=_finite_or_none(controller.examples_per_sec()),
            first_call_s=_finite_or_none(controller.first_call_seconds),
            steps_per_loop=steps_per_loop,
            jit_compile=run_.runtime.jit_compile,
            device=run_.runtime.device,
            num_replicas=run_.runtime.num_replicas,
            precision=config.precision,
        )
        if controller.program.classification:
            results["train_accuracy"] = _finite_or_none(controller.last_train["accuracy"])
    if controller.last_eval:
        results["eval_loss"] = _finite_or_none(controller.last_eval["loss"])
        results["eval_examples"] = int(controller.last_eval["count"])
        if controller.program.classification:
            results["eval_accuracy"] = _finite_or_none(controller.last_eval["accuracy"])
        results["eval_step"] = step
    elif results.get("eval_step") != step:
        for stale in ("eval_loss", "eval_accuracy", "eval_examples", "eval_step"):
            results.pop(stale, None)
    results.setdefault("eval_loss", None)
    if controller.program.classification:
        results.setdefault("eval_accuracy", None)
    best_step = int(run_.tracker.best_step.numpy())
    if best_step >= 0:
        best = float(run_.tracker.best_value.numpy())
        metric = controller.best_metric
        results.update(best_step=best_step, best_metric=metric)
        results[f"best_{metric}"] = best if metric == "eval_accuracy" else -best
    if controller.stop_reason:
        results["stop_reason"] = controller.stop_reason
    results["traces"] = dict(run_.program.trace_counts)
    results["wall_time_s"] = round(time.time() - run_.started, 3)
    return results


def _write_results(config: Config, run_: Run, results: dict, quiet: bool = False) -> dict:
    path = os.path.join(config.model_dir, "results.json")
    if run_.runtime.is_chief:
        write_json(path, results)
    if quiet:
        return results
    summary = f"done at step {results['global_step']}"
    if results.get("eval_loss") is not None:
        summary += f": eval loss {results['eval_loss']:.4f}"
        if results.get("eval_accuracy") is not None:
            summary += f", eval accuracy {results['eval_accuracy']:.4f}"
    logging.info("%s. Results: %s", summary, path)
    logging.info(
        "checkpoints: %s; TensorBoard: tensorboard --logdir %s",
        os.path.join(config.model_dir, "checkpoints"),
        config.model_dir,
    )
    return results
