"""``MemoryBatches``: the training batches of data held in memory, gathered
inside the compiled training loop."""

from __future__ import annotations

from trainer.data.pipeline import effective_batch_size, epoch_order

# MemoryBatches caches the order of this many examples (int64 indices: 2 MiB),
# in whole epochs, at least two and at most MAX_CACHED_EPOCHS.
CACHED_EXAMPLES = 1 << 18
MAX_CACHED_EPOCHS = 256


class MemoryBatches:
    """``train_dataset``'s batches, gathered inside the compiled training loop.

    An iterator for one replica: each ``next()``, called while the loop is
    traced, adds three gathers (of the cached epoch order, features, labels) to the
    step, where a ``tf.data`` iterator adds an ``IteratorGetNext`` fed by
    its pipeline's threads, which compete with the step for the CPU
    (docs/benchmarks.md measures the difference).

    The batches are ``train_dataset``'s by construction: the same stateless
    shuffle of each epoch, the same positions ``s*B .. s*B+B-1`` of their
    endless sequence, so resuming at ``start_step`` continues the exact order.
    State, in variables on the host CPU with the data: ``position`` (batches
    handed out), ``epoch`` and ``order``, the permutations of ``epochs_cached``
    epochs from ``epoch`` on (``[epochs_cached * n]``, at least two: a batch
    spans at most two epochs), refreshed in the step when a batch begins past
    the last but one. Small sets cache several epochs (``cached_examples``
    indices in all, at most ``MAX_CACHED_EPOCHS``), so that a window of
    ``next_prepared`` batches (``steps_prepared``) spans many steps: each
    window costs the XLA loop a call of its own. A new object is traced
    anew (the loop captures its variables). It follows the ``PreparedBatches``
    protocol (``trainer.engine.batches``): with ``prepare`` run in graph mode,
    ``next_prepared`` reads the cached epoch's batches inside XLA; and the
    ``Rewindable`` one: ``rewind`` sets ``position`` back, and the epoch's
    order follows from the seed.

    Yields:
      ``(x [B, *feature_shape], y [B])`` as ``train_dataset`` does.
    """

    def __init__(
        self,
        x,
        y,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        cached_examples: int = CACHED_EXAMPLES,
    ):
        import tensorflow as tf

        self.num_examples = n = len(x)
        self.batch_size = effective_batch_size(batch_size, n)
        self.seed = int(seed)
        self.epochs_cached = max(2, min(MAX_CACHED_EPOCHS, -(-int(cached_examples) // n)))
        with tf.device("/cpu:0"):
            self.features = tf.constant(x)
            self.targets = tf.constant(y)
            self.position = tf.Variable(int(start_step), dtype=tf.int64, trainable=False)
            # No epoch cached yet: the cached range ends before epoch 0.
            self.epoch = tf.Variable(-self.epochs_cached, dtype=tf.int64, trainable=False)
            self.order = tf.Variable(tf.zeros([self.epochs_cached * n], tf.int64), trainable=False)

    def __iter__(self):
        return self

    def rewind_point(self) -> int:
        """The next batch's number, for ``rewind``."""
        return int(self.position.numpy())

    def rewind(self, point: int) -> None:
        """Hands out the batches from ``point`` (a ``rewind_point``) again."""
        self.position.assign(point)

    def _next_epoch(self):
        """The epoch of the next batch's first example (an int64 tensor)."""
        return self.position * self.batch_size // self.num_examples

    def _cached(self, epoch):
        """Whether batches that begin in ``epoch`` lie in the cached order."""
        import tensorflow as tf

        return tf.logical_and(epoch >= self.epoch, epoch <= self.epoch + self.epochs_cached - 2)

    def prepare(self):
        """Caches the order of the next batch's epoch and the ones after, unless
        cached already (a graph-mode conditional: the shuffle has no XLA kernel)."""
        import tensorflow as tf

        n, seed = self.num_examples, self.seed
        with tf.device("/cpu:0"):
            epoch = self._next_epoch()

            def refresh():
                epochs = epoch + tf.range(self.epochs_cached, dtype=tf.int64)
                orders = tf.map_fn(
                    lambda e: epoch_order(n, seed, e), epochs, fn_output_signature=tf.int64
                )
                self.order.assign(tf.reshape(orders, [-1]))
                self.epoch.assign(epoch)

            tf.cond(self._cached(epoch), lambda: None, refresh)

    def steps_prepared(self):
        """How many batches from the next one on begin in the cached epochs but
        the last (an int64 tensor, >= 1 after ``prepare``): ``next_prepared``
        can read them all, since a batch of at most ``n`` examples ends within
        the epoch after its first."""
        import tensorflow as tf

        with tf.device("/cpu:0"):
            n = self.num_examples
            last = ((self.epoch + self.epochs_cached - 1) * n - 1) // self.batch_size
            return tf.maximum(last - self.position + 1, 0) * tf.cast(
                self._cached(self._next_epoch()), tf.int64
            )

    def next_prepared(self):
        """The next batch from the cached order (XLA-compilable: three
        gathers); valid for ``steps_prepared()`` batches after ``prepare``."""
        import tensorflow as tf

        with tf.device("/cpu:0"):
            offset = self.position * self.batch_size - self.epoch * self.num_examples
            # A gather, not tf.slice: XLA takes a slice's start as a compile-time
            # constant, which recompiled the loop for every value of ``position``.
            positions = offset + tf.range(self.batch_size, dtype=tf.int64)
            indices = tf.gather(self.order, positions)
            self.position.assign_add(1)
            return tf.gather(self.features, indices), tf.gather(self.targets, indices)

    def __next__(self):
        self.prepare()
        return self.next_prepared()  # after the conditional (automatic control dependencies)
