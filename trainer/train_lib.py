"""Assembles a run: config -> runtime -> data + model + optimizer -> controller.

``run(config, explicit)`` is what ``python -m trainer.main`` calls; tests call
it too. It writes the run folder of SPEC §4.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import numpy as np
from absl import logging

from trainer import cli
from trainer import config as config_lib
from trainer.config import Config, UsageError

# Fields that describe how to run, not what the run is: never taken from a
# saved config.json.
_RUNTIME_FIELDS = {
    "mode",
    "model_dir",
    "export_dir",
    "device",
    "strategy",
    "cpu_devices",
    "jit_compile",
    "steps_per_loop",
    "log_every",
}


def merge_saved_config(config: Config, explicit: set[str]) -> Config:
    """A resumed run keeps its saved settings unless a flag says otherwise."""
    path = os.path.join(config.model_dir, "config.json")
    if not os.path.exists(path):
        return config
    saved = config_lib.load(path)
    _check_architecture(config, saved, explicit)
    changes = {}
    for field in dataclasses.fields(Config):
        name = field.name
        if name in _RUNTIME_FIELDS or name in explicit or name not in saved:
            continue
        value = saved[name]
        if name == "hidden":
            value = tuple(value)
        changes[name] = value
    if "train_steps" in explicit and "epochs" not in explicit:
        changes["epochs"] = None
    if "epochs" in explicit and "train_steps" not in explicit:
        changes["train_steps"] = None
    return dataclasses.replace(config, **changes)


def _check_architecture(config: Config, saved: dict, explicit: set[str]) -> None:
    """Refuses flags that change the network of a run that has checkpoints."""
    from trainer import checkpoints as checkpoints_lib

    folder = checkpoints_lib.checkpoint_dir(config.model_dir)
    if not (os.path.isdir(folder) and any(n.startswith("ckpt-") for n in os.listdir(folder))):
        return
    for name, value in config.architecture().items():
        before = saved.get(name)
        if name == "hidden" and before is not None:
            before = tuple(before)
        if name in explicit and before is not None and before != value:
            show = ",".join(map(str, value)) if name == "hidden" else value
            was = ",".join(map(str, before)) if name == "hidden" else before
            raise checkpoints_lib.CheckpointError(
                f"--{name}={show}: the checkpoints in {folder} hold a network with "
                f"--{name}={was}; use a new --model_dir (nothing was changed)"
            )


def write_json(path: str, payload: dict) -> None:
    """Writes JSON atomically (temp file + rename), so a crash never leaves half a file."""
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(temporary, path)
    except OSError as error:
        raise UsageError(f"{path}: cannot write ({error.strerror or error})") from None


def prepare_model_dir(model_dir: str) -> None:
    cli.writable_folder(model_dir, f"--model_dir={model_dir}")


def build_model(config: Config, input_size: int, num_outputs: int, normalization=None):
    from models import zoo

    return zoo.build(
        config.model,
        input_size,
        num_outputs,
        hidden=config.hidden,
        activation=config.activation,
        init=config.init,
        seed=config.seed,
        normalization=normalization,
    )


def _finite_or_none(value):
    return value if isinstance(value, float | int) and math.isfinite(value) else None


class Run:
    """One run's objects, built in the strategy's scope.

    With ``load_data=False`` (export) the model's sizes come from the saved
    config.json and its feature scaling from the checkpoint.
    """

    def __init__(self, config: Config, load_data: bool = True):
        from models import optimizers
        from models.training import TrainingProgram
        from trainer import checkpoints as checkpoints_lib
        from trainer import data as data_lib
        from trainer import runtime
        from trainer import summaries as summaries_lib

        self.started = time.time()
        if load_data:
            self.arrays = data_lib.load(config)
            logging.info("data: %s", self.arrays.description)
            config = dataclasses.replace(
                config, input_size=self.arrays.input_size, num_classes=self.arrays.num_classes
            )
            normalization = (self.arrays.feature_mean, self.arrays.feature_scale)
            num_train = len(self.arrays.x_train)
        else:
            self.arrays = None
            if not config.input_size:
                raise UsageError(f"--model_dir={config.model_dir}: no config.json from training")
            normalization = (np.zeros(config.input_size), np.ones(config.input_size))
            num_train = config.batch_size
        self.runtime = runtime.setup(config)
        self.config = config
        if config.loss == "cross_entropy" and not config.num_classes:
            raise UsageError(f"--loss=cross_entropy: --dataset={config.dataset} is a regression")
        batch = data_lib.effective_batch_size(config.batch_size, num_train)
        if batch % self.runtime.num_replicas:
            raise UsageError(
                f"--batch_size={batch}: must divide evenly over "
                f"{self.runtime.num_replicas} replicas"
            )
        num_outputs = config.num_classes or 1
        with self.runtime.strategy.scope():
            self.model = build_model(config, config.input_size, num_outputs, normalization)
            self.optimizer = optimizers.get(
                config.optimizer, config.learning_rate, config.clip_norm
            )
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
            )
        sizes = [config.input_size, *(config.hidden if config.model == "mlp" else ()), num_outputs]
        logging.info(
            "model: %s %s, %d parameters; optimizer %s (learning rate %g); loss %s",
            config.model,
            "-".join(map(str, sizes)),
            self.model.count_params(),
            config.optimizer,
            config.learning_rate,
            config.loss,
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
    except _peer_errors(config) as error:
        raise PeerLostError(config, error) from None


class PeerLostError(Exception):
    """A multi-worker run lost another worker; the checkpoints already saved are kept."""

    def __init__(self, config: Config, error: Exception):
        import tensorflow as tf

        from trainer import checkpoints as checkpoints_lib

        lines = [line.strip() for line in str(getattr(error, "message", error)).splitlines()]
        # TensorFlow's message opens with "Graph execution error:" and the Python
        # frames of the failing op; the cause is the first line after those.
        lines = [
            line
            for line in lines
            if line and not line.startswith(("Graph execution error", "Detected at node", "File "))
        ]
        cause = (lines[0] if lines else type(error).__name__).rstrip(":")
        if len(cause) > 200:
            cause = cause[:197] + "..."
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


def _run(config: Config) -> dict:
    from trainer import controller as controller_lib
    from trainer import export as export_lib

    run_ = Run(config, load_data=config.mode != "export")
    config = run_.config
    if config.mode in ("eval", "export"):
        path = run_.checkpoints.restore_latest(
            only={"model": run_.model, "global_step": run_.program.global_step}
        )
        if path is None:
            raise UsageError(f"--model_dir={config.model_dir}: no checkpoint to {config.mode}")
        if config.mode == "export":
            return {"export_path": export_lib.export_run(run_)}
    else:
        path = run_.checkpoints.restore_latest(move_corrupt=run_.runtime.is_chief)
        if path:
            # The flags (or the saved config) decide the learning rate, not the checkpoint.
            run_.optimizer.learning_rate.assign(config.learning_rate)
            logging.info("resuming from %s (step %d)", path, int(run_.program.global_step.numpy()))
        _check_same_start(run_)
        if run_.runtime.is_chief:
            write_json(os.path.join(config.model_dir, "config.json"), dataclasses.asdict(config))

    steps = controller_lib.total_steps(config, len(run_.arrays.x_train))
    log_every = config.log_every or max(1, steps // 10)
    steps_per_loop = config.steps_per_loop or min(log_every, 1000)
    controller = controller_lib.Controller(
        config, run_.program, run_.arrays, run_.runtime, run_.checkpoints, steps_per_loop, log_every
    )
    if config.mode in ("train", "train_and_eval"):
        controller.train(steps)
        if run_.runtime.is_chief:
            export_lib.export_run(run_)
    if config.mode in ("eval", "train_and_eval"):
        controller.evaluate()
    return _write_results(config, run_, controller, steps_per_loop)


def _write_results(config: Config, run_: Run, controller, steps_per_loop: int) -> dict:
    path = os.path.join(config.model_dir, "results.json")
    results = {}
    if os.path.exists(path):
        try:
            with open(path) as handle:
                results = json.load(handle)
        except (OSError, json.JSONDecodeError):
            results = {}
    results["global_step"] = controller.step
    if config.mode != "eval":
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
    results.setdefault("eval_loss", None)
    if controller.last_eval:
        results["eval_loss"] = _finite_or_none(controller.last_eval["loss"])
        results["eval_examples"] = int(controller.last_eval["count"])
        if controller.program.classification:
            results["eval_accuracy"] = _finite_or_none(controller.last_eval["accuracy"])
        results["eval_step"] = controller.step
    if controller.program.classification:
        results.setdefault("eval_accuracy", None)
    results["traces"] = dict(run_.program.trace_counts)
    results["wall_time_s"] = round(time.time() - run_.started, 3)
    if run_.runtime.is_chief:
        write_json(path, results)
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
