"""Opening the ``--dataset`` a configuration names: streamed, or loaded into memory."""

from __future__ import annotations

from trainer.data import SOURCES, DataSource, arrays


def open_source(config) -> DataSource:
    """The data of ``config.dataset`` (an entry of ``trainer.data.SOURCES``).

    Raises:
      DataError: naming a bad file or flag.
    """
    source = SOURCES.get(config.dataset)
    if source is not None and source.streaming:
        return source.load()(config)
    loaded = arrays.load(config)
    return arrays.ArraySource(loaded, arrays.fingerprint_arrays(loaded))
