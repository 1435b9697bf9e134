"""From-scratch building blocks on ``tf.Module``: layers, initializers, losses,
optimizers, the model zoo and a Keras-like ``fit``. No Keras anywhere.

``models.choices`` and ``models.spec`` (the names on offer, and the layer
specification parser) import no TensorFlow; everything else is loaded on first
use, so the trainer can check its flags before TensorFlow starts.
"""

import importlib

_LAYERS = (
    "Activation",
    "AvgPool2D",
    "BatchNorm",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "Layer",
    "MaxPool2D",
    "Normalization",
    "Sequential",
)
_MODULES = (
    "activations",
    "choices",
    "diagnostics",
    "initializers",
    "layers",
    "losses",
    "optimizers",
    "schedules",
    "spec",
    "training",
    "zoo",
)

__all__ = [*_LAYERS, *_MODULES, "TrainingProgram", "fit"]


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f"models.{name}")
    if name in _LAYERS:
        return getattr(importlib.import_module("models.layers"), name)
    if name in ("TrainingProgram", "fit"):
        return getattr(importlib.import_module("models.training"), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
