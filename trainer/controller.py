"""The eager outer loop: decides *when* to log, checkpoint and evaluate.

The compiled inner loop (``TrainingProgram.train_loop``) only runs training
steps; between its calls this controller does everything else. Calls are cut
at the next event boundary so events land on exact steps.
"""

from __future__ import annotations

import math
import signal
import threading
import time

import tensorflow as tf
from absl import logging

from models.training import MAX_SKIPPED_IN_A_ROW
from trainer import data as data_lib
from trainer import summaries as summaries_lib


class TrainingStopped(Exception):
    """A signal asked training to stop; the checkpoint of ``step`` is saved."""

    def __init__(self, signal_name: str, step: int):
        self.signum = int(signal.Signals[signal_name])
        super().__init__(
            f"received {signal_name}: saved the checkpoint of step {step}; "
            "run the same command again to resume"
        )


class NonFiniteError(Exception):
    """NaN or Inf in the loss or gradients; nothing after the last checkpoint was saved."""


class EvalTracker(tf.Module):
    """The best evaluation so far and the counts early stopping and
    reduce-on-plateau wait on; checkpointed, so a resumed run keeps them.

    ``best_value`` is the best ``--best_metric`` value as "higher is better"
    (accuracy, or minus the loss); NaN before the first evaluation.
    """

    def __init__(self):
        super().__init__(name="eval_tracker")
        with self.name_scope:
            self.best_value = tf.Variable(float("nan"), dtype=tf.float64, trainable=False)
            self.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
            self.since_best = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.plateau_wait = tf.Variable(0, dtype=tf.int64, trainable=False)

    def update(self, value: float, step: int) -> bool:
        """Records an evaluation (higher is better); returns whether it is the best."""
        best = float(self.best_value.numpy())
        if math.isfinite(value) and (not math.isfinite(best) or value > best):
            self.best_value.assign(value)
            self.best_step.assign(step)
            self.since_best.assign(0)
            self.plateau_wait.assign(0)
            return True
        self.since_best.assign_add(1)
        self.plateau_wait.assign_add(1)
        return False


