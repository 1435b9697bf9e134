import math

import numpy as np
import pytest
import tensorflow as tf

from models import initializers


def test_xavier_normal_std_matches_glorot():
    w = initializers.xavier([500, 500], tf.float32, (1, 2)).numpy()
    expected = math.sqrt(2.0 / (500 + 500))
    assert abs(w.std() - expected) / expected < 0.05
    assert abs(w.mean()) < 0.01 * expected * 10


def test_xavier_uniform_and_he_scales():
    w = initializers.xavier_uniform([300, 200], tf.float32, (0, 1)).numpy()
    limit = math.sqrt(6.0 / 500)
    assert w.min() >= -limit and w.max() <= limit
    assert abs(w.std() - limit / math.sqrt(3)) / (limit / math.sqrt(3)) < 0.05
    h = initializers.he([400, 100], tf.float32, (0, 3)).numpy()
    assert abs(h.std() - math.sqrt(2 / 400)) / math.sqrt(2 / 400) < 0.05


def test_uniform_stays_in_unit_interval():
    w = initializers.uniform([784, 500], tf.float32, (5, 6)).numpy()
    assert w.min() >= 0.0 and w.max() < 1.0
    assert 0.45 < w.mean() < 0.55


def test_zeros_are_zero():
    assert not np.any(initializers.zeros([3, 4]).numpy())


def test_same_seed_same_tensor_other_seed_other_tensor():
    a = initializers.xavier([20, 30], tf.float32, (7, 0)).numpy()
    b = initializers.xavier([20, 30], tf.float32, (7, 0)).numpy()
    c = initializers.xavier([20, 30], tf.float32, (7, 1)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_lookup_by_name_and_unknown_name():
    assert initializers.get("xavier") is initializers.xavier
    assert initializers.get("glorot_uniform") is initializers.xavier_uniform
    with pytest.raises(ValueError, match="unknown initializer 'bogus'"):
        initializers.get("bogus")
