"""What the compiled loops may ask of a training iterator beyond ``next()``.

* ``PreparedBatches`` (``reads_in_xla``): ``prepare()`` in graph mode makes the
  coming batches readable without ops XLA lacks (e.g. an epoch's shuffle);
  ``steps_prepared()`` says how many (a scalar int tensor); ``next_prepared()``
  reads the next ``(x, y)`` with XLA-compilable ops only. XLA can then compile a
  whole loop around it.
* ``Rewindable`` (``rewinds``): eagerly, ``rewind_point()`` names the next batch
  and ``rewind(point)`` hands out the same batches again from there, so a call
  can run speculatively and be undone.

``trainer.data.memory_batches.MemoryBatches`` is both.
"""

from __future__ import annotations


def reads_in_xla(iterator) -> bool:
    """Whether ``iterator`` follows the ``PreparedBatches`` protocol."""
    return all(
        callable(getattr(iterator, name, None))
        for name in ("prepare", "steps_prepared", "next_prepared")
    )


def rewinds(iterator) -> bool:
    """Whether ``iterator`` follows the ``Rewindable`` protocol."""
    return all(callable(getattr(iterator, name, None)) for name in ("rewind_point", "rewind"))
