"""The model zoo: networks from a layer specification, and the named presets.

Every builder returns a ``Sequential`` whose last layer is a linear ``Dense``
(logits for classification, raw values for regression). An optional
``normalization`` ``(mean, scale)`` pair puts the training set's fitted feature
scaling inside the model as its first layer, so the model takes raw features.

The networks ``--model`` names are ``models.registry.MODELS``: families built
from settings (``linear``, ``mlp`` from ``hidden`` sizes, ``cnn`` from a
``models.spec`` layer specification) and named presets.
"""

from __future__ import annotations

import collections
import inspect
from collections.abc import Sequence

import numpy as np

from models import registry
from models import spec as spec_lib
from models.layers.dense import Dense
from models.layers.normalization import Normalization
from models.sequential import Sequential


def _input_shape(input_shape) -> tuple[int, ...]:
    if isinstance(input_shape, int | np.integer):
        return (int(input_shape),)
    return tuple(int(d) for d in input_shape)


def from_spec(
    specification: str | Sequence[spec_lib.LayerSpec],
    input_shape,
    num_outputs: int,
    activation: str = "relu",
    init="xavier",
    seed: int = 0,
    normalization=None,
    output_in_spec: bool = False,
    name: str = "model",
) -> Sequential:
    """Builds ``input -> [normalization] -> layers -> linear output``.

    Args:
      specification: a ``models.spec`` string such as
        ``"conv3x3:32,maxpool2,flatten,dense:128"``, or parsed ``LayerSpec``s.
      input_shape: one example's shape, ``D`` or ``(H, W, C)``.
      num_outputs: units of the linear output layer (classes, or 1).
      activation: for ``dense`` and ``conv`` tokens that name none.
      init: weight initializer for every kernel.
      seed: layer ``k`` with weights draws from seed ``(seed, k)``; ``Dropout``
        from its position.
      normalization: optional ``(mean, scale)``, each of ``input_shape`` (or
        flat with as many values).
      output_in_spec: when the last token is ``dense:N`` with ``N ==
        num_outputs`` and no activation, it is the output layer itself rather
        than a hidden layer followed by one (``dense:10:relu`` stays hidden).

    Raises:
      ValueError: a bad token, or layers whose shapes do not chain; the message
        names the token.
    """
    shape = _input_shape(input_shape)
    model = Sequential(input_shape=shape, name=name)
    if normalization is not None:
        mean, scale = (np.asarray(a, np.float32).reshape(shape) for a in normalization)
        model.add(Normalization(mean, scale, name="normalization"))
    for token, layer in _layers(specification, num_outputs, activation, init, seed, output_in_spec):
        try:
            model.add(layer)
        except ValueError as error:
            raise ValueError(f"{token!r}: {error}") from None
    return model


def _layers(specification, num_outputs, activation, init, seed, output_in_spec):
    """``[(token, unbuilt layer)]`` for a specification, the output layer last."""
    specs = spec_lib.parse(specification) if isinstance(specification, str) else list(specification)
    output_token = "the output layer"
    last = specs[-1] if specs else None
    if (
        output_in_spec
        and last
        and last.kind.name == "dense"
        and "activation" not in last.options
        and last.options["output_size"] == int(num_outputs)
    ):
        output_token = specs.pop().token
    counts: collections.Counter = collections.Counter()
    weighted = 0
    result = []
    for position, spec in enumerate(specs):
        cls = spec.kind.load()
        accepted = inspect.signature(cls).parameters
        options = dict(spec.options)
        if "activation" in accepted:
            options.setdefault("activation", activation)
        if "init" in accepted:
            options.update(init=init, seed=(seed, weighted))
            weighted += 1
        elif "seed" in accepted:
            options["seed"] = (seed, 1000 + position)
        prefix = spec.kind.layer_prefix  # hidden_0, hidden_1, conv_0, maxpool_0, ...
        options["name"] = f"{prefix}_{counts[prefix]}"
        counts[prefix] += 1
        try:
            result.append((spec.token, cls(**options)))
        except ValueError as error:
            raise ValueError(f"{spec.token!r}: {error}") from None
    output = Dense(output_size=int(num_outputs), init=init, seed=(seed, weighted), name="output")
    result.append((output_token, output))
    return result


def plan(
    name: str,
    input_shape,
    num_outputs: int,
    hidden: Sequence[int] = (100,),
    layers: str | None = None,
) -> tuple[list[tuple[int, ...]], int]:
    """What ``build`` would make, without creating any variable.

    Returns:
      ``(shapes, parameters)``: each layer's output shape and the number of
      scalars in the model's variables (normalization excluded).

    Raises:
      ValueError: as ``build``, for a bad token or shapes that do not chain.
    """
    shape = _input_shape(input_shape)
    specification = spec_lib.model_spec(name, layers, hidden)
    shapes, parameters = [], 0
    output_in_spec = registry.MODELS.get(name).takes == "layers"
    for token, layer in _layers(specification, num_outputs, "linear", "zeros", 0, output_in_spec):
        try:
            following = layer.output_shape(shape)
        except ValueError as error:
            raise ValueError(f"{token!r}: {error} but its input is {list(shape)}") from None
        parameters += layer.parameter_count(shape)
        shape = following
        shapes.append(shape)
    return shapes, parameters


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
    specification = spec_lib.model_spec("mlp", None, hidden)
    return from_spec(
        specification, input_size, num_outputs, activation, init, seed, normalization, name=name
    )


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


def preset(
    name: str,
    init=None,
    seed: int = 0,
    normalization=None,
    input_shape=None,
    num_outputs: int = 10,
    activation: str | None = None,
) -> Sequential:
    """One of the named networks of ``models.registry.MODELS``.

    ``input_shape`` defaults to the notebook's 784 features, or 28 x 28 x 1 images
    for a preset that takes images (``lenet``, ``resnet20``, ``cifar_cnn``);
    ``activation`` and ``init`` to the preset's own.
    """
    kind = registry.MODELS.get(name)
    if kind.takes is not None:
        raise ValueError(f"{name} is built from settings, not a preset; use build()")
    specification, own_activation = kind.layers, kind.activation
    if input_shape is None:
        images = spec_lib.uses_images(spec_lib.parse(specification))
        input_shape = (28, 28, 1) if images else (784,)
    return from_spec(
        specification,
        input_shape,
        num_outputs,
        activation or own_activation,
        init or kind.init,
        seed,
        normalization,
        name=name,
    )


def uses_images(name: str, layers: str | None = None) -> bool:
    """Whether model ``name`` (with ``layers`` for ``cnn``) takes ``[H, W, C]`` examples."""
    return spec_lib.uses_images(spec_lib.parse(spec_lib.model_spec(name, layers)))


def build(
    name: str,
    input_shape,
    num_outputs: int,
    hidden: Sequence[int] = (100,),
    activation: str | None = None,
    init=None,
    seed: int = 0,
    normalization=None,
    layers: str | None = None,
) -> Sequential:
    """Builds a family or preset by name, as the command line does; ``activation``
    and ``init`` default to the model's own.

    Raises:
      ValueError: an unknown name, a bad ``layers`` token, or shapes that do
        not chain (the message names the token).
    """
    kind = registry.MODELS.get(name)
    specification = spec_lib.model_spec(name, layers, hidden)
    return from_spec(
        specification,
        input_shape,
        num_outputs,
        activation or kind.activation,
        init or kind.init,
        seed,
        normalization,
        output_in_spec=kind.takes == "layers",
        name=name,
    )
