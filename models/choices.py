"""Every list of names the library offers, defined once and free of TensorFlow.

The modules that implement these names (``models.initializers``,
``models.activations``, ``models.losses``, ``models.optimizers``, ``models.zoo``)
check at import that their registries hold exactly these keys, and the
trainer's flags and configuration (which must not import TensorFlow, so that
bad input fails in a line before anything heavy starts) take their choices and
defaults from here.
"""

from __future__ import annotations

INITIALIZERS = (
    "zeros",
    "ones",
    "uniform",
    "normal",
    "xavier",
    "glorot_normal",
    "xavier_uniform",
    "glorot_uniform",
    "he",
    "he_normal",
    "he_uniform",
    "lecun",
)
ACTIVATIONS = ("sigmoid", "tanh", "relu", "elu", "softplus", "linear")
LOSSES = ("cross_entropy", "mse")
LR_SCHEDULES = ("constant", "piecewise", "exponential", "cosine")
# Optimizers, with the learning rate each uses when none is given.
DEFAULT_LEARNING_RATES = {
    "sgd": 0.1,
    "momentum": 0.1,
    "nesterov": 0.1,
    "rmsprop": 0.003,
    "adam": 0.003,
}
OPTIMIZERS = tuple(DEFAULT_LEARNING_RATES)

# The convolutional network of ``--model=cnn`` when no layer specification is given.
DEFAULT_CNN_LAYERS = "conv3x3:32,maxpool2,conv3x3:64,maxpool2,flatten,dense:128"

# Named networks: (layer specification before the output layer, default activation).
# Their input and output sizes follow the data; the notebook's own were 784 -> 10.
PRESETS = {
    "softmax_regression": ("", "sigmoid"),
    "notebook_mlp": ("dense:100", "sigmoid"),
    "notebook_deep": (",".join(["dense:500"] * 6), "sigmoid"),
    # LeCun et al. 1998 (tanh units, as there), with same padding so 8x8 digits fit too.
    "lenet": ("conv5x5:6,maxpool2,conv5x5:16,maxpool2,flatten,dense:120,dense:84", "tanh"),
}
# Families built from other settings: ``linear`` (no hidden layer), ``mlp``
# (``--hidden`` sizes), ``cnn`` (a ``--layers`` specification).
FAMILIES = {"linear": "sigmoid", "mlp": "sigmoid", "cnn": "relu"}
MODELS = (*FAMILIES, *PRESETS)


def default_activation(model: str) -> str:
    """The hidden activation of ``model`` when none is asked for."""
    if model in PRESETS:
        return PRESETS[model][1]
    return FAMILIES.get(model, "sigmoid")


def check_registry(what: str, registry, names) -> None:
    """Raises ``ImportError`` if a module's registry and the names here differ."""
    if tuple(registry) != tuple(names):
        raise ImportError(
            f"the {what} registry {tuple(registry)} differs from models.choices {tuple(names)}"
        )
