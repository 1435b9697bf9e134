"""``python -m trainer.inspect --model_dir=DIR``: look inside a trained network.

The notebook's ``print(model.w0)`` and ``reduce_sum(abs(grad))``, done
properly: for the latest checkpoint of a run it prints, per layer, its
weight's (dense matrix, convolution kernel, BatchNorm scale) shape, mean, std,
min and max, and on one batch of the run's own training data the gradient L1
sum and L2 norm and the fraction of saturated (sigmoid/tanh) or dead (relu)
units. ``--json PATH`` writes the same figures.
"""

from __future__ import annotations

import dataclasses
import os

from absl import app, flags

from trainer import config as config_lib
from trainer.cli import fail, no_positional_arguments, parse_flags
from trainer.errors import UsageError

flags.DEFINE_string("model_dir", None, "Run folder to inspect (with config.json and checkpoints).")
flags.DEFINE_string("json", None, "Also write the figures to this JSON file.")
flags.DEFINE_integer("batch_size", 256, "Training examples used for gradients and saturation.")
flags.DEFINE_boolean("tf_verbose", False, "Show TensorFlow's C++ start-up messages.")
FLAGS = flags.FLAGS


def inspect_run(model_dir: str, batch_size: int = 256) -> dict:
    """Figures for the latest checkpoint of ``model_dir``.

    Returns:
      ``{"model_dir", "checkpoint", "global_step", "batch_size", "loss",
      "layers": [{"layer", "activation", "weight_shape", "weight_mean",
      "weight_std", "weight_min", "weight_max", "bias_mean", "distinct_units",
      "grad_l1", "grad_l2", "saturation"}]}``, layers first to last.

    Raises:
      UsageError: a missing or malformed run folder, or no usable checkpoint.
    """
    import tensorflow as tf

    from models import diagnostics
    from trainer.assembly import Run

    if batch_size < 1:
        raise UsageError(f"--batch_size={batch_size}: must be >= 1")
    if not model_dir or not os.path.isdir(model_dir):
        raise UsageError(f"--model_dir={model_dir}: no such run folder")
    run = Run(_saved_config(model_dir))
    path = run.checkpoints.restore_latest(
        only={"model": run.model, "global_step": run.trainer.global_step}
    )
    if path is None:
        raise UsageError(f"--model_dir={model_dir}: no checkpoint to inspect")
    x, y = run.source.sample(min(batch_size, run.source.num_train))
    x, y = tf.constant(x), tf.constant(y)
    loss, grads = run.trainer.loss_and_gradients(x, y)
    _, records = run.model.forward_with_activations(x, training=False)
    weights = [v.read_value() for v in run.model.trainable_variables]
    stats = diagnostics.layer_statistics(run.model, grads, weights, weights, records)
    activation_names = run.model.activation_names()
    layers = [
        _layer_figures(layer, activation_names[position], stats, position)
        for position, layer in enumerate(run.model.weighted_layers)
    ]
    return {
        "model_dir": model_dir,
        "checkpoint": path,
        "global_step": int(run.trainer.global_step.numpy()),
        "batch_size": int(x.shape[0]),
        "loss": float(loss),
        "layers": layers,
    }


def _saved_config(model_dir: str):
    """The run's own config.json, as on resume (it decides the network and data)."""
    from trainer import run_folder

    config_path = os.path.join(model_dir, "config.json")
    if not os.path.exists(config_path):
        raise UsageError(f"--model_dir={model_dir}: no config.json (not a run folder)")
    try:
        config = run_folder.merge_saved_config(
            config_lib.Config(mode="eval", model_dir=model_dir), explicit=set()
        )
    except (TypeError, ValueError, AttributeError) as error:
        if isinstance(error, UsageError):
            raise
        raise UsageError(f"{config_path}: malformed ({error})") from None
    return dataclasses.replace(config, summary_every=0)


