"""The layer specification language of ``--layers``, parsed without TensorFlow.

A specification is a comma list of tokens, one per layer, first to last::

    conv3x3:32,maxpool2,conv3x3:64,maxpool2,flatten,dropout:0.5,dense:128

========================  =====================================================
token                     layer
========================  =====================================================
``dense:N``               ``Dense`` with N units
``convKxK:F``, ``convK:F`` ``Conv2D`` with F filters of K x K (NHWC)
``maxpoolK``, ``maxpoolKxK``  ``MaxPool2D`` over K x K windows (stride K)
``avgpoolK``, ``avgpoolKxK``  ``AvgPool2D``
``flatten``               ``Flatten``: ``[H, W, C]`` -> ``[H * W * C]``
``dropout:R``             ``Dropout`` of a fraction R in [0, 1) while training
``batchnorm`` (``bn``)    ``BatchNorm`` over the last axis
``relu``, ``sigmoid``...  an ``Activation`` on its own
========================  =====================================================

Options follow further colons, in any order: an activation name (``dense`` and
``conv``; default: the model's ``--activation``), ``sN`` for a stride (``conv``
and pools), ``same`` or ``valid`` padding (``conv`` default ``same``, pools
default ``valid``), and ``mM`` for a BatchNorm momentum (e.g. ``bn:m0.9``).
Examples: ``conv5x5:16:valid:tanh``, ``conv3x3:64:s2``, ``maxpool3:s2:same``.

Parsing gives ``LayerSpec``s: the layer class's name in ``models.layers`` and
its keyword arguments. Whether the shapes chain is checked when the network is
built for the data (``models.zoo.from_spec``).
"""

from __future__ import annotations

import dataclasses
import math
import re

from models import choices


