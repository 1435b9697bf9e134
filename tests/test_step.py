"""The compiled step's guard and the split between plain and diagnostic calls
(models.training), and the one-event summary writer (trainer.summaries)."""

import numpy as np
import pytest
import tensorflow as tf

import models
from models.training import TrainingProgram, finite_sum_check
from trainer import summaries


@pytest.mark.parametrize(
    "bad, finite",
    [
        (None, True),
        (np.nan, False),
        (np.inf, False),
        (-np.inf, False),
        (3e38, False),  # finite, but the sum passes float32's range: counted as diverged
    ],
)
def test_finite_sum_check_finds_any_nan_or_inf(bad, finite):
    tensors = [tf.ones([3, 4]), tf.fill([5], -2.0), tf.zeros([0])]
    if bad is not None:
        values = np.full([5], 2e38 if bad == 3e38 else -2.0, np.float32)
        values[3] = bad
        tensors[1] = tf.constant(values)
    assert bool(finite_sum_check(tensors)) is finite
    assert bool(tf.function(finite_sum_check)(tensors)) is finite


def _program(batches, **kwargs):
    model = models.Sequential()
    model.add(models.Dense(4, 3, "linear", init="xavier", seed=0, name="output"))
    program = TrainingProgram(
        model, models.optimizers.get("sgd", 0.1), global_batch_size=8, **kwargs
    )
    data = tf.data.Dataset.from_tensor_slices(
        (np.asarray(batches, np.float32), np.zeros([len(batches), 8], np.int64))
    )
    return program, iter(data.repeat())


def _batches(count, nan_at=None):
    batches = np.random.default_rng(0).normal(size=(count, 8, 4))
    if nan_at is not None:
        batches[nan_at - 1, 0, 0] = np.nan  # the batch of step nan_at
    return batches


def test_diagnostic_steps_run_as_their_own_call_at_step_1_and_every_n():
    seen = tf.Variable(0, dtype=tf.int64)
    calls = tf.Variable(0, dtype=tf.int64)

    def summary_fn(model, step, diagnosed):
        seen.assign_add(step)
        calls.assign_add(1)

    program, iterator = _program(_batches(12), diagnose_every=3, summary_fn=summary_fn)
    program.run_steps(iterator, 7)  # diagnostic steps 1, 3 and 6
    assert int(program.global_step.numpy()) == 7
    assert (int(seen.numpy()), int(calls.numpy())) == (10, 3)
    assert int(program.diagnosed_step.numpy()) == 6
    program.run_steps(iterator, 5)  # 9 and 12
    assert int(program.global_step.numpy()) == 12
    assert (int(seen.numpy()), int(calls.numpy())) == (31, 5)
    # Each loop traced once for the whole run; the plain one holds no diagnostics.
    assert dict(program.trace_counts) == {"train_loop": 1, "diagnostic_loop": 1}


def test_a_nonfinite_step_stops_a_split_call_before_the_next_diagnostic_step():
    program, iterator = _program(_batches(10, nan_at=4), diagnose_every=3)
    before = [v.numpy() for v in program.model.trainable_variables]
    program.run_steps(iterator, 10)
    assert int(program.global_step.numpy()) == 4  # stopped at the bad step
    assert int(program.first_nonfinite_step.numpy()) == 4
    assert int(program.diagnosed_step.numpy()) == 3  # step 6 never ran
    after = [v.numpy() for v in program.model.trainable_variables]
    assert all(np.all(np.isfinite(a)) for a in after)
    assert not all(np.array_equal(a, b) for a, b in zip(after, before, strict=True))


def test_without_the_guard_a_nan_batch_reaches_the_weights():
    # check_finite=False exists to measure the guard: it really is the guard.
    for check, finite in ((True, True), (False, False)):
        program, iterator = _program(_batches(3, nan_at=2), check_finite=check)
        program.run_steps(iterator, 3)
        weights = program.model.trainable_variables[0].numpy()
        assert bool(np.all(np.isfinite(weights))) is finite


def test_write_summaries_writes_every_value_in_one_event(tmp_path):
    from tensorboard.plugins.histogram import metadata as histogram_metadata
    from tensorboard.plugins.scalar import metadata as scalar_metadata

    histogram = np.arange(6, dtype=np.float64).reshape(2, 3)
    writer = tf.summary.create_file_writer(str(tmp_path))

    @tf.function
    def write(step):
        summaries.write_summaries(
            [
                ("loss/a", tf.constant(2.5), scalar_metadata.create_summary_metadata("", "")),
                (
                    "weights/w",
                    tf.constant(histogram),
                    histogram_metadata.create_summary_metadata("", ""),
                ),
            ],
            step,
        )

    with writer.as_default():
        write(tf.constant(7, tf.int64))
    writer.close()
    from tensorflow.python.summary.summary_iterator import summary_iterator

    [path] = list(tmp_path.iterdir())
    events = [e for e in summary_iterator(str(path)) if e.summary.value]
    assert len(events) == 1 and events[0].step == 7
    values = {v.tag: v for v in events[0].summary.value}
    assert set(values) == {"loss/a", "weights/w"}
    assert tf.make_ndarray(values["loss/a"].tensor) == np.float32(2.5)
    np.testing.assert_array_equal(tf.make_ndarray(values["weights/w"].tensor), histogram)
    assert values["loss/a"].metadata.plugin_data.plugin_name == "scalars"
    assert values["weights/w"].metadata.plugin_data.plugin_name == "histograms"
