"""Training speed: the notebook's eager loop vs this trainer vs Keras ``Model.fit``.

Every contender trains the identical network (same layers, same initial weights,
copied from one seeded from-scratch model), on the identical stream of batches
(``trainer.data.pipeline.train_dataset`` over the same synthetic data), with the
same batch size, loss and SGD learning rate. The trainer takes those batches the
way its command line does for data held in memory on one device
(``trainer.data.memory_batches.MemoryBatches``, gathered inside its compiled
loop, the same batches by construction); Keras takes the ``tf.data`` pipeline
(and so does the trainer's ``_tfdata`` A/B contender). The contenders live in
``scripts/contenders.py``:

* ``eager``: the notebook's loop, a Python ``for`` calling a ``GradientTape``
  step eagerly (no ``tf.function``), updating with ``assign_sub``.
* ``trainer``: ``trainer.engine.trainer.Trainer.run_steps`` for each combination of
  ``--steps_per_loop``, ``--xla`` and ``--precisions``.
* ``keras``: the same layers in Keras 3 (the from-scratch model translated layer
  by layer, its weights copied in), ``compile``d with each combination of
  ``--keras_steps_per_execution``, ``--keras_jit`` and ``--precisions``
  (``mixed_bfloat16`` layers for bfloat16), trained with ``fit``.

Any ``Sequential`` of the zoo works: MLPs take flat ``[n, D]`` data, image models
(``--preset=cnn``, the zoo's LeNet) ``[n, 28, 28, 1]``.

All contenders are built and warmed up first (the first call, tracing and
compiling included, is timed as ``time_to_first_step_s``); then ``--repeats``
rounds run every contender once for about ``--steps`` steps, round-robin with a
rotating start, so slow drifts of the machine hit all contenders alike. Each
contender's figure is the median over rounds, in examples per second of wall
time and in CPU microseconds per example (this process's CPU time, all threads:
much less disturbed than wall time by other programs on a shared machine).

Achieved GFLOP/s counts 3 x the forward FLOPs per example (backward 2 x forward):
forward is, over the layers with weights, 2 x kernel size x output positions (the
layer's output shape without its channel axis: 1 for a dense layer, H' x W' for a
convolution), i.e. about 6 x parameters for an MLP (biases aside).
``peak_fraction`` divides it by the best rate of a chain of square matmuls of that
precision, timed once per round between the contenders. ``ratio_vs_keras`` divides
by the fastest Keras configuration of the same precision.

Also measured: bfloat16 against float32 at ``--precision_batch_size`` (speed
ratio, and eval accuracy after the same training), and with
``--compare_devices`` the same training on every device TensorFlow sees.

Usage:
  python scripts/benchmark.py --preset=deep --batch_size=128 --repeats=5 --json=out.json
  python scripts/benchmark.py --preset=cnn --batch_size=64 --noprecision_check --json=cnn.json
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import sys
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from contenders import (  # noqa: E402
    PRESETS,
    EagerContender,
    InputPipeline,
    KerasContender,
    PeakMeter,
    TrainerContender,
    build_model,
    digits_data,
    fail,
    median,
    model_summary,
    synthetic_data,
    zoo_name,
)

from trainer import config as config_lib  # noqa: E402
from trainer import runtime, tf_internals, xla_policy  # noqa: E402
from trainer.data import memory_batches, pipeline, record_source  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "preset",
    "deep",
    list(PRESETS),
    "Network: tiny (64-32-10, tests), mlp 784-100-10, deep 784-500x6-10 (sigmoid hidden "
    "layers), cnn (the zoo's lenet on 28x28x1 images: conv5x5:6, maxpool2, conv5x5:16, "
    "maxpool2, dense 120, dense 84, with the preset's hidden activation), cifar_cnn and "
    "resnet20 (the zoo's presets on 32x32x3 images).",
)
flags.DEFINE_integer("batch_size", 128, "Examples per step, for every contender.", lower_bound=1)
flags.DEFINE_integer(
    "steps",
    100,
    "Timed steps per contender per round (rounded to a multiple of its steps per call).",
    lower_bound=1,
)
flags.DEFINE_integer("repeats", 5, "Timed rounds; figures are medians over rounds.", lower_bound=1)
flags.DEFINE_list("steps_per_loop", ["1", "100"], "Trainer steps per compiled call.")
flags.DEFINE_list("xla", ["false", "true"], "Trainer jit_compile values.")
flags.DEFINE_list("precisions", list(config_lib.PRECISIONS), "Compute dtypes (trainer and Keras).")
flags.DEFINE_list("keras_steps_per_execution", ["1", "100"], "Keras steps_per_execution values.")
flags.DEFINE_list("keras_jit", ["false", "true"], "Keras jit_compile values.")
flags.DEFINE_list(
    "contenders",
    ["eager", "trainer", "keras", "input"],
    "Which groups to run (input: the tf.data pipeline alone, as a ceiling).",
)
flags.DEFINE_float("learning_rate", 0.01, "SGD learning rate, for every contender.")
flags.DEFINE_integer("examples", 8192, "Synthetic training examples.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of data, initial weights and batch order.")
flags.DEFINE_integer(
    "matmul_size", 2048, "Side of the square matmuls that measure the peak.", lower_bound=16
)
flags.DEFINE_enum("device", "auto", config_lib.DEVICES, "Where to run (auto: GPU if any).")
flags.DEFINE_bool(
    "compare_devices",
    False,
    "Also time the trainer on every visible device and "
    "print the ratio (the notebook's GPU vs CPU comparison).",
)
flags.DEFINE_bool(
    "precision_check",
    True,
    "Train float32 and bfloat16 on the same data for the "
    "same steps; report speed ratio and eval accuracies.",
)
flags.DEFINE_integer(
    "precision_batch_size", 512, "Batch size of the precision check.", lower_bound=1
)
flags.DEFINE_integer("precision_steps", 1000, "Training steps of each precision.", lower_bound=1)
flags.DEFINE_enum(
    "precision_data",
    "digits",
    ["digits", "synthetic"],
    "Precision check data: scikit-learn digits (/16; zero-padded to the input size, or "
    "upscaled x3 and padded onto 28x28 images for image models) or synthetic.",
)
flags.DEFINE_string(
    "precision_optimizer",
    "adam",
    "Optimizer of the precision check (a name in "
    "models.registry.OPTIMIZERS); plain SGD leaves the deep sigmoid net near chance.",
)
flags.DEFINE_float("precision_learning_rate", 0.001, "Learning rate of the precision check.")
flags.DEFINE_integer(
    "summary_every",
    100,
    "Also time the trainer writing TensorBoard summaries every N steps (0: skip).",
    lower_bound=0,
)
flags.DEFINE_bool(
    "guard_ab",
    True,
    "Also time the trainer's default contender with its NaN/Inf guard off (A/B: what the "
    "guard costs).",
)
flags.DEFINE_bool(
    "input_ab",
    True,
    "Also time the trainer's default contender fed by the tf.data pipeline that Keras "
    "gets, instead of its in-graph batches (A/B: what gathering in the loop saves).",
)
flags.DEFINE_string("json", None, "Write all results to this JSON file.")
flags.DEFINE_string(
    "tfrecord_dir",
    None,
    "A folder written by python -m trainer.convert (or scripts/make_tfrecords.py) whose "
    "examples fit the preset: times its streaming pipeline alone, next to the trainer.",
)


def _bool(text: str, name: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    fail(f"--{name}: expected true or false, got {text!r}")


def _ints(values, name) -> list[int]:
    try:
        out = [int(v) for v in values]
    except ValueError:
        fail(f"--{name}: expected comma-separated integers")
    if not out or min(out) < 1:
        fail(f"--{name}: every value must be >= 1")
    return out


def machine_info(tf, device: str) -> dict:
    import keras

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if "model name" in line]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append(details.get("device_name", gpu.name))
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpus": gpus,
        "device": device,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf32_enabled": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
        "onednn": tf_internals.onednn_enabled(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def resolve_device(tf, requested: str, compare_devices: bool) -> str:
    """Applies ``--device`` before TensorFlow starts its devices; returns the device name."""
    gpus = tf.config.list_physical_devices("GPU")
    if requested == "gpu" and not gpus:
        fail("--device=gpu: TensorFlow sees no GPU on this machine")
    if requested == "cpu" and gpus and not compare_devices:
        tf.config.set_visible_devices([], "GPU")
    return "/GPU:0" if gpus and requested != "cpu" else "/CPU:0"


def tfrecord_dataset(ctx):
    """A function making the training stream of ``--tfrecord_dir`` for the preset's input."""
    import types

    options = types.SimpleNamespace(
        data_dir=FLAGS.tfrecord_dir,
        train_files=None,
        validation_files=None,
        test_files=None,
        shuffle_buffer=10_000,
    )
    try:
        source = record_source.RecordSource.open(options)
        if len(ctx["input_shape"]) == 3:
            source = source.as_images()
    except ValueError as error:  # DataError
        fail(str(error))
    if tuple(source.input_shape) != tuple(ctx["input_shape"]):
        fail(
            f"--tfrecord_dir={FLAGS.tfrecord_dir}: examples of shape {list(source.input_shape)}, "
            f"but --preset={FLAGS.preset} takes {list(ctx['input_shape'])}"
        )
    print(f"tfrecord pipeline: {source.description}")
    return lambda: source.pipeline(ctx["batch_size"], ctx["seed"])


