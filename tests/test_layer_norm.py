"""LayerNorm (token ``layernorm``) against Keras's LayerNormalization: outputs and
gradients with the same weights, for flat examples and for images, and in a
network trained from the command line's specification."""

import numpy as np
import pytest
import tensorflow as tf

from models import spec, zoo
from models.layers.layer_norm import LayerNorm


@pytest.mark.parametrize("shape", [(7,), (5, 5, 3)])
def test_outputs_and_gradients_match_keras(shape):
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    layer = LayerNorm(name="ln")
    layer.build(shape)
    layer.gamma.assign(rng.uniform(0.5, 1.5, shape[-1]).astype(np.float32))
    layer.beta.assign(rng.normal(size=shape[-1]).astype(np.float32))
    oracle = keras.layers.LayerNormalization(axis=-1, epsilon=1e-3)
    x = tf.constant(rng.normal(3.0, 2.0, size=(4, *shape)).astype(np.float32))
    oracle(x)
    oracle.set_weights([layer.gamma.numpy(), layer.beta.numpy()])
    projection = tf.constant(rng.normal(size=(4, *shape)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = tf.reduce_sum(layer(x) * projection)
        theirs = tf.reduce_sum(oracle(x) * projection)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4)
    for a, b in [
        (tape.gradient(ours, x), tape.gradient(theirs, x)),
        *zip(tape.gradient(ours, [layer.gamma, layer.beta]),
             tape.gradient(theirs, oracle.trainable_variables), strict=True),
    ]:  # fmt: skip
        np.testing.assert_allclose(a.numpy(), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_each_example_is_normalized_on_its_own():
    layer = LayerNorm()
    layer.build((6,))
    x = np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32)
    x[1] *= 1000.0  # another example's scale changes nothing of the others'
    out = layer(tf.constant(x)).numpy()
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=1), 1.0, rtol=1e-2)
    alone = layer(tf.constant(x[:1])).numpy()
    np.testing.assert_allclose(alone, out[:1], rtol=1e-6)


def test_the_token_builds_it_and_bad_ones_are_named():
    [token] = spec.parse("ln")
    assert token.layer == "LayerNorm" and token.options == {}
    with pytest.raises(spec.SpecError, match="layernorm takes no options"):
        spec.parse("layernorm:2")
    model = zoo.build("cnn", (8, 8, 1), 10, layers="conv3x3:4,layernorm,relu,flatten")
    assert [layer.name for layer in model.layers] == [
        "conv_0", "layernorm_0", "relu_0", "flatten_0", "output"
    ]  # fmt: skip
    assert "layernorm_0" in [layer.name for layer in model.weighted_layers]
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        LayerNorm(epsilon=0.0)
