"""RMSprop: steps scaled by a running RMS of the gradients."""

from __future__ import annotations

import math

import tensorflow as tf

from models.optimizers.base import Optimizer, hyperparameter


class RMSprop(Optimizer):
    """``s = rho * s + (1 - rho) * g^2; w -= lr * g / (sqrt(s) + eps)``.

    Composed of element-wise ops: TensorFlow's fused kernel puts epsilon inside
    the square root.
    """

    slot_names = ("rms",)

    def __init__(self, learning_rate=0.001, rho=0.9, epsilon=1e-7, clip_norm=None, name=None):
        super().__init__(learning_rate, clip_norm, name)
        self.rho = hyperparameter("rho", rho)
        self.epsilon = hyperparameter("epsilon", epsilon)

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