def make_contenders(tf, ctx, groups, steps, precisions, steps_per_loop, xla, keras_spe, keras_jit):
    """Every requested contender once (values capped to ``steps`` can coincide)."""
    contenders = []
    if "input" in groups:
        contenders.append(InputPipeline(tf, ctx, steps))
    if FLAGS.tfrecord_dir:
        contenders.append(InputPipeline(tf, ctx, steps, "tfrecord_pipeline", tfrecord_dataset(ctx)))
    if "eager" in groups:
        contenders.append(EagerContender(tf, ctx, steps))
    for precision in precisions:
        if "trainer" in groups:
            for jit in xla:
                for spl in steps_per_loop:
                    contenders.append(TrainerContender(tf, ctx, steps, spl, jit, precision))
    default = ctx["default"]
    if "trainer" in groups and FLAGS.summary_every:
        # The cost of TensorBoard summaries at their cadence: compare with the
        # same contender without them (XLA as the command line resolves it).
        contenders.append(
            TrainerContender(
                tf,
                ctx,
                steps,
                max(steps_per_loop),
                default["jit_compile"],
                precisions[0],
                FLAGS.summary_every,
            )
        )
    # A/B pairs: the default contender, and the same with one setting changed.
    ab_pairs = []
    if FLAGS.guard_ab:  # what the NaN/Inf guard costs: the default without it
        ab_pairs.append({"guard": False})
    if FLAGS.input_ab:  # what the in-graph batches save: the default on tf.data
        ab_pairs.append({"tfdata": True})
    for variant in ab_pairs if "trainer" in groups else []:
        for settings in ({}, variant):
            contenders.append(
                TrainerContender(
                    tf,
                    ctx,
                    steps,
                    default["steps_per_loop"],
                    default["jit_compile"],
                    "float32",
                    **settings,
                )
            )
    for precision in precisions:
        if "keras" in groups:
            for jit in keras_jit:
                for spe in keras_spe:
                    contenders.append(KerasContender(tf, ctx, steps, spe, jit, precision))
    unique = {}
    for contender in contenders:
        unique.setdefault(contender.name, contender)
    return list(unique.values())


