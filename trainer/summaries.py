"""TensorBoard: the train, validation and test writers, hyperparameters, the step's graph, the
controller's scalars and confusion matrices, and the diagnostic steps' per-layer
figures and histograms (``step_summary_fn``), all through ``tf.summary``.

Without a summary folder the writers are no-op writers, so callers never branch.
"""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np
import tensorflow as tf

SPLITS = ("train", "validation", "test")
HPARAMS_PREFIX = "hparams/"


def metric_names(classification: bool) -> list[str]:
    """The figures the HParams dashboard compares, the one that chose the model first."""
    if classification:
        return ["best_validation_accuracy", "validation_accuracy", "validation_loss",
                "test_accuracy", "test_loss", "train_loss"]  # fmt: skip
    return ["best_validation_loss", "validation_rmse", "validation_loss", "test_rmse",
            "test_mae", "test_r2", "train_loss"]  # fmt: skip


def custom_scalars_layout(classification: bool):
    """The Custom Scalars dashboard's layout (a ``Summary`` protobuf): the train,
    validation and test curves of each figure in one chart, with the learning
    rate and the speed beside them."""
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.custom_scalar import summary as custom_scalar

    figure = ("accuracy", "loss") if classification else ("rmse", "loss", "mae", "r2")
    charts = [(name, [f"^{name}$"]) for name in figure]
    charts += [("learning rate", ["^learning_rate$"]), ("examples/s", ["^examples_per_sec$"])]
    category = layout_pb2.Category(
        title="train, validation and test",
        chart=[
            layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=tags))
            for title, tags in charts
        ],
    )
    return custom_scalar.pb(layout_pb2.Layout(category=[category]))


def hparam_values(config) -> dict:
    """The settings HParams shows for a run: ``{name: str | float | int}``."""
    values = {
        "dataset": config.dataset,
        "model": config.model,
        "hidden": ",".join(map(str, config.hidden)) if config.model == "mlp" else "-",
        "layers": config.layers or "-",
        "activation": config.activation,
        "init": config.init,
        "loss": config.loss,
        "optimizer": config.optimizer,
        "learning_rate": float(config.learning_rate),
        "lr_schedule": config.lr_schedule,
        "warmup_steps": str(config.warmup_steps),
        "weight_decay": float(config.weight_decay),
        "label_smoothing": float(config.label_smoothing),
        "batch_size": str(config.batch_size),  # a number would show as 64.000
        "precision": config.precision,
        "seed": str(config.seed),
    }
    return values


