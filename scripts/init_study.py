"""The notebook's initialization experiment in one command.

The notebook ("a neural network from scratch with TensorFlow tensors") trains a
deep 784-500x6-10 sigmoid network. Initialised with U[0,1) weights, its units
saturate (a float32 sigmoid of a pre-activation above ~17 is exactly 1.0, so its
derivative is exactly 0), the first layer's gradient is exactly zero
(``sum(|grad|) == 0``) and the network does not learn; Xavier initialization
fixes it. This script runs that experiment for several initializers on the same
deep network (on digits, whose features are standardized, the first hidden
layer is only partly saturated, but every later one is saturated exactly):

* before training, on one fixed batch of training data: the loss, and per Dense
  layer with weights (``hidden_0 .. hidden_<depth-1>``, ``output``; ``conv_0 ..``
  with ``--model=cnn``) the L1 sum of the
  gradient (weights and bias) and the fraction of saturated units
  (``models.diagnostics.layer_statistics``);
* trains each initializer with the project's own trainer
  (``trainer.train_lib.run``) into ``<out_dir>/<init>``, so
  ``tensorboard --logdir <out_dir>`` shows the runs ``<init>/train`` and
  ``<init>/validation`` side by side, with the per-layer gradient and saturation
  scalars and histograms the trainer writes every ``--summary_every`` steps;
* the same figures after training, from the run's latest checkpoint on the
  same batch, plus the validation loss and accuracy from the run's results.json.

It prints one table per initializer and a summary, draws
``<out_dir>/init_study.png`` when matplotlib is installed (the ``plots`` extra),
and with ``--json`` writes every figure as JSON. Each ``<out_dir>/<init>`` is
cleared at the start, so a study can be rerun with other settings. The trainer's
progress lines are hidden unless ``--verbosity=0``; its warnings (vanishing
gradients) are shown.

Usage:
  python scripts/init_study.py
  python scripts/init_study.py --depth=3 --width=128 --steps=100 --inits=uniform,xavier
  python scripts/init_study.py --model=cnn --steps=100   # the same lesson on a CNN
  tensorboard --logdir runs/init_study
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from absl import app, flags, logging  # noqa: E402

from models import registry  # noqa: E402
from trainer import assembly, cli, errors, files  # noqa: E402
from trainer import config as config_lib  # noqa: E402
from trainer.data import SOURCES  # noqa: E402

INITS = registry.INITIALIZERS.names
# Classification datasets held in memory only: the study reports accuracy.
DATASETS = tuple(
    source.name for source in SOURCES if source.task == "classification" and not source.streaming
)
FIGURE_NAME = "init_study.png"
# What marks a folder as a trainer run folder (safe to clear).
RUN_FOLDER_ENTRIES = (
    "config.json", "results.json", "checkpoints", "train", "validation", "test", "export",
)  # fmt: skip
# The notebook's deep sigmoid network as a CNN: five 3x3 convolutions of 16
# filters, then a dense layer of 100 (on digits' 8x8 images, or MNIST's 28x28).
NOTEBOOK_CNN = ",".join(["conv3x3:16"] * 5 + ["flatten", "dense:100"])

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "inits", ["zeros", "uniform", "xavier", "he"], f"Initializers to compare: {', '.join(INITS)}."
)
flags.DEFINE_enum("model", "mlp", ("mlp", "cnn"), "An MLP (--depth, --width) or a CNN (--layers).")
flags.DEFINE_integer("depth", 6, "--model=mlp: hidden layers.", lower_bound=1)
flags.DEFINE_integer("width", 500, "--model=mlp: units per hidden layer.", lower_bound=1)
flags.DEFINE_string(
    "layers", NOTEBOOK_CNN, "--model=cnn: the trainer's --layers specification of the CNN."
)
flags.DEFINE_enum("activation", "sigmoid", registry.ACTIVATIONS.names, "Hidden activation.")
flags.DEFINE_enum("dataset", "digits", DATASETS, "Training data (as the trainer's --dataset).")
flags.DEFINE_string("data_dir", None, "Folder with the MNIST IDX files (--dataset=mnist).")
flags.DEFINE_string("csv_path", None, "Kaggle digit-recognizer CSV file (--dataset=csv).")
flags.DEFINE_integer("steps", 300, "Training steps per initializer.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Examples per training step.", lower_bound=1)
flags.DEFINE_enum("optimizer", "adam", registry.OPTIMIZERS.names, "Optimizer.")
flags.DEFINE_float("learning_rate", 0.001, "Step size.", lower_bound=0.0)
flags.DEFINE_integer(
    "stats_examples",
    512,
    "Training examples in the fixed batch the per-layer figures are computed on.",
    lower_bound=1,
)
flags.DEFINE_integer(
    "summary_every", 10, "TensorBoard cadence of the trainer in steps (0 = off).", lower_bound=0
)
flags.DEFINE_boolean("histograms", True, "Write weight/gradient/activation histograms.")
flags.DEFINE_enum("device", "auto", config_lib.DEVICES, "Where to run.")
flags.DEFINE_enum(
    "jit_compile", "auto", config_lib.JIT_CHOICES, "XLA for the training step (as the trainer's)."
)
flags.DEFINE_integer("seed", 0, "Seed of initialization, data split and order.")
flags.DEFINE_string("out_dir", os.path.join("runs", "init_study"), "One run folder per init here.")
flags.DEFINE_string("json", None, "Write all figures as JSON to this file.")
flags.DEFINE_boolean("plot", True, f"Draw <out_dir>/{FIGURE_NAME} (needs matplotlib).")
flags.DEFINE_boolean("tf_verbose", False, "Show TensorFlow's C++ start-up messages.")


def _known_inits(names) -> bool:
    return bool(names) and all(name in INITS for name in names)


flags.register_validator(
    "inits", _known_inits, message=f"give a comma list of initializers from: {', '.join(INITS)}"
)
flags.register_validator(
    "learning_rate", lambda value: value > 0, message="the learning rate must be > 0"
)


class StudyError(Exception):
    """Bad input or an unusable folder: one line on standard error, exit status 2."""


# -- configuration -------------------------------------------------------------------
def base_config() -> config_lib.Config:
    """The study's trainer configuration (init and model_dir filled in per init).

    Built through ``trainer.config.resolve`` so the trainer's own checks
    (data files, batch size, ...) apply with their messages.
    """
    defaults = dataclasses.asdict(config_lib.Config())
    values = {name: defaults[name] for name in config_lib.SETTING_NAMES}
    values.update(
        mode="train_and_eval",
        model_dir=FLAGS.out_dir,
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        csv_path=FLAGS.csv_path,
        model=FLAGS.model,
        hidden=",".join([str(FLAGS.width)] * FLAGS.depth),
        layers=FLAGS.layers if FLAGS.model == "cnn" else None,
        activation=FLAGS.activation,
        loss="cross_entropy",
        optimizer=FLAGS.optimizer,
        learning_rate=FLAGS.learning_rate,
        batch_size=FLAGS.batch_size,
        epochs=None,
        train_steps=FLAGS.steps,
        device=FLAGS.device,
        jit_compile=FLAGS.jit_compile,
        summary_every=FLAGS.summary_every,
        histograms=FLAGS.histograms,
        seed=FLAGS.seed,
    )
    return config_lib.resolve(values)


# Config fields the study sets: they win over anything saved (see train_lib.run).
EXPLICIT = {
    "mode",
    "model_dir",
    "dataset",
    "data_dir",
    "csv_path",
    "model",
    "hidden",
    "layers",
    "activation",
    "init",
    "loss",
    "optimizer",
    "learning_rate",
    "batch_size",
    "epochs",
    "train_steps",
    "device",
    "jit_compile",
    "summary_every",
    "histograms",
    "seed",
}


def check_clearable(path: str) -> bool:
    """Whether ``path`` exists and is a run folder the study may clear.

    Raises ``StudyError`` for a file, or a non-empty folder that is not a trainer
    run folder, rather than delete something the study did not write.
    """
    if not os.path.lexists(path):
        return False
    if not os.path.isdir(path) or os.path.islink(path):
        raise StudyError(f"--out_dir: {path} exists and is not a run folder; move it away")
    entries = os.listdir(path)
    if entries and not any(name in RUN_FOLDER_ENTRIES for name in entries):
        raise StudyError(
            f"--out_dir: {path} is not a trainer run folder (no config.json, checkpoints, "
            "train/); refusing to clear it, choose another --out_dir"
        )
    return True


def prepare_out_dir(inits: list[str]) -> list[str]:
    """Creates ``--out_dir`` and clears the runs of ``inits``; returns those cleared.

    Every folder is checked before any is removed.
    """
    try:
        os.makedirs(FLAGS.out_dir, exist_ok=True)
    except OSError as error:
        raise StudyError(f"--out_dir={FLAGS.out_dir}: cannot create ({error.strerror})") from None
    if not os.access(FLAGS.out_dir, os.W_OK | os.X_OK):
        raise StudyError(f"--out_dir={FLAGS.out_dir}: folder is not writable")
    existing = [init for init in inits if check_clearable(os.path.join(FLAGS.out_dir, init))]
    for init in existing:
        path = os.path.join(FLAGS.out_dir, init)
        try:
            shutil.rmtree(path)
        except OSError as error:
            raise StudyError(
                f"--out_dir: cannot clear {path} ({error.strerror or error})"
            ) from None
    return existing


def check_json_path(path: str) -> None:
    """Fails early (not after training) when ``--json`` cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise StudyError(f"--json={path}: is a folder, give a file name")
    files.writable_folder(folder, f"--json={path}: folder {folder}")


