"""The layer specification language of ``--layers``, parsed without TensorFlow.

A specification is a comma list of tokens, one per layer, first to last::

    conv3x3:32,maxpool2,conv3x3:64,maxpool2,flatten,dropout:0.5,dense:128

The tokens are those of ``models.registry.LAYERS`` (README lists them): a head
word, with a square window glued on for convolutions and pools (``conv3x3``,
``maxpool2``), the value after the first colon for layers that take one
(``dense:128``), then options after further colons, in any order: an activation
name, ``sN`` for a stride, ``same`` or ``valid`` padding, ``mM`` for a
BatchNorm momentum (e.g. ``conv5x5:16:valid:tanh``, ``conv3x3:64:s2``,
``bn:m0.9``).

Parsing gives ``LayerSpec``s: the registry entry and the constructor's keyword
arguments. Whether the shapes chain is checked when the network is built for
the data (``models.zoo``).
"""

from __future__ import annotations

import dataclasses
import math
import re

from models import registry


class SpecError(ValueError):
    """A specification that cannot be parsed; the message names the token."""


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One parsed token: ``kind``'s layer class called with ``options``."""

    token: str
    kind: registry.LayerKind
    options: dict

    @property
    def layer(self) -> str:
        """The layer class's name, e.g. ``Conv2D``."""
        return self.kind.target.rpartition(":")[2]


def _size(text: str, what: str, token: str, high: int = 1 << 20) -> int:
    if not re.fullmatch(r"[0-9]+", text):
        raise SpecError(f"{token!r}: {what} must be a positive integer, got {text!r}")
    value = int(text)
    if not 1 <= value <= high:
        raise SpecError(f"{token!r}: {what} must be between 1 and {high}, got {value}")
    return value


def _fraction(text: str, what: str, token: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"{token!r}: {what} must be a number in [0, 1), got {text!r}") from None
    if not (math.isfinite(value) and 0 <= value < 1):
        raise SpecError(f"{token!r}: {what} must be in [0, 1), got {text}")
    return value


def _window(text: str, token: str) -> int:
    """``"3"`` or ``"3x3"`` -> 3 (square windows only)."""
    first, _, second = text.partition("x")
    size = _size(first, "the window size", token, high=1024)
    if second and _size(second, "the window size", token, high=1024) != size:
        raise SpecError(f"{token!r}: only square windows are supported (e.g. 3x3)")
    return size


@dataclasses.dataclass(frozen=True)
class Option:
    """An option after a token's colons: whether a part is one, its value, and
    what it is called in the list of a token's options."""

    matches: object  # part -> bool
    value: object  # (part, token) -> value
    help: str


OPTIONS = {
    "activation": Option(
        lambda part: part in registry.ACTIVATIONS,
        lambda part, token: part,
        "an activation: " + ", ".join(registry.ACTIVATIONS.names),
    ),
    "padding": Option(
        lambda part: part in ("same", "valid"), lambda part, token: part, "same or valid"
    ),
    "strides": Option(
        lambda part: re.fullmatch(r"s[0-9]+", part),
        lambda part, token: _size(part[1:], "the stride", token, high=1024),
        "sN for a stride",
    ),
    "momentum": Option(
        lambda part: re.fullmatch(r"m[0-9.]+", part),
        lambda part, token: _fraction(part[1:], "the momentum", token),
        "mM for a momentum in [0, 1)",
    ),
}


def _options(parts: list[str], token: str, allowed: tuple[str, ...]) -> dict:
    options: dict = {}
    for part in parts:
        name = next((n for n in allowed if OPTIONS[n].matches(part)), None)
        if name is None:
            known = "; ".join(OPTIONS[n].help for n in allowed)
            what = f"options: {known}" if known else "it takes no options"
            raise SpecError(f"{token!r}: unknown option {part!r} ({what})")
        if name in options:
            raise SpecError(f"{token!r}: {name} given twice")
        options[name] = OPTIONS[name].value(part, token)
    return options


def _heads() -> dict[str, registry.LayerKind]:
    return {head: kind for kind in registry.LAYERS for head in (kind.name, *kind.aliases)}