def _layer_figures(layer, activation: str, stats: dict, position: int) -> dict:
    """One row of the table: the layer's weights and its figures on the batch."""
    import numpy as np

    w = layer.kernel.numpy()
    units = w.shape[-1]
    b = layer.bias.numpy() if layer.bias is not None else np.zeros(units, np.float32)
    return {
        "layer": layer.name,
        "activation": activation,
        "weight_shape": list(w.shape),
        "weight_mean": float(w.mean()),
        "weight_std": float(w.std()),
        "weight_min": float(w.min()),
        "weight_max": float(w.max()),
        "bias_mean": float(np.mean(b)),
        # a unit is a column of a dense matrix, a filter of a convolution
        "distinct_units": distinct_units(w.reshape(-1, units), b),
        "grad_l1": float(stats["gradient_l1"][position]),
        "grad_l2": float(stats["gradient_norm"][position]),
        "saturation": float(stats["saturation"][position]),
    }


def distinct_units(w, b, relative_tolerance: float = 1e-4) -> int:
    """How many units of a layer compute different functions.

    Units whose incoming weights ``w[:, j]`` and bias ``b[j]`` lie within
    ``relative_tolerance`` of the layer's largest weight of each other (joined
    transitively) count once: zero init leaves one distinct unit (the
    notebook's symmetry lesson), until rounding differences, which grow over
    training, split them.

    Args:
      w: ``[in, units]`` weights; b: ``[units]`` biases.
    """
    import numpy as np

    units = np.vstack([w, np.asarray(b)[None]]).T.astype(np.float64)  # [units, in + 1]
    scale = np.abs(units).max()
    if scale == 0:
        return 1
    squared = (units**2).sum(axis=1)
    distance2 = squared[:, None] + squared[None, :] - 2 * units @ units.T
    close = distance2 <= (relative_tolerance * scale) ** 2 * units.shape[1]
    groups, seen = 0, np.zeros(len(units), bool)
    for start in range(len(units)):
        if seen[start]:
            continue
        groups += 1
        frontier = [start]
        seen[start] = True
        while frontier:
            members = np.flatnonzero(close[frontier].any(axis=0) & ~seen)
            seen[members] = True
            frontier = list(members)
    return groups


def format_table(figures: dict) -> str:
    """The figures as a fixed-width table, one row per layer."""
    width = max([10, *(len(row["layer"]) for row in figures["layers"])])
    header = (
        f"{'layer':<{width}} {'act':<8} {'shape':>11} {'mean':>9} {'std':>9} {'min':>9} "
        f"{'max':>9} {'distinct':>8} {'grad L1':>10} {'grad L2':>10} {'saturated':>9}"
    )
    lines = [
        f"{figures['checkpoint']} (step {figures['global_step']}), "
        f"loss {figures['loss']:.4f} on {figures['batch_size']} training examples",
        header,
        "-" * len(header),
    ]
    for row in figures["layers"]:
        shape = "x".join(map(str, row["weight_shape"]))
        lines.append(
            f"{row['layer']:<{width}} {row['activation']:<8} {shape:>11} "
            f"{row['weight_mean']:>9.4f} {row['weight_std']:>9.4f} {row['weight_min']:>9.4f} "
            f"{row['weight_max']:>9.4f} "
            f"{row['distinct_units']:>8} {row['grad_l1']:>10.3g} {row['grad_l2']:>10.3g} "
            f"{row['saturation']:>9.1%}"
        )
    lines.append(
        "distinct: units with different incoming weights (to 1e-4); saturated: sigmoid/tanh "
        "outputs within 0.01 of a bound, or relu outputs at 0 (dead)"
    )
    return "\n".join(lines)


def main(argv) -> None:
    no_positional_arguments(argv)
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    try:
        if not FLAGS.model_dir:
            raise UsageError("--model_dir: required (a run folder to inspect)")
        from trainer import runtime

        runtime.import_tensorflow(verbose=FLAGS.tf_verbose)
        figures = inspect_run(FLAGS.model_dir, FLAGS.batch_size)
        print(format_table(figures))
        if FLAGS.json:
            from trainer.files import write_json

            write_json(FLAGS.json, figures)
            print(f"wrote {FLAGS.json}")
    except UsageError as error:
        fail(error)


def run_main() -> None:
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run_main()
