"""Every family of names the library offers, one registry each, free of TensorFlow.

A registry maps a name to an entry: a line of documentation, the entry's
settings, and where its implementation lives (``"module:attribute"``, imported
on first use). The command line takes its choices, help and checks from here
before TensorFlow starts; the layer specification parser, the zoo, the
optimizers and schedules, README's tables and the tools look names up here.

Adding a layer, an activation, an initializer, a loss, an optimizer or a
learning-rate schedule is its implementation in its own module and one entry
here (BUILD.md, "How to add ...").
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar


@dataclasses.dataclass(frozen=True)
class Entry:
    """One name of a family.

    Attributes:
      name: what users type (a flag value, a layer token).
      target: ``"module:attribute"`` of the implementation (dots in the
        attribute walk into it); empty for entries built from settings alone.
      doc: one line for help texts and README's tables.
    """

    name: str
    target: str
    doc: str

    def load(self):
        """The implementation (imports its module, and so TensorFlow, on first use)."""
        module, _, attribute = self.target.partition(":")
        value = importlib.import_module(module)
        for part in attribute.split("."):
            value = getattr(value, part)
        return value


E = TypeVar("E", bound=Entry)


class Registry(Generic[E]):
    """The entries of one family, in the order they are offered.

    Args:
      family: what an entry is, for messages (``"optimizer"``).
      entries: the entries; names must be distinct.
    """

    def __init__(self, family: str, entries: Iterable[E]):
        self.family = family
        self._entries: dict[str, E] = {}
        for entry in entries:
            if entry.name in self._entries:
                raise ValueError(f"{family} {entry.name!r} registered twice")
            self._entries[entry.name] = entry

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __iter__(self) -> Iterator[E]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def get(self, name: str) -> E:
        """The entry called ``name``.

        Raises:
          ValueError: an unknown name, listing the known ones.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(
                f"unknown {self.family} {name!r}; choose one of {', '.join(self.names)}"
            ) from None

    def load(self, name: str):
        """The implementation of ``name`` (``ValueError`` for an unknown name)."""
        return self.get(name).load()


