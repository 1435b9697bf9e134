"""A run from its configuration to results.json: what ``python -m trainer.main``
calls (tests call it too).

``run(config, explicit)`` merges a resumed run's saved settings, takes the run
folder's lock, assembles the run (``assembly.Run``) and carries out
``--mode``: train (the controller's loop, its evaluations on the validation
split choosing the best model, then the test split evaluated once on the model
that is exported, and the export), eval or export; results.json gets the
figures, named for the split they are of.
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
    if config.mode == "eval":  # writes results and summaries, creates nothing
        from trainer.files import writable_run_folder
        from trainer.summaries import SPLITS

        writable_run_folder(config.model_dir, f"--model_dir={config.model_dir}", SPLITS)
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
            only={
                "model": run_.model,
                "global_step": run_.trainer.global_step,
                "tracker": run_.tracker,
            }
        )
        if path is None:
            raise UsageError(f"--model_dir={config.model_dir}: no checkpoint to {config.mode}")
        if config.mode == "export":
            from trainer import export
            from trainer.checkpoints import check_finite_model

            step, which = _choose_model(run_, strict=True)
            check_finite_model(run_.model, f"the {which} checkpoint (step {step})", path)
            logging.info("exporting the %s model (step %d)", which, step)
            exported = export.export_run(run_)
            figures = {"export_path": exported, "export_step": step, "export_model": which}
            # results.json names the newest export (what Serving serves).
            recorded = {"global_step": run_.trainer.step, **previous, **figures}
            write_json(os.path.join(config.model_dir, "results.json"), recorded)
            return figures
        controller = _controller(run_)
        controller.evaluate()
        test = _evaluate_test(run_, controller, (run_.trainer.step, "latest"))
        return _finish(run_, controller, previous, trained=False, test=test)
    _restore_for_training(run_)
    controller = _controller(run_)
    trained, reason = _train(run_, controller, previous)
    test = export = None
    if config.mode == "train_and_eval":
        if controller.last_eval_step != run_.trainer.step:
            controller.evaluate()  # nothing trained: the figures of the step reached
        chosen = _choose_model(run_)
        test = _evaluate_test(run_, controller, chosen)
    else:
        chosen = (run_.trainer.step, "last")
    if run_.runtime.is_chief:
        export = _export_if_new(run_, previous, trained, chosen)
    _hparams_figures(run_, controller, test)
    return _finish(run_, controller, previous, trained, reason, export, test)


def _hparams_figures(run_: Run, controller, test: dict | None) -> None:
    """The figures HParams compares that are known at the end: the best validation
    figure, the test figures and the last training loss."""
    from trainer.controller import scalar_figures

    figures = {"train_loss": controller.last_train.get("loss")}
    if run_.best_model.best_step >= 0:
        figures[f"best_{run_.best_model.metric}"] = run_.best_model.best_value
    if test is not None:
        figures.update({f"test_{k}": v for k, v in scalar_figures(test).items()})
    controller.writers.hparams_figures(run_.trainer.step, figures)
    controller.writers.flush()


def _choose_model(run_: Run, strict: bool = False) -> tuple[int, str]:
    """Puts the model ``--export`` asks for in place on every worker: the best
    checkpoint's (by the validation split) when there is one, else the last
    step's. Returns ``(the step of its weights, "best" or "last")``.

    A best checkpoint that is missing, unreadable or of another step than the
    run's record says is never passed over in silence: with ``strict`` (``--mode=
    export``) it is a ``CheckpointError``, else a warning and the last model.
    """
    from trainer.checkpoints import CheckpointError, step_of

    step = run_.trainer.step
    best_step = run_.best_model.best_step
    if run_.config.export != "best" or best_step < 0:
        return step, "last"
    if best_step == step and not strict:
        return step, "best"  # the model in place is the best one
    best = run_.checkpoints.best
    try:
        if not best:
            raise CheckpointError(f"{run_.checkpoints.best_directory}: holds no checkpoint")
        if step_of(best) != best_step:
            raise CheckpointError(f"{best}: is not of step {best_step}")
        run_.checkpoints.restore(best, only={"model": run_.model}, step=best_step)
    except CheckpointError as error:
        problem = f"the best checkpoint (step {best_step}) cannot be used: {error}"
        if strict:
            raise CheckpointError(f"{problem}; --export=last exports the last one") from None
        logging.warning("%s; the last step's model is the one exported", problem)
        return step, "last"  # (nothing was restored: the last model is in place)
    return best_step, "best"


def _evaluate_test(run_: Run, controller, chosen: tuple[int, str]) -> dict | None:
    """Evaluates the test split once, on the model in place (``chosen``: its step and
    which it is); logs and writes the figures. ``None`` when there is no test split."""
    from trainer.controller import figures, scalar_figures

    data = run_.test_data()
    if data is None:
        logging.info(
            "no test split: the validation figures chose the model, so they are optimistic; "
            "give the data a test split for a figure that chose nothing"
        )
        return None
    step, which = chosen
    result = run_.evaluator.evaluate(data)
    logging.info(
        "test of the %s model (step %d): %s (%d examples; the test split chose nothing)",
        which, step, figures(result), int(result["count"]),
    )  # fmt: skip
    writers = controller.writers
    writers.scalars(writers.test, step, scalar_figures(result))
    if "confusion" in result:
        writers.confusion(writers.test, step, result["confusion"])
    writers.flush()
    return {**result, "step": step, "model": which}


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
    from trainer import runtime, summaries
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
        final_eval=config.mode == "train_and_eval",
        stop_consensus=runtime.stop_consensus(run_.runtime),
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


# results.json keys of earlier versions (the eval split is now the validation split).
_LEGACY_KEYS = (
    "eval_loss", "eval_accuracy", "eval_examples", "eval_step", "best_eval_accuracy",
    "best_eval_loss",
)  # fmt: skip


def _split_figures(results: dict, split: str, figures: dict | None, step: int | None) -> None:
    """Puts a split's figures in ``results`` as ``<split>_<figure>`` (with its
    examples and the step of the weights), or removes stale ones when ``figures``
    is None."""
    from trainer.controller import FIGURES

    if figures is None:
        for name in (*FIGURES, "examples", "step", "model"):
            results.pop(f"{split}_{name}", None)
        return
    for name in FIGURES:
        if name in figures:
            results[f"{split}_{name}"] = _finite_or_none(figures[name])
    results[f"{split}_examples"] = int(figures["count"])
    results[f"{split}_step"] = step


def _results(run_: Run, controller, previous: dict, trained: bool, reason, test) -> dict:
    """results.json's figures: this invocation's, or the earlier ones that still hold.

    Training figures are replaced only when this invocation trained; validation
    figures are kept only while they are of the current step; test figures are
    this invocation's (of the model it exported) or none.
    """
    results = {k: v for k, v in previous.items() if k not in _LEGACY_KEYS}
    step = run_.trainer.step
    results["global_step"] = step
    source = run_.source
    if source is not None:
        results["splits"] = {
            "train": source.num_train,
            "validation": source.num_validation,
            "test": source.num_test,
            "how": source.splits,
        }
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
    if controller.last_eval and controller.last_eval_step == step:
        _split_figures(results, "validation", controller.last_eval, step)
    elif results.get("validation_step") != step:
        _split_figures(results, "validation", None, None)
    _split_figures(results, "test", test, test and test["step"])
    if test is not None:
        results["test_model"] = test["model"]
    # The headline figures are always there: None when not evaluated at this step.
    headline = ("loss", "accuracy") if run_.trainer.classification else ("loss",)
    for split in ("validation", "test"):
        for name in headline:
            results.setdefault(f"{split}_{name}", None)
    best_model = run_.best_model
    if best_model.best_step >= 0:
        results.update(best_step=best_model.best_step, best_metric=best_model.metric)
        results[f"best_{best_model.metric}"] = best_model.best_value
    if reason:
        results["stop_reason"] = reason
    results["traces"] = dict(run_.trainer.trace_counts)
    results["wall_time_s"] = round(time.time() - run_.started, 3)
    return results


def _finish(run_, controller, previous, trained, reason=None, export=None, test=None, quiet=False):
    """Writes results.json (the chief) and logs where everything went."""
    results = _results(run_, controller, previous, trained, reason, test)
    if export and export[0]:
        results.update(export_path=export[0], export_step=export[1], export_model=export[2])
    config = run_.config
    path = os.path.join(config.model_dir, "results.json")
    if run_.runtime.is_chief:
        write_json(path, results)
    if quiet:
        return results
    if export and export[0]:
        _, step, which = export
        chosen = "the last step's model"
        if which == "best":
            metric = run_.best_model.metric
            chosen = f"the best model ({metric.replace('_', ' ')} {run_.best_model.best_value:.4f})"
        logging.info("exported %s of step %d: %s", chosen, step, export[0])
    logging.info("done at step %d. Results: %s", results["global_step"], path)
    logging.info(
        "checkpoints: %s; TensorBoard: tensorboard --logdir %s",
        os.path.join(config.model_dir, "checkpoints"),
        config.model_dir,
    )
    return results


def _export_if_new(run_: Run, previous: dict, trained: bool, chosen) -> tuple:
    """Exports the model in place (``chosen``: its step and which it is) unless
    that very step is already exported.

    Returns:
      ``(export path or None, the step of the exported weights, "best" or "last")``.
    """
    from trainer import export

    step, which = chosen
    earlier = previous.get("export_path")
    if not trained and previous.get("export_step") == step and earlier and os.path.isdir(earlier):
        logging.info("export: step %d is already exported as %s", step, earlier)
        return earlier, step, which
    run_.check_finite(step)
    return export.export_run(run_) or None, step, which


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

    if config.dataset == "images":  # a file changed, removed or unreadable since the scan
        return (
            tf.errors.DataLossError,
            tf.errors.InvalidArgumentError,
            tf.errors.NotFoundError,
            tf.errors.PermissionDeniedError,
        )
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
    image_ops = ("ReadFile", "DecodeImage", "image", "JPEG", "PNG")
    if config.dataset == "images":
        if isinstance(error, tf.errors.InvalidArgumentError) and not any(
            w in text for w in image_ops
        ):
            return error  # not about a file: the model's or TensorFlow's own
        return DataError(
            f"--data_dir={config.data_dir}: an image could not be read mid-run (the folder "
            f"changed after it was scanned at start: {one_line(error, limit=160)}); "
            f"{_kept(config)}; put the folder back as it was to resume (a resume checks it), or "
            "train into a new --model_dir"
        )
    input_ops = ("ParseExample", "DecodeRaw", "Feature", "record", "label value", *image_ops)
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