def default_settings(ctx, steps: int, steps_per_loop: list[int]) -> dict:
    """What ``python -m trainer.main`` runs by default, as contender settings:
    float32, the largest steps per call timed (a 1,000-step run makes calls of
    100), XLA as ``--jit_compile=auto`` decides for this network and device."""

    device = "gpu" if "GPU" in ctx["device"].upper() else "cpu"
    return {
        "steps_per_loop": min(max(steps_per_loop), steps),
        "jit_compile": xla_policy.auto_jit(
            device, ctx["convolutions"], "float32", tf_internals.onednn_enabled()
        ),
        "precision": "float32",
    }


def mark_default(rows: list[dict], default: dict) -> None:
    """Sets ``"default": true`` on the trainer row that runs the default settings
    (summaries off, guard on, in-graph batches), false on every other row."""
    for row in rows:
        row["default"] = bool(
            row["kind"] == "trainer"
            and row["precision"] == default["precision"]
            and row.get("steps_per_loop") == default["steps_per_loop"]
            and row.get("jit_compile") == default["jit_compile"]
            and not row.get("summary_every")
            and row.get("guard", True)
            and row.get("input", "memory") == "memory"
        )


def paired_ratio(row: dict, reference: dict, key: str = "examples_per_sec_all") -> float:
    """The median over rounds of ``row``'s figure / ``reference``'s in the same round.

    Both were timed in every round, one after the other, so a round's ratio sees
    one machine load; its median is steadier than the ratio of two medians when
    neighbours come and go.
    """
    ours, theirs = row[key], reference[key]
    if not ours or len(ours) != len(theirs):
        return math.nan
    return median([a / b for a, b in zip(ours, theirs)])


def _ab_pair(rows, setting: str, value, suffix: str):
    """The trainer row whose ``setting`` is ``value`` and the row of the same name
    without ``suffix`` (its A/B twin), or None."""
    by_name = {row["name"]: row for row in rows}
    for row in rows:
        if row["kind"] == "trainer" and row.get(setting) == value:
            base = row["name"].rsplit(suffix, 1)[0]
            if base in by_name:
                return by_name[base], row
    return None


def guard_cost(rows) -> dict | None:
    """Throughput lost to the NaN/Inf guard: 1 - (with / without), wall and CPU time,
    as the ratio of medians and paired per round (``paired_ratio``)."""
    pair = _ab_pair(rows, "guard", False, "_noguard")
    if pair is None:
        return None
    with_guard, row = pair
    cpu = "cpu_us_per_example_all"
    return {
        "with": with_guard["name"],
        "without": row["name"],
        "throughput_cost": 1 - with_guard["examples_per_sec"] / row["examples_per_sec"],
        "cpu_cost": with_guard["cpu_us_per_example"] / row["cpu_us_per_example"] - 1,
        "paired_throughput_cost": 1 - paired_ratio(with_guard, row),
        "paired_cpu_cost": paired_ratio(with_guard, row, cpu) - 1,
    }


