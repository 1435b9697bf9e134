"""SGD: plain gradient descent, the notebook's update."""

from __future__ import annotations

import tensorflow as tf

from models.optimizers.base import Optimizer


class SGD(Optimizer):
    """``w -= lr * g``, by TensorFlow's fused kernel."""

    def step_bound(self, grad_bound, slot_bound, step):
        return self.learning_rate * grad_bound, slot_bound

    def _update(self, grad, var, slots, lr, step):
        tf.raw_ops.ResourceApplyGradientDescent(var=var.handle, alpha=lr, delta=grad)
