"""Layers as ``tf.Module``s, one per module, on the contract of ``models.layers.base``.

``models.registry.LAYERS`` lists the layers a ``--layers`` specification can
name; their classes load from here by name (``models.layers.Dense``).
"""

import importlib

# Layers that are not specification tokens: the contract, and the model's own
# feature scaling.
_OTHERS = {
    "Layer": "base",
    "KernelLayer": "base",
    "ScaleShift": "base",
    "Normalization": "normalization",
}


def __getattr__(name):
    if name in _OTHERS:
        return getattr(importlib.import_module(f"models.layers.{_OTHERS[name]}"), name)
    from models import registry

    for kind in registry.LAYERS:
        if kind.target.rpartition(":")[2] == name:
            return kind.load()
    raise AttributeError(f"module 'models.layers' has no attribute {name!r}")
