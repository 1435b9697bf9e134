"""Every zoo model gives the same outputs eagerly, compiled, under XLA, after a
checkpoint round trip and after a SavedModel round trip."""

import numpy as np
import pytest
import tensorflow as tf

from models import zoo

BUILDERS = {
    "linear": lambda seed: zoo.linear(64, 10, seed=seed),
    "mlp_sigmoid": lambda seed: zoo.mlp(64, [32, 16], 10, "sigmoid", "xavier", seed),
    "mlp_relu_he": lambda seed: zoo.mlp(64, [32], 10, "relu", "he", seed),
    "regression_tanh": lambda seed: zoo.mlp(1, [16], 1, "tanh", "xavier_uniform", seed),
    "normalized": lambda seed: zoo.mlp(
        64, [8], 10, "tanh", seed=seed, normalization=(np.full(64, 3.0), np.full(64, 2.0))
    ),
    "softmax_regression": lambda seed: zoo.preset("softmax_regression", seed=seed),
    "notebook_mlp": lambda seed: zoo.preset("notebook_mlp", seed=seed),
    "notebook_deep": lambda seed: zoo.preset("notebook_deep", seed=seed),
    "lenet": lambda seed: zoo.preset("lenet", seed=seed),
    "cnn_every_layer": lambda seed: zoo.build(
        "cnn",
        (8, 8, 1),
        10,
        layers="conv3x3:8:linear,batchnorm,relu,maxpool2,conv3x3:4:valid:tanh,avgpool1,"
        "flatten,dropout:0.2,dense:16",
        seed=seed,
        normalization=(np.full(64, 3.0), np.full(64, 2.0)),
    ),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_model_conforms(name, tmp_path):
    model = BUILDERS[name](seed=1)
    x = tf.constant(
        np.random.default_rng(0).uniform(0, 16, size=(7, *model.input_shape)).astype(np.float32)
    )
    eager = model(x).numpy()
    assert eager.shape == (7, model.output_size)
    assert np.all(np.isfinite(eager))

    graph = tf.function(model.__call__)(x).numpy()
    xla = tf.function(model.__call__, jit_compile=True)(x).numpy()
    # predict: inference mode, softmax head
    np.testing.assert_allclose(
        model.predict(x.numpy()), model.apply_head(eager).numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xla, eager, rtol=1e-4, atol=1e-4)

    other = BUILDERS[name](seed=2)
    if name != "normalized":  # all-constant normalization does not depend on the seed
        assert not np.allclose(other(x).numpy(), eager)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=other).restore(path).assert_consumed()
    np.testing.assert_array_equal(other(x).numpy(), eager)

    serving = tf.Module()
    serving.model = model
    serving.f = tf.function(
        model.__call__, input_signature=[tf.TensorSpec([None, *model.input_shape], tf.float32)]
    )
    tf.saved_model.save(serving, str(tmp_path / "saved"))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(loaded.f(x).numpy(), eager, rtol=1e-6, atol=1e-6)


def test_presets_have_the_notebook_shapes():
    deep = zoo.preset("notebook_deep")
    assert [layer.kernel.shape.as_list() for layer in deep.weighted_layers] == (
        [[784, 500]] + [[500, 500]] * 5 + [[500, 10]]
    )
    assert zoo.preset("notebook_mlp").count_params() == 784 * 100 + 100 + 100 * 10 + 10
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        zoo.build("resnet", 4, 2)
    lenet = zoo.preset("lenet")
    assert lenet.input_shape == (28, 28, 1) and lenet.shapes[3] == (7, 7, 16)
    assert [layer.kernel.shape.as_list() for layer in lenet.weighted_layers] == [
        [5, 5, 1, 6], [5, 5, 6, 16], [784, 120], [120, 84], [84, 10]
    ]  # fmt: skip