class Writers:
    """``train``, ``validation`` and ``test`` summary writers under ``model_dir``.

    Args:
      model_dir: the run folder; events go to ``train/``, ``validation/`` and ``test/``.
      enabled: ``False`` gives no-op writers (``--summary_every=0``, or a
        non-chief worker).
      class_names: the labels of the confusion matrix's classes (default the ids).
    """

    def __init__(self, model_dir: str, enabled: bool, class_names=None):
        self.model_dir = model_dir
        self.enabled = enabled
        self.class_names = class_names
        for split in SPLITS:
            writer = (
                tf.summary.create_file_writer(os.path.join(model_dir, split))
                if enabled
                else tf.summary.create_noop_writer()
            )
            setattr(self, split, writer)
        # The run folder's root: the HParams session and the figures it compares.
        self.root = (
            tf.summary.create_file_writer(model_dir) if enabled else tf.summary.create_noop_writer()
        )

    def scalars(self, writer, step: int, values: dict) -> None:
        """Writes finite ``{tag: value}`` scalars eagerly at ``step``."""
        if not self.enabled:
            return
        with writer.as_default():
            for tag, value in values.items():
                if value is not None and math.isfinite(value):
                    tf.summary.scalar(tag, value, step=step)

    def hparams(self, config) -> None:
        """Records the run's hyperparameters for TensorBoard's HParams dashboard.

        The session is the run folder's root, and so are its metrics
        (``hparams_figures``: ``hparams/best_validation_accuracy`` and the like,
        group ``""``), so the dashboard finds them whether TensorBoard is opened
        on this folder (the run is then ".") or on a folder of runs. The
        per-layer diagnostics are not metrics and stay out of its columns.
        """
        if not self.enabled:
            return
        from tensorboard.plugins.hparams import api as hp

        values = hparam_values(config)
        # The dashboard's columns (it shows the first few, sorted by name): what
        # defines this network and its training; every setting stays in the session.
        network = "hidden" if config.model == "mlp" else "layers"
        shown = [network, "activation", "init", "optimizer", "learning_rate", "batch_size",
                 "lr_schedule", "weight_decay", "model", "seed"]  # fmt: skip
        metrics = [
            hp.Metric(f"{HPARAMS_PREFIX}{name}", group="", display_name=name.replace("_", " "))
            for name in metric_names(config.loss == "cross_entropy")
        ]
        with self.root.as_default():
            hp.hparams_config(hparams=[hp.HParam(name) for name in shown], metrics=metrics)
            hp.hparams(values, trial_id=os.path.basename(os.path.abspath(config.model_dir)))
            layout = custom_scalars_layout(config.loss == "cross_entropy")
            tf.summary.experimental.write_raw_pb(layout.SerializeToString(), step=0)
        self.root.flush()

    def hparams_figures(self, step: int, figures: dict) -> None:
        """Writes ``{name: value}`` (names of ``metric_names``) where HParams reads them."""
        self.scalars(
            self.root, step, {f"{HPARAMS_PREFIX}{name}": value for name, value in figures.items()}
        )

    def confusion(self, writer, step: int, matrix) -> None:
        """Writes an evaluation's confusion matrix as an image and its per-class accuracy.

        Args:
          writer: the split's writer (``validation`` or ``test``).
          matrix: ``[C, C]`` counts of (true class, predicted class).
        """
        if not self.enabled:
            return
        class_names = self.class_names
        matrix = np.asarray(matrix, np.float64)
        totals = matrix.sum(axis=1)
        accuracy = np.divide(
            np.diag(matrix), totals, out=np.full(len(totals), np.nan), where=totals > 0
        )
        names = [str(n) for n in (class_names or range(len(matrix)))]
        with writer.as_default():
            tf.summary.image(
                "confusion_matrix",
                confusion_picture(matrix, names)[None],
                step=step,
                description="rows: true class, columns: predicted class; numbers: examples; "
                "shade: share of the row (the colour bar)",
            )
            rows = ["| class | accuracy | examples |", "|---|---:|---:|"]
            rows += [
                f"| {name} | {value:.4f} | {int(total)} |"
                for name, value, total in zip(names, accuracy, totals, strict=True)
            ]
            tf.summary.text("per_class_accuracy", "\n".join(rows), step=step)
            if len(names) <= MAX_CLASS_SCALARS:
                for name, value in zip(names, accuracy, strict=True):
                    if math.isfinite(value):
                        tf.summary.scalar(f"per_class_accuracy/{name}", value, step=step)

    def flush(self) -> None:
        if self.enabled:
            for split in (*SPLITS, "root"):
                getattr(self, split).flush()

    @contextlib.contextmanager
    def graph_trace(self):
        """Puts the graph of what runs inside (the first compiled training call) in
        the Graphs dashboard: ``tf.summary.trace_on`` before, ``trace_export`` after."""
        if not self.enabled:
            yield
            return
        tf.summary.trace_on(graph=True, profiler=False)
        try:
            yield
        finally:
            with self.train.as_default():
                tf.summary.trace_export(name="train_loop", step=0)


MAX_CLASS_SCALARS = 20  # more classes: the text table and the image only


_MAX_ANNOTATED = 30  # more classes: shades and the colour bar only, no numbers


