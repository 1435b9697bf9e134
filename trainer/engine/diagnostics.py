"""Diagnostic steps: the latest per-layer figures, their summaries, and the log's
warnings about vanishing or exploding gradients.

A diagnostic step is a training step that also computes the per-layer figures
of ``models.diagnostics`` (step 1, then every ``diagnose_every`` steps); it runs
as a compiled call of its own, in graph mode, without Grappler's optimizations
(they cost its first call more than they save on a step that runs rarely; see
docs/benchmarks.md), so the plain loop carries none of it.
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf
from absl import logging

from models import diagnostics as diagnostics_lib

# A layer whose gradient norm is below this fraction of the output layer's is
# reported as vanishing; above this multiple, as exploding. (Xavier-initialized
# 6x500 sigmoid networks sit near 3e-4 and still learn; U[0,1) init gives 0.)
VANISHING_FRACTION = 1e-5
EXPLODING_MULTIPLE = 1e3


@contextlib.contextmanager
def without_graph_optimizations():
    """Functions first called inside run without Grappler's graph optimizations.

    TensorFlow instantiates a function once per setting, so functions called
    outside keep theirs; the process-wide setting is put back on exit.
    """
    before = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before})


class Diagnostics(tf.Module):
    """Where diagnostic steps fall, and what the latest one found.

    Args:
      model: the ``Sequential`` being trained.
      every: diagnostic steps are step 1 and every ``every`` steps (0: none).
      summary_fn: called in-graph on those steps as ``summary_fn(model, step,
        diagnosed)`` (``diagnosed`` as the diagnostic step returns it, first
        replica) to write to the default ``tf.summary`` writer.

    Variables (create under the strategy's scope): ``layer_stats``, one
    ``[weighted layers]`` vector per figure of ``models.diagnostics.STATISTICS``,
    and ``diagnosed_step``.
    """

    def __init__(self, model, every: int = 0, summary_fn=None):
        super().__init__(name="diagnostics")
        self.every = int(every)
        self.summary_fn = summary_fn
        self._model = model
        layers = len(model.weighted_layers)
        self.layer_stats = {
            name: tf.Variable(tf.zeros([layers]), trainable=False, name=name)
            for name in diagnostics_lib.STATISTICS
        }
        self.diagnosed_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self._warnings = GradientWarnings([layer.name for layer in model.weighted_layers])
        self._last_warned = -1

    def next_step(self, step: int) -> int:
        """The first diagnostic step after ``step``."""
        if step < 1:
            return 1
        return (step // self.every + 1) * self.every

    def record(self, strategy, step, diagnosed) -> None:
        """Keeps a diagnostic step's figures and writes its summaries (in-graph,
        cross-replica)."""
        first = tf.nest.map_structure(
            lambda t: strategy.experimental_local_results(t)[0], diagnosed
        )
        for name, variable in self.layer_stats.items():
            variable.assign(first["stats"][name])
        self.diagnosed_step.assign(step)
        if self.summary_fn is None:
            return
        # Only diagnostic steps run this, so every one records: a constant gate
        # spares each summary the tf.cond an in-graph predicate costs.
        with tf.summary.record_if(True):
            self.summary_fn(self._model, step, first)

    def warn(self) -> None:
        """Logs vanishing or exploding gradients found since the last call (eagerly)."""
        diagnosed = int(self.diagnosed_step.numpy())
        if diagnosed != self._last_warned and diagnosed >= 0:
            self._last_warned = diagnosed
            self._warnings.check(diagnosed, self.layer_stats["gradient_norm"].numpy())


class GradientWarnings:
    """Logs, once per layer and kind, vanishing, exploding or non-finite gradients.

    Args:
      layer_names: names of the layers with weights, first to last (the last is the output).
    """

    def __init__(self, layer_names: list[str]):
        self.layer_names = layer_names
        self.reported: set[tuple[str, str]] = set()

    def check(self, step: int, gradient_norms: np.ndarray) -> list[str]:
        """Compares each layer's gradient norm with the output layer's; returns warnings."""
        messages = []
        norms = np.asarray(gradient_norms, np.float64)
        if norms.size == 0:
            return messages
        reference = norms[-1]
        for name, norm in zip(self.layer_names, norms, strict=True):
            kind, detail = self._kind(norm, reference)
            if kind and (name, kind) not in self.reported:
                self.reported.add((name, kind))
                message = f"{kind} gradients in layer {name} at step {step}: {detail}"
                logging.warning(message)
                messages.append(message)
        return messages

    @staticmethod
    def _kind(norm: float, reference: float) -> tuple[str | None, str]:
        if not np.isfinite(norm):
            return "non-finite", f"gradient norm is {norm}"
        if not (np.isfinite(reference) and reference > 0):
            return None, ""
        ratio = norm / reference
        if ratio < VANISHING_FRACTION:
            return "vanishing", (
                f"gradient norm {norm:.3g} is {ratio:.2g} x the output layer's "
                f"({reference:.3g}), below {VANISHING_FRACTION:g}"
            )
        if ratio > EXPLODING_MULTIPLE:
            return "exploding", (
                f"gradient norm {norm:.3g} is {ratio:.3g} x the output layer's "
                f"({reference:.3g}), above {EXPLODING_MULTIPLE:g}"
            )
        return None, ""
