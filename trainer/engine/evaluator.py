"""Evaluation: a compiled pass over a finite dataset, its mean loss, accuracy and
confusion matrix, for the outer loop."""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf

from trainer.engine.metrics import RunningMetrics


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
    """

    def __init__(
        self,
        forward,
        objective,
        strategy,
        num_classes: int = 0,
        dataset=None,
        counts: collections.Counter | None = None,
    ):
        super().__init__(name="evaluator")
        self._forward = forward
        self.objective = objective
        self.strategy = strategy
        self._dataset = dataset
        self.trace_counts = counts if counts is not None else collections.Counter()
        classes = int(num_classes) if objective.classification else 0
        with strategy.scope():
            self.eval_metrics = RunningMetrics("eval_metrics")
            # Counts per (true class, predicted class), summed across replicas.
            self.confusion = tf.Variable(
                tf.zeros([classes, classes]),
                trainable=False,
                name="confusion",
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )
        self.evaluate_dataset = tf.function(self._evaluate_dataset)

    def _evaluate_dataset(self, dataset):
        self.trace_counts["evaluate"] += 1
        for x, y in dataset:
            self.strategy.run(self._replica_step, args=(x, y))

    def _replica_step(self, x, y):
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

    def evaluate(self, dataset=None) -> dict:
        """``{"loss", "count"}`` over a finite (distributed) dataset (by default
        ``dataset()``), with classification also ``accuracy`` and ``confusion``:
        float64 ``[C, C]`` counts of (true class, predicted class)."""
        self.eval_metrics.reset()
        self.confusion.assign(tf.zeros_like(self.confusion))
        self.evaluate_dataset(dataset if dataset is not None else self._dataset())
        result = self.eval_metrics.result()
        if self.objective.classification:
            result["confusion"] = self.confusion.numpy().astype(np.float64)
        else:
            result.pop("accuracy")
        return result
