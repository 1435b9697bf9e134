"""Opening the ``--dataset`` a configuration names: streamed, or loaded into memory."""

from __future__ import annotations

from trainer.data import SOURCES, DataSource, arrays


def open_source(config) -> DataSource:
    """The data of ``config.dataset`` (an entry of ``trainer.data.SOURCES``).

    Raises:
      DataError: naming a bad file or flag.
    """
    if config.dataset in SOURCES and SOURCES.get(config.dataset).streaming:
        return SOURCES.load(config.dataset)(config)
    loaded = arrays.load(config)
    return arrays.ArraySource(loaded, arrays.fingerprint_arrays(loaded))
