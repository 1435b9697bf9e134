import dataclasses
import math
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from models import optimizers, zoo
from trainer.config import Config
from trainer.data import arrays as arrays_lib
from trainer.data import memory_batches, mnist, pipeline
from trainer.engine.trainer import Trainer
from trainer.errors import DataError

from datafiles import idx_bytes, write_csv, write_idx, write_mnist


def _mnist_config(folder):
    return Config(dataset="mnist", data_dir=str(folder))


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_files_byte_for_byte(tmp_path, gz):
    paths = write_mnist(str(tmp_path), gz=gz, n_train=300)
    arrays = arrays_lib.load(_mnist_config(tmp_path))
    raw = mnist.read_idx(paths["train_images"], mnist.IMAGE_MAGIC)
    assert raw.shape == (300, 28, 28)
    # Training and validation rows are the file's rows, each once.
    held = np.concatenate([arrays.x_train, arrays.x_validation])
    assert (len(arrays.x_train), len(arrays.x_validation)) == (270, 30)
    flat = raw.reshape(300, -1).astype(np.float32)
    np.testing.assert_array_equal(np.unique(held, axis=0), np.unique(flat, axis=0))
    assert arrays.x_train.max() <= 255 and arrays.num_classes == 10
    assert arrays.x_test.shape == (1797 - 300, 784)
    assert arrays.y_train.dtype == np.int64


