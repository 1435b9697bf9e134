"""Splits of data held in memory, and the feature scaling fitted on the
training split (scikit-learn's ``train_test_split`` and ``StandardScaler``).

A split holds out ``ceil(fraction * n)`` examples, stratified by class when
every class can be on both sides, with ``--seed`` as scikit-learn's
``random_state``: first the test split (``--test_fraction``) from the whole
data, when the data have no test split of their own, then the validation split
(``--validation_fraction``) from what is left for training. README says how to
reproduce both for a baseline.
"""

from __future__ import annotations

import math

import numpy as np

from trainer.errors import DataError


def standard_scaling(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, scale)`` float32 ``[D]`` of ``x_train`` ``[n, D]``, as StandardScaler fits them."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    return scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32)


def split_indices(y, n: int, fraction: float, seed: int, source: str, held: str = "test"):
    """Holds out ``ceil(fraction * n)`` of ``n`` examples (as scikit-learn does).

    The split is stratified by class when every class can be on both sides;
    otherwise (regression, a single class, a tiny dataset, or a class with one
    example) it is a plain seeded shuffle, in which a class left with no
    training example swaps one of its held-out examples for a training example of
    a class that has others there (if there are at least as many training
    examples as classes): every class is then learnt.

    Args:
      y: int64 ``[n]`` class ids, or ``None`` for regression targets.
      source: names the data in messages, e.g. the CSV's path.
      held: the split held out, ``test`` or ``validation`` (its flag is
        ``--<held>_fraction``).

    Returns:
      ``(train_indices, held_out_indices, note)``; ``note`` is ``""`` or says
      for the log why a classification split is not stratified.

    Raises:
      DataError: the split would leave no train or no held-out example.
    """
    from sklearn.model_selection import train_test_split

    flag = f"--{held}_fraction={fraction:g}"
    if n < 2:
        hint = (
            "; lower --test_fraction, or give the validation split" if held == "validation" else ""
        )
        raise DataError(
            f"{source}: holds {n} example; needs at least 2 to hold some out for {held}{hint}"
        )
    if not 0 < fraction < 1:
        raise DataError(f"{flag}: must be in (0, 1)")
    n_eval = math.ceil(fraction * n)
    n_train = n - n_eval
    if n_train < 1 or n_eval < 1:
        highest = math.floor((n - 1) / n * 10_000) / 10_000
        raise DataError(
            f"{flag}: splitting the {n} examples of {source} leaves {n_train} train / "
            f"{n_eval} {held} examples; for {n} examples use a --{held}_fraction in "
            f"(0, {highest:g}], which keeps at least 1 on each side"
        )
    stratify, note = False, ""
    if y is not None:
        counts = np.bincount(y)
        classes = int(np.count_nonzero(counts))
        if classes > 1:
            stratify = counts[counts > 0].min() >= 2 and min(n_train, n_eval) >= classes
            if not stratify:
                note = f" (not stratified: too few examples for {classes} classes)"
    # An integer test_size: the same split as the fraction, without a second rounding.
    train, held_out = train_test_split(
        np.arange(n), test_size=n_eval, random_state=seed, stratify=y if stratify else None
    )
    if y is not None and not stratify and n_train >= int(np.count_nonzero(np.bincount(y))):
        train, held_out = _cover_classes(y, train, held_out)
    return train, held_out, note


def _cover_classes(y, train, held_out):
    """Swaps the first held-out example of each class missing from ``train`` with the
    last training example of a class that has others there (deterministic; a
    no-op when every class has a training example)."""
    counts = np.bincount(y[train], minlength=len(np.bincount(y)))
    missing = np.flatnonzero((counts == 0) & (np.bincount(y) > 0))
    if not missing.size:
        return train, held_out
    train, held_out = train.copy(), held_out.copy()
    for label in missing:
        out = int(np.flatnonzero(y[held_out] == label)[0])
        into = int(np.flatnonzero(counts[y[train]] >= 2)[-1])
        counts[y[train[into]]] -= 1
        counts[label] += 1
        train[into], held_out[out] = held_out[out], train[into]
    return train, held_out


def split(x, y, fraction: float, seed: int, source: str, held: str = "test"):
    """``split_indices`` applied: ``(x_train, x_held_out, y_train, y_held_out, note)``.

    Args:
      x: ``[n, D]`` features.
      y: int64 ``[n]`` class ids (a single class: a plain seeded split), or
        float32 regression targets (``classes=False``).
    """
    labels = y if y.dtype.kind in "iu" else None
    train, held_out, note = split_indices(labels, len(x), fraction, seed, source, held)
    return x[train], x[held_out], y[train], y[held_out], note


def describe(held: str, fraction: float, seed: int, classification: bool, note: str, of: str):
    """How a held-out split was made, for the log and results.json: e.g.
    ``validation: 10% of the training examples, stratified by class, seed 0``.

    Args:
      note: ``split_indices``'s note (``""``: stratified, for classes).
    """
    how = ", stratified by class" if classification and not note else ""
    return f"{held}: {100 * fraction:.4g}% of {of}{how}, seed {seed}{note}"


NAMES = ("train", "validation", "test")


def codes(n: int, test, validation) -> np.ndarray:
    """int8 ``[n]``: each example's split, ``NAMES``' index (0 train, 1 validation, 2 test)."""
    code = np.zeros(n, np.int8)
    code[validation] = 1
    code[test] = 2
    return code


def three_way(y, n: int, test_fraction: float, validation_fraction: float, seed: int, source):
    """The splits an in-memory source makes of one table, as indices: the test
    split first, then the validation split of what is left (``arrays.with_validation``
    holds it out of the training split in this very order).

    Returns:
      ``(train, validation, test, notes)``: index arrays into the ``n``
      examples, and the two ``split_indices`` notes.
    """
    train, test, note = split_indices(y, n, test_fraction, seed, source)
    kept, held, validation_note = split_indices(
        None if y is None else y[train], len(train), validation_fraction, seed,
        f"the training split of {source}", "validation",
    )  # fmt: skip
    return train[kept], train[held], test, (note, validation_note)
