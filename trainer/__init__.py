"""The trainer: the command line, its library, and ``fit``.

``trainer.fit(model, x, y, ...)`` trains a ``models.Sequential`` on arrays in
memory through the same compiled step as ``python -m trainer.main``.
"""


def fit(model, x, y, **kwargs):
    """Keras-like training of ``model`` in place; see ``trainer.engine.fit.fit``."""
    from trainer.engine.fit import fit as fit_

    return fit_(model, x, y, **kwargs)