def input_gain(rows) -> dict | None:
    """What the in-graph batches save against the tf.data pipeline, same settings:
    throughput gained and CPU per example saved, as the ratio of medians and
    paired per round (``paired_ratio``)."""
    pair = _ab_pair(rows, "input", "tf.data", "_tfdata")
    if pair is None:
        return None
    memory, row = pair
    cpu = "cpu_us_per_example_all"
    return {
        "memory": memory["name"],
        "tf.data": row["name"],
        "throughput_gain": memory["examples_per_sec"] / row["examples_per_sec"] - 1,
        "cpu_saving": 1 - memory["cpu_us_per_example"] / row["cpu_us_per_example"],
        "paired_throughput_gain": paired_ratio(memory, row) - 1,
        "paired_cpu_saving": 1 - paired_ratio(memory, row, cpu),
    }


def summaries_cost(rows) -> dict | None:
    """Throughput lost to in-graph summaries: 1 - (with / without), same settings."""
    by_name = {row["name"]: row for row in rows}
    for row in rows:
        if row["kind"] == "trainer" and row.get("summary_every"):
            base = row["name"].rsplit("_summaries", 1)[0]
            if base in by_name:
                without = by_name[base]["examples_per_sec"]
                return {
                    "summary_every": row["summary_every"],
                    "with": row["name"],
                    "without": base,
                    "throughput_cost": 1 - row["examples_per_sec"] / without,
                }
    return None


def run_rounds(contenders, repeats: int, log=print, between=None) -> None:
    """Round-robin timing with a rotating start; results go to ``contender.rounds``.

    ``between``, if given, is called at the start of every round (the peak meter).
    """
    for index in range(repeats):
        if between is not None:
            between()
        if not contenders:
            continue
        shift = index % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            contender.rounds.append(contender.timed())
        log(f"  round {index + 1}/{repeats} done")


def summarize(contender, batch_size: int, flops_per_example: float, peaks: dict) -> dict:
    rates = [batch_size * steps / wall for wall, steps, _ in contender.rounds if wall > 0]
    eps = median(rates)
    # CPU time is far less sensitive than wall time to other processes on the machine.
    cpu_us = [1e6 * cpu / (batch_size * steps) for _, steps, cpu in contender.rounds if steps]
    gflops = flops_per_example * eps / 1e9
    peak = peaks.get(contender.precision, {}).get("gflops", math.nan)
    return {
        "name": contender.name,
        "kind": contender.kind,
        "precision": contender.precision,
        **contender.settings,
        "steps_timed": contender.rounds[0][1] if contender.rounds else 0,
        "examples_per_sec": eps,
        "examples_per_sec_all": rates,
        "cpu_us_per_example": median(cpu_us),
        "cpu_us_per_example_all": cpu_us,
        "gflops": gflops,
        "peak_fraction": gflops / peak if peak else math.nan,
        "time_to_first_step_s": contender.time_to_first_step_s,
        "traces": contender.traces(),
    }


def add_keras_ratios(rows: list[dict]) -> dict:
    """Sets ``ratio_vs_keras`` against the fastest Keras row of the same precision."""
    best = {}
    for row in rows:
        if row["kind"] == "keras":
            current = best.get(row["precision"])
            if current is None or row["examples_per_sec"] > current["examples_per_sec"]:
                best[row["precision"]] = row
    for row in rows:
        reference = best.get(row["precision"]) or best.get("float32")
        row["keras_reference"] = reference["name"] if reference else None
        row["ratio_vs_keras"] = (
            row["examples_per_sec"] / reference["examples_per_sec"] if reference else None
        )
        row["ratio_vs_keras_paired"] = paired_ratio(row, reference) if reference else None
    return {precision: row["name"] for precision, row in best.items()}


