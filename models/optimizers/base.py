"""The optimizer contract: learning rate, step count, slots, clipping, decoupled
weight decay, and the bound on each update that the NaN/Inf guard relies on.

Every optimizer holds its learning rate and step count as variables and its
slot variables (momentum, Adam's moments) in lists aligned with the model's
trainable variables. ``build(variables)`` creates all slots eagerly, before any
``tf.function`` traces an update, and a ``tf.train.Checkpoint`` of the
optimizer saves and restores them. Updates are written per variable in
``_update(grad, var, slots, lr, step)``, so a distribution strategy can run them
in cross-replica context.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import tensorflow as tf

from models import registry


def hyperparameter(name: str, value) -> float:
    """``value`` as a float, if it passes ``registry.HYPERPARAMETERS[name]``'s check
    (the one flags and config.json get); ``ValueError`` naming it otherwise."""
    value = float(value) if isinstance(value, numbers.Real) else value
    registry.HYPERPARAMETERS[name].require(name, value)
    return value


def largest_norm(tensors) -> tf.Tensor:
    """max over ``tensors`` of their L2 norm, a float32 scalar: >= every element's
    magnitude. One ``L2Loss`` op (sum of squares / 2) per tensor; Inf once a
    tensor's squares overflow float32, NaN if an element is NaN."""
    halves = [tf.nn.l2_loss(tf.cast(t, tf.float32)) for t in tensors]
    return tf.sqrt(2.0 * tf.reduce_max(tf.stack(halves)))


