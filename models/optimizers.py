"""Optimizers as ``tf.Module``s: SGD, momentum (with Nesterov), RMSprop, Adam.

Every optimizer holds its learning rate and step count as variables and its
slot variables (momentum, Adam's moments) in lists aligned with the model's
trainable variables. ``build(variables)`` creates all slots eagerly, before any
``tf.function`` traces an update, and a ``tf.train.Checkpoint`` of the
optimizer saves and restores them.

Updates are written per variable in ``_update(grad, var, slots, lr, step)`` so a
distribution strategy can run them in cross-replica context. SGD, momentum and
Adam apply theirs with TensorFlow's fused training kernels
(``tf.raw_ops.ResourceApply*``: one multi-threaded op per variable, reading the
gradient once, instead of a chain of element-wise ops each writing a temporary);
the formulas are the same as the docstrings give. RMSprop keeps its composed
update: TensorFlow's fused kernel puts epsilon inside the square root.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

from models import choices


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
                        tf.zeros(v.shape, v.dtype),
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

    # -- bounds for the NaN/Inf guard (models.training) --------------------------
    # The guard learns that no weight overflowed from a few scalars instead of
    # reading every weight after every update: a bound on each update's largest
    # element, derived from a bound on the largest gradient element.
    bound_slot: str | None = None  # the slot whose largest element step_bound tracks

    def step_bound(self, grad_bound, slot_bound, step):
        """Bounds one update elementwise, before it is applied.

        Args:
          grad_bound: float32 scalar >= max |g| over every gradient element.
          slot_bound: float32 scalar >= max |s| over ``bound_slot`` before the
            update (ignored by optimizers without one).
          step: the update's number t (float32, ``iterations + 1``).

        Returns:
          ``(largest, slot_bound)``: >= max |w_new - w| of the gradient step
          (weight decay apart, see ``decay_factor``), and the slot's bound after it.
        """
        del step
        return self.learning_rate * grad_bound, slot_bound

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


class SGD(Optimizer):
    """Plain gradient descent, the notebook's update: ``w -= lr * g``."""

    def _update(self, grad, var, slots, lr, step):
        tf.raw_ops.ResourceApplyGradientDescent(var=var.handle, alpha=lr, delta=grad)


class Momentum(Optimizer):
    """Heavy-ball momentum: ``a = mu * a + g; w -= lr * a``.

    With ``nesterov=True``: ``w -= lr * (g + mu * a)``.
    """

    slot_names = ("momentum",)

    def __init__(self, learning_rate=0.01, momentum=0.9, nesterov=False, clip_norm=None, name=None):
        super().__init__(learning_rate, clip_norm, name)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    bound_slot = "momentum"

    def step_bound(self, grad_bound, slot_bound, step):
        # |a_new| <= mu |a| + |g|; the step is lr |a_new| (Nesterov: lr (|g| + mu |a_new|)).
        accum = self.momentum * slot_bound + grad_bound
        if self.nesterov:
            return self.learning_rate * (grad_bound + self.momentum * accum), accum
        return self.learning_rate * accum, accum

    def _update(self, grad, var, slots, lr, step):
        # accum = mu * accum + g; w -= lr * accum (Nesterov: lr * (g + mu * accum)).
        tf.raw_ops.ResourceApplyMomentum(
            var=var.handle,
            accum=slots["momentum"].handle,
            lr=lr,
            grad=grad,
            momentum=tf.constant(self.momentum, var.dtype),
            use_nesterov=self.nesterov,
        )


