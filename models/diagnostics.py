"""Per-layer training diagnostics: what the notebook prints by hand.

The notebook finds vanishing gradients by printing ``sum(|grad|)`` of the first
layer (exactly 0 with U[0,1) init in a deep sigmoid net) and saturated
pre-activations. These functions compute those figures for every layer with
weights (``Sequential.weighted_layers``: dense, convolution, batch norm) from
one step's gradients, weights and activations, through the layer contract
(``layer.kernel``, ``layer.trainable_variables``, and the activation each
layer's output goes through, ``Sequential.activation_names``).
"""

from __future__ import annotations

import tensorflow as tf

from models import activations as activations_lib

STATISTICS = ("gradient_norm", "gradient_l1", "gradient_mean_abs", "update_ratio", "saturation")


def layer_variables(model) -> list[tuple[str, list[int]]]:
    """``[(layer name, [indices into model.trainable_variables])]`` per layer with
    weights; the kernel's index comes first."""
    index = {v.ref(): i for i, v in enumerate(model.trainable_variables)}
    result = []
    for layer in model.weighted_layers:
        kernel = index[layer.kernel.ref()]
        others = sorted(index[v.ref()] for v in layer.trainable_variables)
        result.append((layer.name, [kernel, *[i for i in others if i != kernel]]))
    return result


def _norm(tensors) -> tf.Tensor:
    return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(tf.cast(t, tf.float32))) for t in tensors]))


def layer_statistics(model, grads, weights_before, weights_after, records) -> dict:
    """Per-layer figures for one step, each a float32 vector ``[num_weighted_layers]``.

    Args:
      model: the ``Sequential`` being trained.
      grads: gradients, aligned with ``model.trainable_variables``.
      weights_before, weights_after: variable values around the update, aligned
        the same way.
      records: ``[(preactivation, activation)]`` per layer with weights, each
        of that layer's output shape, from ``Sequential.forward_with_activations``.

    Returns:
      ``{"gradient_norm", "gradient_l1", "gradient_mean_abs", "update_ratio",
      "saturation"}``: L2 norm and L1 sum of the layer's gradients (weights and
      bias), their mean absolute value, ``||w_after - w_before|| / ||w_before||``
      of the kernel, and the fraction of saturated (sigmoid/tanh) or dead
      (relu) units in the batch (0 for linear layers).
    """
    stats = {k: [] for k in STATISTICS}
    activation_names = model.activation_names()
    for (_, indices), name, (_, activation) in zip(
        layer_variables(model), activation_names, records, strict=True
    ):
        layer_grads = [tf.cast(grads[i], tf.float32) for i in indices]
        size = sum(int(g.shape.num_elements()) for g in layer_grads)
        l1 = tf.add_n([tf.reduce_sum(tf.abs(g)) for g in layer_grads])
        stats["gradient_norm"].append(_norm(layer_grads))
        stats["gradient_l1"].append(l1)
        stats["gradient_mean_abs"].append(l1 / size)
        w = indices[0]
        change = _norm([weights_after[w] - weights_before[w]])
        stats["update_ratio"].append(change / tf.maximum(_norm([weights_before[w]]), 1e-12))
        stats["saturation"].append(activations_lib.saturation_fraction(name, activation))
    return {k: tf.stack(v) for k, v in stats.items()}
