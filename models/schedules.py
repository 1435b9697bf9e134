"""Learning-rate schedules computed in-graph from the step.

A ``Schedule`` maps the number of the update being taken, ``u`` (1 for the
first update; an int64 tensor), to the learning rate of that update::

    lr(u) = base * scale * warmup(u) * decay(u, max(0, u - W))
    warmup(u) = min(1, u / W)            (W = warmup_steps; 1 when W = 0)

with ``decay`` one of the functions below, named in
``models.registry.SCHEDULES``, and ``scale`` a variable that reduce-on-plateau
multiplies (1 otherwise). Since the rate follows from the step (and the
checkpointed ``scale``), a resumed run applies exactly the rates an
uninterrupted one would.

A decay is ``decay(update, elapsed, **options) -> float32 multiplier``:
``update`` is ``u``, ``elapsed`` the updates since warmup ended (both float32
tensors), ``options`` the schedule's (``models.registry.SCHEDULE_OPTIONS``).
"""

from __future__ import annotations

import math

import tensorflow as tf

from models import registry


def constant(update, elapsed):
    """1: the base rate throughout."""
    return tf.ones_like(update)


def piecewise(update, elapsed, boundaries, decay_rate):
    """``decay_rate ** (number of boundaries b with u > b)``."""
    passed = tf.reduce_sum(tf.cast(update > tf.constant(boundaries, tf.float32), tf.float32))
    return tf.pow(decay_rate, passed)


def exponential(update, elapsed, decay_steps, decay_rate):
    """``decay_rate ** (t / decay_steps)``."""
    return tf.pow(decay_rate, elapsed / float(decay_steps))


def cosine(update, elapsed, decay_steps, min_fraction):
    """``m + (1 - m) * (1 + cos(pi * min(t, D) / D)) / 2`` (D = decay_steps, m = min_fraction)."""
    progress = tf.minimum(elapsed, float(decay_steps)) / float(decay_steps)
    wave = 0.5 * (1.0 + tf.cos(math.pi * progress))
    return min_fraction + (1.0 - min_fraction) * wave


def polynomial(update, elapsed, decay_steps, min_fraction, power):
    """``m + (1 - m) * (1 - min(t, D) / D) ** power`` (D = decay_steps, m = min_fraction)."""
    remaining = 1.0 - tf.minimum(elapsed, float(decay_steps)) / float(decay_steps)
    return min_fraction + (1.0 - min_fraction) * tf.pow(remaining, power)


class Schedule(tf.Module):
    """The learning rate of each update (see the module docstring).

    Args:
      base: the peak learning rate (> 0).
      kind: a name in ``models.registry.SCHEDULES``.
      warmup_steps: updates of linear warmup from ``base / W`` to ``base``.
      **options: the schedule's options (``decay_steps``, ``decay_rate``,
        ``boundaries``, ...); those not given take the registry's defaults.

    Raises:
      ValueError: an unknown kind or option, a missing or bad option value.
    """

    def __init__(self, base: float, kind: str = "constant", warmup_steps: int = 0, **options):
        super().__init__(name="schedule")
        entry = registry.SCHEDULES.get(kind)
        if not base > 0:
            raise ValueError(f"the learning rate must be > 0, got {base}")
        unknown = sorted(set(options) - set(entry.options))
        if unknown:
            raise ValueError(f"the {kind} schedule takes no {', '.join(unknown)}")
        values = {**entry.options, **{k: v for k, v in options.items() if v is not None}}
        for name, value in values.items():
            if value is None or value in (registry.REST_OF_RUN, registry.ONE_EPOCH):
                raise ValueError(f"the {kind} schedule needs {name}")
            registry.SCHEDULE_OPTIONS[name].require(name, value)
            values[name] = registry.SCHEDULE_OPTIONS[name].value(value)
        self.base = float(base)
        self.kind = kind
        self.warmup_steps = int(warmup_steps)
        self.options = values
        self._decay = entry.load()
        with self.name_scope:
            # Multiplied by reduce-on-plateau; checkpointed with the run.
            self.scale = tf.Variable(1.0, trainable=False, dtype=tf.float32, name="scale")

    def __call__(self, update) -> tf.Tensor:
        """The float32 learning rate of update number ``update`` (>= 1, a tensor)."""
        u = tf.cast(update, tf.float32)
        rate = tf.constant(self.base, tf.float32) * self.scale
        if self.warmup_steps:
            rate *= tf.minimum(1.0, u / float(self.warmup_steps))
        if self.kind == "constant":
            return rate
        elapsed = tf.maximum(0.0, u - float(self.warmup_steps))
        return rate * self._decay(u, elapsed, **self.options)

    def describe(self) -> str:
        """One line for the log, e.g. ``0.01`` (constant) or ``cosine from 0.001
        (decay_steps 900, min_fraction 0), linear warmup over 100 steps``."""
        text = f"{self.base:g}"
        if self.kind != "constant":
            shown = ", ".join(
                f"{name} {','.join(map(str, value)) if isinstance(value, list) else f'{value:g}'}"
                for name, value in self.options.items()
            )
            text = f"{self.kind} from {self.base:g} ({shown})"
        if self.warmup_steps:
            text += f", linear warmup over {self.warmup_steps} steps"
        return text