def confusion_picture(matrix, names) -> np.ndarray:
    """The confusion matrix as TensorBoard's guide draws it, with matplotlib: class
    names on both axes, the count in each cell, shaded by its share of the row
    with a colour bar; uint8 RGB ``[H, W, 3]``. Without matplotlib (the optional
    ``plots`` extra) the plain heat map of ``confusion_image``, said once in the log."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        _say_once("matplotlib is not installed: the confusion matrix is drawn without class "
                  "names, counts or a colour scale (pip install '.[plots]')")  # fmt: skip
        return confusion_image(matrix)
    matrix = np.asarray(matrix, np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    count = len(matrix)
    size = float(np.clip(1.2 + 0.45 * count, 4, 14))
    figure, axes = pyplot.subplots(figsize=(size + 1.2, size), dpi=80)
    try:
        shown = axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
        ticks = np.arange(count)
        labels = [str(name) for name in names]
        axes.set_xticks(ticks, labels, rotation=45 if max(map(len, labels)) > 2 else 0, ha="right")
        axes.set_yticks(ticks, labels)
        axes.set_xlabel("predicted class")
        axes.set_ylabel("true class")
        if count <= _MAX_ANNOTATED:
            for (row, column), value in np.ndenumerate(matrix):
                colour = "white" if share[row, column] > 0.5 else "black"
                axes.text(column, row, f"{int(value)}", ha="center", va="center", color=colour,
                          fontsize=max(6, 12 - count // 4))  # fmt: skip
        figure.tight_layout()
        figure.canvas.draw()
        return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    finally:
        pyplot.close(figure)


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        from absl import logging

        logging.info(message)


def confusion_image(matrix) -> np.ndarray:
    """A confusion matrix drawn as a heat map: uint8 RGB ``[H, W, 3]``, each cell a
    square shaded from white (none of its row) to dark blue (all of it)."""
    matrix = np.asarray(matrix, np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    cell = int(np.clip(256 // max(1, len(matrix)), 2, 32))
    share = np.kron(share, np.ones((cell, cell)))
    white, blue = np.array([255.0, 255.0, 255.0]), np.array([8.0, 48.0, 107.0])
    return (white + share[..., None] * (blue - white)).round().astype(np.uint8)


HISTOGRAM_BUCKETS = 30
# A constant tensor (or one whose range float32 cannot resolve) is drawn as
# one narrow bucket at its value: the range is widened to value +- this
# fraction of its magnitude (at least _MIN_HALF_WIDTH).
_RELATIVE_HALF_WIDTH = 2.0**-10
_MIN_HALF_WIDTH = 1e-6


def histogram_tensor(values: tf.Tensor, buckets: int = HISTOGRAM_BUCKETS) -> tf.Tensor:
    """TensorBoard's histogram data for ``values`` (any shape): ``[buckets, 3]``.

    Rows are ``(left edge, right edge, count)`` over equal-width buckets from
    the minimum to the maximum of the *finite* values. ``histogram_tensors``
    of one tensor; see there.
    """
    return histogram_tensors([values], buckets)[0]


def histogram_tensors(tensors, buckets: int = HISTOGRAM_BUCKETS) -> tf.Tensor:
    """TensorBoard's histogram data for each of ``tensors`` (any shapes): ``[T, buckets, 3]``.

    Per tensor: its finite minimum and maximum, one fused
    ``tf.histogram_fixed_width`` and a count of the non-finite values; the
    arithmetic on the ranges and the bucket edges is done once for all tensors
    on ``[T]`` vectors, with no control flow (``tf.summary.histogram`` builds
    conditionals per call; a deep network's diagnostic step writes dozens of
    histograms, and their ops were most of its tracing time).

    Never fails, whatever the values: NaN and Inf are left out of the counts
    (``tf.histogram_fixed_width`` misbehaves on them); a constant tensor, or a
    range float32 cannot split (``low + 1 == low`` near 1e9), becomes one
    narrow bucket at its value; a range wider than float32 can hold (say
    -3e38..3e38) is binned at half scale; no finite value gives zero counts.
    """
    # Per tensor, raw ops on shared constants: the wrappers' dispatch and a
    # constant per Python scalar made each op several times dearer to trace.
    raw = tf.raw_ops
    big = tf.constant(tf.float32.max)
    minus_big = tf.constant(-tf.float32.max)
    flat_shape = tf.constant([-1])
    axis = tf.constant(0)
    flat, finite, lows, highs, good, sizes = [], [], [], [], [], []
    for values in tensors:
        values = tf.convert_to_tensor(values)
        if values.dtype != tf.float32:
            values = raw.Cast(x=values, DstT=tf.float32)
        data = raw.Reshape(tensor=values, shape=flat_shape)
        ok = raw.IsFinite(x=data)
        flat.append(data)
        finite.append(ok)
        lows.append(raw.Min(input=raw.SelectV2(condition=ok, t=data, e=big), axis=axis))
        highs.append(raw.Max(input=raw.SelectV2(condition=ok, t=data, e=minus_big), axis=axis))
        good.append(raw.Sum(input=raw.Cast(x=ok, DstT=tf.int32), axis=axis))
        sizes.append(raw.Size(input=data, out_type=tf.int32))
    low, high = tf.stack(lows), tf.stack(highs)  # [T]
    any_finite = low <= high
    low = tf.where(any_finite, low, 0.0)
    high = tf.where(any_finite, high, 0.0)
    # Work at half scale so that high - low cannot overflow.
    low, high = low * 0.5, high * 0.5
    center = low + (high - low) * 0.5
    half = tf.maximum(tf.abs(center) * _RELATIVE_HALF_WIDTH, _MIN_HALF_WIDTH)
    # Too narrow for float32 to split into buckets: widen around the centre.
    narrow = (high - low) <= tf.maximum(tf.abs(center), 1.0) * (buckets * 2.0**-20)
    low = tf.where(narrow, center - half, low)
    high = tf.where(narrow, center + half, high)
    # Unstacked in one op each (indexing would add a slice and its constants per tensor).
    ranges = tf.unstack(tf.stack([low, high], axis=1))  # T x [2]
    half_scale = tf.constant(0.5)
    bins = tf.constant(buckets)
    counts = []
    for data, ok, left, bounds in zip(flat, finite, tf.unstack(low), ranges, strict=True):
        # Non-finite values are binned at `low` (bucket 0), then taken out again.
        scaled = raw.SelectV2(condition=ok, t=raw.Mul(x=data, y=half_scale), e=left)
        counts.append(raw.HistogramFixedWidth(values=scaled, value_range=bounds, nbins=bins))
    bad = tf.stack(sizes) - tf.stack(good)  # [T] non-finite values
    first_bucket = tf.one_hot(0, buckets, on_value=1, off_value=0, dtype=tf.int32)  # [buckets]
    counts = tf.stack(counts) - bad[:, None] * first_bucket  # [T, buckets]
    # Edges at full scale, in float64: low + (high - low) * k / buckets.
    fractions = tf.constant([k / buckets for k in range(buckets + 1)], tf.float64)
    low64 = tf.cast(low, tf.float64)[:, None] * 2.0
    high64 = tf.cast(high, tf.float64)[:, None] * 2.0
    edges = low64 + (high64 - low64) * fractions  # [T, buckets + 1]
    return tf.stack([edges[:, :-1], edges[:, 1:], tf.cast(counts, tf.float64)], axis=2)


def write_summaries(entries: list, step) -> None:
    """Writes ``[(tag, tensor, plugin metadata)]`` in-graph at ``step``, each with
    ``tf.summary.write`` (tags as given: ``tf.summary.scalar`` would prefix them
    with the enclosing name scopes, e.g. ``while/``)."""
    for tag, tensor, metadata in entries:
        tf.summary.write(tag, tensor, step=step, metadata=metadata)


def _histograms(tagged: list) -> list:
    """``[(tag, values)]`` as histogram entries for ``write_summaries``, computed
    together (``histogram_tensors``)."""
    from tensorboard.plugins.histogram import metadata

    if not tagged:
        return []
    data = tf.unstack(histogram_tensors([values for _, values in tagged]))
    return [
        (tag, histogram, metadata.create_summary_metadata(display_name=tag, description=""))
        for (tag, _), histogram in zip(tagged, data, strict=True)
    ]


def _images(tag: str, images) -> tuple:
    """An image summary entry of ``[k, H, W, C]`` values, each image scaled to its
    own range (the tensor ``tf.summary.image`` writes: width, height, PNGs)."""
    from tensorboard.plugins.image import metadata

    images = tf.cast(images, tf.float32)
    low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
    pixels = tf.cast(tf.round(255 * (images - low) / tf.maximum(high - low, 1e-6)), tf.uint8)
    encoded = tf.map_fn(tf.io.encode_png, pixels, fn_output_signature=tf.string)
    shape = tf.strings.as_string(tf.shape(images)[1:3])  # height, width
    tensor = tf.concat([shape[1:], shape[:1], encoded], axis=0)
    return tag, tensor, metadata.create_summary_metadata(display_name=tag, description="")


def _scalar(tag: str, value) -> tuple:
    from tensorboard.plugins.scalar import metadata

    return (
        tag,
        tf.cast(value, tf.float32),
        metadata.create_summary_metadata(display_name=tag, description=""),
    )


def step_summary_fn(histograms: bool):
    """The ``summary_fn`` of the engine's ``Trainer``: per-layer scalars and histograms.

    Tags: ``<figure>/<layer>`` for every per-layer figure of
    ``models.diagnostics.layer_statistics``; with ``histograms``,
    ``weights/<variable>`` and ``gradients/<variable>`` per variable and
    ``preactivations/<layer>``, ``activations/<layer>`` per layer with weights;
    with ``--augment``, ``augmented_inputs``: a few training images as the step
    saw them, each scaled to its own range.
    """
    from models import diagnostics

    def write(model, step, diagnosed):
        if "augmented" in diagnosed:
            write_summaries([_images("augmented_inputs", diagnosed["augmented"])], step)
        names = [layer_name for layer_name, _ in diagnostics.layer_variables(model)]
        entries = [
            _scalar(f"{figure}/{layer_name}", value)
            for figure, values in diagnosed["stats"].items()
            for layer_name, value in zip(names, tf.unstack(values), strict=True)
        ]
        if not histograms:
            write_summaries(entries, step)
            return
        tagged = []
        for variable, grad, value in zip(
            model.trainable_variables, diagnosed["grads"], diagnosed["weights"], strict=True
        ):
            name = variable.name.split(":")[0]
            tagged += [(f"weights/{name}", value), (f"gradients/{name}", grad)]
        for layer, (pre, post) in zip(model.weighted_layers, diagnosed["records"], strict=True):
            tagged += [(f"preactivations/{layer.name}", pre), (f"activations/{layer.name}", post)]
        write_summaries(entries + _histograms(tagged), step)

    return write