# -- the per-layer figures -----------------------------------------------------------
def layer_figures(run, x, y) -> dict:
    """Loss, per-layer gradient L1 sums and saturation of ``run.model`` on one batch."""
    import tensorflow as tf

    from models import diagnostics

    trainer, model = run.trainer, run.model
    x = tf.convert_to_tensor(x)
    loss, grads = trainer.loss_and_gradients(x, tf.convert_to_tensor(y))
    dtype = trainer.step_fns.compute_dtype
    _, records = model.forward_with_activations(tf.cast(x, dtype), training=False)
    weights = [tf.identity(v) for v in model.trainable_variables]
    stats = diagnostics.layer_statistics(model, grads, weights, weights, records)
    return {
        "layers": [layer.name for layer in model.weighted_layers],
        "loss": float(loss.numpy()),
        "grad_l1": [_finite(float(v)) for v in stats["gradient_l1"].numpy()],
        "saturation": [_finite(float(v)) for v in stats["saturation"].numpy()],
    }


def stats_batch(run):
    """The fixed batch the figures are computed on: the first training examples."""
    return run.source.sample(min(FLAGS.stats_examples, run.source.num_train))


def _finite(value):
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def study_one(config: config_lib.Config) -> dict:
    """At-init figures, training through the trainer, figures after training."""
    from trainer import train_lib

    initial = assembly.Run(config)
    x, y = stats_batch(initial)
    before = layer_figures(initial, x, y)
    del initial

    error = None
    started = time.perf_counter()
    try:
        results = train_lib.run(config, explicit=EXPLICIT)
    except errors.NonFiniteError as stopped:
        error, results = str(stopped), {}
    except errors.TrainingStopped:  # SIGINT/SIGTERM: the trainer saved and stopped
        raise KeyboardInterrupt from None
    seconds = time.perf_counter() - started

    trained = assembly.Run(config)
    path = trained.checkpoints.restore_latest(
        only={"model": trained.model, "global_step": trained.trainer.global_step}
    )
    after = layer_figures(trained, x, y) if path else None
    step = int(trained.trainer.global_step.numpy()) if path else 0
    return {
        "layers": before["layers"],
        "loss_at_init": _finite(before["loss"]),
        "grad_l1_at_init": before["grad_l1"],
        "saturation_at_init": before["saturation"],
        "grad_l1_after": after["grad_l1"] if after else None,
        "saturation_after": after["saturation"] if after else None,
        "train_loss_after": _finite(after["loss"]) if after else None,
        "final_loss": _finite(results.get("validation_loss")),
        "final_accuracy": _finite(results.get("validation_accuracy")),
        "steps": step,
        "train_seconds": round(seconds, 3),
        "model_dir": config.model_dir,
        "error": error,
    }