def _precision_data(ctx, args):
    """``(x_train, x_eval, y_train, y_eval)`` of the precision check."""
    if args["data"] == "digits":
        return digits_data(ctx["input_shape"], ctx["seed"])
    held_out = max(2048, ctx["examples"] // 4)
    x, y = synthetic_data(
        ctx["examples"] + held_out, ctx["input_shape"], ctx["classes"], ctx["seed"]
    )
    return x[:-held_out], x[-held_out:], y[:-held_out], y[-held_out:]


def _precision_runs(tf, ctx, args, x_train, y_train, batch, jit) -> dict:
    """One trainer per precision, from the same weights, warmed up by one step."""
    from models import optimizers
    from trainer.engine.evaluator import Evaluator
    from trainer.engine.trainer import Trainer

    runs = {}
    for precision in ("float32", "bfloat16"):
        trainer = Trainer(
            build_model(ctx["preset"], ctx["seed"]),
            optimizers.get(args["optimizer"], args["learning_rate"]),
            global_batch_size=batch,
            compute_dtype=tf.as_dtype(precision),
            jit_compile=jit,
        )
        evaluator = Evaluator(
            trainer.step_fns.forward, trainer.objective, trainer.strategy, ctx["classes"]
        )
        iterator = iter(pipeline.train_dataset(x_train, y_train, batch, ctx["seed"]))
        begin = time.perf_counter()
        trainer.run_steps(iterator, 1)
        trainer.global_step.numpy()
        runs[precision] = {
            "trainer": trainer,
            "evaluator": evaluator,
            "iterator": iterator,
            "rates": [],
            "time_to_first_step_s": time.perf_counter() - begin,
        }
    return runs


def _precision_scores(tf, runs, x_eval, y_eval) -> tuple[dict, dict]:
    """Per precision its figures and which eval examples it got right."""
    figures, correct = {}, {}
    for precision, run in runs.items():
        metrics = run["evaluator"].evaluate(pipeline.eval_dataset(x_eval, y_eval))
        logits = run["trainer"].step_fns.forward(tf.constant(x_eval)).numpy()
        correct[precision] = np.argmax(logits, axis=1) == y_eval
        figures[precision] = {
            "examples_per_sec": median(run["rates"]),
            "examples_per_sec_all": run["rates"],
            "time_to_first_step_s": run["time_to_first_step_s"],
            "accuracy": 100.0 * metrics["accuracy"],
            "loss": metrics["loss"],
        }
    return figures, correct


def _accuracy_difference(result: dict, correct: dict, n: int) -> None:
    """The bfloat16 - float32 accuracy difference and its paired standard error."""
    difference = result["bfloat16"]["accuracy"] - result["float32"]["accuracy"]
    result["accuracy_difference_points"] = difference
    result["within_0_5_points"] = bool(abs(difference) <= 0.5)
    # Both models score the same examples: only those where exactly one is right count.
    only_bf16 = int(np.sum(correct["bfloat16"] & ~correct["float32"]))
    only_fp32 = int(np.sum(correct["float32"] & ~correct["bfloat16"]))
    variance = (only_bf16 + only_fp32 - (only_bf16 - only_fp32) ** 2 / n) / n**2
    result["disagreements"] = {"only_bfloat16_right": only_bf16, "only_float32_right": only_fp32}
    result["accuracy_difference_se_points"] = 100.0 * math.sqrt(max(variance, 0.0))
    result["points_per_eval_example"] = 100.0 / n


def precision_check(tf, ctx, args) -> dict:
    """Trains float32 and bfloat16 from the same weights on the same batches; times and scores."""
    x_train, x_eval, y_train, y_eval = _precision_data(ctx, args)
    batch = pipeline.effective_batch_size(args["batch_size"], len(x_train))
    jit = ctx["device"].startswith("/GPU")  # the trainer's own default
    chunk = max(1, math.ceil(args["steps"] / args["repeats"]))
    steps_per_loop = min(chunk, max(ctx["steps_per_loop"]))
    calls = max(1, round(chunk / steps_per_loop))
    with tf.device(ctx["device"]):
        runs = _precision_runs(tf, ctx, args, x_train, y_train, batch, jit)
        for index in range(args["repeats"]):
            order = ("float32", "bfloat16") if index % 2 == 0 else ("bfloat16", "float32")
            for precision in order:
                run = runs[precision]
                begin = time.perf_counter()
                for _ in range(calls):
                    run["trainer"].run_steps(run["iterator"], steps_per_loop)
                run["trainer"].global_step.numpy()
                seconds = time.perf_counter() - begin
                run["rates"].append(batch * calls * steps_per_loop / seconds)
        figures, correct = _precision_scores(tf, runs, x_eval, y_eval)
    result = {
        "batch_size": batch,
        "steps": 1 + args["repeats"] * calls * steps_per_loop,
        "steps_per_loop": steps_per_loop,
        "jit_compile": jit,
        "data": args["data"],
        "optimizer": args["optimizer"],
        "learning_rate": args["learning_rate"],
        "train_examples": len(x_train),
        "eval_examples": len(x_eval),
        **figures,
    }
    result["speed_ratio"] = result["bfloat16"]["examples_per_sec"] / max(
        result["float32"]["examples_per_sec"], 1e-12
    )
    _accuracy_difference(result, correct, len(y_eval))
    return result


# -- devices --------------------------------------------------------------------------------
def compare_devices(tf, ctx, steps: int, repeats: int, log=print) -> dict:
    """The trainer (float32, largest steps_per_loop, XLA as its default) on every device."""
    names = [d.name for d in tf.config.list_logical_devices("CPU")[:1]]
    names += [d.name for d in tf.config.list_logical_devices("GPU")]
    note = None
    if not any("GPU" in name for name in names):
        note = "no GPU visible to TensorFlow: timed the CPU alone"
        log(note)
    contenders = []
    for name in names:
        device_ctx = dict(ctx, device=name)
        jit = "GPU" in name
        contender = TrainerContender(
            tf, device_ctx, steps, max(ctx["steps_per_loop"]), jit, "float32"
        )
        contender.name = f"{contender.name}@{name}"
        contender.start()
        contenders.append(contender)
    run_rounds(contenders, repeats, log)
    rows = []
    for name, contender in zip(names, contenders):
        row = summarize(contender, ctx["batch_size"], ctx["flops_per_example"], {})
        rows.append(
            {
                "device": name,
                "examples_per_sec": row["examples_per_sec"],
                "examples_per_sec_all": row["examples_per_sec_all"],
                "jit_compile": contender.jit,
                "time_to_first_step_s": contender.time_to_first_step_s,
            }
        )
    gpu_rows = [row for row in rows if "GPU" in row["device"]]
    ratio = gpu_rows[0]["examples_per_sec"] / rows[0]["examples_per_sec"] if gpu_rows else None
    return {"devices": rows, "gpu_vs_cpu_ratio": ratio, "note": note}


# -- output ---------------------------------------------------------------------------------
def _fmt(value, spec):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'contender':<32} {'examples/s':>11} {'min..max':>17} {'CPU us/ex':>9} "
        f"{'GFLOP/s':>8} {'% peak':>7} {'x keras':>8} {'paired':>7} {'1st step s':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        rates = row["examples_per_sec_all"]
        spread = f"{min(rates):.0f}..{max(rates):.0f}" if rates else "-"
        print(
            f"{row['name']:<32} {_fmt(row['examples_per_sec'], '11.0f')} {spread:>17} "
            f"{_fmt(row['cpu_us_per_example'], '9.2f')} {_fmt(row['gflops'], '8.2f')} "
            f"{_fmt(100 * row['peak_fraction'], '7.1f')} {_fmt(row['ratio_vs_keras'], '8.2f')} "
            f"{_fmt(row['ratio_vs_keras_paired'], '7.2f')} "
            f"{_fmt(row['time_to_first_step_s'], '10.2f')}"
        )