class Optimizer(tf.Module):
    """Base class: learning rate, iteration count, clipping and slot bookkeeping.

    Args:
      learning_rate: positive step size; a float32 variable ``learning_rate``.
      clip_norm: if set, gradients are rescaled so their global L2 norm is at
        most this value before the update.
      name: module name.

    Decoupled weight decay (AdamW-style, for every optimizer): after
    ``set_weight_decay(rate, variables)``, each update first shrinks those
    variables by ``learning_rate * rate * w``, apart from the gradient step.
    """

    slot_names: tuple[str, ...] = ()
    # The slot whose largest element step_bound tracks (None: none).
    bound_slot: str | None = None

    def __init__(self, learning_rate: float = 0.01, clip_norm: float | None = None, name=None):
        super().__init__(name=name)
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
        self.clip_norm = clip_norm
        with self.name_scope:
            self.learning_rate = tf.Variable(
                float(learning_rate), trainable=False, dtype=tf.float32, name="learning_rate"
            )
            self.iterations = tf.Variable(0, trainable=False, dtype=tf.int64, name="iterations")
        self.slots: dict[str, list[tf.Variable]] = {}
        self._index: dict = {}
        self.weight_decay = 0.0
        self._decayed: set = set()

    def set_weight_decay(self, rate: float, variables: Sequence[tf.Variable]) -> None:
        """Decays ``variables`` (e.g. the kernels, not biases) by ``rate`` per update."""
        if not rate >= 0:
            raise ValueError(f"weight decay must be >= 0, got {rate}")
        self.weight_decay = float(rate)
        self._decayed = {v.ref() for v in variables} if rate else set()

    def initial_slot(self, slot: str, variable: tf.Variable) -> tf.Tensor:
        """A slot's starting value for ``variable`` (zeros unless the optimizer says)."""
        del slot
        return tf.zeros(variable.shape, variable.dtype)

    def build(self, variables: Sequence[tf.Variable]) -> None:
        """Creates the slot variables for ``variables`` (call eagerly, once)."""
        if self._index:
            missing = [v.name for v in variables if v.ref() not in self._index]
            if missing:
                raise ValueError(f"optimizer was built for other variables; new: {missing}")
            return
        self._index = {v.ref(): i for i, v in enumerate(variables)}
        slots = {}
        with self.name_scope:
            for slot in self.slot_names:
                slots[slot] = [
                    tf.Variable(
                        self.initial_slot(slot, v),
                        trainable=False,
                        name=f"{v.name.split(':')[0].replace('/', '_')}_{slot}",
                    )
                    for v in variables
                ]
        # Assigned once as a whole so checkpoint keys read "slots/<slot>/<i>".
        self.slots = slots

    def clip(self, grads: Sequence[tf.Tensor]) -> tuple[list[tf.Tensor], tf.Tensor]:
        """Applies global-norm clipping if configured; returns ``(grads, norm)``."""
        norm = tf.linalg.global_norm(grads)
        if self.clip_norm is None:
            return list(grads), norm
        clipped, _ = tf.clip_by_global_norm(grads, self.clip_norm, use_norm=norm)
        return clipped, norm

    def apply_gradients(self, grads: Sequence[tf.Tensor], variables: Sequence[tf.Variable]):
        """Clips (optionally) and applies ``grads`` to ``variables``; counts one step.

        For one device; under a distribution strategy call ``clip`` in replica
        context and ``apply_clipped`` in cross-replica context instead.
        """
        grads, _ = self.clip(self._check_grads(grads, variables))
        self.apply_clipped(grads, variables)

    def _check_grads(self, grads, variables):
        if not self._index:
            raise ValueError(
                f"{self.name}.build(variables) must run before the first update, "
                "so slot variables exist before tracing"
            )
        for g, v in zip(grads, variables, strict=True):
            if g is None:
                raise ValueError(f"no gradient for variable {v.name}")
        return grads

    def apply_clipped(self, grads, variables, strategy: tf.distribute.Strategy | None = None):
        """Applies already-clipped (and, across replicas, already-summed) gradients.

        Runs each variable's update through ``strategy.extended.update``, which
        is how mirrored variables and their slots are updated on every device.
        """
        strategy = strategy or tf.distribute.get_strategy()
        step = tf.cast(self.iterations + 1, tf.float32)
        for g, v in zip(self._check_grads(grads, variables), variables, strict=True):
            index = self._index[v.ref()]
            slots = tuple(self.slots[name][index] for name in self.slot_names)
            decay = v.ref() in self._decayed
            strategy.extended.update(
                v, self._update_one, args=(g, step, decay, *slots), group=False
            )
        self.iterations.assign_add(1)

    def step_bound(self, grad_bound, slot_bound, step):
        """Bounds one update elementwise, before it is applied, for the NaN/Inf guard.

        Args:
          grad_bound: float32 scalar >= max |g| over every gradient element.
          slot_bound: float32 scalar >= max |s| over ``bound_slot`` before the
            update (ignored by optimizers without one).
          step: the update's number t (float32, ``iterations + 1``).

        Returns:
          ``(largest, slot_bound)``: >= max |w_new - w| of the gradient step
          (weight decay apart, see ``decay_factor``), and the slot's bound after
          it; or None for an optimizer that cannot bound its update, whose
          weights the guard then reads after every update.
        """
        del grad_bound, slot_bound, step
        return None

    def decay_factor(self) -> tf.Tensor:
        """>= |w_after| / |w_before| of the weight decay step."""
        return tf.maximum(1.0, tf.abs(1.0 - self.learning_rate * self.weight_decay))

    def slot_norm(self) -> tf.Tensor:
        """The largest L2 norm over ``bound_slot``'s variables (>= its largest
        element; Inf if the squares overflow), 0 without such a slot."""
        if self.bound_slot is None:
            return tf.constant(0.0)
        return largest_norm(self.slots[self.bound_slot])

    def _update_one(self, var, grad, step, decay, *slots):
        slot_map = dict(zip(self.slot_names, slots, strict=True))
        if decay:  # decoupled from the gradient step, as AdamW does
            var.assign_sub(self.learning_rate * self.weight_decay * var)
        self._update(tf.cast(grad, var.dtype), var, slot_map, self.learning_rate, step)

    def _update(self, grad, var, slots, lr, step):
        raise NotImplementedError
