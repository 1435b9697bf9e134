"""``tf.data`` pipelines of data held in memory: the training stream, whose batch
at any step follows from the seed and the step alone, and the eval split."""

from __future__ import annotations


# -- tf.data pipelines -------------------------------------------------------------
def effective_batch_size(batch_size: int, num_train: int) -> int:
    """A batch larger than the training set is full-batch gradient descent."""
    return min(batch_size, num_train)


def epoch_order(num_examples: int, seed: int, epoch):
    """The order of epoch ``epoch`` (an int64 tensor): a permutation of
    ``0..num_examples-1`` seeded by ``(seed, epoch)``, shared by ``train_dataset``
    and ``MemoryBatches`` so that their batches agree."""
    import tensorflow as tf

    return tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int64),
        seed=tf.stack([tf.constant(seed, tf.int64), epoch]),
    )


def train_dataset(x, y, batch_size: int, seed: int, start_step: int = 0):
    """Shuffled, repeated, batched (``drop_remainder``) and prefetched.

    The batch at global step ``s`` holds positions ``s*B .. s*B+B-1`` of the
    endless sequence made of one seeded permutation per epoch, so starting at
    ``start_step`` resumes the exact order.

    Returns:
      A ``tf.data.Dataset`` of ``(x [B, D] float32, y [B])``.
    """
    import tensorflow as tf

    n = len(x)
    batch_size = effective_batch_size(batch_size, n)
    first = start_step * batch_size
    start_epoch, offset = divmod(first, n)
    features = tf.constant(x)
    targets = tf.constant(y)

    def epoch_indices(epoch):
        order = epoch_order(n, seed, epoch)
        # The resumed epoch starts where the interrupted run was within it.
        return order[tf.where(tf.equal(epoch, start_epoch), offset, 0) :]

    def gather(indices):
        return tf.gather(features, indices), tf.gather(targets, indices)

    return (
        tf.data.Dataset.range(start_epoch, 2**62)
        .map(epoch_indices)
        # rebatch slices whole epochs into batches without handling examples
        # one by one (unbatch + batch cost more CPU per example).
        .rebatch(batch_size, drop_remainder=True)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def gathers_in_graph(strategy) -> bool:
    """Whether an in-memory source hands ``strategy`` its batches as ``MemoryBatches``.

    Only for one replica: ``strategy.run`` gives every replica the whole of a
    plain tensor, so several replicas need ``experimental_distribute_dataset``'s
    split of a ``tf.data`` pipeline (``train_dataset``); a TPU takes its input
    from the host's pipeline too.
    """
    import tensorflow as tf

    return strategy.num_replicas_in_sync == 1 and not isinstance(
        strategy, tf.distribute.TPUStrategy
    )


def eval_dataset(x, y, batch_size: int = 2048):
    """The whole eval set in order, in batches (the last may be smaller)."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(1)
