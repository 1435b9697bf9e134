"""Train/eval splits of data held in memory, and the feature scaling fitted on
the training split (scikit-learn's ``train_test_split`` and ``StandardScaler``).

The split holds out ``ceil(eval_fraction * n)`` examples, stratified by class
when every class can be on both sides, with ``--seed`` as scikit-learn's
``random_state``; README says how to reproduce it for a baseline.
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


def split_indices(y, n: int, eval_fraction: float, seed: int, source: str):
    """Holds out ``ceil(eval_fraction * n)`` of ``n`` examples for eval (as scikit-learn does).

    The split is stratified by class when every class can be on both sides;
    otherwise (regression, a single class, a tiny dataset, or a class with one
    example) it is a plain seeded shuffle, in which a class left with no
    training example swaps one of its eval examples for a training example of
    a class that has others there (if there are at least as many training
    examples as classes): every class is then learnt.

    Args:
      y: int64 ``[n]`` class ids, or ``None`` for regression targets.
      source: names the data in messages, e.g. the CSV's path.

    Returns:
      ``(train_indices, eval_indices, note)``; ``note`` is ``""`` or says for
      the log why a classification split is not stratified.

    Raises:
      DataError: the split would leave no train or no eval example.
    """
    from sklearn.model_selection import train_test_split

    flag = f"--eval_fraction={eval_fraction}"
    if n < 2:
        raise DataError(f"{source}: holds {n} example; needs at least 2 to hold some out for eval")
    if not 0 < eval_fraction < 1:
        raise DataError(f"{flag}: must be in (0, 1)")
    n_eval = math.ceil(eval_fraction * n)
    n_train = n - n_eval
    if n_train < 1 or n_eval < 1:
        highest = math.floor((n - 1) / n * 10_000) / 10_000
        raise DataError(
            f"{flag}: splitting the {n} examples of {source} leaves {n_train} train / "
            f"{n_eval} eval examples; for {n} examples use an --eval_fraction in "
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
    """Swaps the first eval example of each class missing from ``train`` with the
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


def split(x, y, eval_fraction: float, seed: int, source: str):
    """``split_indices`` applied: ``(x_train, x_eval, y_train, y_eval, note)``.

    Args:
      x: ``[n, D]`` features.
      y: int64 ``[n]`` class ids (a single class: a plain seeded split).
    """
    train, held_out, note = split_indices(y, len(x), eval_fraction, seed, source)
    return x[train], x[held_out], y[train], y[held_out], note
