"""Learning-rate schedules computed in-graph from the step.

A ``Schedule`` maps the number of the update being taken, ``u`` (1 for the
first update; an int64 tensor), to the learning rate of that update::

    lr(u) = base * scale * warmup(u) * decay(max(0, u - W))
    warmup(u) = min(1, u / W)            (W = warmup_steps; 1 when W = 0)

with ``decay(t)`` one of

    constant     1
    piecewise    rate ** (number of boundaries b with u > b)
    exponential  rate ** (t / decay_steps)
    cosine       m + (1 - m) * (1 + cos(pi * min(t, D) / D)) / 2
                 (D = decay_steps, m = min_fraction)

and ``scale`` a variable that reduce-on-plateau multiplies (1 otherwise).
Since the rate follows from the step (and the checkpointed ``scale``), a
resumed run applies exactly the rates an uninterrupted one would.
"""

from __future__ import annotations

import math

import tensorflow as tf

from models import choices

SCHEDULES = choices.LR_SCHEDULES


class Schedule(tf.Module):
    """The learning rate of each update (see the module docstring).

    Args:
      base: the peak learning rate (> 0).
      kind: one of ``SCHEDULES``.
      warmup_steps: updates of linear warmup from ``base / W`` to ``base``.
      decay_steps: exponential: steps per factor of ``rate``; cosine: length
        of the decay after warmup (required for both).
      decay_rate: piecewise and exponential factor (> 0).
      boundaries: piecewise: increasing update numbers where the rate drops.
      min_fraction: cosine: the final rate as a fraction of ``base``.
    """

    def __init__(
        self,
        base: float,
        kind: str = "constant",
        warmup_steps: int = 0,
        decay_steps: int | None = None,
        decay_rate: float = 0.1,
        boundaries=(),
        min_fraction: float = 0.0,
        name: str = "schedule",
    ):
        super().__init__(name=name)
        if kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
        if not base > 0:
            raise ValueError(f"the learning rate must be > 0, got {base}")
        if kind in ("exponential", "cosine") and not (decay_steps and decay_steps > 0):
            raise ValueError(f"the {kind} schedule needs decay_steps >= 1")
        boundaries = [int(b) for b in boundaries]
        if boundaries != sorted(set(boundaries)) or any(b < 1 for b in boundaries):
            raise ValueError(f"boundaries must be increasing steps >= 1, got {boundaries}")
        self.base = float(base)
        self.kind = kind
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps or 0)
        self.decay_rate = float(decay_rate)
        self.boundaries = boundaries
        self.min_fraction = float(min_fraction)
        with self.name_scope:
            # Multiplied by reduce-on-plateau; checkpointed with the run.
            self.scale = tf.Variable(1.0, trainable=False, dtype=tf.float32, name="scale")

    def __call__(self, update) -> tf.Tensor:
        """The float32 learning rate of update number ``update`` (>= 1, a tensor)."""
        u = tf.cast(update, tf.float32)
        rate = tf.constant(self.base, tf.float32) * self.scale
        if self.warmup_steps:
            rate *= tf.minimum(1.0, u / float(self.warmup_steps))
        t = tf.maximum(0.0, u - float(self.warmup_steps))
        if self.kind == "piecewise" and self.boundaries:
            passed = tf.reduce_sum(
                tf.cast(u > tf.constant(self.boundaries, tf.float32), tf.float32)
            )
            rate *= tf.pow(self.decay_rate, passed)
        elif self.kind == "exponential":
            rate *= tf.pow(self.decay_rate, t / float(self.decay_steps))
        elif self.kind == "cosine":
            progress = tf.minimum(t, float(self.decay_steps)) / float(self.decay_steps)
            cosine = 0.5 * (1.0 + tf.cos(math.pi * progress))
            rate *= self.min_fraction + (1.0 - self.min_fraction) * cosine
        return rate

    def describe(self) -> str:
        """One line for the log, e.g. ``0.01`` (constant) or ``cosine from 0.001 to 0
        over 900 steps, linear warmup over 100 steps``."""
        text = {
            "constant": f"{self.base:g}",
            "piecewise": f"piecewise from {self.base:g}, x{self.decay_rate:g} after steps "
            + ",".join(map(str, self.boundaries)),
            "exponential": f"exponential from {self.base:g}, x{self.decay_rate:g} every "
            f"{self.decay_steps} steps",
            "cosine": f"cosine from {self.base:g} to {self.base * self.min_fraction:g} over "
            f"{self.decay_steps} steps",
        }[self.kind]
        if self.warmup_steps:
            text += f", linear warmup over {self.warmup_steps} steps"
        return text
