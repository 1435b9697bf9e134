"""Optimizers as ``tf.Module``s, one per module, on the contract of
``models.optimizers.base``; ``models.registry.OPTIMIZERS`` names them, with
their default learning rates and hyperparameters.
"""

from __future__ import annotations

import importlib

from models import registry


def get(name: str, learning_rate: float | None = None, clip_norm: float | None = None, **options):
    """Builds optimizer ``name`` (``learning_rate`` defaults to the registry's rate
    for it; ``options`` are its hyperparameters, the rest take their defaults).

    Raises:
      ValueError: an unknown name or hyperparameter, or a value out of range.
    """
    entry = registry.OPTIMIZERS.get(name)
    unknown = sorted(set(options) - set(entry.hyperparameters))
    if unknown:
        raise ValueError(f"--optimizer={name} takes no {', '.join(unknown)}")
    factory = entry.load()
    rate = entry.learning_rate if learning_rate is None else learning_rate
    return factory(learning_rate=rate, clip_norm=clip_norm, **entry.fixed, **options)


def slot_count(name: str) -> int:
    """How many slot variables optimizer ``name`` keeps per trainable variable."""
    return len(registry.OPTIMIZERS.load(name).slot_names)


def __getattr__(name):
    if name in ("Optimizer", "largest_norm"):
        return getattr(importlib.import_module("models.optimizers.base"), name)
    for entry in registry.OPTIMIZERS:
        if entry.target.rpartition(":")[2] == name:
            return entry.load()
    raise AttributeError(f"module 'models.optimizers' has no attribute {name!r}")