class SpecError(ValueError):
    """A specification that cannot be parsed; the message names the token."""


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One parsed token: ``models.layers.<layer>(**options)``."""

    token: str
    layer: str
    options: dict

    @property
    def kind(self) -> str:
        return self.token.split(":", 1)[0]


def _size(text: str, what: str, token: str, low: int = 1, high: int = 1 << 20) -> int:
    if not re.fullmatch(r"[0-9]+", text):
        raise SpecError(f"{token!r}: {what} must be a positive integer, got {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise SpecError(f"{token!r}: {what} must be between {low} and {high}, got {value}")
    return value


def _window(text: str, token: str) -> int:
    """``"3"`` or ``"3x3"`` -> 3 (square windows only)."""
    first, _, second = text.partition("x")
    size = _size(first, "the window size", token, high=1024)
    if second and _size(second, "the window size", token, high=1024) != size:
        raise SpecError(f"{token!r}: only square windows are supported (e.g. 3x3)")
    return size


def _options(parts: list[str], token: str, allowed: set[str]) -> dict:
    """Reads ``activation``, ``sN``, ``same|valid`` and ``mM`` options."""
    options: dict = {}

    def put(name, value):
        if name in options:
            raise SpecError(f"{token!r}: {name} given twice")
        options[name] = value

    for part in parts:
        if "activation" in allowed and part in choices.ACTIVATIONS:
            put("activation", part)
        elif "padding" in allowed and part in ("same", "valid"):
            put("padding", part)
        elif "strides" in allowed and re.fullmatch(r"s[0-9]+", part):
            put("strides", _size(part[1:], "the stride", token, high=1024))
        elif "momentum" in allowed and re.fullmatch(r"m[0-9.]+", part):
            put("momentum", _fraction(part[1:], "the momentum", token))
        else:
            raise SpecError(f"{token!r}: unknown option {part!r} ({_option_help(allowed)})")
    return options


def _option_help(allowed: set[str]) -> str:
    words = {
        "activation": f"an activation: {', '.join(choices.ACTIVATIONS)}",
        "strides": "sN for a stride",
        "padding": "same or valid",
        "momentum": "mM for a momentum in [0, 1)",
    }
    known = [
        words[name] for name in ("activation", "strides", "padding", "momentum") if name in allowed
    ]
    return "options: " + "; ".join(known) if known else "it takes no options"


def _fraction(text: str, what: str, token: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"{token!r}: {what} must be a number in [0, 1), got {text!r}") from None
    if not (math.isfinite(value) and 0 <= value < 1):
        raise SpecError(f"{token!r}: {what} must be in [0, 1), got {text}")
    return value


def _dense(head: str, args: list[str], token: str) -> LayerSpec:
    if head != "dense" or not args:
        raise SpecError(f"{token!r}: write dense:UNITS, e.g. dense:128")
    options = _options(args[1:], token, {"activation"})
    options["output_size"] = _size(args[0], "the number of units", token, high=2**31 - 1)
    return LayerSpec(token, "Dense", options)


def _conv(head: str, args: list[str], token: str) -> LayerSpec:
    if not args:
        raise SpecError(f"{token!r}: write convKxK:FILTERS, e.g. conv3x3:32")
    if head == "conv":
        raise SpecError(f"{token!r}: give the kernel size, e.g. conv3x3:32")
    kernel = _window(head[len("conv") :], token)
    options = _options(args[1:], token, {"activation", "strides", "padding"})
    options["filters"] = _size(args[0], "the number of filters", token, high=1 << 16)
    options["kernel_size"] = kernel
    return LayerSpec(token, "Conv2D", options)


def _pool(layer: str, prefix: str):
    def parse(head: str, args: list[str], token: str) -> LayerSpec:
        window = head[len(prefix) :]
        if not window:
            raise SpecError(f"{token!r}: give the window size, e.g. {prefix}2")
        options = _options(args, token, {"strides", "padding"})
        options["pool_size"] = _window(window, token)
        return LayerSpec(token, layer, options)

    return parse


def _flatten(head: str, args: list[str], token: str) -> LayerSpec:
    if args:
        raise SpecError(f"{token!r}: flatten takes no options")
    return LayerSpec(token, "Flatten", {})


def _dropout(head: str, args: list[str], token: str) -> LayerSpec:
    if len(args) != 1:
        raise SpecError(f"{token!r}: write dropout:RATE with RATE in [0, 1), e.g. dropout:0.5")
    return LayerSpec(token, "Dropout", {"rate": _fraction(args[0], "the rate", token)})


def _batchnorm(head: str, args: list[str], token: str) -> LayerSpec:
    return LayerSpec(token, "BatchNorm", _options(args, token, {"momentum"}))


def _activation(head: str, args: list[str], token: str) -> LayerSpec:
    if args:
        raise SpecError(f"{token!r}: an activation token takes no options")
    return LayerSpec(token, "Activation", {"activation": head})


# Token heads (matched as a prefix for windowed layers) -> parser. Adding a
# layer kind: one entry here, its class in models.layers, and its tests.
KINDS = {
    "dense": _dense,
    "conv": _conv,
    "maxpool": _pool("MaxPool2D", "maxpool"),
    "avgpool": _pool("AvgPool2D", "avgpool"),
    "flatten": _flatten,
    "dropout": _dropout,
    "batchnorm": _batchnorm,
    "bn": _batchnorm,
    **{name: _activation for name in choices.ACTIVATIONS},
}
# Heads that take a window size glued on (conv3x3, maxpool2).
_WINDOWED = ("conv", "maxpool", "avgpool")


def parse(text: str) -> list[LayerSpec]:
    """Parses a specification (see the module docstring); ``""`` is no layers.

    Raises:
      SpecError: naming the first bad token and what is wrong with it.
    """
    text = str(text).strip()
    if not text:
        return []
    specs = []
    for position, raw in enumerate(text.split(",")):
        token = raw.strip().lower()
        if not token:
            raise SpecError(f"empty token at position {position + 1} (two commas in a row?)")
        head, *args = token.split(":")
        kind = next((k for k in _WINDOWED if head.startswith(k)), head)
        parser = KINDS.get(kind)
        if parser is None:
            raise SpecError(
                f"{raw.strip()!r}: unknown layer; known: dense:N, convKxK:F, maxpoolK, "
                "avgpoolK, flatten, dropout:R, batchnorm, or an activation "
                f"({', '.join(choices.ACTIVATIONS)})"
            )
        specs.append(parser(head, args, token))
    return specs


def uses_images(specs: list[LayerSpec]) -> bool:
    """Whether the network's first shape-bound layer wants ``[H, W, C]`` examples."""
    for spec in specs:
        if spec.layer in ("Conv2D", "MaxPool2D", "AvgPool2D"):
            return True
        if spec.layer in ("Dense", "Flatten"):
            return False
    return False


def model_spec(model: str, layers: str | None, hidden=()) -> str:
    """The specification (before the output layer) of a model family or preset."""
    if model in choices.PRESETS:
        return choices.PRESETS[model][0]
    if model == "linear":
        return ""
    if model == "mlp":
        return ",".join(f"dense:{int(size)}" for size in hidden)
    if model == "cnn":
        return choices.DEFAULT_CNN_LAYERS if layers is None else layers
    raise SpecError(f"unknown model {model!r}; choose one of {', '.join(choices.MODELS)}")
