"""``fit``: Keras-like training of a ``models.Sequential`` on arrays in memory,
through the same compiled step and loop as the command line."""

from __future__ import annotations

import collections
import time

import numpy as np
import tensorflow as tf

from models import optimizers as optimizers_lib
from trainer.engine.evaluator import Evaluator
from trainer.engine.trainer import Trainer


def fit(
    model,
    x,
    y,
    epochs: int = 1,
    batch_size: int = 32,
    optimizer="sgd",
    learning_rate: float = 0.01,
    loss: str | None = None,
    seed: int = 0,
    validation_data=None,
    verbose: bool = True,
) -> dict[str, list[float]]:
    """Trains ``model`` in place.

    Args:
      model: the ``Sequential`` to train.
      x: features ``[n, *model.input_shape]``.
      y: int labels ``[n]`` (classification) or targets ``[n]``/``[n, 1]``.
      epochs: passes over the data; each epoch is one compiled call.
      batch_size: examples per step; ``>= n`` means full-batch gradient descent.
      optimizer: a name in ``models.registry.OPTIMIZERS``, or an optimizer.
      learning_rate: step size when ``optimizer`` is a name.
      loss: ``cross_entropy`` or ``mse``; by default cross-entropy for integer
        labels and MSE for float targets.
      seed: shuffling seed.
      validation_data: optional ``(x_val, y_val)``, evaluated after each epoch.
      verbose: print one line per epoch.

    Returns:
      A history dict: ``loss`` and ``accuracy`` per epoch, plus ``val_loss``
      and ``val_accuracy`` with validation data.
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y)
    if x.ndim < 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"fit expects x [n, ...] and y [n] with n > 0; got {x.shape} and {y.shape}"
        )
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    if loss is None:
        loss = "cross_entropy" if np.issubdtype(y.dtype, np.integer) else "mse"
    y = y.astype(np.int64) if loss == "cross_entropy" else y.astype(np.float32)
    if isinstance(optimizer, str):
        optimizer = optimizers_lib.get(optimizer, learning_rate)
    batch_size = min(batch_size, len(x))
    steps_per_epoch = len(x) // batch_size
    trainer = Trainer(model, optimizer, loss, global_batch_size=batch_size)
    evaluator = Evaluator(
        trainer.step_fns.forward, trainer.objective, trainer.strategy, model.output_size
    )
    iterator = iter(
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    validation = None if validation_data is None else _batches(validation_data, y.dtype)
    history = collections.defaultdict(list)
    for epoch in range(epochs):
        start = time.perf_counter()
        trainer.run_steps(iterator, steps_per_epoch)
        result = trainer.metrics()
        history["loss"].append(result["loss"])
        history["accuracy"].append(result.get("accuracy", float("nan")))
        line = f"epoch {epoch + 1}/{epochs}: loss {result['loss']:.4f}"
        if trainer.classification:
            line += f", accuracy {result['accuracy']:.4f}"
        if validation is not None:
            val = evaluator.evaluate(validation)
            history["val_loss"].append(val["loss"])
            history["val_accuracy"].append(val.get("accuracy", float("nan")))
            line += f", val_loss {val['loss']:.4f}"
        if verbose:
            print(f"{line} ({time.perf_counter() - start:.2f}s)")
    return dict(history)


def _batches(data, label_dtype):
    """``(x, y)`` arrays as a dataset of batches of 1024."""
    x, y = data
    y = np.asarray(y).astype(label_dtype)
    return tf.data.Dataset.from_tensor_slices((np.asarray(x, np.float32), y)).batch(1024)
