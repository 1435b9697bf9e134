"""Adagrad: per-weight steps scaled by the sum of all past squared gradients
(Duchi, Hazan and Singer 2011)."""

from __future__ import annotations

import tensorflow as tf

from models.optimizers.base import Optimizer, hyperparameter


class Adagrad(Optimizer):
    """``s += g^2; w -= lr * g / (sqrt(s) + eps)``, ``s`` starting at
    ``initial_accumulator_value``, by TensorFlow's fused kernel
    (``ResourceApplyAdagradV2``)."""

    slot_names = ("accumulator",)

    def __init__(
        self,
        learning_rate=0.01,
        initial_accumulator_value=0.1,
        epsilon=1e-7,
        clip_norm=None,
        name=None,
    ):
        super().__init__(learning_rate, clip_norm, name)
        self.initial_accumulator_value = hyperparameter(
            "initial_accumulator_value", initial_accumulator_value
        )
        self.epsilon = hyperparameter("epsilon", epsilon)

    def initial_slot(self, slot, variable):
        return tf.fill(variable.shape, tf.constant(self.initial_accumulator_value, variable.dtype))

    def step_bound(self, grad_bound, slot_bound, step):
        # The accumulator includes this step's g^2, so sqrt(s) >= |g| and the step is
        # at most lr (1.0001: float32's rounding of g^2 and the square root). Where
        # g^2 underflows (|g| < 4e-23) only eps bounds it; |g| / eps always does.
        ratio = tf.minimum(grad_bound / self.epsilon, max(1.0001, 4e-23 / self.epsilon))
        return self.learning_rate * ratio, slot_bound

    def _update(self, grad, var, slots, lr, step):
        tf.raw_ops.ResourceApplyAdagradV2(
            var=var.handle,
            accum=slots["accumulator"].handle,
            lr=lr,
            epsilon=tf.constant(self.epsilon, var.dtype),
            grad=grad,
        )
