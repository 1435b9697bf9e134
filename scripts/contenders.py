"""The contenders of ``scripts/benchmark.py`` and what they share: the networks,
the data, the Keras twin of a from-scratch model, and the matmul peak.

Every contender trains the identical network (same layers, same initial weights,
copied from one seeded from-scratch model) on the identical stream of batches,
with the same batch size, loss and SGD learning rate:

* ``EagerContender``: the notebook's loop, a Python ``for`` calling a
  ``GradientTape`` step eagerly, updating with ``assign_sub``;
* ``TrainerContender``: this trainer's ``Trainer.run_steps``, fed as the
  command line feeds in-memory data on one device (``MemoryBatches``), or
  ``tf.data`` for the input A/B;
* ``KerasContender``: the same layers in Keras 3 (``keras_model``: each layer's
  ``keras_equivalent()``), trained with ``Model.fit``;
* ``InputPipeline``: the ``tf.data`` pipeline alone, a ceiling for all.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time

import numpy as np

# (input size, hidden sizes, classes, activation), the name of a zoo preset (for its
# default input), or a zoo preset's name with an image shape.
PRESETS = {
    "tiny": (64, (32,), 10, "sigmoid"),
    "mlp": "notebook_mlp",
    "deep": "notebook_deep",
    "cnn": "lenet",
    "cifar_cnn": ("cifar_cnn", (32, 32, 3)),
    "resnet20": ("resnet20", (32, 32, 3)),
}


def zoo_name(preset: str) -> str | None:
    """The zoo preset a benchmark preset names (None for a plain MLP)."""
    spec = PRESETS[preset]
    if isinstance(spec, str):
        return spec
    return spec[0] if isinstance(spec[0], str) else None


def fail(message: str):
    """Ends the program with one line on standard error and status 2, no traceback."""
    print(f"scripts/benchmark.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads)."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def median(values):
    return statistics.median(values) if values else math.nan


# -- set-up ---------------------------------------------------------------------------------
def build_model(preset: str, seed: int):
    """A fresh from-scratch model; the same seed gives the same initial weights."""
    from models import zoo

    spec = PRESETS[preset]
    if isinstance(spec, str):
        return zoo.preset(spec, init="xavier", seed=seed)
    if isinstance(spec[0], str):
        return zoo.preset(spec[0], init="xavier", seed=seed, input_shape=spec[1])
    input_size, hidden, classes, activation = spec
    return zoo.mlp(input_size, hidden, classes, activation, "xavier", seed, name=preset)


def synthetic_data(n: int, input_shape, classes: int, seed: int):
    """``--dataset=synthetic``'s data (a random linear teacher on the flattened
    values), shaped for the network.

    Returns float32 ``[n, *input_shape]`` (``[n, D]`` or ``[n, H, W, C]``) and int64 ``[n]``.
    """
    from trainer.data.synthetic import teacher_labelled

    input_shape = tuple(input_shape)
    x, y = teacher_labelled(n, math.prod(input_shape), classes, seed)
    return x.reshape((n, *input_shape)), y


def digits_data(input_shape, seed: int):
    """scikit-learn's digits scaled to [0, 1], shaped for the network.

    Flat ``[D]`` inputs: the 64 pixels zero-padded to ``D`` features. Images
    ``[H, W, C]``: each 8x8 digit upscaled x3 to 24x24 and zero-padded (2 on each
    side for 28x28) to ``H x W``, repeated over the ``C`` channels.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.astype(np.float32) / 16.0
    input_shape = tuple(input_shape)
    if len(input_shape) == 3:
        height, width, channels = input_shape
        if height < 24 or width < 24:
            fail(f"digits need images of at least 24x24; this network takes {list(input_shape)}")
        images = x.reshape(-1, 8, 8).repeat(3, axis=1).repeat(3, axis=2)
        top, left = (height - 24) // 2, (width - 24) // 2
        images = np.pad(images, ((0, 0), (top, height - 24 - top), (left, width - 24 - left)))
        x = np.repeat(images[..., None], channels, axis=-1)
    elif len(input_shape) == 1:
        if input_shape[0] < x.shape[1]:
            fail(f"digits need >= 64 inputs; this network takes {input_shape[0]}")
        x = np.pad(x, ((0, 0), (0, input_shape[0] - x.shape[1])))
    else:
        fail(f"digits: no layout for inputs of shape {list(input_shape)}")
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)


def forward_flops(model) -> int:
    """Forward FLOPs per example: over the layers with weights (a residual block's
    parts one by one), 2 x kernel size x positions.

    Positions are the layer's output shape without its channel axis (1 for a dense
    layer, H' x W' for a convolution): each kernel weight does one multiply-add per
    output position. Biases, activations and pooling are not counted.
    """
    total = 0
    for layer in model.weighted_layers:
        shape = layer.output_shape(layer.input_shape)
        total += 2 * math.prod(layer.kernel.shape) * math.prod(shape[:-1])
    return int(total)