def _parse_token(token: str) -> LayerSpec:
    head, *args = token.split(":")
    heads = _heads()
    windowed = [h for h in heads if heads[h].window and head.startswith(h)]
    kind = heads.get(max(windowed, key=len) if windowed else head)
    if kind is None:
        known = ", ".join(k.usage.split(" ")[0] for k in registry.LAYERS if not k.fixed)
        raise SpecError(
            f"{token!r}: unknown layer; known: {known}, or an activation "
            f"({', '.join(registry.ACTIVATIONS.names)})"
        )
    options = dict(kind.fixed)
    if kind.window:
        window = head[len(kind.name) :]
        if not window:
            raise SpecError(f"{token!r}: give the {kind.window_label}, e.g. {kind.example}")
    if kind.argument is not None:
        if not args:
            raise SpecError(f"{token!r}: write {kind.usage}, e.g. {kind.example}")
        argument = kind.argument
        text = args.pop(0)
        if argument.kind == "fraction":
            options[argument.option] = _fraction(text, argument.label, token)
        else:
            options[argument.option] = _size(text, argument.label, token, argument.high)
    elif args and not kind.options:
        raise SpecError(f"{token!r}: {kind.name} takes no options")
    if kind.window:
        options[kind.window] = _window(window, token)
    options.update(_options(args, token, kind.options))
    return LayerSpec(token, kind, options)


MAX_LAYERS = 1000  # deeper networks take minutes to build before their first step


def parse(text: str) -> list[LayerSpec]:
    """Parses a specification (see the module docstring); ``""`` is no layers.

    Raises:
      SpecError: naming the first bad token and what is wrong with it.
    """
    text = str(text).strip()
    if not text:
        return []
    tokens = text.split(",")
    if len(tokens) > MAX_LAYERS:
        raise SpecError(f"{len(tokens)} layers: at most {MAX_LAYERS}")
    specs = []
    for position, raw in enumerate(tokens):
        token = raw.strip().lower()
        if not token:
            raise SpecError(f"empty token at position {position + 1} (two commas in a row?)")
        specs.append(_parse_token(token))
    return specs


def uses_images(specs: list[LayerSpec]) -> bool:
    """Whether the network's first shape-bound layer wants ``[H, W, C]`` examples."""
    for spec in specs:
        if spec.kind.input is not None:
            return spec.kind.input == "images"
    return False


def model_spec(model: str, layers: str | None = None, hidden=()) -> str:
    """The specification (before the output layer) of a ``--model`` (``registry.MODELS``)."""
    try:
        kind = registry.MODELS.get(model)
    except ValueError as error:
        raise SpecError(str(error)) from None
    if kind.takes == "hidden":
        return ",".join(f"dense:{int(size)}" for size in hidden)
    if kind.takes == "layers" and layers is not None:
        return layers
    return kind.layers or ""


def parse_augmentations(text: str) -> list[tuple[str, dict]]:
    """``"flip,crop:4"`` -> ``[("flip", {}), ("crop", {"padding": 4})]`` (``""``: none).

    Raises:
      SpecError: an unknown name, a bad or missing number, or a name given twice.
    """
    result, seen = [], set()
    for token in (t.strip() for t in str(text).split(",")):
        if not token:
            if str(text).strip():
                raise SpecError(f"{text!r}: an empty name between commas")
            continue
        name, _, value = token.partition(":")
        if name not in registry.AUGMENTATIONS:
            names = ", ".join(registry.AUGMENTATIONS.names)
            raise SpecError(f"{token!r}: unknown augmentation; choose from {names}")
        if name in seen:
            raise SpecError(f"{token!r}: given twice")
        seen.add(name)
        entry = registry.AUGMENTATIONS.get(name)
        options = {}
        if value:
            if entry.option is None:
                raise SpecError(f"{token!r}: {name} takes no value")
            if not value.isdigit() or not 1 <= int(value) <= entry.high:
                raise SpecError(f"{token!r}: the {entry.option} must be a whole number in "
                                f"1..{entry.high}")  # fmt: skip
            options[entry.option] = int(value)
        elif entry.option is not None:
            options[entry.option] = entry.default
        result.append((name, options))
    return result
