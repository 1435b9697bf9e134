"""The layer contract, layer by layer: eager, tf.function and XLA agree;
gradients match finite differences; outputs match Keras's layer of the same
kind given identical weights (Keras is a test oracle only); checkpoint and
SavedModel round trips; shapes that do not chain are refused by name."""

import numpy as np
import pytest
import tensorflow as tf

from models import (
    Activation,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    Sequential,
    initializers,
)
from trainer.data import pipeline

IMAGE = (6, 6, 3)


def _step_source(value=7):
    step = tf.Variable(value, dtype=tf.int64)
    return step, lambda: step


# name -> (factory, input shape of one example)
LAYERS = {
    "dense": (lambda: Dense(output_size=5, activation="tanh", seed=1), (7,)),
    "conv_same": (lambda: Conv2D(4, 3, activation="relu", seed=2), IMAGE),
    "conv_valid_stride2": (lambda: Conv2D(4, 3, 2, "valid", "sigmoid", seed=3), IMAGE),
    "maxpool": (lambda: MaxPool2D(2), IMAGE),
    "maxpool_same_stride1": (lambda: MaxPool2D(3, 1, "same"), IMAGE),
    "avgpool": (lambda: AvgPool2D(2), IMAGE),
    "avgpool_same": (lambda: AvgPool2D(3, 2, "same"), IMAGE),
    "flatten": (lambda: Flatten(), IMAGE),
    "activation": (lambda: Activation("elu"), IMAGE),
    "dropout": (lambda: Dropout(0.4, seed=4), IMAGE),
    "batchnorm": (lambda: BatchNorm(momentum=0.9), IMAGE),
}


def _built(name):
    factory, shape = LAYERS[name]
    layer = factory()
    output_shape = layer.build(shape)
    layer.set_step_source(_step_source()[1])
    if isinstance(layer, BatchNorm):  # non-trivial parameters and averages
        rng = np.random.default_rng(5)
        layer.gamma.assign(rng.uniform(0.5, 2, size=shape[-1]).astype(np.float32))
        layer.beta.assign(rng.normal(size=shape[-1]).astype(np.float32))
        layer.moving_mean.assign(rng.normal(size=shape[-1]).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.5, 2, size=shape[-1]).astype(np.float32))
    return layer, shape, output_shape


def _input(shape, batch=4, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=(batch, *shape)).astype(np.float32))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_eager_graph_and_xla_agree_and_shapes_are_as_reported(name):
    layer, shape, output_shape = _built(name)
    x = _input(shape)
    assert layer.output_shape(shape) == output_shape
    for training in (False, True):
        if isinstance(layer, BatchNorm) and training:
            continue  # updates its averages: compared in the BatchNorm tests
        eager = layer(x, training=training).numpy()
        assert eager.shape == (4, *output_shape)
        graph = tf.function(lambda t, training=training: layer(t, training=training))(x)
        xla = tf.function(
            lambda t, training=training: layer(t, training=training), jit_compile=True
        )(x)
        np.testing.assert_allclose(graph.numpy(), eager, rtol=1e-5, atol=1e-5)
        if isinstance(layer, Dropout) and training:
            # XLA draws the same stateless stream with its own kernels: same rate, not bits.
            dropped = np.mean(xla.numpy() == 0)
            assert 0.25 < dropped < 0.55
        else:
            np.testing.assert_allclose(xla.numpy(), eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["dense", "conv_same", "conv_valid_stride2", "batchnorm"])
def test_gradients_match_finite_differences(name):
    layer, shape, _ = _built(name)
    if name == "conv_same":  # a smooth activation: relu's kink defeats finite differences
        layer = Conv2D(4, 3, activation="tanh", seed=2)
        layer.build(shape)
    x = _input(shape, batch=3, seed=1)
    weights = np.random.default_rng(2)
    projection = tf.constant(
        weights.normal(size=(3, *layer.output_shape(shape))).astype(np.float32)
    )

    def objective():
        # training=False: BatchNorm's averages are left alone between evaluations
        return tf.reduce_sum(layer(x, training=False) * projection)

    with tf.GradientTape() as tape:
        value = objective()
    variables = layer.trainable_variables
    assert variables, "a layer with weights"
    grads = tape.gradient(value, variables)
    eps = 1e-2
    for var, grad in zip(variables, grads, strict=True):
        flat = var.numpy().reshape(-1)
        for i in np.random.default_rng(3).choice(flat.size, size=min(12, flat.size), replace=False):
            original = flat.copy()
            bumped = original.copy()
            bumped[i] += eps
            var.assign(bumped.reshape(var.shape))
            up = float(objective())
            bumped[i] -= 2 * eps
            var.assign(bumped.reshape(var.shape))
            down = float(objective())
            var.assign(original.reshape(var.shape))
            numeric = (up - down) / (2 * eps)
            assert numeric == pytest.approx(grad.numpy().reshape(-1)[i], rel=2e-2, abs=2e-3)


