"""The model zoo: ``linear``, ``mlp`` and the notebook's named presets.

Every builder returns a ``Sequential`` whose last layer is ``linear`` (logits
for classification, raw values for regression). An optional ``normalization``
``(mean, scale)`` pair puts the training set's fitted feature scaling inside the
model as its first layer, so the model takes raw features.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from models.layers import Dense, Normalization, Sequential

# The notebook's networks, by name: (input size, hidden sizes, outputs, activation).
PRESETS = {
    "softmax_regression": (784, (), 10, "sigmoid"),
    "notebook_mlp": (784, (100,), 10, "sigmoid"),
    "notebook_deep": (784, (500,) * 6, 10, "sigmoid"),
}


def mlp(
    input_size: int,
    hidden: Sequence[int],
    num_outputs: int,
    activation: str = "sigmoid",
    init="xavier",
    seed: int = 0,
    normalization=None,
    name: str = "mlp",
) -> Sequential:
    """A multilayer perceptron ``input_size -> hidden... -> num_outputs``.

    Hidden layers use ``activation``; the output layer is linear. Layers are
    named ``hidden_0 .. hidden_{k-1}`` and ``output``. Shapes: input
    ``[batch, input_size]``, output ``[batch, num_outputs]``.
    """
    model = Sequential(name=name)
    if normalization is not None:
        mean, scale = normalization
        model.add(Normalization(mean, scale, name="normalization"))
    sizes = [int(input_size), *[int(h) for h in hidden]]
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        model.add(
            Dense(
                fan_in, fan_out, activation, init=init, seed=(seed, index), name=f"hidden_{index}"
            )
        )
    model.add(
        Dense(
            sizes[-1],
            int(num_outputs),
            "linear",
            init=init,
            seed=(seed, len(sizes) - 1),
            name="output",
        )
    )
    return model


def linear(
    input_size: int,
    num_outputs: int,
    init="xavier",
    seed: int = 0,
    normalization=None,
    name="linear",
) -> Sequential:
    """Softmax (or linear) regression: one ``Dense`` layer, no hidden layer."""
    return mlp(
        input_size, (), num_outputs, init=init, seed=seed, normalization=normalization, name=name
    )


def preset(name: str, init="xavier", seed: int = 0, normalization=None) -> Sequential:
    """One of the notebook's networks by name (see ``PRESETS``)."""
    try:
        input_size, hidden, outputs, activation = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return mlp(input_size, hidden, outputs, activation, init, seed, normalization, name=name)


MODELS = ("linear", "mlp")


def build(
    name: str,
    input_size: int,
    num_outputs: int,
    hidden: Sequence[int] = (100,),
    activation: str = "sigmoid",
    init="xavier",
    seed: int = 0,
    normalization=None,
) -> Sequential:
    """Builds ``linear`` or ``mlp`` by name, as the command line does."""
    if name == "linear":
        return linear(input_size, num_outputs, init, seed, normalization)
    if name == "mlp":
        return mlp(input_size, hidden, num_outputs, activation, init, seed, normalization)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
