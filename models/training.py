"""The compiled training step and loop shared by the command line and ``fit``.

Shape of the computation (after Orbit and Keras' trainer):

* ``train_step(x, y)``: one forward pass, ``tf.GradientTape`` backward pass and
  optimizer update for a batch; optionally XLA-compiled (``jit_compile``).
* ``train_loop(iterator, num_steps)``: a plain ``tf.function`` running a
  ``tf.while_loop`` of ``num_steps`` steps. ``num_steps`` must be a tensor, so a
  whole run traces the loop once. With ``jit_compile`` and an iterator whose
  batches are gathered in-graph (``PreparedBatches``), XLA compiles the whole
  loop instead (``xla_train_loop``), batches included.
* ``diagnostic_loop(iterator, 1)``: the same loop around the diagnostic step
  (per-layer statistics and TensorBoard summaries); ``run_steps`` splits its
  calls at diagnostic steps, so the plain loop carries no diagnostic branch.
* ``evaluate(dataset)``: a compiled pass over a finite dataset.

The same code runs under any ``tf.distribute`` strategy: the step runs per
replica through ``strategy.run``, the loss is averaged over the *global* batch
(summed, times ``1 / global_batch_size``), gradients are summed across replicas and
the update is applied in cross-replica context (``merge_call`` +
``extended.update``), since ``assign_sub`` on mirrored variables inside a
replica context fails.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import time

import numpy as np
import tensorflow as tf

from models import diagnostics as diagnostics_lib
from models import losses as losses_lib
from models import optimizers as optimizers_lib

# With skip_nonfinite, this many skipped steps in a row end the loop: the
# weights themselves are then what makes every step non-finite.
MAX_SKIPPED_IN_A_ROW = 10


@contextlib.contextmanager
def without_graph_optimizations():
    """Functions first called inside run without Grappler's graph optimizations.

    For the diagnostic call, which runs once every ``diagnose_every`` steps:
    Grappler's pass over its graph (the step, per-layer statistics and dozens
    of histograms) was about 0.4 s of its first call, far more than it saves
    there. The setting goes into each call (TensorFlow instantiates a function
    once per setting), so the plain loop, called outside, keeps its
    optimizations. The process-wide setting is put back on exit.
    """
    before = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before})


def reads_in_xla(iterator) -> bool:
    """Whether ``iterator`` follows the ``PreparedBatches`` protocol, which lets
    XLA compile a whole training loop around it:

    * ``prepare()``, in graph mode: makes the coming batches readable without
      ops XLA lacks (e.g. computes an epoch's shuffled order);
    * ``steps_prepared()``: a scalar int tensor >= 1, how many batches from the
      current one on ``next_prepared`` may read after ``prepare``;
    * ``next_prepared()``: the next ``(x, y)`` batch, with XLA-compilable ops only.

    ``trainer.data.MemoryBatches`` is one.
    """
    return all(
        callable(getattr(iterator, name, None))
        for name in ("prepare", "steps_prepared", "next_prepared")
    )


def rewinds(iterator) -> bool:
    """Whether ``iterator`` can go back to an earlier batch (the ``Rewindable``
    protocol, which lets ``TrainingProgram`` run its calls speculatively):

    * ``rewind_point()``, eagerly: a token for the next batch it will hand out;
    * ``rewind(point)``, eagerly: hands out the same batches again from there.

    ``trainer.data.MemoryBatches`` is one.
    """
    return all(callable(getattr(iterator, name, None)) for name in ("rewind_point", "rewind"))


def has_convolutions(model) -> bool:
    """Whether a weighted layer of ``model`` has a kernel of more than two axes
    (a convolution's ``[kh, kw, in, out]``; a dense kernel has two)."""
    return any(
        getattr(layer, "kernel", None) is not None and layer.kernel.shape.rank > 2
        for layer in model.weighted_layers
    )


def finite_sum_check(tensors) -> tf.Tensor:
    """Whether every element is finite, paid for with one ``reduce_sum`` per tensor.

    A NaN or an Inf anywhere makes the total non-finite (NaN + x is NaN, Inf + x
    is Inf or NaN), so a finite total proves every element finite. Finite values
    whose sum passes float32's range (about 3.4e38, e.g. 1.6 million values
    averaging 2e32) also count as non-finite: for weights that large the run
    has diverged. The guard reads the weights with it once per compiled call,
    and after a step whose bound says nothing (``TrainingProgram``). Returns a
    scalar bool.
    """
    total = tf.add_n([tf.reduce_sum(tf.cast(t, tf.float32)) for t in tensors])
    return tf.math.is_finite(total)


def gradient_check(loss_sum, grads) -> tuple[tf.Tensor, tf.Tensor]:
    """The guard's check of one step: ``(finite, grad_bound)``, float32 scalars.

    One ``L2Loss`` (sum of squares / 2) per gradient, added up: NaN or Inf in
    the loss or any gradient makes the total non-finite, and so do finite
    gradients whose squares pass float32's range (elements from about 1.8e19):
    a run with such gradients has diverged. ``grad_bound``, the gradients'
    global L2 norm, is >= every element's magnitude, for the weights' bound
    (``TrainingProgram._apply_cross_replica``).
    """
    # The global norm as tf.linalg.global_norm computes it, with add_n for its
    # stack and sum: two ops fewer per step.
    total = tf.add_n([tf.nn.l2_loss(tf.cast(g, tf.float32)) for g in grads])
    grad_bound = tf.sqrt(2.0 * total)
    return tf.math.is_finite(loss_sum + grad_bound), grad_bound


def matvec_gradient_check(loss_sum, grads) -> tuple[tf.Tensor, tf.Tensor]:
    """The guard's check of one step under XLA: ``(finite, grad_bound)``, float32 scalars.

    The gradients' L1 norm, each gradient's absolute values summed by a
    matrix-vector product with ones (``[m, n] @ [n]``, the trailing axis as
    ``n``; vectors summed directly): inside an XLA-compiled loop on CPU, XLA
    emits the product (absolute values included) as one fused loop, about 4x
    faster than its reduction of
    the same values (7 against 32 us for 784-100-10's gradients, and the L2
    norm took 68 us there). NaN or Inf in the loss or any gradient makes the
    total non-finite, and so do finite gradients whose absolute values sum
    past float32's range: a run with such gradients has diverged. The L1 norm
    is >= every element's magnitude: ``grad_bound``, as ``gradient_check``'s.
    """
    parts = []
    for g in grads:
        magnitudes = tf.abs(tf.cast(g, tf.float32))
        if magnitudes.shape.rank and magnitudes.shape.rank >= 2:
            width = magnitudes.shape[-1]
            magnitudes = tf.linalg.matvec(tf.reshape(magnitudes, [-1, width]), tf.ones([width]))
        parts.append(tf.reduce_sum(magnitudes))
    total = tf.add_n(parts)
    return tf.math.is_finite(loss_sum + total), total


class RunningMetrics(tf.Module):
    """Sums of loss, correct predictions and examples since the last reset.

    The three sums live in one ``[3]`` variable, so a step adds to them with a
    single ``assign_add``.
    """

    def __init__(self, name: str):
        super().__init__(name=name)
        with self.name_scope:
            # [loss_sum, correct_sum, count]
            self.sums = tf.Variable(
                tf.zeros([3]),
                trainable=False,
                name="sums",
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )

    def update(self, per_example_loss, correct, keep=None):
        """Adds a batch: ``per_example_loss`` and ``correct`` are ``[batch]``.

        ``keep`` (a scalar bool tensor, optional): when false the batch adds
        nothing (a skipped, non-finite step), decided in-graph without a
        conditional.
        """
        count = per_example_loss.shape[0]  # static when batches are (drop_remainder)
        if count is None:
            count = tf.cast(tf.shape(per_example_loss)[0], tf.float32)
        batch = tf.stack(
            [tf.reduce_sum(per_example_loss), tf.reduce_sum(correct), tf.cast(count, tf.float32)]
        )
        if keep is not None:  # where, not multiply: 0 * NaN would be NaN
            batch = tf.where(keep, batch, tf.zeros_like(batch))
        self.sums.assign_add(batch)

    def reset(self):
        self.sums.assign(tf.zeros_like(self.sums))

    def result(self) -> dict[str, float]:
        """``{"loss", "accuracy", "count"}`` as Python floats (nan when empty)."""
        loss_sum, correct_sum, count = (float(v) for v in self.sums.numpy())
        if count == 0:
            return {"loss": math.nan, "accuracy": math.nan, "count": 0.0}
        return {"loss": loss_sum / count, "accuracy": correct_sum / count, "count": count}


class TrainingProgram(tf.Module):
    """Compiled train and eval functions for one model, loss and optimizer.

    Args:
      model: a ``Sequential`` (or any module with ``trainable_variables``,
        ``weighted_layers`` and ``__call__(x, training)``) mapping ``[batch,
        *input_shape]`` to ``[batch, K]``.
      optimizer: a ``models.optimizers.Optimizer``; built here, eagerly.
      loss: ``cross_entropy`` or ``mse``.
      global_batch_size: examples per step over all replicas.
      compute_dtype: ``tf.float32`` or ``tf.bfloat16`` (mixed precision: the
        forward and backward passes run in bfloat16, variables and the loss
        stay float32).
      jit_compile: XLA-compile the plain loop's calls, whole (with a
        ``PreparedBatches`` iterator, see ``reads_in_xla``, and a model
        without convolutions) or step by step (otherwise); diagnostic steps
        run in graph mode.
      strategy: a ``tf.distribute.Strategy``; variables of the model and
        optimizer must have been created in its scope.
      skip_nonfinite: skip steps with NaN/Inf loss or gradients and go on,
        instead of stopping the loop after the first; ``MAX_SKIPPED_IN_A_ROW``
        skipped steps in a row stop it all the same (a skipped step leaves the
        weights as they are, so a run that skips every step has diverged).
      check_finite: the NaN/Inf guard (default on). ``False`` applies every
        update unchecked; it exists to measure what the guard costs
        (``scripts/benchmark.py``), not for training.
      diagnose_every: on step 1 and every this many steps (0 = never) the step also computes
        per-layer diagnostics (``models.diagnostics``), kept in
        ``layer_stats`` for the caller.
      summary_fn: called in-graph on those steps as ``summary_fn(model, step,
        diagnosed)`` (``diagnosed`` as returned by the diagnostic step, first
        replica) to write them to the default ``tf.summary`` writer; it runs
        in its own compiled call (``diagnostic_loop``), never inside XLA.
      schedule: a ``models.schedules.Schedule``: before each update the
        optimizer's ``learning_rate`` is set to ``schedule(global_step + 1)``
        in-graph (None: the learning rate stays as it is).
      l2: adds ``l2 / 2 * sum(kernel ** 2)`` over the weighted layers' kernels
        to the training loss (biases left out).
      label_smoothing: smooths cross-entropy's targets while training; eval
        reports the plain cross-entropy.
    """

    def __init__(
        self,
        model,
        optimizer: optimizers_lib.Optimizer,
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
    ):
        super().__init__(name="training_program")
        self.model = model
        self.optimizer = optimizer
        self.loss_name = loss
        self._loss_fn = losses_lib.get(loss)
        self._train_loss_fn = losses_lib.get(loss, label_smoothing)
        self.schedule = schedule
        self.l2 = float(l2)
        self.classification = loss == "cross_entropy"
        self.global_batch_size = int(global_batch_size)
        self.compute_dtype = tf.as_dtype(compute_dtype)
        self.jit_compile = bool(jit_compile)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.skip_nonfinite = bool(skip_nonfinite)
        self.check_finite = bool(check_finite)
        self.diagnose_every = int(diagnose_every)
        self.summary_fn = summary_fn
        self.trace_counts: collections.Counter = collections.Counter()
        with self.strategy.scope():
            self.optimizer.build(self.model.trainable_variables)
            self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.train_metrics = RunningMetrics("train_metrics")
            self.eval_metrics = RunningMetrics("eval_metrics")
            # Eval counts per (true class, predicted class), summed across replicas.
            classes = int(self.model.output_size) if self.classification else 0
            self.confusion = tf.Variable(
                tf.zeros([classes, classes]),
                trainable=False,
                name="confusion",
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )
            # Steps whose loss or gradients were NaN/Inf: their update is not
            # applied; without skip_nonfinite the loop stops after the first.
            self.nonfinite_count = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.first_nonfinite_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
            # How many of the latest steps were skipped in a row (0 after an applied one).
            self.skipped_in_a_row = tf.Variable(0, dtype=tf.int64, trainable=False)
            # The step whose (finite) update left a weight NaN/Inf, e.g. by
            # overflowing float32; -1 while all weights are finite. The loop
            # always stops there, with or without skip_nonfinite.
            self.nonfinite_weights_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
            # Whether the weights were finite at the end of the last call (read there).
            self.weights_finite = tf.Variable(True, trainable=False)
            # Upper bounds on max |w| over the trainable weights and on the
            # optimizer's bound_slot: read at the start of every call, grown
            # by _apply_cross_replica at every update.
            self.weight_bound = tf.Variable(np.inf, trainable=False, dtype=tf.float32)
            self.slot_bound = tf.Variable(np.inf, trainable=False, dtype=tf.float32)
            parameters = sum(v.shape.num_elements() for v in self.model.trainable_variables)
            # Below this bound, |sum of all weights| < 1e38 < float32's range.
            self._weight_bound_limit = 1e38 / max(parameters, 1)
            layers = len(self.model.weighted_layers)
            # The latest diagnostic step's per-layer figures, for the caller.
            self.layer_stats = {
                name: tf.Variable(tf.zeros([layers]), trainable=False, name=name)
                for name in diagnostics_lib.STATISTICS
            }
            self.diagnosed_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
        # Layers whose training behaviour depends on the step (Dropout's mask)
        # read it here: the step being taken, as a tensor (never a Python int).
        set_step_source = getattr(self.model, "set_step_source", None)
        if set_step_source is not None:
            set_step_source(lambda: self.global_step + 1)
        # The plain step, checked (guard) or not (the speculative loop's), as the
        # loops call it: XLA-compiled alone with jit_compile, except inside the
        # whole XLA loop (prepared), which compiles it with the loop.
        self._step_fns = {}
        for guard in (True, False):
            for prepared in (True, False):
                step_fn = functools.partial(self._replica_step, diagnose=False, guard=guard)
                if self.jit_compile and not prepared:
                    step_fn = tf.function(step_fn, jit_compile=True)
                self._step_fns[guard, prepared] = step_fn
        # The diagnostic step stays in graph mode: it runs once per diagnose_every
        # steps, and XLA took about 4.5 s to compile it (its statistics and
        # records) for a 64-100-10 network, whose whole first diagnostic call
        # takes 0.6 s in graph mode.
        self._diagnostic_step_fn = functools.partial(self._replica_step, diagnose=True)
        # Convolutions stay out of XLA's compiled loop: on CPU a 5x5 convolution
        # ran 2.4x slower there than in a compiled step inside a graph-mode loop,
        # and LeNet 5x (docs/benchmarks.md, fifth round).
        self.xla_whole_loop = self.jit_compile and not has_convolutions(model)

        def loop(**options):
            # XLA compiles the whole loop for iterators that read in it (prepared).
            jit = {"jit_compile": True} if options.get("prepared") else {}
            return tf.function(
                functools.partial(self._train_loop, **options), autograph=False, **jit
            )

        self.train_loop = loop()
        self.xla_train_loop = loop(prepared=True)
        self.speculative_loop = loop(guard=False)
        self.xla_speculative_loop = loop(prepared=True, guard=False)
        self.diagnostic_loop = loop(diagnose=True)
        self.prepare_batches = tf.function(self._prepare, autograph=False)
        # Copies of the state a speculative call may have to undo, made on first use.
        self._saved_state: list[tf.Variable] | None = None
        self.evaluate_dataset = tf.function(self._evaluate_dataset)

    # -- the step ---------------------------------------------------------
    def forward(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Model outputs ``[batch, K]`` as float32, computed in ``compute_dtype``.

        ``training=True`` is the training step's mode (Dropout drops, BatchNorm
        uses and updates batch statistics); evaluation uses ``False``.
        """
        outputs = self.model(tf.cast(x, self.compute_dtype), training=training)
        return tf.cast(outputs, tf.float32)

    def loss_and_gradients(self, x, y):
        """Mean loss and its gradients on one batch, in inference mode, without
        updating anything (no variable changes, BatchNorm's averages included).

        Returns:
          ``(loss, grads)``: a float32 scalar and one tensor per trainable
          variable, shaped like that variable.
        """
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(self._loss_fn(y, self.forward(x, training=False)))
        return loss, tape.gradient(loss, self.model.trainable_variables)

    def _correct(self, y, outputs):
        if self.classification:
            return losses_lib.correct_per_example(y, outputs)
        return tf.zeros([tf.shape(outputs)[0]], tf.float32)

    def _replica_step(self, x, y, diagnose: bool = False, guard: bool = True):
        """Forward, backward and update on one replica's share of a batch.

        Returns nothing, or with ``diagnose`` a dict of this replica's
        ``stats`` (``models.diagnostics.layer_statistics``), ``grads`` (summed
        over replicas), ``weights`` after the update and ``records`` (per-layer
        pre-activations and activations, ``[per_replica_batch, units]``).
        ``guard=False``: no NaN/Inf check (the speculative loop's step, whose
        call is checked as a whole, see ``run_steps``).
        """
        guard = guard and self.check_finite
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            if diagnose:
                raw, records = self.model.forward_with_activations(
                    tf.cast(x, self.compute_dtype), training=True
                )
                outputs = tf.cast(raw, tf.float32)
            else:
                outputs = self.forward(x, training=True)
            per_example = self._train_loss_fn(y, outputs)
            # The mean over the *global* batch (what tf.nn.compute_average_loss
            # computes, without its shape checks and DivNoNan ops).
            loss_sum = tf.reduce_sum(per_example)
            loss = loss_sum * (1.0 / self.global_batch_size)
            if self.l2:
                kernels = [layer.kernel for layer in self.model.weighted_layers]
                penalty = tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])
                loss += 0.5 * self.l2 * penalty / self.strategy.num_replicas_in_sync
        grads = tape.gradient(loss, variables)
        context = tf.distribute.get_replica_context()
        if self.strategy.num_replicas_in_sync > 1:
            grads, loss_sum = context.all_reduce(tf.distribute.ReduceOp.SUM, (grads, loss_sum))
        # Replicas hold identical summed gradients here, so clipping and the
        # finiteness check agree everywhere.
        if self.optimizer.clip_norm is not None:
            # The norm is computed anyway: an Inf/NaN gradient makes it non-finite.
            grads, norm = self.optimizer.clip(grads)
            finite = tf.math.is_finite(norm + loss_sum)
            grad_bound = tf.minimum(norm, self.optimizer.clip_norm) * (1.0 + 1e-5)
        elif guard and self.jit_compile:
            finite, grad_bound = matvec_gradient_check(loss_sum, grads)
        elif guard:
            finite, grad_bound = gradient_check(loss_sum, grads)
        if not guard:
            finite, grad_bound = tf.constant(True), tf.constant(np.inf)
        if diagnose:
            before = [tf.identity(v.read_value()) for v in variables]
        with tf.control_dependencies(before if diagnose else []):
            context.merge_call(self._apply_cross_replica, args=(grads, finite, grad_bound, guard))
        keep = finite if guard else None
        self.train_metrics.update(per_example, self._correct(y, outputs), keep=keep)
        if not diagnose:
            return None
        after = [tf.identity(v.read_value()) for v in variables]
        stats = diagnostics_lib.layer_statistics(self.model, grads, before, after, records)
        return {"stats": stats, "grads": grads, "weights": after, "records": records}

    def _apply_cross_replica(self, strategy, grads, finite, grad_bound, guard=True):
        """Applies the update when ``finite``; keeps the guard's counters and bounds.

        One conditional per step, around the update; the skipped-step
        counters live in its branches. The weights are not read after the
        update: ``weight_bound`` (>= max |w|) grows by the optimizer's bound on
        the update (``Optimizer.step_bound``, from ``grad_bound`` >= max |g|),
        and the loop (``_train_loop``) stops once it nears float32's range,
        where the weights are checked. (XLA turns the conditional into selects
        folded into each variable's update.)
        """
        variables = self.model.trainable_variables
        if not guard:
            self.optimizer.apply_clipped(grads, variables, strategy)
            return
        finite = strategy.experimental_local_results(finite)[0]
        grad_bound = strategy.experimental_local_results(grad_bound)[0]
        # The bounds of this update, from the step number and rate it will
        # use (read before the conditional changes them).
        step = tf.cast(self.optimizer.iterations + 1, tf.float32)
        largest, slot_bound = self.optimizer.step_bound(grad_bound, self.slot_bound, step)
        weight_bound = self.weight_bound + largest
        if self.optimizer.weight_decay:
            weight_bound = self.weight_bound * self.optimizer.decay_factor() + largest

        def apply():
            self.optimizer.apply_clipped(grads, variables, strategy)
            self.skipped_in_a_row.assign(0)
            return tf.constant(True)

        def skip():
            self.nonfinite_count.assign_add(1)
            self.skipped_in_a_row.assign_add(1)
            first = self.first_nonfinite_step
            first.assign(tf.where(first < 0, self.global_step + 1, first))
            return tf.constant(False)

        tf.cond(finite, apply, skip)
        # (1 + 1e-5): room for float32's rounding in the update and in this sum.
        self.weight_bound.assign(tf.where(finite, weight_bound * (1.0 + 1e-5), self.weight_bound))
        if self.optimizer.bound_slot is not None:
            self.slot_bound.assign(tf.where(finite, slot_bound * (1.0 + 1e-5), self.slot_bound))

    def _read_bounds(self):
        """Sets the bounds from the weights and slots themselves (once per call:
        they may have been restored or assigned since the last one)."""
        self.weight_bound.assign(optimizers_lib.largest_norm(self.model.trainable_variables))
        self.slot_bound.assign(self.optimizer.slot_norm())

    def guard_stopped(self) -> bool:
        """Whether the guard has stopped training: a non-finite step (or, with
        ``skip_nonfinite``, ``MAX_SKIPPED_IN_A_ROW`` in a row) not yet reset."""
        if self.skip_nonfinite:
            return int(self.skipped_in_a_row.numpy()) >= MAX_SKIPPED_IN_A_ROW
        return int(self.nonfinite_count.numpy()) > 0

    def reset_nonfinite(self) -> None:
        """Forgets skipped steps once reported (the count in a row is kept)."""
        self.nonfinite_count.assign(0)
        self.first_nonfinite_step.assign(-1)

    # -- the loops ----------------------------------------------------------
    def _train_loop(
        self,
        iterator,
        num_steps,
        diagnose: bool = False,
        prepared: bool = False,
        guard: bool = True,
    ):
        """Runs ``num_steps`` (a scalar int tensor) training steps in-graph.

        Written with an explicit ``tf.while_loop`` and traced without AutoGraph:
        converting the step's Python code was most of the tracing time of a
        deep network. The plain loop (``train_loop``) holds no diagnostic
        branch; diagnostic steps run as their own compiled call
        (``diagnostic_loop``, one step), so neither pays for the other, neither
        in tracing (the first step with summaries traces only the diagnostic
        function) nor per step (no conditional in the loop body). ``prepared``:
        the loop of ``xla_train_loop``, compiled whole by XLA, reading
        ``iterator.next_prepared()`` (at most ``steps_prepared()`` steps) with
        the uncompiled step, which XLA compiles with the loop.

        Returns a scalar bool: with ``guard``, whether the guard stopped the
        loop; without (``speculative_loop``: every step unchecked), whether the
        call left anything non-finite behind (``_state_finite``).
        """
        self.trace_counts["diagnostic_loop" if diagnose else "train_loop"] += 1
        if not isinstance(num_steps, tf.Tensor):
            raise TypeError("num_steps must be a tensor; a Python int would retrace per value")
        guard = guard and self.check_finite
        step_fn = self._step_fns[guard, prepared]

        def body(i):
            x, y = iterator.next_prepared() if prepared else next(iterator)
            step = self.global_step + 1
            if self.schedule is not None:  # the rate of this update, from the step
                self.optimizer.learning_rate.assign(self.schedule(step))
            if diagnose:
                diagnosed = self.strategy.run(self._diagnostic_step_fn, args=(x, y))
                self._record_diagnostics(step, diagnosed)
            else:
                self.strategy.run(step_fn, args=(x, y))
            self.global_step.assign_add(1)
            return (i + 1,)

        def keep_going(i):
            going = i < tf.cast(num_steps, tf.int32)
            if not guard:
                return going
            # A step is taken while the weights provably stay finite; the
            # first one also when the previous call found them finite (so
            # every call makes progress, even with weights too large to bound).
            trusted = tf.logical_or(
                self.weight_bound < self._weight_bound_limit,
                tf.logical_and(i == 0, self.weights_finite),
            )
            going = tf.logical_and(going, trusted)
            if self.skip_nonfinite:
                return tf.logical_and(going, self.skipped_in_a_row < MAX_SKIPPED_IN_A_ROW)
            return tf.logical_and(going, tf.equal(self.nonfinite_count, 0))

        if guard:
            self._read_bounds()
        elif self.check_finite:  # what _run_speculatively may have to undo
            self._save_state()
        tf.while_loop(keep_going, body, (tf.constant(0),))
        if not self.check_finite:
            return tf.constant(False)
        if not guard:
            clean = self._state_finite()
            self.weights_finite.assign(clean)
            return tf.logical_not(clean)
        # The weights are read once per call. The loop stopped right after the
        # update that left one non-finite, if any did: the bound then passed its limit.
        weights_finite = finite_sum_check(self.model.trainable_variables)
        self.weights_finite.assign(weights_finite)
        marked = self.nonfinite_weights_step
        broke = tf.logical_and(marked < 0, tf.logical_not(weights_finite))
        marked.assign(tf.where(broke, self.global_step, marked))
        # Whether the guard stopped the loop (not the bound alone: the caller
        # goes on with another call, which reads the bound from the weights).
        if self.skip_nonfinite:
            halted = self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW
        else:
            halted = self.nonfinite_count > 0
        return tf.logical_or(halted, tf.logical_not(weights_finite))

    # -- speculative calls ---------------------------------------------------
    def _state(self) -> list[tf.Variable]:
        """What a training call changes and a speculative one may have to undo:
        the model's variables (weights, BatchNorm's averages), the optimizer's
        (slots, step count, learning rate), the step, the running metrics and
        ``weights_finite``."""
        variables, seen = [], set()
        for v in (
            *self.model.variables,
            *self.optimizer.variables,
            self.global_step,
            self.train_metrics.sums,
            self.weights_finite,
        ):
            if v.ref() not in seen:
                seen.add(v.ref())
                variables.append(v)
        return variables

    def _state_finite(self) -> tf.Tensor:
        """Whether the floating-point state is finite (``finite_sum_check``):
        weights, BatchNorm's averages, the optimizer's slots, the loss sums."""
        floats = [v for v in self._state() if v.dtype.is_floating]
        return finite_sum_check(floats)

    def _save_state(self):
        for saved, v in zip(self._saved_state, self._state(), strict=True):
            saved.assign(v)

    def _restore_state(self):
        for saved, v in zip(self._saved_state, self._state(), strict=True):
            v.assign(saved)

    def _run_speculatively(self, iterator, num_steps: int, whole: bool) -> bool:
        """``num_steps`` plain steps with the guard paid once per compiled call.

        The steps run unchecked (``speculative_loop``, or under XLA
        ``xla_speculative_loop`` window by window, as ``_run_prepared``), each
        call saving the state at its start and reading it once at its end
        (``_state_finite``). A NaN or Inf never leaves the state once in it:
        ``w - lr * NaN`` is NaN, an Inf weight makes the next loss NaN, the
        optimizers' slots and the loss sums keep theirs. So a finite state
        proves no step of the call was non-finite. Otherwise the state and
        ``iterator`` go back to where that call began and the remaining steps
        run checked (``train_loop``, ``xla_train_loop``): the same batches,
        Dropout masks and rates (all from the step), the step named and not
        applied as before. No non-finite update outlives a compiled call.
        Returns whether the guard stopped training, as ``train_loop`` does.
        """
        if self._saved_state is None:  # before the first trace that saves into them
            with tf.init_scope(), self.strategy.scope():
                self._saved_state = [
                    tf.Variable(v.read_value(), trainable=False, name="saved")
                    for v in self._state()
                ]
            self.restore_state = tf.function(self._restore_state, autograph=False)
        loop = self.xla_speculative_loop if whole else self.speculative_loop
        done = 0
        while done < num_steps:
            point = iterator.rewind_point()
            count = num_steps - done
            if whole:
                count = min(count, int(self.prepare_batches(iterator)))
            if bool(loop(iterator, tf.constant(count, tf.int32))):
                self.restore_state()
                iterator.rewind(point)
                rest = num_steps - done
                if whole:
                    return self._run_prepared(iterator, rest, self.xla_train_loop)
                return bool(self.train_loop(iterator, tf.constant(rest, tf.int32)))
            done += count
        return False

    def _prepare(self, iterator):
        """Graph mode: ``iterator.prepare()``, then its ``steps_prepared()``."""
        iterator.prepare()
        return iterator.steps_prepared()

    def _run_prepared(self, iterator, num_steps: int, loop) -> bool:
        """``num_steps`` steps as XLA-compiled loops (``loop``: ``xla_train_loop``
        or ``xla_speculative_loop``) over prepared windows.

        Eagerly, window by window: the iterator prepares its next batches in a
        graph-mode call (``prepare``: for ``MemoryBatches`` the shuffle of a
        new epoch, which has no XLA kernel), then ``xla_train_loop`` takes up
        to the prepared number of steps: two host reads per window. Returns
        what the loop returns (the guard's halt, or a speculative call's
        non-finite state) once it is true; a window that took no step also
        ends the call.
        """
        done = 0
        while done < num_steps:
            count = min(num_steps - done, int(self.prepare_batches(iterator)))
            before = int(self.global_step.numpy())
            if bool(loop(iterator, tf.constant(count, tf.int32))):
                return True
            taken = int(self.global_step.numpy()) - before
            if taken <= 0:
                return False
            done += taken
        return False

    def next_diagnostic_step(self, step: int) -> int:
        """The first diagnostic step after ``step`` (step 1, then every ``diagnose_every``)."""
        if step < 1:
            return 1
        return (step // self.diagnose_every + 1) * self.diagnose_every

    def _record_diagnostics(self, step, diagnosed):
        """Keeps a diagnostic step's figures and writes its summaries (cross-replica)."""
        first = tf.nest.map_structure(
            lambda t: self.strategy.experimental_local_results(t)[0], diagnosed
        )
        for name, variable in self.layer_stats.items():
            variable.assign(first["stats"][name])
        self.diagnosed_step.assign(step)
        if self.summary_fn is None:
            return
        # Only diagnostic steps run this function, so every one records: a
        # constant gate, which lets each summary op be written without the
        # tf.cond that an in-graph predicate costs per write (most of this
        # function's ops and of its tracing time when it had them).
        with tf.summary.record_if(True):
            self.summary_fn(self.model, step, first)

    def _evaluate_dataset(self, dataset):
        self.trace_counts["evaluate"] += 1
        for x, y in dataset:
            self.strategy.run(self._replica_eval_step, args=(x, y))

    def _replica_eval_step(self, x, y):
        outputs = self.forward(x)
        self.eval_metrics.update(self._loss_fn(y, outputs), self._correct(y, outputs))
        if self.classification:
            classes = self.confusion.shape[0]
            predicted = tf.argmax(outputs, axis=-1, output_type=tf.int64)
            counts = tf.math.confusion_matrix(
                tf.cast(y, tf.int64), predicted, num_classes=classes, dtype=tf.float32
            )
            self.confusion.assign_add(counts)

    def evaluate(self, dataset) -> dict[str, float]:
        """Mean loss and accuracy over a finite (distributed) dataset; with
        classification also ``confusion``: float64 ``[C, C]`` counts of (true
        class, predicted class)."""
        self.eval_metrics.reset()
        self.confusion.assign(tf.zeros_like(self.confusion))
        self.evaluate_dataset(dataset)
        result = self.eval_metrics.result()
        if self.classification:
            result["confusion"] = self.confusion.numpy().astype(np.float64)
        return result

    def run_steps(self, iterator, num_steps: int) -> None:
        """Eagerly-callable wrapper: runs ``num_steps`` steps in compiled calls.

        Without ``diagnose_every`` one plain call; with it, the plain stretches
        between diagnostic steps are plain calls and each diagnostic step a
        ``diagnostic_loop`` call. A plain call is ``train_loop``, or with
        ``jit_compile`` and an iterator that reads in XLA (``reads_in_xla``)
        ``xla_train_loop``; with an iterator that can go back (``rewinds``) it
        runs speculatively (``_run_speculatively``: the guard paid once per
        call). A call that ended before its last step only because the
        weights' bound neared float32's range is followed by another; the
        guard's stop (a non-finite step) ends them all.
        """
        whole = self.xla_whole_loop and reads_in_xla(iterator)
        speculate = self.check_finite and rewinds(iterator)
        if speculate and self.guard_stopped():  # as the checked loop, which takes no step
            return
        step = int(self.global_step.numpy())
        end = step + num_steps
        while step < end:
            target, diagnostic_call = end, False
            if self.diagnose_every:
                diagnostic = self.next_diagnostic_step(step)
                target = min(diagnostic - 1, end)
                if target <= step:  # the next step is the diagnostic one
                    target, diagnostic_call = diagnostic, True
            count = target - step
            if diagnostic_call:
                with without_graph_optimizations():
                    halted = self.diagnostic_loop(iterator, tf.constant(count, tf.int32))
            elif speculate:
                halted = self._run_speculatively(iterator, count, whole)
            elif whole:
                halted = self._run_prepared(iterator, count, self.xla_train_loop)
            else:
                halted = self.train_loop(iterator, tf.constant(count, tf.int32))
            if bool(halted):
                return
            step = int(self.global_step.numpy())


def fit(
    model,
    x,
    y,
    epochs: int = 1,
    batch_size: int = 32,
    optimizer: str | optimizers_lib.Optimizer = "sgd",
    learning_rate: float = 0.01,
    loss: str | None = None,
    seed: int = 0,
    validation_data=None,
    verbose: bool = True,
) -> dict[str, list[float]]:
    """Keras-like ``fit`` on in-memory arrays, through ``TrainingProgram``.

    Args:
      model: the ``Sequential`` to train in place.
      x: features ``[n, *model.input_shape]``.
      y: int labels ``[n]`` (classification) or targets ``[n]``/``[n, 1]``.
      epochs: passes over the data; each epoch is one compiled call.
      batch_size: examples per step; ``>= n`` means full-batch gradient descent.
      optimizer: a name from ``models.optimizers`` or an ``Optimizer``.
      learning_rate: step size when ``optimizer`` is a name.
      loss: ``cross_entropy`` or ``mse``; by default cross-entropy for integer
        labels and MSE for float targets.
      seed: shuffling seed.
      validation_data: optional ``(x_val, y_val)``, evaluated after each epoch.
      verbose: print one line per epoch.

    Returns:
      A history dict: ``loss`` and ``accuracy`` per epoch, plus ``val_loss``
      and ``val_accuracy`` with validation data.
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y)
    if x.ndim < 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"fit expects x [n, ...] and y [n] with n > 0; got {x.shape} and {y.shape}"
        )
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    if loss is None:
        loss = "cross_entropy" if np.issubdtype(y.dtype, np.integer) else "mse"
    y = y.astype(np.int64) if loss == "cross_entropy" else y.astype(np.float32)
    if isinstance(optimizer, str):
        optimizer = optimizers_lib.get(optimizer, learning_rate)
    batch_size = min(batch_size, len(x))
    steps_per_epoch = len(x) // batch_size
    program = TrainingProgram(model, optimizer, loss, global_batch_size=batch_size)
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    iterator = iter(dataset)
    history = collections.defaultdict(list)
    for epoch in range(epochs):
        start = time.perf_counter()
        program.train_metrics.reset()
        program.run_steps(iterator, steps_per_epoch)
        result = program.train_metrics.result()
        history["loss"].append(result["loss"])
        history["accuracy"].append(result["accuracy"])
        line = f"epoch {epoch + 1}/{epochs}: loss {result['loss']:.4f}"
        if program.classification:
            line += f", accuracy {result['accuracy']:.4f}"
        if validation_data is not None:
            xv, yv = validation_data
            yv = np.asarray(yv).astype(y.dtype)
            val = program.evaluate(
                tf.data.Dataset.from_tensor_slices((np.asarray(xv, np.float32), yv)).batch(1024)
            )
            history["val_loss"].append(val["loss"])
            history["val_accuracy"].append(val["accuracy"])
            line += f", val_loss {val['loss']:.4f}"
        if verbose:
            print(f"{line} ({time.perf_counter() - start:.2f}s)")
    return dict(history)