def test_input_gradients_of_pools_and_flatten_match_finite_differences():
    for layer in (MaxPool2D(2), Flatten(), MaxPool2D(3, 2, "same"), AvgPool2D(3, 2, "same")):
        layer.build(IMAGE)
        x = tf.Variable(_input(IMAGE, batch=2, seed=4))
        projection = tf.constant(
            np.random.default_rng(5).normal(size=(2, *layer.output_shape(IMAGE))).astype(np.float32)
        )
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(layer(x) * projection)
        grad = tape.gradient(value, x).numpy().reshape(-1)
        flat = x.numpy().reshape(-1)
        for i in range(0, flat.size, 7):
            bumped = flat.copy()
            bumped[i] += 1e-3
            x.assign(bumped.reshape(x.shape))
            up = float(tf.reduce_sum(layer(x) * projection))
            bumped[i] -= 2e-3
            x.assign(bumped.reshape(x.shape))
            down = float(tf.reduce_sum(layer(x) * projection))
            x.assign(flat.reshape(x.shape))
            assert (up - down) / 2e-3 == pytest.approx(grad[i], rel=2e-2, abs=2e-3)


# -- Keras as the oracle -------------------------------------------------------------
def _keras():
    return pytest.importorskip("keras")


def test_dense_and_conv_match_keras_with_the_same_weights():
    keras = _keras()
    x = _input(IMAGE)
    for layer, oracle in (
        (
            Conv2D(4, 3, 1, "same", "relu", seed=1),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        ),
        (
            Conv2D(5, 3, 2, "valid", "tanh", seed=2),
            keras.layers.Conv2D(5, 3, strides=2, activation="tanh"),
        ),
        (
            Conv2D(2, 5, 2, "same", "linear", seed=3),
            keras.layers.Conv2D(2, 5, strides=2, padding="same"),
        ),
    ):
        layer.build(IMAGE)
        oracle.build((None, *IMAGE))
        oracle.set_weights([layer.w.numpy(), layer.b.numpy()])
        np.testing.assert_allclose(layer(x).numpy(), oracle(x).numpy(), rtol=1e-5, atol=1e-5)
    flat = _input((7,))
    dense = Dense(7, 5, "sigmoid", seed=4)
    oracle = keras.layers.Dense(5, activation="sigmoid")
    oracle.build((None, 7))
    oracle.set_weights([dense.w.numpy(), dense.b.numpy()])
    np.testing.assert_allclose(dense(flat).numpy(), oracle(flat).numpy(), rtol=1e-6, atol=1e-6)


def test_pools_flatten_and_dropout_at_inference_match_keras():
    keras = _keras()
    x = _input(IMAGE)
    pairs = [
        (MaxPool2D(2), keras.layers.MaxPooling2D(2)),
        (MaxPool2D(3, 1, "same"), keras.layers.MaxPooling2D(3, strides=1, padding="same")),
        (AvgPool2D(2), keras.layers.AveragePooling2D(2)),
        (AvgPool2D(3, 2, "same"), keras.layers.AveragePooling2D(3, strides=2, padding="same")),
        (Flatten(), keras.layers.Flatten()),
        (Dropout(0.5), keras.layers.Dropout(0.5)),
    ]
    for layer, oracle in pairs:
        layer.build(IMAGE)
        np.testing.assert_allclose(
            layer(x, training=False).numpy(), oracle(x, training=False).numpy(), rtol=1e-6
        )


def test_batchnorm_matches_keras_in_training_and_inference():
    keras = _keras()
    x = _input(IMAGE, batch=8)
    layer, _, _ = _built("batchnorm")
    oracle = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    oracle.build((None, *IMAGE))
    oracle.set_weights(
        [v.numpy() for v in (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)]
    )
    np.testing.assert_allclose(
        layer(x, training=False).numpy(), oracle(x, training=False).numpy(), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(
        layer(x, training=True).numpy(), oracle(x, training=True).numpy(), rtol=1e-3, atol=1e-3
    )
    # Both moved their averages by one step of momentum 0.9 (Keras: unbiased? no: biased variance).
    np.testing.assert_allclose(
        layer.moving_mean.numpy(), oracle.moving_mean.numpy(), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), oracle.moving_variance.numpy(), rtol=1e-4, atol=1e-5
    )