def print_precision(result: dict) -> None:
    for precision in ("float32", "bfloat16"):
        part = result[precision]
        print(
            f"  {precision:<9} {part['examples_per_sec']:10.0f} examples/s, "
            f"eval accuracy {part['accuracy']:.2f}%"
        )
    print(
        f"  bfloat16/float32 speed {result['speed_ratio']:.2f}x, accuracy "
        f"difference {result['accuracy_difference_points']:+.2f} "
        f"+- {result['accuracy_difference_se_points']:.2f} points "
        f"(within 0.5: {result['within_0_5_points']}; one of the "
        f"{result['eval_examples']} eval examples is "
        f"{result['points_per_eval_example']:.2f} points)"
    )


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _options(argv) -> types.SimpleNamespace:
    """The flags checked, as plain values; one line and status 2 when one is bad."""
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    for precision in FLAGS.precisions:
        if precision not in config_lib.PRECISIONS:
            fail(f"--precisions: {precision!r} is not {' or '.join(config_lib.PRECISIONS)}")
    groups = set(FLAGS.contenders)
    if not groups <= {"eager", "trainer", "keras", "input"}:
        fail("--contenders: choose from eager, trainer, keras, input")
    from models import registry

    if FLAGS.precision_optimizer not in registry.OPTIMIZERS:
        fail(
            f"--precision_optimizer: unknown {FLAGS.precision_optimizer!r}; choose one of "
            f"{', '.join(registry.OPTIMIZERS.names)}"
        )
    return types.SimpleNamespace(
        steps_per_loop=_ints(FLAGS.steps_per_loop, "steps_per_loop"),
        keras_spe=_ints(FLAGS.keras_steps_per_execution, "keras_steps_per_execution"),
        xla=[_bool(v, "xla") for v in FLAGS.xla],
        keras_jit=[_bool(v, "keras_jit") for v in FLAGS.keras_jit],
        precisions=FLAGS.precisions,
        groups=groups,
    )


def _convolutions() -> bool:
    """Whether the preset has convolutions, as --jit_compile=auto reads it."""
    name = zoo_name(FLAGS.preset)
    if name is not None:
        return xla_policy.uses_convolutions(name)
    return xla_policy.uses_convolutions("mlp", hidden=PRESETS[FLAGS.preset][1])