class RMSprop(Optimizer):
    """RMSprop: ``s = rho * s + (1 - rho) * g^2; w -= lr * g / (sqrt(s) + eps)``."""

    slot_names = ("rms",)

    def __init__(self, learning_rate=0.001, rho=0.9, epsilon=1e-7, clip_norm=None, name=None):
        super().__init__(learning_rate, clip_norm, name)
        self.rho = float(rho)
        self.epsilon = float(epsilon)

    def step_bound(self, grad_bound, slot_bound, step):
        # sqrt(s) + eps >= eps, so |g| / (sqrt(s) + eps) <= |g| / eps; and since
        # s_new >= (1 - rho) g^2, also <= 1 / sqrt(1 - rho) wherever g^2 is a normal
        # float32 (|g| > 1e-15), the rest adding at most 1e-15 / eps.
        ratio = grad_bound / self.epsilon
        if 1.0 - self.rho > 1e-7:
            ratio = tf.minimum(ratio, 1.0001 / math.sqrt(1.0 - self.rho) + 1e-15 / self.epsilon)
        return self.learning_rate * ratio, slot_bound

    def _update(self, grad, var, slots, lr, step):
        rms = slots["rms"]
        rms.assign(self.rho * rms + (1 - self.rho) * tf.square(grad))
        var.assign_sub(lr * grad / (tf.sqrt(rms) + self.epsilon))


class Adam(Optimizer):
    """Adam with bias correction folded into the step size.

    ``m = b1 m + (1-b1) g``; ``v = b2 v + (1-b2) g^2``;
    ``w -= lr * sqrt(1-b2^t) / (1-b1^t) * m / (sqrt(v) + eps)``.
    """

    slot_names = ("m", "v")

    def __init__(
        self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, clip_norm=None, name=None
    ):
        super().__init__(learning_rate, clip_norm, name)
        for label, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0 <= beta < 1:
                raise ValueError(f"{label} must be in [0, 1), got {beta}")
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        # m and v sum the same gradients (from zero), so by Cauchy-Schwarz
        # |m| / sqrt(v) <= (1 - b1) / sqrt((1 - b2) (1 - b1^2 / b2)) when b1^2 < b2
        # (7.27 for the defaults); float32's underflow of tiny terms of v adds at
        # most 2e-15 / eps. Otherwise step_bound tracks max |m| (bound_slot).
        self._ratio_bound = None
        self.bound_slot = "m"
        if self.beta_1**2 < self.beta_2:
            ratio = (1 - self.beta_1) / math.sqrt(
                (1 - self.beta_2) * (1 - self.beta_1**2 / self.beta_2)
            )
            self._ratio_bound = 1.01 * ratio + 2e-15 / self.epsilon
            self.bound_slot = None

    def step_bound(self, grad_bound, slot_bound, step):
        corrected = tf.sqrt(1.0 - tf.pow(self.beta_2, step)) / (1.0 - tf.pow(self.beta_1, step))
        if self._ratio_bound is None:
            # |m_new| <= b1 |m| + (1 - b1) |g|, and m / (sqrt(v) + eps) <= |m| / eps.
            m = self.beta_1 * slot_bound + (1.0 - self.beta_1) * grad_bound
            return self.learning_rate * corrected * m / self.epsilon, m
        return self.learning_rate * corrected * self._ratio_bound, slot_bound

    def _update(self, grad, var, slots, lr, step):
        # The fused kernel computes lr * sqrt(1 - b2^t) / (1 - b1^t) from the powers.
        dtype = var.dtype
        tf.raw_ops.ResourceApplyAdam(
            var=var.handle,
            m=slots["m"].handle,
            v=slots["v"].handle,
            beta1_power=tf.pow(tf.constant(self.beta_1, dtype), step),
            beta2_power=tf.pow(tf.constant(self.beta_2, dtype), step),
            lr=lr,
            beta1=tf.constant(self.beta_1, dtype),
            beta2=tf.constant(self.beta_2, dtype),
            epsilon=tf.constant(self.epsilon, dtype),
            grad=grad,
        )


OPTIMIZERS = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": lambda **kw: Momentum(nesterov=True, **kw),
    "rmsprop": RMSprop,
    "adam": Adam,
}
choices.check_registry("optimizer", OPTIMIZERS, choices.OPTIMIZERS)


def get(name: str, learning_rate: float, clip_norm: float | None = None) -> Optimizer:
    """Builds an optimizer by name with its default hyperparameters."""
    try:
        factory = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; choose one of {', '.join(sorted(OPTIMIZERS))}"
        ) from None
    return factory(learning_rate=learning_rate, clip_norm=clip_norm)


def slot_count(name: str) -> int:
    """How many slot variables optimizer ``name`` keeps per trainable variable."""
    factory = OPTIMIZERS[name]
    return len(getattr(factory, "slot_names", Momentum.slot_names))