def model_summary(model) -> dict:
    """What the JSON's ``model`` says about a network (``layers`` as ``784-100-10`` for MLPs)."""
    from models import layers as layers_lib

    shapes = [
        shape
        for layer, shape in zip(model.layers, model.shapes)
        if not isinstance(layer, layers_lib.Normalization)
    ]
    dense_only = all(
        isinstance(layer, layers_lib.Dense | layers_lib.Normalization) for layer in model.layers
    )
    if dense_only and len(model.input_shape) == 1:
        layers = "-".join(str(s) for s in (*model.input_shape, *(s[0] for s in shapes)))
    else:
        layers = model.describe()
    hidden = [layer.activation_name for layer in model.layers[:-1]]
    activations = [name for name in dict.fromkeys(hidden) if name != "linear"]
    forward = forward_flops(model)
    return {
        "layers": layers,
        "activation": ",".join(activations) or "linear",
        "architecture": model.describe(),
        "input_shape": list(model.input_shape),
        "classes": int(model.output_size),
        "params": model.count_params(),
        "forward_flops_per_example": forward,
        "flops_per_example": 3 * forward,
    }


def keras_model(reference, policy: str = "float32"):
    """The Keras 3 twin of a from-scratch ``Sequential``: same layers, same weights.

    Each layer says which Keras layers compute the same function (``keras_graph()``:
    one layer's ``keras_equivalent()``, its class, arguments and weights, or for a
    residual block the layers of both paths joined by an ``Add``), built here with
    Keras' functional API; ``policy`` is the Keras dtype policy of every layer,
    e.g. ``mixed_bfloat16``.
    """
    import keras

    inputs = keras.Input(tuple(reference.input_shape))
    h = inputs
    pairs = []
    for layer in reference.layers:
        try:
            h = keras_layers(layer, h, policy, pairs)
        except (NotImplementedError, ValueError) as error:
            fail(f"{layer.name}: {error}")
    model = keras.Model(inputs, h)
    for twin, weights in pairs:
        if weights:
            twin.set_weights(weights)
    return model


def keras_layers(layer, h, policy: str, pairs: list):
    """Applies the Keras twin of ``layer`` (its ``keras_graph()``) to the Keras
    tensor ``h``; returns the output tensor and appends ``(Keras layer, weights)``
    per node to ``pairs`` (weights are set once the model is built)."""
    import keras

    values = {"input": h}
    for node, inputs, (class_name, arguments, weights) in layer.keras_graph():
        twin = getattr(keras.layers, class_name)(**arguments, dtype=policy)
        given = [values[name] for name in inputs]
        values[node] = twin(given[0] if len(given) == 1 else given)
        pairs.append((twin, weights))
    return values[node]


# -- matmul peak ----------------------------------------------------------------------------
class PeakMeter:
    """Square ``size`` matmul GFLOP/s in float32 and bfloat16 on ``device``.

    ``sample`` times one call of each dtype; the benchmark takes one sample per
    round, between the contenders, so the peak sees the same machine load they do.
    """

    def __init__(self, tf, device: str, size: int, target_s: float = 0.25):
        self.tf, self.device, self.size = tf, device, size

        @tf.function
        def chain(a, x, count):
            # Each product feeds the next, so none can be skipped; a keeps values bounded.
            for _ in tf.range(count):
                x = tf.matmul(a, x)
            return tf.reduce_sum(x[:1, :1])

        self.chain = chain
        self.rates = {"float32": [], "bfloat16": []}
        self.operands, self.counts = {}, {}
        with tf.device(device):
            for name in self.rates:
                dtype = tf.as_dtype(name)
                a = tf.random.stateless_normal([size, size], (1, 2), stddev=size**-0.5)
                x = tf.random.stateless_normal([size, size], (3, 4))
                self.operands[name] = (tf.cast(a, dtype), tf.cast(x, dtype))
                chain(*self.operands[name], tf.constant(1)).numpy()  # trace and warm up
                start = time.perf_counter()
                chain(*self.operands[name], tf.constant(1)).numpy()
                once = max(time.perf_counter() - start, 1e-6)
                self.counts[name] = max(1, min(10_000, round(target_s / once)))

    def sample(self) -> None:
        with self.tf.device(self.device):
            for name, values in self.rates.items():
                count = self.counts[name]
                start = time.perf_counter()
                self.chain(*self.operands[name], self.tf.constant(count)).numpy()
                seconds = time.perf_counter() - start
                values.append(2.0 * self.size**3 * count / seconds / 1e9)

    def result(self) -> dict:
        return {
            name: {
                "gflops": max(values),
                "gflops_median": median(values),
                "gflops_all": values,
                "size": self.size,
                "matmuls_per_call": self.counts[name],
            }
            for name, values in self.rates.items()
        }