def _context(tf, options) -> tuple[dict, dict, dict]:
    """``(ctx, model figures, machine facts)``: what every contender shares."""
    device = resolve_device(tf, FLAGS.device, FLAGS.compare_devices)
    tf.random.set_seed(FLAGS.seed)
    network = build_model(FLAGS.preset, FLAGS.seed)
    model_info = model_summary(network)
    x, y = synthetic_data(FLAGS.examples, network.input_shape, model_info["classes"], FLAGS.seed)
    batch_size = pipeline.effective_batch_size(FLAGS.batch_size, len(x))
    ctx = {
        "preset": FLAGS.preset,
        "input_shape": tuple(network.input_shape),
        "classes": model_info["classes"],
        "seed": FLAGS.seed,
        "device": device,
        "batch_size": batch_size,
        "learning_rate": FLAGS.learning_rate,
        "examples": FLAGS.examples,
        "params": model_info["params"],
        "flops_per_example": model_info["flops_per_example"],
        "convolutions": _convolutions(),
        "steps_per_loop": options.steps_per_loop,
        "dataset": lambda: pipeline.train_dataset(x, y, batch_size, FLAGS.seed),
        "batches": lambda: memory_batches.MemoryBatches(x, y, batch_size, FLAGS.seed),
    }
    ctx["default"] = default_settings(ctx, FLAGS.steps, options.steps_per_loop)
    print(
        f"benchmark: {FLAGS.preset} {network.describe()}, {model_info['params']} parameters, "
        f"{model_info['flops_per_example'] / 1e6:.3g} MFLOP per example trained, "
        f"batch {batch_size}, on {device}"
    )
    info = machine_info(tf, device)
    print(
        f"machine: {info['cpu']} x{info['cpu_count']}, GPUs {info['gpus'] or 'none'}, "
        f"TF {info['tensorflow']}, Keras {info['keras']}, "
        f"oneDNN {'on' if info['onednn'] else 'off'}, load {info['loadavg_start']}"
    )
    return ctx, model_info, info


def _time(tf, ctx, contenders) -> dict:
    """Warms every contender up, times the rounds; the peaks and the table's rows."""
    meter = PeakMeter(tf, ctx["device"], FLAGS.matmul_size)
    print(f"building and warming up {len(contenders)} contenders ...")
    for contender in contenders:
        contender.start()
        print(f"  {contender.name}: first step after {contender.time_to_first_step_s:.2f} s")
    print(f"timing {FLAGS.repeats} rounds of ~{FLAGS.steps} steps each, round-robin ...")
    run_rounds(contenders, FLAGS.repeats, between=meter.sample)
    peaks = meter.result()
    for name, peak in peaks.items():
        print(
            f"{FLAGS.matmul_size}x{FLAGS.matmul_size} {name} matmul: best "
            f"{peak['gflops']:.1f} GFLOP/s, median {peak['gflops_median']:.1f}"
        )
    flops = ctx["flops_per_example"]
    rows = [summarize(c, ctx["batch_size"], flops, peaks) for c in contenders if c.kind != "input"]
    keras_best = add_keras_ratios(rows)
    mark_default(rows, ctx["default"])
    print()
    print_table(rows)
    for row in rows:
        if row["default"]:
            print(f"the trainer's default settings: {row['name']}")
    return {"peaks": peaks, "contenders": rows, "keras_best": keras_best}


def _report_pairs(rows) -> dict:
    """The guard's cost, the in-graph batches' gain and the summaries' cost, printed."""
    guard, gain, summary_cost = guard_cost(rows), input_gain(rows), summaries_cost(rows)
    if guard:
        print(
            f"the NaN/Inf guard costs {100 * guard['throughput_cost']:.1f}% of throughput "
            f"({100 * guard['paired_throughput_cost']:.1f}% paired per round), "
            f"{100 * guard['cpu_cost']:.1f}% more CPU per example "
            f"({guard['with']} vs {guard['without']})"
        )
    if gain:
        print(
            f"in-graph batches: {100 * gain['throughput_gain']:.1f}% more throughput "
            f"({100 * gain['paired_throughput_gain']:.1f}% paired per round), "
            f"{100 * gain['cpu_saving']:.1f}% less CPU per example than tf.data "
            f"({gain['memory']} vs {gain['tf.data']})"
        )
    if summary_cost:
        print(
            f"TensorBoard summaries every {summary_cost['summary_every']} steps cost "
            f"{100 * summary_cost['throughput_cost']:.1f}% of throughput "
            f"({summary_cost['with']} vs {summary_cost['without']})"
        )
    return {"summaries_cost": summary_cost, "guard_cost": guard, "input_gain": gain}


