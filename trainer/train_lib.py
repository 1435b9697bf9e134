"""A run from its configuration to results.json: what ``python -m trainer.main``
calls (tests call it too).

``run(config, explicit)`` merges a resumed run's saved settings, takes the run
folder's lock, assembles the run (``assembly.Run``) and carries out
``--mode``: train (the controller's loop, then the final evaluation, the best
model and the export), eval or export; results.json gets the figures.
"""

from __future__ import annotations

import math
import os
import re
import time

from absl import logging

from trainer import run_folder
from trainer.assembly import Run
from trainer.config import Config
from trainer.errors import DataError, NonFiniteError, TrainingStopped, UsageError, one_line
from trainer.files import writable_folder, write_json


def run(config: Config, explicit: set[str] = frozenset()) -> dict:
    """Runs ``config.mode`` and returns the figures written to results.json."""
    from trainer import checkpoints, runtime

    config = run_folder.merge_saved_config(config, set(explicit))
    try:
        if config.mode in ("train", "train_and_eval"):
            # Other workers of a multi-worker run share the chief's folder, not its lock.
            chief = runtime.is_chief_task(*runtime.tf_config_task(config))
            writable_folder(config.model_dir, f"--model_dir={config.model_dir}")
            if chief:
                with checkpoints.RunLock(config.model_dir):
                    return _run(config)
        return _run(config)
    except _input_errors(config) as error:
        raise _input_problem(config, error) from None
    except _peer_errors(config) as error:
        raise PeerLostError(config, error) from None


def _run(config: Config) -> dict:
    run_ = Run(config, load_data=config.mode != "export")
    config = run_.config
    previous = run_folder.previous_results(config.model_dir)
    if config.mode in ("eval", "export"):
        path = run_.checkpoints.restore_latest(
            only={"model": run_.model, "global_step": run_.trainer.global_step}
        )
        if path is None:
            raise UsageError(f"--model_dir={config.model_dir}: no checkpoint to {config.mode}")
        if config.mode == "export":
            from trainer import export
            from trainer.checkpoints import check_finite_model

            check_finite_model(run_.model, os.path.basename(path), path)
            return {"export_path": export.export_run(run_)}
        controller = _controller(run_)
        controller.evaluate()
        return _finish(run_, controller, previous, trained=False)
    _restore_for_training(run_)
    controller = _controller(run_)
    trained, reason = _train(run_, controller, previous)
    if config.mode == "train_and_eval":
        if controller.last_eval_step != run_.trainer.step:
            controller.evaluate()
        if trained:  # the evaluation at the end of training counts for the best model too
            run_.best_model(run_.trainer.step, controller.last_eval)
    export = None
    if run_.runtime.is_chief:
        export = _export_if_new(run_, previous, trained)
    return _finish(run_, controller, previous, trained, reason, export)


def _restore_for_training(run_: Run) -> None:
    """Restores the newest good checkpoint (and writes config.json, on the chief)."""
    from trainer import runtime

    config = run_.config
    # multi_worker: restoring and comparing steps wait for the other workers.
    with runtime.guard_workers(config, "start"):
        path = run_.checkpoints.restore_latest(move_corrupt=run_.runtime.is_chief)
    if path:
        # The flags (or the saved config) decide the learning rate, not the checkpoint.
        run_.optimizer.learning_rate.assign(config.learning_rate)
        logging.info("resuming from %s (step %d)", path, run_.trainer.step)
    with runtime.guard_workers(config, "start"):
        _check_same_start(run_)
    if run_.runtime.is_chief:
        run_folder.save_config(config, resumed_at=run_.trainer.step if path else None)


def _controller(run_: Run):
    from trainer import summaries
    from trainer.controller import Controller

    config, plan = run_.config, run_.plan
    writers = summaries.Writers(
        config.model_dir,
        enabled=config.summary_every > 0 and run_.runtime.is_chief,
        class_names=run_.source.class_names if run_.source is not None else None,
    )
    return Controller(
        run_.trainer,
        run_.evaluator,
        run_.checkpoints,
        writers,
        steps_per_loop=plan.steps_per_loop,
        log_every=plan.log_every,
        checkpoint_every=config.checkpoint_every,
        eval_every=plan.eval_every,
        summary_every=config.summary_every,
        eval_actions=[run_.best_model],
    )


def _train(run_: Run, controller, previous: dict) -> tuple[bool, str]:
    """Trains to the plan's last step; returns ``(whether any step was taken, why
    training stopped)``. A signal or NaN/Inf writes results.json before it raises."""
    total, start = run_.plan.total_steps, run_.trainer.step
    if start >= total:
        logging.info("already trained to step %d (asked for %d): nothing to train", start, total)
        return False, "steps_done"
    best_model = run_.best_model
    if best_model.stopped_early():
        logging.info(
            "this run stopped early at step %d (no improvement since step %d): nothing to "
            "train; raise --early_stopping_patience to go on", start, best_model.best_step,
        )  # fmt: skip
        return False, "early_stop"
    controller.writers.hparams(run_.config)
    try:
        reason = controller.train(total)
    except (TrainingStopped, NonFiniteError) as error:
        reason = "signal" if isinstance(error, TrainingStopped) else "non_finite"
        trained = run_.trainer.step != start
        _finish(run_, controller, previous, trained, reason, quiet=True)
        raise
    return run_.trainer.step != start, reason


def _finite_or_none(value):
    return value if isinstance(value, float | int) and math.isfinite(value) else None


