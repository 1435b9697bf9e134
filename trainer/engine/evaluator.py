"""Evaluation: a compiled pass over a finite dataset, its mean loss, accuracy and
confusion matrix (classes) or RMSE, MAE and R² (a regression, in the targets'
own units), for the outer loop."""

from __future__ import annotations

import collections
import math

import numpy as np
import tensorflow as tf

from trainer.engine.metrics import RunningMetrics


def _named(method, name: str):
    """``method`` as a function named ``name`` (what the traced graph is called)."""

    def function(*args):
        return method(*args)

    function.__name__ = name
    return function


class Evaluator(tf.Module):
    """Evaluates a model on whole datasets.

    Args:
      forward: ``forward(x, training=False) -> float32 [batch, K]`` (the
        trainer's, so evaluation computes in the same precision).
      objective: the run's ``Objective`` (its evaluation loss, no smoothing).
      strategy: the ``tf.distribute.Strategy`` the datasets are distributed by.
      num_classes: classes of the confusion matrix (0 for a regression).
      dataset: ``dataset() -> distributed dataset`` for ``evaluate()`` without one.
      counts: traces are counted there (``evaluate``).
      target_scaling: a regression's ``TargetScaling`` (the datasets hold
        standardized targets; RMSE and MAE are reported in the original units);
        ``None`` for classes.
    """

    def __init__(
        self,
        forward,
        objective,
        strategy,
        num_classes: int = 0,
        dataset=None,
        counts: collections.Counter | None = None,
        target_scaling=None,
    ):
        super().__init__(name="evaluator")
        self._forward = forward
        self.objective = objective
        self.strategy = strategy
        self._dataset = dataset
        self.trace_counts = counts if counts is not None else collections.Counter()
        classes = int(num_classes) if objective.classification else 0
        self.target_scaling = target_scaling
        with strategy.scope():
            self.eval_metrics = RunningMetrics("eval_metrics")
            # A regression's [sum |error|, sum y, sum y^2] (standardized units), for MAE and R².
            self.regression_sums = tf.Variable(
                tf.zeros([3], tf.float64),
                trainable=False,
                name="regression_sums",
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )
            # Counts per (true class, predicted class), summed across replicas.
            self.confusion = tf.Variable(
                tf.zeros([classes, classes]),
                trainable=False,
                name="confusion",
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )
        self.evaluate_dataset = tf.function(_named(self._evaluate_dataset, "evaluation"))

    def _evaluate_dataset(self, dataset):
        self.trace_counts["evaluate"] += 1
        for x, y in dataset:
            self.strategy.run(self._replica_step, args=(x, y))

    def _replica_step(self, x, y):
        # A replica's share of the last, partial batch may be empty, and TensorFlow's
        # Conv2D hands an empty batch back unchanged (its input's channels, not its
        # filters), which breaks the layers after it: empty batches count nothing.
        tf.cond(tf.shape(x)[0] > 0, lambda: self._count(x, y), lambda: None)

    def _count(self, x, y) -> None:
        outputs = self._forward(x, training=False)
        correct = self.objective.correct(y, outputs)
        self.eval_metrics.update(self.objective.eval_loss(y, outputs), correct)
        if self.objective.classification:
            classes = self.confusion.shape[0]
            predicted = tf.argmax(outputs, axis=-1, output_type=tf.int64)
            counts = tf.math.confusion_matrix(
                tf.cast(y, tf.int64), predicted, num_classes=classes, dtype=tf.float32
            )
            self.confusion.assign_add(counts)
        if self.target_scaling is not None:
            y = tf.cast(tf.reshape(y, [-1]), tf.float64)
            error = y - tf.cast(tf.reshape(outputs, [-1]), tf.float64)
            sums = [tf.reduce_sum(tf.abs(error)), tf.reduce_sum(y), tf.reduce_sum(tf.square(y))]
            self.regression_sums.assign_add(tf.stack(sums))

    def evaluate(self, dataset=None) -> dict:
        """``{"loss", "count"}`` over a finite (distributed) dataset (by default
        ``dataset()``), with classification also ``accuracy`` and ``confusion``:
        float64 ``[C, C]`` counts of (true class, predicted class)."""
        self.eval_metrics.reset()
        self.confusion.assign(tf.zeros_like(self.confusion))
        self.regression_sums.assign(tf.zeros_like(self.regression_sums))
        self.evaluate_dataset(dataset if dataset is not None else self._dataset())
        result = self.eval_metrics.result()
        if self.objective.classification:
            result["confusion"] = self.confusion.numpy().astype(np.float64)
        else:
            result.pop("accuracy")
        if self.target_scaling is not None:
            result.update(self._regression_figures(result["loss"], result["count"]))
        return result

    def _regression_figures(self, mse: float, count: float) -> dict:
        """RMSE and MAE in the targets' units, and R² (1 - SSE / SST over the split)."""
        if not count:
            return {"rmse": math.nan, "mae": math.nan, "r2": math.nan}
        scale = float(self.target_scaling.scale.numpy())
        absolute, total, squares = (float(v) for v in self.regression_sums.numpy())
        spread = squares - total * total / count
        return {
            "rmse": math.sqrt(max(mse, 0.0)) * scale,
            "mae": absolute / count * scale,
            "r2": 1.0 - mse * count / spread if spread > 0 else math.nan,
        }