def _format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Controller:
    """Runs training to ``total_steps`` and evaluation for one run.

    Args:
      config: the run's ``Config``.
      program: a ``models.TrainingProgram``.
      source: the ``sources.DataSource`` to train and evaluate on (the only
        way this loop sees data).
      runtime: the resolved ``runtime.Runtime``.
      checkpoints: a ``checkpoints.Checkpoints`` or ``None``.
      steps_per_loop, log_every: resolved cadences (steps).
      tracker: an ``EvalTracker`` (best evaluation, early stopping and
        reduce-on-plateau state), or None for none of those.
      schedule: the run's ``models.schedules.Schedule`` (reduce-on-plateau
        multiplies its ``scale``).
    """

    def __init__(
        self,
        config,
        program,
        source,
        runtime,
        checkpoints,
        steps_per_loop,
        log_every,
        tracker=None,
        schedule=None,
    ):
        self.config = config
        self.program = program
        self.source = source
        self.runtime = runtime
        self.checkpoints = checkpoints
        self.steps_per_loop = steps_per_loop
        self.log_every = log_every
        self.batch_size = data_lib.effective_batch_size(config.batch_size, source.num_train)
        self._sample = None
        self.train_seconds = 0.0
        self.train_examples = 0
        self.first_call_seconds = None
        self.first_call_examples = 0
        self.last_train = {"loss": math.nan, "accuracy": math.nan}
        self.last_eval: dict = {}
        self.last_eval_step = -1
        self.writers = summaries_lib.Writers(
            config.model_dir, enabled=config.summary_every > 0 and runtime.is_chief
        )
        self.gradient_warnings = summaries_lib.GradientWarnings(
            [layer.name for layer in program.model.weighted_layers]
        )
        self._last_diagnosed = -1
        self._window_seconds = 0.0
        self._window_steps = 0
        self.eval_every = resolve_eval_every(config, source.num_train, self.batch_size)
        self.tracker = tracker
        self.schedule = schedule
        self.stop_reason = None
        self.best_metric = best_metric_of(config, program.classification)

    @property
    def step(self) -> int:
        return int(self.program.global_step.numpy())

    def _next_boundary(self, step: int, total: int) -> int:
        """Where the next compiled call ends: at the next log, checkpoint, eval or
        diagnostic step (so the figures read after a call are of its last step)."""
        boundary = min(total, step + self.steps_per_loop)
        for every in (self.log_every, self.config.checkpoint_every, self.eval_every):
            if every:
                boundary = min(boundary, (step // every + 1) * every)
        if self.program.diagnose_every:  # step 1 (gradients at initialization), then every N
            boundary = min(boundary, self.program.next_diagnostic_step(step))
        return boundary

    def _make_iterator(self, start_step: int):
        return self.source.train_iterator(
            self.runtime.strategy, self.batch_size, self.config.seed, start_step
        )

    def sample(self):
        """A few raw training examples, to check the model's outputs before a save."""
        if self._sample is None:
            self._sample = self.source.sample()[0]
        return self._sample

    def train(self, total_steps: int) -> None:
        """Trains from the current global step up to ``total_steps``."""
        step = self.step
        if step >= total_steps:
            logging.info(
                "already trained to step %d (asked for %d): nothing to train", step, total_steps
            )
            return
        if self.stopped_early():
            logging.info(
                "this run stopped early at step %d (no improvement since step %d): nothing to "
                "train; raise --early_stopping_patience to go on",
                step,
                int(self.tracker.best_step.numpy()),
            )
            self.stop_reason = "early_stop"
            return
        logging.info(
            "training steps %d..%d: batch %d, %d step(s) per compiled call, progress every %d",
            step + 1,
            total_steps,
            self.batch_size,
            self.steps_per_loop,
            self.log_every,
        )
        iterator = self._make_iterator(step)
        self.writers.hparams(self.config)
        with _StopOnSignals() as stop, self.writers.train.as_default():
            while step < total_steps:
                count = self._next_boundary(step, total_steps) - step
                started = time.perf_counter()
                if self.first_call_seconds is None:
                    with summaries_lib.GraphTrace(self.writers):
                        self.program.run_steps(iterator, count)
                        step = self.step  # reading the variable waits for the call
                else:
                    self.program.run_steps(iterator, count)
                    step = self.step
                elapsed = time.perf_counter() - started
                self._count_time(count, elapsed)
                self._check_finite()
                self._check_gradients()
                self._after_steps(step, total_steps)
                if stop.signal_name:
                    self.stop_reason = "signal"
                    if not self._saved_at(step):
                        self._save(step)
                    raise TrainingStopped(stop.signal_name, step)
                if self.stop_reason == "early_stop":
                    break
        if not self._saved_at(step):
            self._save(step)
        self.stop_reason = self.stop_reason or "steps_done"
        self.writers.flush()

    def _count_time(self, count: int, elapsed: float) -> None:
        if self.first_call_seconds is None:
            self.first_call_seconds = elapsed
            self.first_call_examples = count * self.batch_size
            logging.info("first compiled call (tracing included): %.2fs", elapsed)
            return
        self.train_seconds += elapsed
        self.train_examples += count * self.batch_size
        self._window_seconds += elapsed
        self._window_steps += count

    def _check_gradients(self) -> None:
        diagnosed = int(self.program.diagnosed_step.numpy())
        if diagnosed != self._last_diagnosed:
            self._last_diagnosed = diagnosed
            norms = self.program.layer_stats["gradient_norm"].numpy()
            self.gradient_warnings.check(diagnosed, norms)

    def _saved_at(self, step: int) -> bool:
        return self.checkpoints is not None and self.checkpoints.latest_step == step

    def _check_finite(self) -> None:
        latest = self.checkpoints.latest if self.checkpoints is not None else None
        weights_step = int(self.program.nonfinite_weights_step.numpy())
        if weights_step >= 0:
            raise NonFiniteError(
                f"the update of step {weights_step} left non-finite weights (NaN/Inf, or "
                f"summing past float32's range); training stopped without saving (last good "
                f"checkpoint: {latest or 'none'}); lower --learning_rate or set --clip_norm"
            )
        bad = int(self.program.nonfinite_count.numpy())
        if not bad:
            return
        first = int(self.program.first_nonfinite_step.numpy())
        if not self.config.skip_nonfinite:
            raise NonFiniteError(
                f"non-finite loss or gradients at step {first}; training stopped without "
                f"saving (last good checkpoint: {latest or 'none'}); lower --learning_rate, "
                "set --clip_norm, or pass --skip_nonfinite to skip such steps"
            )
        in_a_row = int(self.program.skipped_in_a_row.numpy())
        if in_a_row >= MAX_SKIPPED_IN_A_ROW:
            last = self.step
            raise NonFiniteError(
                f"non-finite loss or gradients at every step from step {last - in_a_row + 1} "
                f"to {last} ({in_a_row} in a row, more than --skip_nonfinite skips): training "
                f"has diverged; stopped without saving (last good checkpoint: "
                f"{latest or 'none'}); lower --learning_rate or set --clip_norm"
            )
        logging.warning(
            "skipped %d step(s) with non-finite loss or gradients (first at step %d)", bad, first
        )
        self.program.reset_nonfinite()

    def _after_steps(self, step: int, total_steps: int) -> None:
        if step % self.log_every == 0 or step == total_steps:
            self._log_progress(step, total_steps)
        if self.config.checkpoint_every and step % self.config.checkpoint_every == 0:
            self._save(step)
        if self.eval_every and step % self.eval_every == 0 and step < total_steps:
            self.evaluate()
            self._after_eval(step)

    def _log_progress(self, step: int, total_steps: int) -> None:
        result = self.program.train_metrics.result()
        self.program.train_metrics.reset()
        self.last_train = result
        rate = self.examples_per_sec()
        remaining = (total_steps - step) * self.batch_size / rate if rate else math.nan
        percent = 100 * step / total_steps
        line = f"step {step}/{total_steps} ({percent:.0f}%): loss {result['loss']:.4f}"
        if self.program.classification:
            line += f", accuracy {result['accuracy']:.4f}"
        line += f", {rate:,.0f} examples/s, ETA {_format_duration(remaining)}"
        logging.info(line)
        window = {}
        if self._window_seconds:
            window = {
                "examples_per_sec": self._window_steps * self.batch_size / self._window_seconds,
                "steps_per_sec": self._window_steps / self._window_seconds,
            }
        self.writers.scalars(
            self.writers.train,
            step,
            {
                "loss": result["loss"],
                "accuracy": result["accuracy"] if self.program.classification else None,
                "learning_rate": float(self.program.optimizer.learning_rate.numpy()),
                **window,
            },
        )
        self.writers.flush()
        self._window_seconds, self._window_steps = 0.0, 0

    def _after_eval(self, step: int) -> None:
        """Best checkpoint, reduce-on-plateau and early stopping, after an evaluation."""
        if self.tracker is None or not self.last_eval:
            return
        metric = self.best_metric
        value = self.last_eval["accuracy" if metric == "eval_accuracy" else "loss"]
        higher = value if metric == "eval_accuracy" else -value
        if self.tracker.update(higher, step):
            if self.checkpoints is not None:
                self._check_finite_now(step)
                self.checkpoints.save_best(step)
            return
        waited = int(self.tracker.since_best.numpy())
        patience = self.config.lr_plateau_patience
        if patience and int(self.tracker.plateau_wait.numpy()) >= patience and self.schedule:
            self.schedule.scale.assign(self.schedule.scale * self.config.lr_plateau_factor)
            self.tracker.plateau_wait.assign(0)
            logging.info(
                "%s has not improved for %d evaluations: learning rate x%g (now x%g of the "
                "schedule)", metric, patience, self.config.lr_plateau_factor,
                float(self.schedule.scale.numpy()),
            )  # fmt: skip
        stop_after = self.config.early_stopping_patience
        if stop_after and waited >= stop_after and self.stop_reason is None:
            best_step = int(self.tracker.best_step.numpy())
            logging.info(
                "early stopping at step %d: %s has not improved for %d evaluations since "
                "step %d", step, metric, waited, best_step,
            )  # fmt: skip
            self.stop_reason = "early_stop"

    def after_final_eval(self, step: int) -> None:
        """The evaluation at the end of training counts for the best model too."""
        reason = self.stop_reason
        self._after_eval(step)
        self.stop_reason = reason

    def stopped_early(self) -> bool:
        """Whether the restored state had already stopped early (a finished run)."""
        patience = self.config.early_stopping_patience
        return bool(
            self.tracker is not None
            and patience
            and int(self.tracker.best_step.numpy()) >= 0
            and int(self.tracker.since_best.numpy()) >= patience
        )

    def _check_finite_now(self, step: int) -> None:
        """What every save (rolling or best) checks first: finite weights and outputs."""
        check_finite_model(
            self.program.model, f"step {step}", self.checkpoints.latest, self.sample()
        )

    def examples_per_sec(self) -> float:
        """Training throughput, excluding the first (tracing) call when possible."""
        if self.train_seconds:
            return self.train_examples / self.train_seconds
        if self.first_call_seconds:
            return self.first_call_examples / self.first_call_seconds
        return math.nan

    def _save(self, step: int) -> None:
        if self.checkpoints is not None:
            self._check_finite_now(step)
            self.checkpoints.save(step)

    def evaluate(self) -> dict:
        """Evaluates on the whole eval set; returns ``{"loss", "accuracy", "count"}``."""
        result = self.program.evaluate(self.source.eval_dataset(self.runtime.strategy))
        self.last_eval = result
        self.last_eval_step = self.step
        line = f"eval at step {self.step}: loss {result['loss']:.4f}"
        if self.program.classification:
            line += f", accuracy {result['accuracy']:.4f}"
        logging.info("%s (%d examples)", line, int(result["count"]))
        self.writers.scalars(
            self.writers.eval,
            self.step,
            {
                "loss": result["loss"],
                "accuracy": result["accuracy"] if self.program.classification else None,
            },
        )
        if "confusion" in result:
            self.writers.confusion(self.step, result["confusion"], self.source.class_names)
        self.writers.flush()
        return result


class _StopOnSignals:
    """Turns SIGTERM/SIGINT into a request to stop after the current compiled call.

    A second SIGINT while waiting interrupts at once, as usual.
    """

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signal_name and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        logging.warning("received %s: stopping after the current compiled call", self.signal_name)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def check_finite_model(model, when: str, latest: str | None = None, sample=None) -> None:
    """Raises ``NonFiniteError`` if ``model`` is broken: a weight is NaN or Inf, or
    (given ``sample``, raw features ``[n, *input_shape]``) its outputs on those
    examples are.

    Such a model is never checkpointed or exported. Finite weights can still
    give non-finite outputs when training diverged (weights near 1e36 overflow
    the logits), hence the forward pass on a few training examples.
    """
    import numpy as np

    for variable in model.variables:  # BatchNorm's moving averages too
        if not np.all(np.isfinite(variable.numpy())):
            raise NonFiniteError(
                f"variable {variable.name.split(':')[0]} holds NaN/Inf at {when}; nothing was "
                f"saved or exported (last good checkpoint: {latest or 'none'})"
            )
    if sample is None or not len(sample):
        return
    outputs = model(np.asarray(sample[:256], np.float32)).numpy()
    if not np.all(np.isfinite(outputs)):
        largest = max(float(np.max(np.abs(v.numpy()))) for v in model.trainable_variables)
        raise NonFiniteError(
            f"the model's outputs are NaN/Inf at {when} (weights up to {largest:.3g} in "
            f"magnitude: training diverged); nothing was saved or exported (last good "
            f"checkpoint: {latest or 'none'}); lower --learning_rate or set --clip_norm"
        )


def best_metric_of(config, classification: bool) -> str:
    """``--best_metric``, with ``auto`` resolved: eval accuracy, or eval loss for a regression."""
    if config.best_metric != "auto":
        return config.best_metric
    return "eval_accuracy" if classification else "eval_loss"


def resolve_eval_every(config, num_train: int, batch_size: int) -> int:
    """``--eval_every``, or by default once per epoch with ``--mode=train_and_eval``
    (0, only at the end, with ``--mode=train``)."""
    if config.eval_every is not None:
        return config.eval_every
    if config.mode != "train_and_eval":
        return 0
    return max(1, num_train // batch_size)


def total_steps(config, num_train: int) -> int:
    """``--train_steps``, or ``--epochs`` worth of steps (at least one)."""
    if config.train_steps:
        return config.train_steps
    batch = data_lib.effective_batch_size(config.batch_size, num_train)
    return max(1, config.epochs * (num_train // batch))