# -- output ----------------------------------------------------------------------------
def _number(value, digits: int = 3) -> str:
    """``0`` for an exact zero, else 3 significant digits; ``-`` when missing."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return f"{value:.{digits}g}"


def _fraction(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells):
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def network_label() -> str:
    """``6x500 sigmoid`` (MLP) or ``CNN conv3x3:16,... sigmoid``."""
    if FLAGS.model == "cnn":
        return f"CNN {FLAGS.layers} {FLAGS.activation}"
    return f"{FLAGS.depth}x{FLAGS.width} {FLAGS.activation}"


def format_report(results: dict, steps: int) -> str:
    blocks = []
    for init, figures in results.items():
        after = f"@{figures['steps'] or steps}"
        rows = []
        for i, layer in enumerate(figures["layers"]):
            grad_after = figures["grad_l1_after"][i] if figures["grad_l1_after"] else None
            sat_after = figures["saturation_after"][i] if figures["saturation_after"] else None
            rows.append(
                [
                    layer,
                    _number(figures["grad_l1_at_init"][i]),
                    _fraction(figures["saturation_at_init"][i]),
                    _number(grad_after),
                    _fraction(sat_after),
                ]
            )
        title = f"init={init}: validation loss {_number(figures['final_loss'], 4)}, "
        title += f"validation accuracy {_fraction(figures['final_accuracy'])}"
        title += f" after {figures['steps']} steps ({figures['train_seconds']:.1f}s)"
        if figures["error"]:
            title += f"\n  stopped: {figures['error']}"
        header = [
            "layer",
            "grad L1 @init",
            "saturated @init",
            f"grad L1 {after}",
            f"saturated {after}",
        ]
        blocks.append(title + "\n" + _table(header, rows))
    summary_rows = []
    for init, figures in results.items():
        first = figures["grad_l1_at_init"][0]
        summary_rows.append(
            [
                init,
                _number(first) + (" (exactly)" if first == 0 else ""),
                _number(figures["loss_at_init"], 4),
                _number(figures["final_loss"], 4),
                _fraction(figures["final_accuracy"]),
            ]
        )
    summary = _table(
        ["init", "hidden_0 grad L1 @init", "loss @init", "validation loss", "validation accuracy"],
        summary_rows,
    )
    return "\n\n".join([*blocks, "summary\n" + summary])


def draw_figure(results: dict, path: str) -> str | None:
    """Draws the per-layer figures to ``path``; returns a note if it could not."""
    try:
        import matplotlib
    except ImportError:
        return (
            "matplotlib is not installed: no figure "
            "(pip install matplotlib, or the project's 'plots' extra)"
        )
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    positives = [
        value
        for figures in results.values()
        for key in ("grad_l1_at_init", "grad_l1_after")
        for value in (figures[key] or [])
        if value is not None and value > 0
    ]
    # Exact zeros cannot sit on a log axis: they are drawn as triangles on a floor
    # a decade below the smallest non-zero value, nudged sideways per init.
    floor = 10 ** (math.floor(math.log10(min(positives))) - 1) if positives else 1e-12
    count = len(results)
    for number, (init, figures) in enumerate(results.items()):
        layers = figures["layers"]
        positions = list(range(len(layers)))
        nudge = 0.08 * (number - (count - 1) / 2)
        for row, (key, label) in enumerate(
            [("grad_l1", "gradient L1 sum"), ("saturation", "saturated fraction")]
        ):
            for column, suffix in enumerate(("at_init", "after")):
                values = figures[f"{key}_{suffix}"]
                if values is None:
                    continue
                values = [math.nan if v is None else v for v in values]  # non-finite: a gap
                axis = axes[row][column]
                if key == "grad_l1":
                    shown = [floor if v == 0 else v for v in values]
                    (line,) = axis.plot(positions, shown, marker="o", label=init)
                    zeros = [p + nudge for p, v in zip(positions, values) if v == 0]
                    axis.plot(
                        zeros,
                        [floor] * len(zeros),
                        linestyle="none",
                        marker="v",
                        markersize=9,
                        color=line.get_color(),
                    )
                    axis.set_yscale("log")
                else:
                    axis.plot(positions, values, marker="o", label=init)
                    axis.set_ylim(-0.05, 1.05)
                when = "at initialization" if suffix == "at_init" else "after training"
                axis.set_title(f"{label}, {when}")
                axis.set_xticks(positions, layers, rotation=30)
                axis.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("sum |grad| (log; \u25bc = exactly 0)")
    axes[1][0].set_ylabel("fraction of saturated units")
    axes[0][0].legend()
    figure.suptitle(
        f"{network_label()} network on {FLAGS.dataset}: "
        f"{FLAGS.optimizer} (learning rate {FLAGS.learning_rate:g}), batch {FLAGS.batch_size}, "
        f"{FLAGS.steps} steps"
    )
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=110)
    except OSError as error:
        return f"cannot write {path} ({error.strerror or error})"
    finally:
        plt.close(figure)
    return None


def write_json(path: str, payload: dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        with open(path, "w") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")
    except OSError as error:
        raise StudyError(f"--json={path}: cannot write ({error.strerror or error})") from None


# -- main --------------------------------------------------------------------------------
def main(argv) -> None:
    cli.no_positional_arguments(argv)
    logging.get_absl_handler().use_absl_log_file = False
    if not FLAGS["verbosity"].present:
        # The trainer's progress lines only on request (--verbosity=0); its
        # warnings (vanishing gradients, ...) still show.
        logging.set_verbosity(logging.WARNING)
    inits = list(dict.fromkeys(FLAGS.inits))
    try:
        config = base_config()
        if FLAGS.json:
            check_json_path(FLAGS.json)
        cleared = prepare_out_dir(inits)
        if cleared:
            print(f"cleared the previous runs {', '.join(cleared)} in {FLAGS.out_dir}", flush=True)
        from trainer import runtime

        runtime.import_tensorflow(verbose=FLAGS.tf_verbose)
        results = {}
        for init in inits:
            model_dir = os.path.join(FLAGS.out_dir, init)
            print(
                f"init={init}: training {network_label()} on "
                f"{FLAGS.dataset} for {FLAGS.steps} steps into {model_dir} ...",
                flush=True,
            )
            results[init] = figures = study_one(
                dataclasses.replace(config, init=init, model_dir=model_dir)
            )
            print(
                f"init={init}: trained and evaluated in {figures['train_seconds']:.1f}s: "
                f"validation loss {_number(figures['final_loss'], 4)}, validation accuracy "
                f"{_fraction(figures['final_accuracy'])}",
                flush=True,
            )
    except (config_lib.UsageError, StudyError) as error:  # checkpoint and data errors too
        cli.fail(error)
    except KeyboardInterrupt:
        cli.fail("interrupted", status=130)

    print()
    print(format_report(results, FLAGS.steps))
    print()
    if FLAGS.plot:
        path = os.path.join(FLAGS.out_dir, FIGURE_NAME)
        note = draw_figure(results, path)
        print(note or f"figure: {path}")
    if FLAGS.json:
        try:
            write_json(FLAGS.json, results)
        except StudyError as error:
            cli.fail(error)
        print(f"json: {FLAGS.json}")
    print(f"TensorBoard: tensorboard --logdir {FLAGS.out_dir}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
