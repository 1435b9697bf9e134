"""Heavy-ball momentum, with Nesterov's variant."""

from __future__ import annotations

import tensorflow as tf

from models.optimizers.base import Optimizer, hyperparameter


class Momentum(Optimizer):
    """``a = mu * a + g; w -= lr * a``; with ``nesterov=True``: ``w -= lr * (g + mu * a)``.

    Applied by TensorFlow's fused kernel (``ResourceApplyMomentum``).
    """

    slot_names = ("momentum",)
    bound_slot = "momentum"

    def __init__(self, learning_rate=0.01, momentum=0.9, nesterov=False, clip_norm=None, name=None):
        super().__init__(learning_rate, clip_norm, name)
        self.momentum = hyperparameter("momentum", momentum)
        self.nesterov = bool(nesterov)

    def step_bound(self, grad_bound, slot_bound, step):
        # |a_new| <= mu |a| + |g|; the step is lr |a_new| (Nesterov: lr (|g| + mu |a_new|)).
        accum = self.momentum * slot_bound + grad_bound
        if self.nesterov:
            return self.learning_rate * (grad_bound + self.momentum * accum), accum
        return self.learning_rate * accum, accum

    def _update(self, grad, var, slots, lr, step):
        tf.raw_ops.ResourceApplyMomentum(
            var=var.handle,
            accum=slots["momentum"].handle,
            lr=lr,
            grad=grad,
            momentum=tf.constant(self.momentum, var.dtype),
            use_nesterov=self.nesterov,
        )