def _results(run_: Run, controller, previous: dict, trained: bool, reason) -> dict:
    """results.json's figures: this invocation's, or the earlier ones that still hold.

    Training figures are replaced only when this invocation trained; eval
    figures are kept only while they are of the current step.
    """
    results = dict(previous)
    step = run_.trainer.step
    results["global_step"] = step
    if trained:
        results.update(
            train_loss=_finite_or_none(controller.last_train.get("loss")),
            examples_per_sec=_finite_or_none(controller.examples_per_sec()),
            first_call_s=_finite_or_none(controller.first_call_seconds),
            steps_per_loop=run_.plan.steps_per_loop,
            jit_compile=run_.runtime.jit_compile,
            device=run_.runtime.device,
            num_replicas=run_.runtime.num_replicas,
            precision=run_.config.precision,
        )
        if run_.trainer.classification:
            results["train_accuracy"] = _finite_or_none(controller.last_train.get("accuracy"))
    evaluated = controller.last_eval and controller.last_eval_step == step
    if evaluated:
        results["eval_loss"] = _finite_or_none(controller.last_eval["loss"])
        results["eval_examples"] = int(controller.last_eval["count"])
        if run_.trainer.classification:
            results["eval_accuracy"] = _finite_or_none(controller.last_eval["accuracy"])
        results["eval_step"] = step
    elif results.get("eval_step") != step:
        for stale in ("eval_loss", "eval_accuracy", "eval_examples", "eval_step"):
            results.pop(stale, None)
    results.setdefault("eval_loss", None)
    if run_.trainer.classification:
        results.setdefault("eval_accuracy", None)
    best_model = run_.best_model
    if best_model.best_step >= 0:
        results.update(best_step=best_model.best_step, best_metric=best_model.metric)
        results[f"best_{best_model.metric}"] = best_model.best_value
    if reason:
        results["stop_reason"] = reason
    results["traces"] = dict(run_.trainer.trace_counts)
    results["wall_time_s"] = round(time.time() - run_.started, 3)
    return results


def _finish(run_, controller, previous, trained, reason=None, export=None, quiet=False) -> dict:
    """Writes results.json (the chief) and logs where everything went."""
    results = _results(run_, controller, previous, trained, reason)
    if export and export[0]:
        results.update(export_path=export[0], export_step=export[1])
    config = run_.config
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


def _export_if_new(run_: Run, previous: dict, trained: bool) -> tuple[str | None, int]:
    """Exports the model ``--export`` asks for (the best checkpoint's when there is
    one, else the last step's) unless that very step is already exported.

    Returns:
      ``(export path or None, the step of the exported weights)``.
    """
    from trainer import export

    step = run_.trainer.step
    best = run_.checkpoints.best if run_.config.export == "best" else None
    best_step = run_.best_model.best_step
    if best and best_step >= 0 and best_step != step:
        run_.checkpoints.restore(best, only={"model": run_.model})
        logging.info("export: the best checkpoint's model (step %d of %d)", best_step, step)
        step = best_step
    earlier = previous.get("export_path")
    if not trained and previous.get("export_step") == step and earlier and os.path.isdir(earlier):
        logging.info("export: step %d is already exported as %s", step, earlier)
        return earlier, step
    run_.check_finite(step)
    return export.export_run(run_) or None, step


def _check_same_start(run_: Run) -> None:
    """Refuses to train when the workers restored different steps.

    That happens when ``--model_dir`` is not one shared folder: workers would
    then train from different weights and silently diverge.
    """
    if run_.runtime.num_workers < 2:
        return
    import tensorflow as tf

    strategy = run_.runtime.strategy
    step = float(run_.trainer.step)
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


# -- TensorFlow errors that are the input's or a peer's ---------------------------
def _input_errors(config: Config) -> tuple:
    """The TensorFlow errors a stream of files raises mid-run on a bad record."""
    from trainer.data import SOURCES

    if not SOURCES.get(config.dataset).streaming:
        return ()
    import tensorflow as tf

    return (tf.errors.DataLossError, tf.errors.InvalidArgumentError)


def _kept(config: Config) -> str:
    import tensorflow as tf

    from trainer.checkpoints import checkpoint_dir

    latest = tf.train.latest_checkpoint(checkpoint_dir(config.model_dir))
    return f"kept the checkpoints up to {os.path.basename(latest) if latest else 'none'}"


def _input_problem(config: Config, error: Exception) -> Exception:
    """One line for a record that failed mid-run, or ``error`` itself when it is
    not about the input."""
    import tensorflow as tf

    from trainer.data.record_source import read_problem

    text = one_line(error, limit=100_000)  # searched whole; the messages quote parts
    input_ops = ("ParseExample", "DecodeRaw", "Feature", "record", "label value")
    if isinstance(error, tf.errors.InvalidArgumentError) and not any(w in text for w in input_ops):
        return error
    where = (
        f"--data_dir={config.data_dir}"
        if config.data_dir
        else f"--train_files={config.train_files}"
    )
    label = re.search(
        r"label value of (-?\d+) which is outside the valid range of \[0, (\d+)\)", text
    )
    if label:  # the fused cross-entropy kernel checks every label it is given
        return DataError(
            f"{where}: a record has label {label.group(1)}, outside the {label.group(2)} "
            f"classes of the dataset's metadata (0..{int(label.group(2)) - 1}); "
            f"{_kept(config)}; convert the data again"
        )
    return DataError(
        f"{where}: a record could not be read: {read_problem(error)}; {_kept(config)}; "
        "convert the data again"
    )


class PeerLostError(Exception):
    """A multi-worker run lost another worker; the checkpoints already saved are kept."""

    def __init__(self, config: Config, error: Exception):
        super().__init__(
            f"--strategy=multi_worker: lost contact with another worker "
            f"({type(error).__name__}: {one_line(error, limit=200)}); "
            f"{_kept(config)}: start every worker again with the same command to resume"
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