# -- checks of numeric settings (flags, config.json, constructors) --------------------
@dataclasses.dataclass(frozen=True)
class Check:
    """A condition on a finite number and what a value that fails it is told."""

    test: Callable[[float], bool]
    message: str

    def problem(self, value) -> str | None:
        """What is wrong with ``value`` (None if nothing); NaN and Inf never pass."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number"
        if not math.isfinite(value) or not self.test(value):
            return self.message
        return None


POSITIVE = Check(lambda v: v > 0, "must be a finite number > 0")
NON_NEGATIVE = Check(lambda v: v >= 0, "must be a finite number >= 0")
FRACTION = Check(lambda v: 0 <= v < 1, "must be in [0, 1)")
UNIT_INTERVAL = Check(lambda v: 0 <= v <= 1, "must be in [0, 1]")
AT_LEAST_ONE = Check(lambda v: v >= 1 and v == int(v), "must be a whole number >= 1")


@dataclasses.dataclass(frozen=True)
class Setting:
    """A numeric setting shared by several entries (an optimizer's ``beta_1``, a
    schedule's ``decay_steps``): its kind, check and meaning.

    ``kind`` is ``float``, ``int`` or ``steps`` (a comma list of increasing
    whole steps >= 1, e.g. ``3000,6000``).
    """

    kind: str
    check: Check | None
    doc: str

    def problem(self, value) -> str | None:
        """What is wrong with ``value`` (None if nothing)."""
        if self.kind == "steps":
            steps = parse_steps(value)
            if steps is None:
                return "must be a comma list of whole steps, e.g. 3000,6000"
            if not steps or steps != sorted(set(steps)) or steps[0] < 1:
                return "must be increasing steps >= 1, e.g. 3000,6000"
            return None
        if self.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            return "must be an integer"
        return self.check.problem(value) if self.check else None

    def value(self, given):
        """``given`` in the form its users take: a steps setting as a list of ints
        (``"3000,6000"`` -> ``[3000, 6000]``); any other as it is."""
        return parse_steps(given) if self.kind == "steps" else given

    def require(self, name: str, value) -> None:
        """Raises ``ValueError("<name> <problem>, got <value>")`` if ``value`` fails."""
        problem = self.problem(value)
        if problem:
            raise ValueError(f"{name} {problem}, got {value}")


def parse_steps(value) -> list[int] | None:
    """``"3000,6000"`` or ``[3000, 6000]`` -> ``[3000, 6000]``; None if not whole numbers."""
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",") if part.strip()]
        try:
            return [int(part) for part in parts]
        except ValueError:
            return None
    if isinstance(value, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return list(value)
    return None


# -- activations, initializers, losses ----------------------------------------------
@dataclasses.dataclass(frozen=True)
class Activation(Entry):
    """An activation; ``saturation`` tells ``models.activations.saturation_fraction``
    when a unit stops passing gradients: ``(low, high)`` output bounds, ``"dead"``
    (exactly 0, relu) or None."""

    saturation: tuple[float, float] | str | None = None


ACTIVATIONS: Registry[Activation] = Registry(
    "activation",
    [
        Activation("sigmoid", "models.activations:sigmoid", "1 / (1 + e^-x)", (0.0, 1.0)),
        Activation("tanh", "models.activations:tanh", "hyperbolic tangent", (-1.0, 1.0)),
        Activation("relu", "models.activations:relu", "max(x, 0)", "dead"),
        Activation("elu", "models.activations:elu", "x, or e^x - 1 below 0"),
        Activation("softplus", "models.activations:softplus", "log(1 + e^x)"),
        Activation("linear", "models.activations:linear", "the identity (logits)"),
    ],
)

_INIT = "models.initializers:"
INITIALIZERS: Registry[Entry] = Registry(
    "initializer",
    [
        Entry("zeros", _INIT + "zeros", "all zeros: hidden units stay identical"),
        Entry("ones", _INIT + "ones", "all ones"),
        Entry("uniform", _INIT + "uniform", "U[0, 1), the notebook's default"),
        Entry("normal", _INIT + "normal", "N(0, 1)"),
        Entry("xavier", _INIT + "xavier", "Glorot normal: N(0, 2 / (fan_in + fan_out))"),
        Entry("glorot_normal", _INIT + "xavier", "the same as xavier"),
        Entry("xavier_uniform", _INIT + "xavier_uniform", "Glorot uniform"),
        Entry("glorot_uniform", _INIT + "xavier_uniform", "the same as xavier_uniform"),
        Entry("he", _INIT + "he", "He normal, for relu: N(0, 2 / fan_in)"),
        Entry("he_normal", _INIT + "he", "the same as he"),
        Entry("he_uniform", _INIT + "he_uniform", "He uniform"),
        Entry("lecun", _INIT + "lecun", "LeCun normal: N(0, 1 / fan_in)"),
    ],
)


@dataclasses.dataclass(frozen=True)
class Loss(Entry):
    """A per-example loss; ``classification``: its targets are class ids (there is an
    accuracy), else real values."""

    classification: bool = True


LOSSES: Registry[Loss] = Registry(
    "loss",
    [
        Loss(
            "cross_entropy",
            "models.losses:cross_entropy_per_example",
            "softmax cross-entropy from logits (classification)",
        ),
        Loss("mse", "models.losses:mse_per_example", "mean squared error (regression)", False),
    ],
)


# -- optimizers ----------------------------------------------------------------------
# Hyperparameters by name; each is also a flag of its own (--beta_2=0.99).
HYPERPARAMETERS: dict[str, Setting] = {
    "momentum": Setting("float", FRACTION, "momentum coefficient mu"),
    "rho": Setting("float", FRACTION, "decay of the squared-gradient average"),
    "beta_1": Setting("float", FRACTION, "decay of the first moment"),
    "beta_2": Setting("float", FRACTION, "decay of the second moment"),
    "epsilon": Setting("float", POSITIVE, "added to the denominator"),
    "initial_accumulator_value": Setting(
        "float", NON_NEGATIVE, "the squared-gradient sums' starting value"
    ),
}


@dataclasses.dataclass(frozen=True)
class Optimizer(Entry):
    """An optimizer: its default learning rate, its hyperparameters with their
    defaults (names from ``HYPERPARAMETERS``), and constructor arguments its name
    fixes (``nesterov``)."""

    learning_rate: float = 0.01
    hyperparameters: dict = dataclasses.field(default_factory=dict)
    fixed: dict = dataclasses.field(default_factory=dict)


_OPT = "models.optimizers."
OPTIMIZERS: Registry[Optimizer] = Registry(
    "optimizer",
    [
        Optimizer("sgd", _OPT + "sgd:SGD", "plain gradient descent: w -= lr g", 0.1),
        Optimizer(
            "momentum", _OPT + "momentum:Momentum", "heavy-ball momentum", 0.1, {"momentum": 0.9}
        ),
        Optimizer(
            "nesterov",
            _OPT + "momentum:Momentum",
            "Nesterov momentum",
            0.1,
            {"momentum": 0.9},
            {"nesterov": True},
        ),
        Optimizer(
            "rmsprop",
            _OPT + "rmsprop:RMSprop",
            "steps scaled by a running RMS of the gradients",
            0.003,
            {"rho": 0.9, "epsilon": 1e-7},
        ),
        Optimizer(
            "adam",
            _OPT + "adam:Adam",
            "Adam, bias-corrected moments",
            0.003,
            {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
        ),
        Optimizer(
            "adagrad",
            _OPT + "adagrad:Adagrad",
            "steps scaled by the sum of past squared gradients",
            0.01,
            {"initial_accumulator_value": 0.1, "epsilon": 1e-7},
        ),
    ],
)


# -- learning-rate schedules ----------------------------------------------------------
# Options by name; each is also a flag --lr_<name>.
SCHEDULE_OPTIONS: dict[str, Setting] = {
    "boundaries": Setting("steps", None, "steps after which the rate is multiplied by decay_rate"),
    "decay_rate": Setting("float", POSITIVE, "the decay factor (default 0.1)"),
    "decay_steps": Setting("int", AT_LEAST_ONE, "the decay's length in steps"),
    "min_fraction": Setting("float", UNIT_INTERVAL, "the final rate as a fraction of the peak"),
    "power": Setting("float", POSITIVE, "the polynomial's exponent"),
}


# Defaults a run fills in for a schedule's ``decay_steps``: the steps after
# warmup, or one epoch.
REST_OF_RUN, ONE_EPOCH = "the rest of the run", "one epoch"


@dataclasses.dataclass(frozen=True)
class Schedule(Entry):
    """A decay of the learning rate: ``target`` is ``decay(update, elapsed,
    **options)`` (``models.schedules``); ``options`` its option names with their
    defaults (None: required; ``REST_OF_RUN`` or ``ONE_EPOCH``: filled in by the
    run from its length)."""

    options: dict = dataclasses.field(default_factory=dict)


_SCHED = "models.schedules:"
SCHEDULES: Registry[Schedule] = Registry(
    "learning-rate schedule",
    [
        Schedule("constant", _SCHED + "constant", "the base rate throughout"),
        Schedule(
            "piecewise",
            _SCHED + "piecewise",
            "x decay_rate after each of the boundaries",
            {"boundaries": None, "decay_rate": 0.1},
        ),
        Schedule(
            "exponential",
            _SCHED + "exponential",
            "x decay_rate every decay_steps",
            {"decay_steps": ONE_EPOCH, "decay_rate": 0.1},
        ),
        Schedule(
            "cosine",
            _SCHED + "cosine",
            "half a cosine down to min_fraction x the base over decay_steps",
            {"decay_steps": REST_OF_RUN, "min_fraction": 0.0},
        ),
        Schedule(
            "polynomial",
            _SCHED + "polynomial",
            "(1 - t / decay_steps)^power, down to min_fraction x the base",
            {"decay_steps": REST_OF_RUN, "min_fraction": 0.0, "power": 1.0},
        ),
    ],
)


# -- layers, as --layers tokens -------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Argument:
    """The value after a token's first colon (``dense:128``): the constructor
    argument it sets, what it is in messages, ``count`` (a whole number from 1 to
    ``high``) or ``fraction`` (in [0, 1))."""

    option: str
    label: str
    kind: str = "count"
    high: int = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class LayerKind(Entry):
    """A layer and its token in a ``--layers`` specification (``models.spec``).

    Attributes:
      aliases: other heads for the same token (``bn``).
      usage, example: the token's form and an example, for messages and docs.
      window: the constructor argument set by a square window glued to the
        head (``conv3x3``, ``maxpool2``), with ``window_label`` for messages.
      argument: the value after the first colon, if the token takes one.
      options: the options it takes after further colons (``models.spec.OPTIONS``).
      fixed: constructor arguments the token fixes (an activation's name).
      prefix: layers are named ``<prefix>_<k>``.
      input: ``images`` if the layer takes ``[H, W, C]`` examples, ``flat`` if
        ``[D]``; None if either (it decides a network's input shape).
      xla_deterministic: False if XLA has no deterministic gradient for the layer
        (max-pool), so ``--deterministic`` keeps a network with it off XLA.
    """

    aliases: tuple[str, ...] = ()
    usage: str = ""
    example: str = ""
    window: str | None = None
    window_label: str = "window size"
    argument: Argument | None = None
    options: tuple[str, ...] = ()
    fixed: dict = dataclasses.field(default_factory=dict)
    prefix: str = ""
    input: str | None = None
    xla_deterministic: bool = True

    @property
    def layer_prefix(self) -> str:
        return self.prefix or self.name


_LAYER = "models.layers."
LAYERS: Registry[LayerKind] = Registry(
    "layer",
    [
        LayerKind(
            "dense", _LAYER + "dense:Dense", "fully connected: activation(x @ w + b)",
            usage="dense:UNITS", example="dense:128",
            argument=Argument("output_size", "the number of units"),
            options=("activation",), prefix="hidden", input="flat",
        ),
        LayerKind(
            "conv", _LAYER + "conv:Conv2D", "2-D convolution over NHWC images",
            usage="convKxK:FILTERS", example="conv3x3:32",
            window="kernel_size", window_label="kernel size",
            argument=Argument("filters", "the number of filters", high=1 << 16),
            options=("activation", "strides", "padding"), input="images",
        ),
        LayerKind(
            "res", _LAYER + "residual:ResidualBlock",
            "residual block: conv-bn-act-conv-bn, plus x or a 1x1 projection, then act",
            usage="resKxK:FILTERS", example="res3x3:32:s2",
            window="kernel_size", window_label="kernel size",
            argument=Argument("filters", "the number of filters", high=1 << 16),
            options=("activation", "strides", "momentum"), input="images",
        ),
        LayerKind(
            "maxpool", _LAYER + "pooling:MaxPool2D", "the largest value of each window",
            usage="maxpoolK", example="maxpool2", window="pool_size",
            options=("strides", "padding"), input="images", xla_deterministic=False,
        ),
        LayerKind(
            "avgpool", _LAYER + "pooling:AvgPool2D", "the mean of each window",
            usage="avgpoolK", example="avgpool2", window="pool_size",
            options=("strides", "padding"), input="images",
        ),
        LayerKind(
            "gap", _LAYER + "pooling:GlobalAvgPool2D",
            "global average pooling: [H, W, C] -> [C], each channel's mean",
            usage="gap", example="gap", input="images",
        ),
        LayerKind(
            "flatten", _LAYER + "flatten:Flatten", "[H, W, C] -> [H * W * C]",
            usage="flatten", example="flatten", input="flat",
        ),
        LayerKind(
            "dropout", _LAYER + "dropout:Dropout", "zeroes a fraction RATE while training",
            usage="dropout:RATE with RATE in [0, 1)", example="dropout:0.5",
            argument=Argument("rate", "the rate", "fraction"),
        ),
        LayerKind(
            "batchnorm", _LAYER + "batch_norm:BatchNorm",
            "batch normalization over the last axis", aliases=("bn",),
            usage="batchnorm", example="batchnorm", options=("momentum",),
        ),
        LayerKind(
            "layernorm", _LAYER + "layer_norm:LayerNorm",
            "layer normalization over each example's last axis", aliases=("ln",),
            usage="layernorm", example="layernorm",
        ),
        *(
            LayerKind(
                activation.name, _LAYER + "activation:Activation",
                f"the {activation.name} activation on its own",
                usage=activation.name, example=activation.name,
                fixed={"activation": activation.name},
            )
            for activation in ACTIVATIONS
        ),
    ],
)  # fmt: skip


# -- models: families built from settings, and the named presets -------------------
@dataclasses.dataclass(frozen=True)
class ModelKind(Entry):
    """A network ``--model`` names: ``layers``, its specification before the
    output layer (``models.spec``), or ``takes`` the setting that gives it
    (``hidden`` sizes, or a ``layers`` specification defaulting to ``layers``);
    ``activation``, the hidden activation, and ``init``, the initializer, when
    none is asked for."""

    layers: str | None = None
    takes: str | None = None
    activation: str = "sigmoid"
    init: str = "xavier"


# ResNet-20's layers before the output: a conv-batchnorm-relu stem, then 16, 32 and 64
# filters in three stages of three blocks, the first of stages 2 and 3 with stride 2.
RESNET20 = ",".join(
    [
        "conv3x3:16:linear,batchnorm,relu",
        *(["res3x3:16"] * 3),
        "res3x3:32:s2",
        *(["res3x3:32"] * 2),
        "res3x3:64:s2",
        *(["res3x3:64"] * 2),
        "gap",
    ]
)

MODELS: Registry[ModelKind] = Registry(
    "model",
    [
        ModelKind("linear", "", "softmax (or linear) regression: no hidden layer", ""),
        ModelKind("mlp", "", "hidden dense layers of the --hidden sizes", takes="hidden"),
        ModelKind(
            "cnn",
            "",
            "the layers of a --layers specification",
            "conv3x3:32,maxpool2,conv3x3:64,maxpool2,flatten,dense:128",
            "layers",
            "relu",
        ),
        ModelKind("softmax_regression", "", "the notebook's softmax regression", ""),
        ModelKind("notebook_mlp", "", "the notebook's 784-100-10 network", "dense:100"),
        ModelKind("notebook_deep", "", "the notebook's 6x500 network", ",".join(["dense:500"] * 6)),
        # LeCun et al. 1998 (tanh units, as there), with same padding so 8x8 digits fit too.
        ModelKind(
            "lenet",
            "",
            "LeNet-5 style",
            "conv5x5:6,maxpool2,conv5x5:16,maxpool2,flatten,dense:120,dense:84",
            activation="tanh",
        ),
        # He et al. 2016, section 4.2: 6n + 2 = 20 layers with n = 3, option B shortcuts
        # (a 1x1 projection where the shape changes).
        ModelKind(
            "resnet20",
            "",
            "ResNet-20 (He et al. 2016, CIFAR-10): a conv-bn-relu stem, 3 stages of 3 "
            "residual blocks of 16, 32 and 64 filters, gap; 0.27 M parameters on 32x32x3",
            RESNET20,
            activation="relu",
            init="he",
        ),
        ModelKind(
            "cifar_cnn",
            "",
            "the Keras CIFAR-10 example CNN, 'valid' padding on the second convolution of "
            "each pair as there (images of 10x10 or more, so not digits); 1.25 M parameters "
            "on 32x32x3",
            "conv3x3:32,conv3x3:32:valid,maxpool2,dropout:0.25,"
            "conv3x3:64,conv3x3:64:valid,maxpool2,dropout:0.25,flatten,dense:512,dropout:0.5",
            activation="relu",
        ),
    ],
)


# -- data augmentation (--augment), applied to training batches in the step ------------
@dataclasses.dataclass(frozen=True)
class Augmentation(Entry):
    """A random transformation of training images (``models.augment``): ``target``
    is ``fn(images, seed, **options)``; ``option``, the whole number a token may give
    after a colon (``crop:4``), with its ``default``."""

    option: str | None = None
    default: int = 0
    high: int = 1024


AUGMENTATIONS: Registry[Augmentation] = Registry(
    "augmentation",
    [
        Augmentation("flip", "models.augment:flip", "mirrors each image left-right, one in two"),
        Augmentation(
            "crop",
            "models.augment:pad_and_crop",
            "pads PADDING pixels of zeros on every side, crops back at a random offset",
            option="padding",
            default=4,
        ),
    ],
)