# -- Dropout: stateless, from the seed and the step ---------------------------------
def test_dropout_mask_follows_the_seed_and_the_step_and_needs_a_step():
    x = tf.ones([64, 32])
    step, source = _step_source(3)
    layer = Dropout(0.5, seed=(0, 1))
    layer.build((32,))
    with pytest.raises(ValueError, match="needs the global step"):
        layer(x, training=True)
    layer.set_step_source(source)
    first = layer(x, training=True).numpy()
    np.testing.assert_array_equal(layer(x, training=True).numpy(), first)  # same step, same mask
    assert set(np.unique(first)) == {0.0, 2.0}  # kept units scaled by 1 / (1 - rate)
    assert 0.4 < np.mean(first == 0) < 0.6
    step.assign(4)
    assert not np.array_equal(layer(x, training=True).numpy(), first)
    other = Dropout(0.5, seed=(0, 2))
    other.build((32,))
    other.set_step_source(source)
    step.assign(3)
    assert not np.array_equal(other(x, training=True).numpy(), first)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_dropout_gives_what_tensorflows_stateless_dropout_gives_for_the_same_draws(dtype):
    _, source = _step_source(11)
    x = tf.cast(tf.random.normal([8, 17, 5], seed=1), dtype)
    for rate in (0.25, 0.3, 0.5, 0.9):
        layer = Dropout(rate, seed=(3, 4))
        layer.build((17, 5))
        layer.set_step_source(source)
        seed = tf.stack([tf.constant(layer._seed, tf.int64), tf.constant(11 * 4096, tf.int64)])
        reference = tf.nn.experimental.stateless_dropout(x, rate=rate, seed=seed)
        ours = layer(x, training=True)
        assert ours.dtype == dtype
        np.testing.assert_array_equal(  # == (a dropped negative value is -0.0 here)
            tf.cast(ours, tf.float32).numpy(), tf.cast(reference, tf.float32).numpy()
        )


# -- BatchNorm ------------------------------------------------------------------------
def test_batchnorm_uses_batch_statistics_when_training_and_keeps_finite_averages():
    layer = BatchNorm(momentum=0.5)
    layer.build((3,))
    x = tf.constant(np.random.default_rng(0).normal(3.0, 2.0, size=(256, 3)).astype(np.float32))
    out = layer(x, training=True).numpy()
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=0), 1, atol=1e-2)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.5 * x.numpy().mean(axis=0), rtol=1e-4)
    before = [layer.moving_mean.numpy(), layer.moving_variance.numpy()]
    bad = x.numpy().copy()
    bad[0, 1] = np.nan
    layer(tf.constant(bad), training=True)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), before[0])
    np.testing.assert_array_equal(layer.moving_variance.numpy(), before[1])
    refs = {v.ref() for v in layer.variables} - {v.ref() for v in layer.trainable_variables}
    assert refs == {layer.moving_mean.ref(), layer.moving_variance.ref()}


# -- round trips -------------------------------------------------------------------------
def _model_with_every_layer(seed):
    model = Sequential(input_shape=(8, 8, 1), name="every_layer")
    for layer in (
        Conv2D(4, 3, activation="linear", seed=(seed, 0), name="conv_0"),
        BatchNorm(name="batchnorm_0"),
        Activation("relu", name="relu_0"),
        MaxPool2D(2, name="maxpool_0"),
        Conv2D(6, 3, 1, "valid", "tanh", seed=(seed, 1), name="conv_1"),
        AvgPool2D(2, name="avgpool_0"),
        Flatten(name="flatten_0"),
        Dropout(0.3, seed=seed, name="dropout_0"),
        Dense(output_size=3, seed=(seed, 2), name="output"),
    ):
        model.add(layer)
    return model


def test_every_layer_survives_checkpoint_and_saved_model_round_trips(tmp_path):
    model = _model_with_every_layer(1)
    bn = model.layers[1]
    bn.moving_mean.assign([0.1, -0.2, 0.3, 0.0])
    bn.moving_variance.assign([1.5, 0.5, 2.0, 1.0])
    x = _input((8, 8, 1), batch=5)
    eager = model(x).numpy()
    assert eager.shape == (5, 3) and model.shapes[-2] == (6,)
    other = _model_with_every_layer(2)
    assert not np.allclose(other(x).numpy(), eager)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=other).restore(path).assert_consumed()
    np.testing.assert_array_equal(other(x).numpy(), eager)
    np.testing.assert_array_equal(other.layers[1].moving_variance.numpy(), [1.5, 0.5, 2.0, 1.0])

    serving = tf.Module()
    serving.model = model
    serving.f = tf.function(
        lambda t: model(t, training=False),
        input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)],
    )
    tf.saved_model.save(serving, str(tmp_path / "saved"))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(loaded.f(x).numpy(), eager, rtol=1e-6, atol=1e-6)


