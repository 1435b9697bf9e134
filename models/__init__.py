"""From-scratch building blocks on ``tf.Module``: layers, ``Sequential``,
initializers, activations, losses, optimizers, schedules, the per-layer
diagnostic math and the model zoo. No Keras anywhere; training them is the
trainer's (``trainer.fit``).

``models.registry`` (every family of names on offer) and ``models.spec`` (the
layer specification parser) import no TensorFlow; everything else is loaded on
first use, so the trainer can check its flags before TensorFlow starts.
"""

import importlib

_MODULES = (
    "activations",
    "diagnostics",
    "initializers",
    "layers",
    "losses",
    "optimizers",
    "registry",
    "schedules",
    "sequential",
    "spec",
    "zoo",
)

__all__ = [*_MODULES, "Layer", "Normalization", "Sequential"]


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f"models.{name}")
    if name == "Sequential":
        return importlib.import_module("models.sequential").Sequential
    try:
        return getattr(importlib.import_module("models.layers"), name)
    except AttributeError:
        raise AttributeError(f"module 'models' has no attribute {name!r}") from None
