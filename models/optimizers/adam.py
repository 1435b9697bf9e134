"""Adam, with bias correction folded into the step size."""

from __future__ import annotations

import math

import tensorflow as tf

from models.optimizers.base import Optimizer, hyperparameter


class Adam(Optimizer):
    """``m = b1 m + (1-b1) g``; ``v = b2 v + (1-b2) g^2``;
    ``w -= lr * sqrt(1-b2^t) / (1-b1^t) * m / (sqrt(v) + eps)``, by TensorFlow's
    fused kernel (``ResourceApplyAdam``)."""

    slot_names = ("m", "v")

    def __init__(
        self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, clip_norm=None, name=None
    ):
        super().__init__(learning_rate, clip_norm, name)
        self.beta_1 = hyperparameter("beta_1", beta_1)
        self.beta_2 = hyperparameter("beta_2", beta_2)
        self.epsilon = hyperparameter("epsilon", epsilon)
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