def test_truncated_idx_file_is_named(tmp_path):
    paths = write_mnist(str(tmp_path), n_train=300)
    with open(paths["train_images"], "rb") as handle:
        content = handle.read()
    with open(paths["train_images"], "wb") as handle:
        handle.write(content[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated"):
        arrays_lib.load(_mnist_config(tmp_path))


def test_wrong_magic_number_is_named(tmp_path):
    paths = write_mnist(str(tmp_path), n_train=300)
    labels = mnist.read_idx(paths["train_labels"], mnist.LABEL_MAGIC)
    with open(paths["train_labels"], "wb") as handle:
        handle.write(idx_bytes(labels, magic=0x0803))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: wrong magic number"):
        arrays_lib.load(_mnist_config(tmp_path))


def test_image_and_label_counts_must_agree(tmp_path):
    paths = write_mnist(str(tmp_path), n_train=300)
    labels = mnist.read_idx(paths["train_labels"], mnist.LABEL_MAGIC)
    write_idx(paths["train_labels"], labels[:-1])
    with pytest.raises(DataError, match=r"300 images but .* has 299 labels"):
        arrays_lib.load(_mnist_config(tmp_path))


def test_missing_idx_file_and_bad_label(tmp_path):
    paths = write_mnist(str(tmp_path), n_train=300)
    labels = mnist.read_idx(paths["eval_labels"], mnist.LABEL_MAGIC).copy()
    labels[3] = 11
    write_idx(paths["eval_labels"], labels)
    with pytest.raises(DataError, match="label 11 outside 0..9"):
        arrays_lib.load(_mnist_config(tmp_path))
    os.remove(paths["eval_images"])
    with pytest.raises(DataError, match="missing t10k-images-idx3-ubyte"):
        arrays_lib.load(_mnist_config(tmp_path))


def test_csv_loads_and_splits(tmp_path):
    path = write_csv(str(tmp_path / "train.csv"), n=200, features=16)
    arrays = arrays_lib.load(Config(dataset="csv", csv_path=path, test_fraction=0.25))
    assert arrays.x_test.shape == (50, 16)
    assert arrays.x_train.shape == (135, 16) and arrays.x_validation.shape == (15, 16)
    assert set(np.unique(arrays.y_train)) == set(range(10))
    # Labels 0..9 are their own class ids: no class names to keep.
    assert arrays.num_classes == 10 and arrays.class_names is None
    assert "label column 'label': 10 classes (0..9)" in arrays.description
    # Raw features (pixels 0..255); the model standardises them with the training
    # split's statistics.
    assert arrays.x_train.max() > 1
    np.testing.assert_allclose(arrays.feature_mean, arrays.x_train.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(arrays.feature_scale, arrays.x_train.std(axis=0), rtol=1e-5)


@pytest.mark.parametrize(
    "rows, message",
    [
        (["1,2,3", "4,x,6"], "bad.csv line 3, column 'pixel0': 'x' is not a number"),
        (["1,2,3", "4,,6"], "bad.csv line 3, column 'pixel0': empty cell (a missing value)"),
        # 12 is a class, but its only row is held out for eval: it cannot be learnt.
        (["1,2,3", "12,5,6"], "bad.csv line 3, column 'label': label 12 does not occur in the"),
        (["1,2,3", "1.5,5,6"], "bad.csv line 3, column 'label': label 1.5 is not a class (a"),
    ],
)
def test_bad_csv_cells_are_named(tmp_path, rows, message):
    # Line numbers count the file's lines from 1, the header being line 1.
    path = write_csv(str(tmp_path / "bad.csv"), features=2, rows=rows)
    with pytest.raises(DataError, match=re.escape(message)):
        arrays_lib.load(Config(dataset="csv", csv_path=path))


def test_csv_without_label_column(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text("pixel0,pixel1\n1,2\n")
    with pytest.raises(DataError, match="no 'label' column.*--label_column"):
        arrays_lib.load(Config(dataset="csv", csv_path=str(path)))


def test_digits_split_is_stratified_and_seeded():
    a = arrays_lib.load(Config(seed=3))
    b = arrays_lib.load(Config(seed=3))
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert a.x_train.shape == (1293, 64) and a.x_test.shape == (360, 64)
    assert a.x_train.max() == 16  # raw features; scaling lives in the model
    counts = np.bincount(a.y_test)
    assert counts.min() >= 35 and counts.max() <= 37


def test_sin_and_synthetic():
    sin = arrays_lib.load(Config(dataset="sin"))
    assert sin.num_classes == 0 and sin.num_outputs == 1
    np.testing.assert_allclose(sin.y_test, np.sin(sin.x_test[:, 0]), atol=1e-6)
    synthetic = arrays_lib.load(
        dataclasses.replace(
            Config(dataset="synthetic"), synthetic_examples=64, synthetic_features=5
        )
    )
    assert synthetic.x_train.shape == (64, 5) and synthetic.num_classes == 10


def _batches(dataset, count):
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def test_train_pipeline_resumes_at_any_step_with_the_same_batches():
    x = np.arange(50, dtype=np.float32).reshape(25, 2)
    y = np.arange(25, dtype=np.int64)
    full = _batches(pipeline.train_dataset(x, y, batch_size=4, seed=7), 20)
    for start in (1, 5, 6, 13):
        resumed = _batches(pipeline.train_dataset(x, y, batch_size=4, seed=7, start_step=start), 5)
        for (xa, ya), (xb, yb) in zip(full[start : start + 5], resumed):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    # each epoch is a permutation of the training set, different per epoch
    first_epoch = np.concatenate([b[1] for b in full[:6]])
    assert len(set(first_epoch.tolist())) == 24
    other_seed = _batches(pipeline.train_dataset(x, y, batch_size=4, seed=8), 1)
    assert not np.array_equal(other_seed[0][1], full[0][1])
    assert all(b[0].shape == (4, 2) for b in full)  # drop_remainder keeps shapes static


@pytest.mark.parametrize(
    "n, batch, start, shape",
    [
        (25, 4, 0, (2,)),  # batches across epoch boundaries (25 = 6 x 4 + 1)
        (25, 4, 13, (2,)),  # resumed inside an epoch
        (10, 3, 7, (2, 2, 1)),  # images
        (10, 10, 2, (2,)),  # one batch per epoch
        (10, 1000, 0, (2,)),  # larger than the set: full batch
    ],
)
# Two epochs cached (the order refreshed in the step at every epoch), and the
# default for these small sets (256: refreshed only by the first batch).
@pytest.mark.parametrize(
    "cached_examples", [1, memory_batches.CACHED_EXAMPLES], ids=["two", "default"]
)
def test_memory_batches_are_the_train_pipelines_batches(n, batch, start, shape, cached_examples):
    x = np.arange(n * math.prod(shape), dtype=np.float32).reshape(n, *shape)
    y = np.arange(n, dtype=np.int64)
    want = _batches(pipeline.train_dataset(x, y, batch, seed=7, start_step=start), 12)
    memory = memory_batches.MemoryBatches(
        x, y, batch, seed=7, start_step=start, cached_examples=cached_examples
    )

    @tf.function(autograph=False)
    def take(iterator):
        return [next(iterator) for _ in range(11)]

    got = [next(memory), *take(memory)]  # eagerly, then in a compiled function
    assert len(got) == len(want) == 12
    for (xa, ya), (xb, yb) in zip(got, want, strict=True):
        assert xa.shape == xb.shape == (min(batch, n), *shape)  # static in the graph too
        np.testing.assert_array_equal(xa.numpy(), xb)
        np.testing.assert_array_equal(ya.numpy(), yb)
    assert int(memory.position.numpy()) == start + 12


def test_in_memory_sources_gather_in_graph_for_one_replica_only():
    source = arrays_lib.ArraySource(arrays_lib.load(Config()), "digits")
    for strategy in (tf.distribute.get_strategy(), tf.distribute.OneDeviceStrategy("/cpu:0")):
        assert isinstance(source.train_iterator(strategy, 32, 0, 0), memory_batches.MemoryBatches)
    # A program trains the same from either iterator (same batches, same steps).
    weights = []
    for iterator in (
        memory_batches.MemoryBatches(source.arrays.x_train, source.arrays.y_train, 32, seed=3),
        iter(pipeline.train_dataset(source.arrays.x_train, source.arrays.y_train, 32, seed=3)),
    ):
        model = zoo.mlp(64, (16,), 10, "sigmoid", "xavier", 0)
        program = Trainer(model, optimizers.get("adam", 0.01), global_batch_size=32)
        program.run_steps(iterator, 60)  # past an epoch of 1,437 // 32 = 44 steps
        weights.append([v.numpy() for v in model.trainable_variables])
        assert int(program.global_step.numpy()) == 60
    for a, b in zip(*weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_batch_larger_than_the_training_set_is_full_batch():
    x = np.ones((10, 3), np.float32)
    y = np.zeros(10, np.int64)
    (batch,) = _batches(pipeline.train_dataset(x, y, batch_size=1000, seed=0), 1)
    assert batch[0].shape == (10, 3)


@pytest.mark.parametrize("cached_examples, epochs_cached", [(1, 2), (60, 3), (10**9, 256)])
def test_memory_batches_prepare_a_window_that_xla_reads_as_the_pipeline_does(
    cached_examples, epochs_cached
):
    # 25 examples, batch 4: batches begin in the epoch of their first example;
    # after prepare(), steps_prepared() counts those that begin in the cached
    # epochs but the last (one epoch with two cached, the fewest; up to 255),
    # and next_prepared() (compiled by XLA) reads them as train_dataset does.
    n, batch = 25, 4
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n, dtype=np.int64)

    @tf.function(autograph=False, jit_compile=True)
    def take(iterator, count):
        return [iterator.next_prepared() for _ in range(count)]

    for start in (0, 5, 6, 7, 12, 13):
        memory = memory_batches.MemoryBatches(
            x, y, batch, 7, start, cached_examples=cached_examples
        )
        assert memory.epochs_cached == epochs_cached
        assert int(memory.steps_prepared().numpy()) == 0  # nothing prepared yet
        memory.prepare()
        epoch = start * batch // n
        ahead = range(start, start + 2000)
        expected = sum(1 for s in ahead if s * batch // n <= epoch + epochs_cached - 2)
        assert int(memory.steps_prepared().numpy()) == expected >= 1
        count = min(expected, 16)  # enough to cross two epochs; XLA unrolls the reads
        want = _batches(pipeline.train_dataset(x, y, batch, seed=7, start_step=start), count)
        for (xa, ya), (xb, yb) in zip(take(memory, count), want, strict=True):
            np.testing.assert_array_equal(xa.numpy(), xb)
            np.testing.assert_array_equal(ya.numpy(), yb)
        assert int(memory.position.numpy()) == start + count
        memory.position.assign(start + expected)
        assert int(memory.steps_prepared().numpy()) == 0  # the next batch is in a later epoch