def _report_pipelines(ctx, contenders, rows) -> dict:
    """The input pipelines drained alone, printed against the fastest trainer."""
    batch_size = ctx["batch_size"]
    figures = {"input_pipeline": None, "tfrecord_pipeline": None}
    trainer_best = max(
        (row["examples_per_sec"] for row in rows if row["kind"] == "trainer"), default=None
    )
    for contender in contenders:
        if contender.kind != "input":
            continue
        result = summarize(contender, batch_size, ctx["flops_per_example"], {})
        result = {
            key: result[key]
            for key in ("examples_per_sec", "examples_per_sec_all", "cpu_us_per_example")
        }
        result["batches_per_sec"] = result["examples_per_sec"] / batch_size
        ratio = ""
        if trainer_best:
            result["ratio_vs_trainer"] = result["examples_per_sec"] / trainer_best
            ratio = f", {result['ratio_vs_trainer']:.1f}x the fastest trainer contender"
        label = "input pipeline" if contender.name == "input_pipeline" else "TFRecord stream"
        print(
            f"{label} alone: {result['examples_per_sec']:.0f} examples/s "
            f"({result['batches_per_sec']:.0f} batches/s, "
            f"{result['cpu_us_per_example']:.2f} CPU us/example{ratio})"
        )
        figures[contender.name] = result
    return figures


def _extra_checks(tf, ctx) -> dict:
    """The precision check and the device comparison, when asked for."""
    figures = {"precision": None, "compare_devices": None}
    if FLAGS.precision_check:
        print(
            f"\nprecision check: float32 vs bfloat16 at batch {FLAGS.precision_batch_size}, "
            f"{FLAGS.precision_steps} steps on {FLAGS.precision_data} ..."
        )
        arguments = {
            "batch_size": FLAGS.precision_batch_size,
            "steps": FLAGS.precision_steps,
            "repeats": FLAGS.repeats,
            "data": FLAGS.precision_data,
            "optimizer": FLAGS.precision_optimizer,
            "learning_rate": FLAGS.precision_learning_rate,
        }
        figures["precision"] = precision_check(tf, ctx, arguments)
        print_precision(figures["precision"])
    if FLAGS.compare_devices:
        print("\ncomparing devices ...")
        devices = compare_devices(tf, ctx, FLAGS.steps, FLAGS.repeats)
        for row in devices["devices"]:
            print(f"  {row['device']:<28} {row['examples_per_sec']:10.0f} examples/s")
        if devices["gpu_vs_cpu_ratio"] is not None:
            print(f"  GPU/CPU speed ratio {devices['gpu_vs_cpu_ratio']:.2f}x")
        figures["compare_devices"] = devices
    return figures


def _write_json(tf, ctx, model_info, info, figures) -> None:
    info["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    rows = figures["contenders"]
    result = {
        "command": " ".join(["python", "scripts/benchmark.py", *map(shlex.quote, sys.argv[1:])]),
        "config": {
            "preset": FLAGS.preset,
            "batch_size": ctx["batch_size"],
            "steps": FLAGS.steps,
            "repeats": FLAGS.repeats,
            "learning_rate": FLAGS.learning_rate,
            "examples": FLAGS.examples,
            "seed": FLAGS.seed,
        },
        "model": model_info,
        "machine": info,
        "devices": [d.name for d in tf.config.list_logical_devices()],
        **figures,
        "time_to_first_step_s": {
            row["name"]: row["time_to_first_step_s"] for row in rows if row["kind"] == "trainer"
        },
    }
    folder = os.path.dirname(os.path.abspath(FLAGS.json))
    os.makedirs(folder, exist_ok=True)
    with open(FLAGS.json, "w") as handle:
        json.dump(_json_safe(result), handle, indent=2)
    print(f"\nwrote {FLAGS.json}")


def main(argv):
    options = _options(argv)
    tf = runtime.import_tensorflow()
    # Every contender builds its own tf.functions on purpose; TensorFlow would warn about
    # "retracing" across them. Real retracing is caught by the per-program trace counts.
    tf.get_logger().setLevel("ERROR")
    ctx, model_info, info = _context(tf, options)
    contenders = make_contenders(
        tf, ctx, options.groups, FLAGS.steps, options.precisions, options.steps_per_loop,
        options.xla, options.keras_spe, options.keras_jit,
    )  # fmt: skip
    figures = _time(tf, ctx, contenders)
    figures.update(_report_pairs(figures["contenders"]))
    figures.update(_report_pipelines(ctx, contenders, figures["contenders"]))
    figures.update(_extra_checks(tf, ctx))
    if FLAGS.json:
        _write_json(tf, ctx, model_info, info, figures)
    for contender in contenders:
        writer = getattr(contender, "writer", None)
        if writer is not None:
            writer.flush()
    _exit_now()


def _exit_now(status: int = 0) -> None:
    """Ends the process without Python's final clean-up, once everything is written.

    At interpreter exit TensorFlow destroys every contender's ``tf.data`` iterator,
    and a destruction can wait for that iterator's autotuning thread to wake up: from
    0 to 2 minutes in all (TensorFlow 2.21, CPU) after the benchmark is done.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    app.run(main)
