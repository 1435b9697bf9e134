"""The inner training loop's owner: compiled calls of training steps, for the outer loop.

``Trainer.run_steps(iterator, n)`` runs ``n`` steps in compiled calls (Orbit's
``train(num_steps)``): the plain stretches between diagnostic steps as one call
each, every diagnostic step as a call of its own, so neither carries the
other's graph. A plain call is the checked loop; with XLA and batches read in
XLA (``batches.reads_in_xla``) the whole loop compiled by XLA, window by window;
with batches that rewind (``batches.rewinds``) speculative calls, the guard
paid once per call. ``train``, ``metrics``, ``step`` and ``batch_size`` are what
the outer loop (``trainer.controller``) uses.
"""

from __future__ import annotations

import collections

import tensorflow as tf

from trainer.engine import loops
from trainer.engine.batches import reads_in_xla, rewinds
from trainer.engine.diagnostics import Diagnostics, without_graph_optimizations
from trainer.engine.guard import Guard
from trainer.engine.metrics import RunningMetrics
from trainer.engine.objective import Objective
from trainer.engine.speculation import StateCopy, run_speculatively
from trainer.engine.step import TrainStep


def has_convolutions(model) -> bool:
    """Whether a weighted layer of ``model`` has a kernel of more than two axes
    (a convolution's ``[kh, kw, in, out]``; a dense kernel has two)."""
    return any(
        layer.kernel is not None and layer.kernel.shape.rank > 2 for layer in model.weighted_layers
    )


