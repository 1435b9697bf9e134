"""The eager outer loop: decides *when* to log, checkpoint and evaluate.

After Orbit's ``Controller``: it drives a trainer and an evaluator through small
interfaces and knows nothing of the configuration, the data or the compiled
program. Each call of the trainer ends at the next event (a log line, a
checkpoint, an evaluation, a diagnostic step), so every event lands on its
exact step, whatever the cadences.

The interfaces (``tests/test_controller.py`` drives them with fakes):

* trainer: ``step`` (the global step, an int), ``batch_size`` (examples per
  step), ``train(num_steps)`` (may raise ``NonFiniteError``), ``metrics()``
  (``{"loss", "accuracy"?, "learning_rate"}`` since the last read);
* evaluator: ``evaluate()`` -> ``{"loss", "count", "accuracy"?, "confusion"?}``
  on the validation split (what every choice reads);
* checkpoints: ``save(step)``, ``latest``, ``latest_step``;
* writers: ``summaries.Writers``;
* eval actions: ``action(step, metrics)`` after every evaluation during
  training, returning a reason to stop (``"early_stop"``) or None; an action
  may put a ``"note"`` in ``metrics`` for the evaluation's log line (such as
  ``best so far``).

An evaluation at a step runs before that step's checkpoint, so the checkpoint
holds what the evaluation's actions changed (the best so far, a reduced rate).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time

from absl import logging

from trainer.errors import NonFiniteError, TrainingStopped

# An evaluation's scalar figures, in the order the log shows them.
FIGURES = ("loss", "accuracy", "rmse", "mae", "r2")


def scalar_figures(result: dict) -> dict:
    """The figures of an evaluation that are scalars (no counts, no confusion matrix)."""
    return {name: result[name] for name in FIGURES if name in result}


def figures(result: dict) -> str:
    """``loss 0.1234, accuracy 0.9600`` (the figures an evaluation has)."""
    return ", ".join(f"{name} {value:.4f}" for name, value in scalar_figures(result).items())


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
    """Trains to a step, with events at explicit cadences (in steps; 0 = never).

    Args:
      trainer, evaluator, checkpoints, writers: see the module docstring
        (evaluator and checkpoints may be None).
      steps_per_loop: the most steps one trainer call runs.
      log_every: a progress line (and the train scalars) every this many steps.
      checkpoint_every, eval_every: a checkpoint, an evaluation.
      summary_every: diagnostic steps (step 1 and every this many) end a call,
        so what they record is read right after.
      eval_actions: called after each evaluation during training.
      final_eval: also evaluate at the last step of training (with the actions).
      stop_consensus: with several workers, ``stop_consensus(code)`` after every
        call, on every worker: this worker's stop request (``STOP_CODES``, 0 for
        none) summed over the workers, so that all stop after the same call and
        save the checkpoint of the same step (one worker's SIGTERM stops all).
    """

    def __init__(
        self,
        trainer,
        evaluator=None,
        checkpoints=None,
        writers=None,
        *,
        steps_per_loop: int,
        log_every: int,
        checkpoint_every: int = 0,
        eval_every: int = 0,
        summary_every: int = 0,
        eval_actions=(),
        final_eval: bool = False,
        stop_consensus=None,
    ):
        self.trainer = trainer
        self.evaluator = evaluator
        self.checkpoints = checkpoints
        self.writers = writers
        self.steps_per_loop = int(steps_per_loop)
        self.log_every = int(log_every)
        self.checkpoint_every = int(checkpoint_every)
        self.eval_every = int(eval_every)
        self.summary_every = int(summary_every)
        self.eval_actions = list(eval_actions)
        self.final_eval = bool(final_eval) and evaluator is not None
        self.stop_consensus = stop_consensus
        self.first_call_seconds: float | None = None
        self._first_call_examples = 0
        self._seconds = 0.0
        self._examples = 0
        self._window_seconds = 0.0
        self._window_steps = 0
        self.last_train: dict = {"loss": math.nan}
        self.last_eval: dict = {}
        self.last_eval_step = -1

    def next_event(self, step: int, total: int) -> int:
        """Where the call from ``step`` ends: the next log, checkpoint, eval or
        diagnostic step, at most ``steps_per_loop`` on, at most ``total``."""
        boundary = min(total, step + self.steps_per_loop)
        for every in (self.log_every, self.checkpoint_every, self.eval_every):
            if every:
                boundary = min(boundary, (step // every + 1) * every)
        if self.summary_every:  # step 1 (gradients at initialization), then every N
            every = self.summary_every
            boundary = min(boundary, 1 if step < 1 else (step // every + 1) * every)
        return boundary

    def train(self, total_steps: int) -> str:
        """Trains from the current step to ``total_steps``; returns why it stopped
        (``steps_done``, or an eval action's reason such as ``early_stop``).

        Raises:
          TrainingStopped: SIGTERM or SIGINT, after saving the checkpoint of the step.
          NonFiniteError: the trainer's guard stopped training; nothing was saved.
        """
        step = self.trainer.step
        logging.info(
            "training steps %d..%d: batch %d, %d step(s) per compiled call, progress every %d",
            step + 1, total_steps, self.trainer.batch_size, self.steps_per_loop, self.log_every,
        )  # fmt: skip
        reason = "steps_done"
        with _StopOnSignals() as stop, self._train_writer():
            while step < total_steps:
                step = self._call(self.next_event(step, total_steps) - step)
                reason = self._after_call(step, total_steps) or reason
                signal_name, own = self._agreed_stop(stop.signal_name)
                if signal_name:
                    self._save(step)
                    raise TrainingStopped(signal_name, step, by_peer=not own)
                if reason != "steps_done":
                    break
        self._save(step)
        if self.writers is not None:
            self.writers.flush()
        return reason

    def _agreed_stop(self, requested: str | None) -> tuple[str | None, bool]:
        """``(the signal that stops training after this call or None, whether this
        worker received it)``; with several workers, any worker's signal stops all."""
        if self.stop_consensus is None:
            return requested, True
        total = int(self.stop_consensus(STOP_CODES.get(requested, 0)))
        if requested or not total:
            return requested, True
        return ("SIGTERM" if total % STOP_CODES["SIGINT"] else "SIGINT"), False

    def _train_writer(self):
        if self.writers is None:
            return contextlib.nullcontext()
        return self.writers.train.as_default()

    def _call(self, count: int) -> int:
        """One trainer call of ``count`` steps, timed; returns the step reached."""
        started = time.perf_counter()
        first = self.first_call_seconds is None
        try:
            if first and self.writers is not None:
                with self.writers.graph_trace():
                    self.trainer.train(count)
            else:
                self.trainer.train(count)
            step = self.trainer.step  # reading the step waits for the call
        except NonFiniteError as error:
            latest = self.checkpoints.latest if self.checkpoints is not None else None
            raise error.with_checkpoint(latest) from None
        elapsed = time.perf_counter() - started
        examples = count * self.trainer.batch_size
        if first:
            self.first_call_seconds = elapsed
            self._first_call_examples = examples
            logging.info("first compiled call (tracing included): %.2fs", elapsed)
        else:
            self._seconds += elapsed
            self._examples += examples
            self._window_seconds += elapsed
            self._window_steps += count
        return step

    def _after_call(self, step: int, total_steps: int) -> str | None:
        if step % self.log_every == 0 or step == total_steps:
            self._log_progress(step, total_steps)
        reason = None
        periodic = self.eval_every and step % self.eval_every == 0
        if periodic or (self.final_eval and step == total_steps):
            reason = self._evaluate(act=True)
        if self.checkpoint_every and step % self.checkpoint_every == 0:
            self._save(step)
        return reason

    def examples_per_sec(self) -> float:
        """Training throughput, excluding the first (tracing) call when possible."""
        if self._seconds:
            return self._examples / self._seconds
        if self.first_call_seconds:
            return self._first_call_examples / self.first_call_seconds
        return math.nan

    def _log_progress(self, step: int, total_steps: int) -> None:
        metrics = self.trainer.metrics()
        self.last_train = metrics
        # Rates and the ETA over the calls since the last line (tracing and
        # evaluations excluded); the first line has only the first call: no ETA.
        batch = self.trainer.batch_size
        recent = self._window_steps * batch / self._window_seconds if self._window_seconds else 0
        rate = recent or self.examples_per_sec()
        remaining = (total_steps - step) * batch / recent if recent else math.nan
        percent = 100 * step / total_steps
        line = f"step {step}/{total_steps} ({percent:.0f}%): loss {metrics['loss']:.4f}"
        if "accuracy" in metrics:
            line += f", accuracy {metrics['accuracy']:.4f}"
        line += f", {rate:,.0f} examples/s, ETA {_format_duration(remaining)}"
        logging.info(line)
        if self.writers is None:
            return
        if self._window_seconds:
            steps_per_sec = self._window_steps / self._window_seconds
            metrics = {
                **metrics,
                "examples_per_sec": steps_per_sec * self.trainer.batch_size,
                "steps_per_sec": steps_per_sec,
            }
        self.writers.scalars(self.writers.train, step, metrics)
        self.writers.flush()
        self._window_seconds, self._window_steps = 0.0, 0

    def _save(self, step: int) -> None:
        if self.checkpoints is not None and self.checkpoints.latest_step != step:
            self.checkpoints.save(step)

    def evaluate(self) -> dict:
        """Evaluates once on the validation split at the current step (no eval
        actions); logs and writes the figures."""
        self._evaluate(act=False)
        return self.last_eval

    def _evaluate(self, act: bool) -> str | None:
        """Evaluates at the current step, then (``act``) runs the eval actions;
        returns the first action's reason to stop, if any."""
        step = self.trainer.step
        result = self.evaluator.evaluate()
        self.last_eval = result
        self.last_eval_step = step
        reasons = [action(step, result) for action in self.eval_actions] if act else []
        logging.info(
            "validation at step %d: %s (%d examples)%s",
            step, figures(result), int(result["count"]), result.pop("note", ""),
        )  # fmt: skip
        if self.writers is not None:
            figures_ = scalar_figures(result)
            self.writers.scalars(self.writers.validation, step, figures_)
            self.writers.hparams_figures(step, {f"validation_{k}": v for k, v in figures_.items()})
            if "confusion" in result:
                self.writers.confusion(self.writers.validation, step, result["confusion"])
            self.writers.flush()
        return next((reason for reason in reasons if reason), None)


# A worker's stop request, summed over workers (any SIGTERM leaves a remainder).
STOP_CODES = {"SIGTERM": 1, "SIGINT": 1 << 12}


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
