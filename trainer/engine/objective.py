"""What a step minimizes and what it counts as correct."""

from __future__ import annotations

import tensorflow as tf

from models import losses as losses_lib
from models import registry


class Objective:
    """A named loss, averaged over the global batch, with its regularizers.

    Args:
      model: the ``Sequential`` (its ``decayed_kernels`` for ``l2``).
      loss: a name in ``models.registry.LOSSES``.
      global_batch_size: examples per step over all replicas: each replica's
        loss sum is scaled by ``1 / global_batch_size``.
      num_replicas: replicas in sync (the L2 term is split among them).
      l2: adds ``l2 / 2 * sum(kernel ** 2)`` to the training loss.
      label_smoothing: smooths cross-entropy's targets while training; the
        evaluation loss is the plain one.
    """

    def __init__(
        self,
        model,
        loss: str,
        global_batch_size: int,
        num_replicas: int = 1,
        l2: float = 0.0,
        label_smoothing: float = 0.0,
    ):
        self.model = model
        self.name = loss
        self.classification = registry.LOSSES.get(loss).classification
        self.eval_loss = losses_lib.get(loss)
        self._train_loss = losses_lib.get(loss, label_smoothing)
        self.global_batch_size = int(global_batch_size)
        self.num_replicas = int(num_replicas)
        self.l2 = float(l2)

    def train_loss(self, y, outputs):
        """``(per_example [batch], loss_sum, loss)`` of one replica's batch; ``loss``
        is what its gradients are taken of."""
        per_example = self._train_loss(y, outputs)
        # The mean over the *global* batch (what tf.nn.compute_average_loss
        # computes, without its shape checks and DivNoNan ops).
        loss_sum = tf.reduce_sum(per_example)
        loss = loss_sum * (1.0 / self.global_batch_size)
        if self.l2:
            kernels = self.model.decayed_kernels
            penalty = tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])
            loss += 0.5 * self.l2 * penalty / self.num_replicas
        return per_example, loss_sum, loss

    def correct(self, y, outputs):
        """1.0 per correct example ``[batch]`` (zeros for a regression)."""
        if self.classification:
            return losses_lib.correct_per_example(y, outputs)
        return tf.zeros([tf.shape(outputs)[0]], tf.float32)