# -- contenders -----------------------------------------------------------------------------
class Contender:
    """One way of training; ``start`` builds and warms it, ``timed`` runs one round."""

    kind = ""

    def __init__(self, name: str, precision: str, settings: dict):
        self.name = name
        self.precision = precision
        self.settings = settings
        self.time_to_first_step_s = math.nan
        self.rounds: list[tuple[float, int, float]] = []  # (wall s, steps, CPU s)

    def start(self) -> None:
        raise NotImplementedError

    def timed(self) -> tuple[float, int, float]:
        """Runs one round; returns (wall seconds, steps, CPU seconds)."""
        raise NotImplementedError

    def traces(self) -> int | None:
        """How often the compiled loop was traced (1 means no retracing), if known."""
        return None


class EagerContender(Contender):
    """The notebook's loop: tape, gradient and ``assign_sub`` per step, all eager."""

    kind = "eager"

    def __init__(self, tf, ctx, steps: int):
        super().__init__("eager", "float32", {})
        self.tf, self.ctx, self.steps = tf, ctx, steps

    def _step(self):
        from models import losses

        tf = self.tf
        x, y = next(self.iterator)
        with tf.GradientTape() as tape:
            loss = losses.cross_entropy(y, self.model(x))
        grads = tape.gradient(loss, self.variables)
        for variable, grad in zip(self.variables, grads):
            variable.assign_sub(self.ctx["learning_rate"] * grad)

    def _sync(self):
        return self.variables[-1].numpy()

    def start(self):
        with self.tf.device(self.ctx["device"]):
            self.model = build_model(self.ctx["preset"], self.ctx["seed"])
            self.variables = self.model.trainable_variables
            self.iterator = iter(self.ctx["dataset"]())
            begin = time.perf_counter()
            self._step()
            self._sync()
            self.time_to_first_step_s = time.perf_counter() - begin
            self._step()
            self._sync()

    def timed(self):
        with self.tf.device(self.ctx["device"]):
            begin = clock()
            for _ in range(self.steps):
                self._step()
            self._sync()
            wall, cpu = since(begin)
            return wall, self.steps, cpu


class TrainerContender(Contender):
    """``Trainer.run_steps``, ``steps_per_loop`` steps per compiled call."""

    kind = "trainer"

    def __init__(
        self,
        tf,
        ctx,
        steps: int,
        steps_per_loop: int,
        jit: bool,
        precision: str,
        summaries=0,
        guard: bool = True,
        tfdata: bool = False,
    ):
        steps_per_loop = min(steps_per_loop, steps)
        name = f"trainer_spl{steps_per_loop}_xla-{'on' if jit else 'off'}_{precision}"
        if summaries:
            name += f"_summaries{summaries}"
        if not guard:
            name += "_noguard"
        if tfdata:
            name += "_tfdata"
        settings = {"steps_per_loop": steps_per_loop, "jit_compile": jit}
        settings["summary_every"] = summaries
        settings["guard"] = guard
        settings["input"] = "tf.data" if tfdata else "memory"
        super().__init__(name, precision, settings)
        self.summaries = summaries
        self.guard = guard
        self.tfdata = tfdata
        self.tf, self.ctx = tf, ctx
        self.steps_per_loop = steps_per_loop
        self.calls = max(1, round(steps / steps_per_loop))
        self.jit = jit
        self.device = ctx["device"]

    def start(self):
        from models import optimizers
        from trainer.engine.trainer import Trainer

        tf = self.tf
        self.writer = tf.summary.create_noop_writer()
        summary_fn = None
        if self.summaries:
            # What the command line does at --summary_every: per-layer scalars and
            # histograms written from the compiled loop to real event files.
            from trainer import summaries

            self.writer = tf.summary.create_file_writer(tempfile.mkdtemp(prefix="bench-tb-"))
            summary_fn = summaries.step_summary_fn(histograms=True)
        with tf.device(self.device), self.writer.as_default():
            model = build_model(self.ctx["preset"], self.ctx["seed"])
            if self.tfdata:
                self.iterator = iter(self.ctx["dataset"]())
            else:
                self.iterator = self.ctx["batches"]()
            begin = time.perf_counter()
            self.program = Trainer(
                model,
                optimizers.get("sgd", self.ctx["learning_rate"]),
                loss="cross_entropy",
                global_batch_size=self.ctx["batch_size"],
                compute_dtype=tf.as_dtype(self.precision),
                jit_compile=self.jit,
                diagnose_every=self.summaries,
                summary_fn=summary_fn,
                check_finite=self.guard,
            )
            self.program.run_steps(self.iterator, 1)
            self.program.global_step.numpy()
            self.time_to_first_step_s = time.perf_counter() - begin
            self.program.run_steps(self.iterator, self.steps_per_loop)
            self.program.global_step.numpy()

    def run(self, calls: int) -> tuple[float, int, float]:
        with self.tf.device(self.device), self.writer.as_default():
            begin = clock()
            for _ in range(calls):
                self.program.run_steps(self.iterator, self.steps_per_loop)
            self.program.global_step.numpy()
            wall, cpu = since(begin)
            return wall, calls * self.steps_per_loop, cpu

    def timed(self):
        return self.run(self.calls)

    def traces(self):
        return self.program.trace_counts["train_loop"]


