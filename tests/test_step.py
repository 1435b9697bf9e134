"""The compiled step's guard, speculative calls, the whole loop under XLA and the
split between plain and diagnostic calls (trainer.engine), and the in-graph
summary writer (trainer.summaries)."""

import numpy as np
import pytest
import tensorflow as tf

import models
from trainer import summaries
from trainer.data import pipeline
from trainer.data.memory_batches import MemoryBatches
from trainer.engine import loops
from trainer.engine.guard import finite_sum_check
from trainer.engine.trainer import Trainer


def _run_checked_windows(program, iterator, count):
    """The checked loop over XLA's prepared windows (run_steps would run it speculatively)."""
    return loops.run_windows(
        program.xla_train_loop, iterator, count, program._window, program.global_step
    )


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
    program = Trainer(model, models.optimizers.get("sgd", 0.1), global_batch_size=8, **kwargs)
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
    assert int(program.diagnostics.diagnosed_step.numpy()) == 6
    program.run_steps(iterator, 5)  # 9 and 12
    assert int(program.global_step.numpy()) == 12
    assert (int(seen.numpy()), int(calls.numpy())) == (31, 5)
    # Each loop traced once for the whole run; the plain one holds no diagnostics.
    assert dict(program.trace_counts) == {"train_loop": 1, "diagnostic_loop": 1}


def _meta_optimizer_off() -> bool:
    return tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)


def test_diagnostic_calls_run_without_grappler_and_put_the_setting_back():
    seen = []

    def summary_fn(model, step, diagnosed):
        seen.append(_meta_optimizer_off())  # traced inside the diagnostic call

    program, iterator = _program(_batches(12), diagnose_every=3, summary_fn=summary_fn)
    program.run_steps(iterator, 4)  # diagnostic step 1, plain 2, diagnostic 3, plain 4
    assert seen == [True] and not _meta_optimizer_off()
    # A diagnostic call that fails puts the setting back too.
    program, _ = _program(_batches(1), diagnose_every=3, summary_fn=summary_fn)
    empty = iter(
        tf.data.Dataset.from_tensor_slices((tf.zeros([0, 8, 4]), tf.zeros([0, 8], tf.int64)))
    )
    with pytest.raises(tf.errors.OutOfRangeError):
        program.run_steps(empty, 1)
    assert not _meta_optimizer_off()
    # A process that turned Grappler off itself keeps it off.
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        program, iterator = _program(_batches(4), diagnose_every=3, summary_fn=summary_fn)
        program.run_steps(iterator, 2)
        assert _meta_optimizer_off()
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False})


def test_a_nonfinite_step_stops_a_split_call_before_the_next_diagnostic_step():
    program, iterator = _program(_batches(10, nan_at=4), diagnose_every=3)
    before = [v.numpy() for v in program.model.trainable_variables]
    program.run_steps(iterator, 10)
    assert int(program.global_step.numpy()) == 4  # stopped at the bad step
    assert int(program.guard.first_nonfinite_step.numpy()) == 4
    assert int(program.diagnostics.diagnosed_step.numpy()) == 3  # step 6 never ran
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


def test_write_summaries_writes_every_value_with_its_tag_and_plugin(tmp_path):
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
    assert {e.step for e in events} == {7}
    values = {v.tag: v for e in events for v in e.summary.value}
    assert set(values) == {"loss/a", "weights/w"}
    assert tf.make_ndarray(values["loss/a"].tensor) == np.float32(2.5)
    np.testing.assert_array_equal(tf.make_ndarray(values["weights/w"].tensor), histogram)
    assert values["loss/a"].metadata.plugin_data.plugin_name == "scalars"
    assert values["weights/w"].metadata.plugin_data.plugin_name == "histograms"