# -- shapes and the Sequential -----------------------------------------------------------
def test_sequential_refuses_any_layer_that_does_not_fit_naming_both_layers_and_shapes():
    cases = [
        (Dense(output_size=4, name="fc"), "layer 2 (fc) expects flat inputs", "outputs [3, 3, 4]"),
        (
            Conv2D(2, 5, padding="valid", name="big"),
            "layer 2 (big) has no output with a 5x5",
            "[3, 3, 4]",
        ),
        (Conv2D(2, 3, in_channels=7, name="seven"), "expects 7 input channels", "(pool) outputs"),
    ]
    for layer, *fragments in cases:
        model = Sequential([Conv2D(4, 3, name="conv")], input_shape=(6, 6, 1))
        model.add(MaxPool2D(2, name="pool"))
        with pytest.raises(ValueError) as info:
            model.add(layer)
        for fragment in fragments:
            assert fragment in str(info.value)
        assert len(model.layers) == 2  # the refused layer was not added
    flat = Sequential([Dense(4, 8, name="first")])
    with pytest.raises(ValueError, match=r"layer 1 \(c\) expects images .* outputs \[8\]"):
        flat.add(Conv2D(2, 3, name="c"))
    with pytest.raises(ValueError, match="does not know its input shape"):
        Sequential([Conv2D(2, 3)])


def test_initializers_take_fans_from_convolution_kernels():
    assert initializers.fans([3, 3, 16, 32]) == (144, 288)
    assert initializers.fans([784, 100]) == (784, 100)
    kernel = initializers.he([5, 5, 64, 64], seed=(1, 2)).numpy()
    assert kernel.std() == pytest.approx(np.sqrt(2 / (5 * 5 * 64)), rel=0.05)
    kernel = initializers.xavier_uniform([3, 3, 32, 32], seed=(1, 3)).numpy()
    assert np.abs(kernel).max() <= np.sqrt(6 / (2 * 9 * 32))
    for layer in (Conv2D(8, 3, seed=1), Dense(output_size=8, seed=1)):
        layer.build((5, 5, 2) if isinstance(layer, Conv2D) else (18,))
        assert layer.fans == ((18, 72) if isinstance(layer, Conv2D) else (18, 8))


def test_fit_and_bfloat16_training_work_for_every_layer():
    import trainer
    from models import optimizers
    from trainer.engine.trainer import Trainer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 8, 1)).astype(np.float32)
    y = (x.reshape(96, -1)[:, :32].sum(axis=1) > 0).astype(np.int64)
    model = _model_with_every_layer(3)
    history = trainer.fit(
        model, x, y, epochs=3, batch_size=32, optimizer="adam", learning_rate=0.01, verbose=False
    )
    assert len(history["loss"]) == 3 and history["loss"][-1] < history["loss"][0]
    assert model.predict(x[:5]).shape == (5, 3)

    model = _model_with_every_layer(4)
    program = Trainer(
        model, optimizers.get("sgd", 0.1), global_batch_size=32, compute_dtype=tf.bfloat16
    )
    program.run_steps(iter(pipeline.train_dataset(x, y, 32, seed=0)), 4)
    assert int(program.global_step.numpy()) == 4 and int(program.guard.nonfinite_count.numpy()) == 0
    assert all(v.dtype == tf.float32 for v in model.variables)
    assert all(np.all(np.isfinite(v.numpy())) for v in model.variables)
    bn = model.layers[1]
    assert not np.allclose(bn.moving_mean.numpy(), 0)  # updated from bfloat16 activations
    assert model(tf.constant(x[:4], tf.bfloat16)).dtype == tf.bfloat16


def test_an_activation_layer_after_a_weighted_one_is_what_saturation_reports():
    from models import zoo

    model = zoo.build(
        "cnn",
        (8, 8, 1),
        10,
        layers="conv3x3:4:linear,batchnorm,relu,maxpool2,flatten,dense:8:linear,tanh",
    )
    assert [layer.name for layer in model.weighted_layers] == [
        "conv_0",
        "batchnorm_0",
        "hidden_0",
        "output",
    ]
    assert model.activation_names() == ["linear", "relu", "tanh", "linear"]
    x = _input((8, 8, 1), batch=16, seed=9)
    _, records = model.forward_with_activations(x)
    pre, post = records[1]  # batchnorm: normalized values, then the relu's outputs
    np.testing.assert_array_equal(post.numpy(), np.maximum(pre.numpy(), 0))
    pre, post = records[2]
    np.testing.assert_allclose(post.numpy(), np.tanh(pre.numpy()), rtol=1e-6, atol=1e-6)