class KerasContender(Contender):
    """Keras 3 ``Model.fit`` on the same layers and initial weights.

    Each round is one ``fit`` call of ``calls + 1`` executions; a callback times
    from the end of the first execution to the end of the last, so ``fit``'s own
    set-up and the first (possibly retracing) execution are not counted.
    """

    kind = "keras"

    def __init__(self, tf, ctx, steps: int, steps_per_execution: int, jit: bool, precision: str):
        steps_per_execution = min(steps_per_execution, steps)
        name = f"keras_spe{steps_per_execution}_jit-{'on' if jit else 'off'}_{precision}"
        settings = {"steps_per_execution": steps_per_execution, "jit_compile": jit}
        super().__init__(name, precision, settings)
        self.tf, self.ctx = tf, ctx
        self.spe = steps_per_execution
        self.calls = max(1, round(steps / steps_per_execution))
        self.jit = jit

    def start(self):
        import keras

        policy = "mixed_bfloat16" if self.precision == "bfloat16" else "float32"
        with self.tf.device(self.ctx["device"]):
            # Identical layers and initial weights: the from-scratch model's, translated.
            reference = build_model(self.ctx["preset"], self.ctx["seed"])
            self.model = keras_model(reference, policy)
            if policy == "float32":  # same network, same weights: same outputs
                shape = (4, *reference.input_shape)
                probe = np.random.default_rng(0).normal(size=shape).astype(np.float32)
                np.testing.assert_allclose(
                    self.model(probe).numpy(), reference(probe).numpy(), rtol=1e-4, atol=1e-5
                )
            self.model.compile(
                optimizer=keras.optimizers.SGD(self.ctx["learning_rate"]),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],  # the trainer tracks loss and accuracy too
                steps_per_execution=self.spe,
                jit_compile=self.jit,
            )
            self.dataset = self.ctx["dataset"]()
            begin = time.perf_counter()
            self._fit(1)
            self.time_to_first_step_s = time.perf_counter() - begin
            self._fit(self.spe)

    def _fit(self, steps: int, callbacks=None):
        # shuffle=False: the dataset is already shuffled (Keras warns otherwise).
        with self.tf.device(self.ctx["device"]):
            self.model.fit(
                self.dataset,
                epochs=1,
                steps_per_epoch=steps,
                shuffle=False,
                verbose=0,
                callbacks=callbacks,
            )

    def timed(self):
        import keras

        marks = []

        class Timer(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                # Reading the loss waits for the execution (asynchronous on GPUs).
                float((logs or {}).get("loss", 0.0))
                marks.append((clock(), batch))

        self._fit((self.calls + 1) * self.spe, [Timer()])
        (t0, b0), (t1, b1) = marks[0], marks[-1]
        return t1[0] - t0[0], b1 - b0, t1[1] - t0[1]


class InputPipeline(Contender):
    """The shared ``tf.data`` pipeline alone, drained in-graph: a ceiling for every contender.

    With ``dataset`` (a function making a ``tf.data.Dataset``), that pipeline
    instead, e.g. the TFRecord stream of ``--tfrecord_dir``.
    """

    kind = "input"

    def __init__(self, tf, ctx, steps: int, name: str = "input_pipeline", dataset=None):
        super().__init__(name, "float32", {})
        self.tf, self.ctx, self.steps = tf, ctx, steps
        self.dataset = dataset or ctx["dataset"]

    def start(self):
        tf = self.tf

        @tf.function
        def drain(iterator, count):
            total = tf.constant(0.0)
            for _ in tf.range(count):
                x, _ = next(iterator)
                total += tf.reshape(x, [-1])[0]  # one value of any shape of batch
            return total

        self.drain = drain
        with tf.device(self.ctx["device"]):
            self.iterator = iter(self.dataset())
            begin = time.perf_counter()
            drain(self.iterator, tf.constant(1)).numpy()
            self.time_to_first_step_s = time.perf_counter() - begin

    def timed(self):
        with self.tf.device(self.ctx["device"]):
            begin = clock()
            self.drain(self.iterator, self.tf.constant(self.steps)).numpy()
            wall, cpu = since(begin)
            return wall, self.steps, cpu