# Every optimizer in graph mode and over XLA's whole loop; the step compiled alone
# by XLA (the same bounds and check as the whole loop) for two of them.
@pytest.mark.parametrize(
    "name, weight_decay, clip_norm, mode",
    [
        *(
            (name, 0.0, None, mode)
            for name in models.registry.OPTIMIZERS.names
            for mode in ("graph", "xla_loop")
        ),
        ("sgd", 0.5, None, "graph"),
        ("momentum", 0.1, 0.5, "xla_loop"),
        ("adam", 0.1, 0.5, "graph"),
        ("sgd", 0.0, None, "xla_step"),
        ("adam", 0.1, 0.5, "xla_step"),
    ],
)
def test_the_guards_bounds_hold_for_every_optimizer(name, weight_decay, clip_norm, mode):
    # The guard never reads the weights inside a call: it trusts weight_bound >= max |w|
    # (and slot_bound >= max |slot|), grown from each update's bound. Check both after
    # every call, against the weights and slots themselves.
    model = models.Sequential(input_shape=[4])
    model.add(models.Dense(None, 6, "tanh", init="xavier", seed=1, name="hidden"))
    model.add(models.Dense(None, 3, "linear", init="xavier", seed=2, name="output"))
    optimizer = models.optimizers.get(name, 0.05, clip_norm=clip_norm)
    optimizer.set_weight_decay(weight_decay, [layer.kernel for layer in model.weighted_layers])
    program = Trainer(model, optimizer, global_batch_size=8, jit_compile=mode != "graph")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype(np.float32) * 3, rng.integers(0, 3, 64)
    iterator = iter(tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(8))
    if mode == "xla_loop":  # XLA over the whole call (the in-memory batches)
        iterator = MemoryBatches(x, y, 8, seed=0)
    for call in range(1, 4):
        if mode == "xla_loop":  # the checked loop (run_steps would run it speculatively)
            assert not _run_checked_windows(program, iterator, 6)
            assert program.xla_train_loop.experimental_get_tracing_count() == 1
        else:
            assert not bool(program.train_loop(iterator, tf.constant(6)))
        assert int(program.global_step.numpy()) == 6 * call  # no call cut short
        largest = max(np.abs(v.numpy()).max() for v in model.trainable_variables)
        bound = float(program.guard.weight_bound.numpy())
        assert largest <= bound < 1e6, (largest, bound)
        if optimizer.bound_slot is not None:
            slot = max(np.abs(v.numpy()).max() for v in optimizer.slots[optimizer.bound_slot])
            assert 0 < slot <= float(program.guard.slot_bound.numpy()) < 1e9


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("source", ["tf.data", "memory"])
def test_weights_overflowing_at_a_later_step_stop_the_loop_at_that_step(jit, source):
    # Finite loss and gradients throughout; the rate jumps at step 5 and that update
    # overflows the weights. The checked loop (tf.data), trusting the bound for steps
    # 1-4, stops at 5; a speculative call (memory) is undone and replayed checked.
    model = models.Sequential()
    model.add(models.Dense(4, 3, "linear", init="xavier", seed=0, name="output"))
    program = Trainer(
        model,
        models.optimizers.get("sgd", 0.1),
        global_batch_size=8,
        jit_compile=jit,
        schedule=lambda step: tf.where(step >= 5, tf.constant(3e38), tf.constant(0.01)),
    )
    x = np.full([8, 4], 1000.0, np.float32)
    y = np.array([0, 1] * 4, np.int64)  # no rate fits both: gradients stay ~1e3
    if source == "memory":
        program.run_steps(MemoryBatches(x, y, 8, seed=0), 10)
    else:
        program.run_steps(iter(tf.data.Dataset.from_tensors((x, y)).repeat()), 10)
    assert int(program.global_step.numpy()) == 5
    assert int(program.guard.nonfinite_weights_step.numpy()) == 5
    assert int(program.guard.nonfinite_count.numpy()) == 0  # loss and gradients were finite
    assert not bool(finite_sum_check(model.trainable_variables))  # step 5's update applied


def test_weights_too_large_to_bound_still_train_one_checked_step_per_call():
    # Finite weights near float32's range: the bound says nothing, so every step is
    # followed by the weights' own check, and training goes on while they stay finite.
    model = models.Sequential()
    model.add(models.Dense(4, 3, "linear", init="zeros", name="output"))
    model.layers[0].bias.assign([1e37, -1e37, 0.0])  # logits differ by 2e37
    program = Trainer(model, models.optimizers.get("sgd", 0.1), global_batch_size=8)
    data = tf.data.Dataset.from_tensors((tf.ones([8, 4]), tf.zeros([8], tf.int64)))
    program.run_steps(iter(data.repeat()), 4)
    assert int(program.global_step.numpy()) == 4
    assert int(program.guard.nonfinite_weights_step.numpy()) == -1
    assert float(program.guard.weight_bound.numpy()) >= 1e37


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 2e19])
def test_the_gradient_check_finds_nan_inf_and_squares_past_float32(bad):
    from trainer.engine.guard import gradient_check

    grads = [tf.fill([3, 4], 0.5), tf.constant([-2.0, 1.0, 0.0])]
    finite, bound = gradient_check(tf.constant(3.0), grads)
    assert bool(finite) and 2.0 <= float(bound) < 3.0  # >= max |g|: the norm, 2.65
    values = np.array([-2.0, bad, 0.0], np.float32)
    finite, _ = gradient_check(tf.constant(3.0), [grads[0], tf.constant(values)])
    assert not bool(finite)
    if not np.isfinite(bad):  # the loss too
        assert not bool(gradient_check(tf.constant(np.float32(bad)), grads)[0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 3e38])
