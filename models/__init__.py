"""From-scratch building blocks on ``tf.Module``: layers, initializers, losses,
optimizers, the model zoo and a Keras-like ``fit``. No Keras anywhere."""

from models import activations, initializers, losses, optimizers, training, zoo
from models.layers import Dense, Normalization, Sequential
from models.training import TrainingProgram, fit

__all__ = [
    "Dense",
    "Normalization",
    "Sequential",
    "TrainingProgram",
    "activations",
    "fit",
    "initializers",
    "losses",
    "optimizers",
    "training",
    "zoo",
]