class Trainer(tf.Module):
    """Compiled training calls for one model, loss and optimizer.

    Args:
      model: a ``Sequential`` mapping ``[batch, *input_shape]`` to ``[batch, K]``.
      optimizer: a ``models.optimizers`` optimizer; built here, eagerly.
      loss: a name in ``models.registry.LOSSES``.
      global_batch_size: examples per step over all replicas.
      compute_dtype: ``tf.float32`` or ``tf.bfloat16`` (mixed precision).
      jit_compile: XLA for the plain calls: the whole loop with batches read in
        XLA and a model without convolutions (inside XLA's loop they ran
        several times slower on CPU; docs/benchmarks.md), else the single step.
        Diagnostic steps stay in graph mode.
      strategy: a ``tf.distribute.Strategy``; the model's variables were made
        in its scope.
      skip_nonfinite, check_finite: the guard (``guard.Guard``); ``check_finite
        =False`` applies every update unchecked, to measure what the guard costs.
      diagnose_every, summary_fn: diagnostic steps (``diagnostics.Diagnostics``).
      schedule: ``schedule(update) -> rate``, set as the optimizer's learning
        rate before each update (None: it stays as it is).
      l2, label_smoothing: the ``Objective``'s regularizers.
      batches: ``batches(start_step) -> iterator`` of the training batches,
        for ``train``; ``run_steps`` takes an iterator instead.
    """

    def __init__(
        self,
        model,
        optimizer,
        loss: str = "cross_entropy",
        global_batch_size: int = 32,
        compute_dtype=tf.float32,
        jit_compile: bool = False,
        strategy: tf.distribute.Strategy | None = None,
        skip_nonfinite: bool = False,
        check_finite: bool = True,
        diagnose_every: int = 0,
        summary_fn=None,
        schedule=None,
        l2: float = 0.0,
        label_smoothing: float = 0.0,
        batches=None,
        augmentation=None,
    ):
        super().__init__(name="trainer")
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.strategy = strategy or tf.distribute.get_strategy()
        self.batch_size = int(global_batch_size)
        self.jit_compile = bool(jit_compile)
        self.trace_counts: collections.Counter = collections.Counter()
        self._batches = batches
        self._iterator = None
        self._state: StateCopy | None = None  # made on the first speculative call
        with self.strategy.scope():
            optimizer.build(model.trainable_variables)
            self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.train_metrics = RunningMetrics("train_metrics")
            self.guard = None
            if check_finite:
                self.guard = Guard(model, optimizer, self.global_step, skip_nonfinite, jit_compile)
            self.diagnostics = Diagnostics(model, diagnose_every, summary_fn)
        # Layers whose training depends on the step (Dropout's mask) read the
        # step being taken, as a tensor (never a Python int).
        model.set_step_source(lambda: self.global_step + 1)
        self.objective = Objective(
            model, loss, global_batch_size, self.strategy.num_replicas_in_sync, l2, label_smoothing
        )
        self.step_fns = TrainStep(
            model, self.objective, optimizer, self.strategy, compute_dtype, self.guard,
            self.train_metrics, augmentation, lambda: self.global_step + 1,
        )  # fmt: skip
        self.xla_whole_loop = self.jit_compile and not has_convolutions(model)
        kind = "checked" if self.guard is not None else "unguarded"
        self.train_loop = self._loop(kind, self._jitted(self.step_fns.checked))
        self.xla_train_loop = self._loop(kind, self.step_fns.checked, prepared=True)
        self.diagnostic_loop = self._loop(
            kind,
            self.step_fns.diagnostic,
            after_step=lambda step, diagnosed: self.diagnostics.record(
                self.strategy, step, diagnosed
            ),
            name="diagnostic_loop",
        )
        self.prepare_batches = tf.function(self._prepare, autograph=False)

    # -- building ------------------------------------------------------------------
    def _jitted(self, step_fn):
        """``step_fn`` compiled alone by XLA with ``jit_compile`` (graph-mode loops)."""
        return tf.function(step_fn, jit_compile=True) if self.jit_compile else step_fn

    def _set_rate(self, step):
        self.optimizer.learning_rate.assign(self.schedule(step))

    def _loop(self, kind, step_fn, **options):
        return loops.make_loop(
            kind,
            step_fn,
            global_step=self.global_step,
            strategy=self.strategy,
            before_step=self._set_rate if self.schedule is not None else None,
            guard=self.guard,
            state=self._state,
            counts=self.trace_counts,
            **options,
        )

    def state_variables(self) -> list[tf.Variable]:
        """What a training call changes and a speculative one may have to undo: the
        model's variables (weights, BatchNorm's averages), the optimizer's (slots,
        step count, learning rate), the step, the loss sums and the guard's
        ``weights_finite``."""
        variables, seen = [], set()
        for v in (
            *self.model.variables,
            *self.optimizer.variables,
            self.global_step,
            self.train_metrics.sums,
            self.guard.weights_finite,
        ):
            if v.ref() not in seen:
                seen.add(v.ref())
                variables.append(v)
        return variables

    def _speculation(self) -> None:
        """Makes the state's copies and the speculative loops (once)."""
        if self._state is not None:
            return
        self._state = StateCopy(self.state_variables(), self.strategy)
        unchecked = self.step_fns.unchecked
        self.speculative_loop = self._loop("speculative", self._jitted(unchecked))
        self.xla_speculative_loop = self._loop("speculative", unchecked, prepared=True)

    def _prepare(self, iterator):
        """Graph mode: ``iterator.prepare()``, then its ``steps_prepared()``."""
        iterator.prepare()
        return iterator.steps_prepared()

    def _window(self, iterator) -> int:
        return int(self.prepare_batches(iterator))

    # -- running -------------------------------------------------------------------
    @property
    def step(self) -> int:
        """The global step: updates taken (skipped non-finite ones included)."""
        return int(self.global_step.numpy())

    def run_steps(self, iterator, num_steps: int) -> None:
        """Runs ``num_steps`` steps of ``iterator``'s batches in compiled calls.

        Stops early only when the guard stops training (see ``guard``); a call cut
        short by the weights' bound nearing float32's range is followed by another.
        """
        whole = self.xla_whole_loop and reads_in_xla(iterator)
        speculate = self.guard is not None and rewinds(iterator)
        if speculate and self.guard.stopped():  # as the checked loop, which takes no step
            return
        step = self.step
        end = step + num_steps
        while step < end:
            target, diagnostic_call = end, False
            if self.diagnostics.every:
                diagnostic = self.diagnostics.next_step(step)
                target = min(diagnostic - 1, end)
                if target <= step:  # the next step is the diagnostic one
                    target, diagnostic_call = diagnostic, True
            if bool(self._call(iterator, target - step, diagnostic_call, speculate, whole)):
                return
            step = self.step

    def _call(self, iterator, count: int, diagnostic: bool, speculate: bool, whole: bool):
        if diagnostic:
            with without_graph_optimizations():
                return self.diagnostic_loop(iterator, tf.constant(count, tf.int32))
        if speculate:
            self._speculation()
            loop = self.xla_speculative_loop if whole else self.speculative_loop
            return run_speculatively(
                iterator,
                count,
                loop,
                self._state,
                replay=lambda it, rest: self._call(it, rest, False, False, whole),
                window=self._window if whole else None,
            )
        if whole:
            return loops.run_windows(
                self.xla_train_loop, iterator, count, self._window, self.global_step
            )
        return self.train_loop(iterator, tf.constant(count, tf.int32))

    # -- what the outer loop uses -----------------------------------------------------
    @property
    def classification(self) -> bool:
        return self.objective.classification

    def train(self, num_steps: int) -> None:
        """Trains ``num_steps`` steps on ``batches`` (from the current step on).

        Raises:
          NonFiniteError: the guard stopped training (its text holds
            ``{checkpoint}`` for the caller to fill in).
        """
        if self._iterator is None:
            self._iterator = self._batches(self.step)
        self.run_steps(self._iterator, num_steps)
        if self.guard is not None:
            self.guard.report(self.step)
        self.diagnostics.warn()

    def metrics(self) -> dict[str, float]:
        """``{"loss", "accuracy" (classification), "learning_rate"}`` over the steps
        since the last read (NaN loss if none counted); the sums are reset."""
        result = self.train_metrics.result()
        self.train_metrics.reset()
        figures = {"loss": result["loss"]}
        if self.classification:
            figures["accuracy"] = result["accuracy"]
        figures["learning_rate"] = float(self.optimizer.learning_rate.numpy())
        return figures

    def loss_and_gradients(self, x, y):
        """Mean loss and its gradients on one batch, in inference mode, without
        updating anything (no variable changes, BatchNorm's averages included).

        Returns:
          ``(loss, grads)``: a float32 scalar and one tensor per trainable
          variable, shaped like that variable.
        """
        with tf.GradientTape() as tape:
            outputs = self.step_fns.forward(x, training=False)
            loss = tf.reduce_mean(self.objective.eval_loss(y, outputs))
        return loss, tape.gradient(loss, self.model.trainable_variables)