@pytest.mark.parametrize("compiled", ["eager", "xla"])
def test_the_matvec_check_finds_nan_inf_anywhere(bad, compiled):
    from trainer.engine.guard import matvec_gradient_check

    rng = np.random.default_rng(1)
    shapes = [(37, 300), (300,), (3, 3, 5, 7), (1,)]  # odd sizes: the kernels' edge blocks
    grads = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
    check = matvec_gradient_check
    if compiled == "xla":
        check = tf.function(matvec_gradient_check, jit_compile=True)
    finite, bound = check(tf.constant(2.0), [tf.constant(g) for g in grads])
    l1 = sum(np.abs(g).sum(dtype=np.float64) for g in grads)
    assert bool(finite)
    np.testing.assert_allclose(float(bound), l1, rtol=1e-4)  # the L1 norm: >= max |g|
    for index, shape in enumerate(shapes):
        for position in {0, int(np.prod(shape)) // 2, int(np.prod(shape)) - 1}:
            spoiled = [g.copy() for g in grads]
            spoiled[index].reshape(-1)[position] = bad
            if bad == 3e38:  # finite, but the magnitudes sum past float32's range
                spoiled[(index + 1) % len(shapes)].reshape(-1)[0] = -3e38
            finite, _ = check(tf.constant(2.0), [tf.constant(g) for g in spoiled])
            assert not bool(finite), (shape, position)
    if not np.isfinite(bad):  # the loss too
        assert not bool(check(tf.constant(np.float32(bad)), [tf.constant(g) for g in grads])[0])


def _memory_program(x, y, batch, jit, cached_examples=None, **kwargs):
    model = models.zoo.mlp(x.shape[1], (5,), 3, "sigmoid", "xavier", 0)
    program = Trainer(
        model, models.optimizers.get("adam", 0.05), global_batch_size=batch, jit_compile=jit,
        **kwargs,
    )  # fmt: skip
    cache = {} if cached_examples is None else {"cached_examples": cached_examples}
    return program, MemoryBatches(x, y, batch, seed=3, **cache), model


def _weights(model):
    return [v.numpy() for v in model.trainable_variables]


# Windows of one epoch (two cached: 6-7 steps each, so calls cross windows) and
# of 255 (the default for 50 examples: one window).
@pytest.mark.parametrize("cached", [1, None], ids=["one-epoch-windows", "default-windows"])
def test_the_whole_loop_under_xla_trains_as_graph_mode_across_epochs_and_calls(cached):
    from trainer.engine.batches import reads_in_xla

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    y = rng.integers(0, 3, 50).astype(np.int64)
    graph, batches, graph_model = _memory_program(x, y, 8, jit=False)
    graph.run_steps(batches, 28)  # 6 steps per epoch; batches span epoch boundaries
    runs = []
    for calls in ([28], [5, 9, 1, 13]):
        program, batches, model = _memory_program(x, y, 8, jit=True, cached_examples=cached)
        assert batches.epochs_cached == (2 if cached else 256)
        assert reads_in_xla(batches)
        for count in calls:
            program.run_steps(batches, count)
        assert int(program.global_step.numpy()) == int(batches.position.numpy()) == 28
        assert program.trace_counts == {"train_loop": 1}  # one trace, whatever the windows
        # Speculative calls on clean data: the checked loop is never needed.
        assert program.xla_speculative_loop.experimental_get_tracing_count() == 1
        assert program.xla_train_loop.experimental_get_tracing_count() == 0
        runs.append((_weights(model), program.train_metrics.result()))
    # The same compiled loop over other windows: the same arithmetic, bit for bit.
    for a, b in zip(runs[0][0], runs[1][0], strict=True):
        np.testing.assert_array_equal(a, b)
    # Graph mode's kernels round differently, nothing more.
    for a, b in zip(runs[0][0], _weights(graph_model), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert runs[0][1]["count"] == graph.train_metrics.result()["count"] == 28 * 8


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("skip", [False, True], ids=["stop", "skip"])
def test_a_nonfinite_batch_in_a_speculative_call_is_never_applied(skip, jit):
    # Two examples, batch 1: the NaN example's steps follow from the epochs' shuffles.
    x = np.array([[1.0, 2.0], [np.nan, 1.0]], np.float32)
    y = np.array([0, 1], np.int64)
    order = [
        int(b[1][0]) for b in pipeline.train_dataset(x, y, 1, seed=3).take(12).as_numpy_iterator()
    ]
    nan_steps = [s + 1 for s, label in enumerate(order) if label == 1]
    first = nan_steps[0]
    program, batches, model = _memory_program(x, y, 1, jit=jit, skip_nonfinite=skip)
    before = _weights(model)
    program.run_steps(batches, 12)
    assert int(program.guard.first_nonfinite_step.numpy()) == first
    assert all(np.isfinite(w).all() for w in _weights(model))
    if skip:  # every clean step applied, every NaN step skipped
        assert int(program.global_step.numpy()) == 12
        assert int(program.guard.nonfinite_count.numpy()) == len([s for s in nan_steps if s <= 12])
        assert program.train_metrics.result()["count"] == 12 - len(nan_steps)
    else:  # stopped at the first NaN step, its update not applied
        assert int(program.global_step.numpy()) == first
        assert int(program.guard.nonfinite_count.numpy()) == 1
        clean, clean_batches, clean_model = _memory_program(x, y, 1, jit=jit)
        if first > 1:
            clean.run_steps(clean_batches, first - 1)
        for a, b in zip(_weights(model), _weights(clean_model), strict=True):
            np.testing.assert_array_equal(a, b)
        if first == 1:
            for a, b in zip(_weights(model), before, strict=True):
                np.testing.assert_array_equal(a, b)


def test_convolutions_stay_out_of_the_xla_loop_and_compile_step_by_step():
    from trainer.engine.trainer import has_convolutions

    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 3, 24).astype(np.int64)
    weights = []
    for jit in (False, True):
        # (avgpool: another test of this process may have turned op determinism on,
        # and XLA has no deterministic max-pool gradient)
        model = models.zoo.from_spec("conv3x3:2,avgpool2,flatten", (6, 6, 1), 3, seed=0)
        assert has_convolutions(model)
        program = Trainer(
            model, models.optimizers.get("sgd", 0.1), global_batch_size=8, jit_compile=jit
        )
        assert not program.xla_whole_loop
        program.run_steps(MemoryBatches(x, y, 8, seed=3), 7)
        assert int(program.global_step.numpy()) == 7
        assert program.xla_train_loop.experimental_get_tracing_count() == 0
        assert program.trace_counts == {"train_loop": 1}
        weights.append(_weights(model))
    for a, b in zip(*weights, strict=True):  # XLA's kernels round differently
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    dense = models.zoo.from_spec("maxpool2,flatten,dense:4", (6, 6, 1), 3, seed=0)
    assert not has_convolutions(dense)
    batchnorm = models.zoo.from_spec("batchnorm,dense:4", (6,), 3, seed=0)
    assert not has_convolutions(batchnorm)
    program = Trainer(
        dense, models.optimizers.get("sgd", 0.1), global_batch_size=8, jit_compile=True
    )
    assert program.xla_whole_loop


def _speculation_program(jit, skip, cached=None):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    x[29, 2] = np.nan  # one bad example: its batch's loss and gradients are NaN
    y = rng.integers(0, 3, 40).astype(np.int64)
    model = models.zoo.from_spec("dense:8,batchnorm,dropout:0.3,dense:5", (6,), 3, seed=2)
    program = Trainer(
        model, models.optimizers.get("adam", 0.01), global_batch_size=8, jit_compile=jit,
        skip_nonfinite=skip,
    )  # fmt: skip
    cache = {} if cached is None else {"cached_examples": cached}
    return program, MemoryBatches(x, y, 8, seed=5, **cache)


def _program_state(program):
    names = ("nonfinite_count", "first_nonfinite_step", "skipped_in_a_row")
    counters = {name: int(getattr(program.guard, name).numpy()) for name in names}
    counters["global_step"] = program.step
    return [v.numpy() for v in program.state_variables()], counters


# Under XLA also with windows of one epoch: calls then cross windows, and a
# rewind can go back past a refreshed cache (prepare caches that epoch again).
# (Skipping replays the most: a rewind in every epoch.)
@pytest.mark.parametrize(
    "skip, jit, cached",
    [(False, False, None), (True, False, None), (False, True, None), (True, True, 1)],
    ids=["stop-graph", "skip-graph", "stop-xla", "skip-xla-one-epoch"],
)  # fmt: skip
def test_speculative_calls_end_where_checked_calls_end(skip, jit, cached):
    # Weights, BatchNorm's averages, Adam's slots, the loss sums and the guard's
    # counters: run_steps on rewindable batches (speculative calls, undone and
    # replayed checked where a NaN batch falls) against checked calls only.
    from trainer.engine.batches import rewinds

    speculative, batches = _speculation_program(jit, skip, cached)
    assert rewinds(batches)
    for count in (3, 9, 4, 14):  # 5 batches per epoch: the NaN batch in every epoch
        speculative.run_steps(batches, count)
    checked, checked_batches = _speculation_program(jit, skip, cached)
    whole = checked.xla_whole_loop
    for count in (3, 9, 4, 14):
        if whole:
            _run_checked_windows(checked, checked_batches, count)
        else:
            checked.train_loop(checked_batches, tf.constant(count))
        if int(checked.guard.nonfinite_count.numpy()) and not skip:
            break
    values, counters = _program_state(speculative)
    expected, expected_counters = _program_state(checked)
    assert counters == expected_counters
    assert counters["nonfinite_count"] >= 1
    assert counters["global_step"] == (30 if skip else counters["first_nonfinite_step"])
    for a, b in zip(values, expected, strict=True):
        assert np.isfinite(a).all()
        if jit:  # the unchecked and the checked XLA loops fuse differently
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(a, b)
    # Clean calls never trace the checked loop; those with the NaN batch do.
    loop = speculative.xla_speculative_loop if whole else speculative.speculative_loop
    assert loop.experimental_get_tracing_count() == 1


def test_speculative_calls_under_a_one_replica_strategy():
    # --strategy=mirrored on one device gets MemoryBatches, so its calls run
    # speculatively, and undoing one assigns mirrored and sync-on-read variables.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    x[29, 2] = np.nan
    y = rng.integers(0, 3, 40).astype(np.int64)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = models.zoo.from_spec("dense:8,batchnorm,dense:5", (6,), 3, seed=2)
        program = Trainer(
            model, models.optimizers.get("adam", 0.01), global_batch_size=8,
            strategy=strategy, skip_nonfinite=True,
        )  # fmt: skip
    assert pipeline.gathers_in_graph(strategy)
    program.run_steps(MemoryBatches(x, y, 8, seed=5), 12)
    assert int(program.global_step.numpy()) == 12
    assert int(program.guard.nonfinite_count.numpy()) >= 1
    assert all(np.isfinite(v.numpy()).all() for v in model.variables)
    metrics = program.train_metrics.result()
    assert metrics["count"] == 8 * (12 - int(program.guard.nonfinite_count.numpy()))
    assert np.isfinite(metrics["loss"])


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_an_optimizer_without_a_bound_has_its_weights_read_after_every_update(jit):
    # An optimizer that cannot bound its update gets no weaker a guard: its
    # weights are read after every update, and the update that breaks them is named.
    from models.optimizers.base import Optimizer

    class Unbounded(Optimizer):
        def __init__(self, scale):
            super().__init__(100.0)
            self.scale = scale

        def _update(self, grad, var, slots, lr, step):
            var.assign_sub(lr * self.scale * grad)

    x = np.full([8, 4], 1.0, np.float32)
    y = np.array([0, 1] * 4, np.int64)
    for scale, stops_at in ((1e-3, None), (1e38, 1)):  # lr x scale: 0.1, and past float32
        model = models.Sequential()
        model.add(models.Dense(4, 3, "linear", init="xavier", seed=0, name="output"))
        program = Trainer(model, Unbounded(scale), global_batch_size=8, jit_compile=jit)
        program.run_steps(MemoryBatches(x, y, 8, seed=0), 6)
        if stops_at is None:
            assert program.step == 6 and int(program.guard.nonfinite_weights_step.numpy()) == -1
        else:
            assert program.step == stops_at
            assert int(program.guard.nonfinite_weights_step.numpy()) == stops_at
