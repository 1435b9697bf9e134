"""The best model so far: which validation evaluation was best, its checkpoint,
and what waits on it (reduce-on-plateau, early stopping). Only the validation
split is read here: the test split never chooses anything.

``BestModel`` is an eval action of the controller: after each evaluation it
saves ``checkpoints/best/best-<step>`` when the figure improved, multiplies the
schedule's ``scale`` after ``plateau_patience`` evaluations without improvement,
and asks to stop after ``early_stopping_patience``. Its state (``EvalTracker``)
is checkpointed, so a resumed run waits where it was.
"""

from __future__ import annotations

import math
import os

import tensorflow as tf
from absl import logging


class EvalTracker(tf.Module):
    """The best evaluation so far and the counts early stopping and
    reduce-on-plateau wait on; checkpointed with the run.

    ``best_value`` is the best metric as "higher is better" (accuracy, or minus
    the loss); NaN before the first evaluation. ``best_tiebreak`` (minus the loss,
    when the metric is accuracy) decides between evaluations of equal metric: on
    a small validation split accuracy saturates early, and the first 100% would
    otherwise stay the best however the loss goes on improving.
    """

    def __init__(self):
        super().__init__(name="eval_tracker")
        with self.name_scope:
            self.best_value = tf.Variable(float("nan"), dtype=tf.float64, trainable=False)
            self.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
            self.best_tiebreak = tf.Variable(float("nan"), dtype=tf.float64, trainable=False)
            self.since_best = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.plateau_wait = tf.Variable(0, dtype=tf.int64, trainable=False)

    def update(self, value: float, step: int, tiebreak: float = math.nan) -> bool:
        """Records an evaluation (higher is better, and of equal values the higher
        ``tiebreak``); returns whether it is the best."""
        best = float(self.best_value.numpy())
        tied = value == best and tiebreak > float(self.best_tiebreak.numpy())
        if math.isfinite(value) and (not math.isfinite(best) or value > best or tied):
            self.best_value.assign(value)
            self.best_tiebreak.assign(tiebreak if math.isfinite(tiebreak) else -math.inf)
            self.best_step.assign(step)
            self.since_best.assign(0)
            self.plateau_wait.assign(0)
            return True
        self.since_best.assign_add(1)
        self.plateau_wait.assign_add(1)
        return False


def resolve_metric(best_metric: str, classification: bool) -> str:
    """``--best_metric`` with ``auto`` resolved: validation accuracy, or validation
    loss for a regression."""
    if best_metric != "auto":
        return best_metric
    return "validation_accuracy" if classification else "validation_loss"


class BestModel:
    """The controller's eval action for the best model (see the module docstring).

    Args:
      tracker: the run's ``EvalTracker``.
      metric: ``validation_accuracy`` or ``validation_loss``.
      checkpoints: ``save_best(step)`` (None: no checkpoint is written).
      schedule: its ``scale`` is what reduce-on-plateau multiplies (None: no plateau).
      plateau_patience, plateau_factor: reduce-on-plateau (patience 0 = off).
      early_stopping_patience: evaluations without improvement before stopping (0 = never).
    """

    def __init__(
        self,
        tracker: EvalTracker,
        metric: str,
        checkpoints=None,
        schedule=None,
        plateau_patience: int = 0,
        plateau_factor: float = 0.5,
        early_stopping_patience: int = 0,
    ):
        self.tracker = tracker
        self.metric = metric
        self.checkpoints = checkpoints
        self.schedule = schedule
        self.plateau_patience = int(plateau_patience)
        self.plateau_factor = float(plateau_factor)
        self.early_stopping_patience = int(early_stopping_patience)

    @property
    def best_step(self) -> int:
        return int(self.tracker.best_step.numpy())

    @property
    def best_value(self) -> float:
        """The best figure in its own sign (a loss as a loss)."""
        value = float(self.tracker.best_value.numpy())
        return value if self.higher_is_better else -value

    @property
    def higher_is_better(self) -> bool:
        return self.metric.endswith("accuracy")

    @property
    def figure(self) -> str:
        """The evaluation's figure that is compared: ``accuracy`` or ``loss``."""
        return self.metric.rpartition("_")[2]

    def __call__(self, step: int, metrics: dict) -> str | None:
        """Records the evaluation of ``step`` (and a ``note`` in ``metrics`` for its
        log line); returns ``early_stop`` when it is time."""
        value = metrics.get(self.figure, math.nan)
        higher = value if self.higher_is_better else -value
        # Of equal accuracies, the lower loss.
        tiebreak = -metrics.get("loss", math.nan) if self.higher_is_better else math.nan
        previous = self.best_step
        if self.tracker.update(higher, step, tiebreak):
            saved = ""
            if self.checkpoints is not None:
                path = self.checkpoints.save_best(step)
                saved = f" (saved {os.path.relpath(path, self.checkpoints.directory)})"
            metrics["note"] = f"; best so far{saved}"
            return None
        if previous >= 0:
            metrics["note"] = (
                f"; the best is still step {previous} ({self.figure} {self.best_value:.4f})"
            )
        self._reduce_on_plateau()
        waited = int(self.tracker.since_best.numpy())
        if self.early_stopping_patience and waited >= self.early_stopping_patience:
            logging.info(
                "early stopping at step %d: %s has not improved for %d evaluations since "
                "step %d", step, self.metric, waited, self.best_step,
            )  # fmt: skip
            return "early_stop"
        return None

    def _reduce_on_plateau(self) -> None:
        patience = self.plateau_patience
        if not (patience and self.schedule is not None):
            return
        if int(self.tracker.plateau_wait.numpy()) < patience:
            return
        self.schedule.scale.assign(self.schedule.scale * self.plateau_factor)
        self.tracker.plateau_wait.assign(0)
        logging.info(
            "%s has not improved for %d evaluations: learning rate x%g (now x%g of the "
            "schedule)", self.metric, patience, self.plateau_factor,
            float(self.schedule.scale.numpy()),
        )  # fmt: skip

    def stopped_early(self) -> bool:
        """Whether the restored state had already stopped early (a finished run)."""
        patience = self.early_stopping_patience
        return bool(
            patience and self.best_step >= 0 and int(self.tracker.since_best.numpy()) >= patience
        )
