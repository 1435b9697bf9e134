"""Every layer a ``--layers`` token names (models.registry.LAYERS), built from its
token: it keeps the layer contract in eager, graph and XLA modes, matches the
Keras layer it names as its equivalent with the same weights (Keras is a test
oracle only), survives a checkpoint round trip, and trains in a network. A new
layer is covered here by its registry entry alone."""

import inspect

import numpy as np
import pytest
import tensorflow as tf

from models import Sequential, registry, spec, zoo

from helpers import script

IMAGE = (6, 6, 3)
FLAT = (7,)
KINDS = [kind.name for kind in registry.LAYERS]


def _build(name: str, seed: int = 1):
    """The layer of ``name``'s example token, built for images or, if it takes
    none, flat examples; non-trivial weights."""
    kind = registry.LAYERS.get(name)
    [token] = spec.parse(kind.example)
    cls = kind.load()
    accepted = inspect.signature(cls).parameters
    options = {**token.options, **({"seed": (seed, 0)} if "seed" in accepted else {})}
    layer = cls(**options, name=f"{name}_0")
    layer.build(IMAGE if kind.input != "flat" else FLAT)
    step = tf.Variable(7, dtype=tf.int64)
    layer.set_step_source(lambda: step)
    rng = np.random.default_rng(seed)
    for variable in layer.variables:  # away from the initial ones (gamma 1, beta 0, ...)
        values = rng.uniform(0.5, 1.5, size=variable.shape).astype(np.float32)
        variable.assign(values)
    return layer, layer.input_shape


def _input(shape, batch=4, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=(batch, *shape)).astype(np.float32))


@pytest.mark.parametrize("name", KINDS)
def test_eager_graph_and_xla_agree_in_inference(name):
    layer, shape = _build(name)
    x = _input(shape)
    eager = layer(x).numpy()
    assert eager.shape == (4, *layer.output_shape(shape))
    graph = tf.function(lambda t: layer(t))(x).numpy()
    xla = tf.function(lambda t: layer(t), jit_compile=True)(x).numpy()
    np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xla, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", KINDS)
def test_the_keras_equivalent_computes_the_same_function(name):
    """Through the benchmark's translation: each node of the layer's ``keras_graph()``
    (one Keras layer, or a residual block's layers and their ``Add``)."""
    pytest.importorskip("keras")
    layer, shape = _build(name)
    twin = script("contenders").keras_model(Sequential([layer], input_shape=shape))
    x = _input(shape, seed=2)
    np.testing.assert_allclose(
        np.asarray(twin(x, training=False)), layer(x).numpy(), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("name", KINDS)
def test_a_checkpoint_round_trip_keeps_the_function(name, tmp_path):
    layer, shape = _build(name, seed=1)
    path = tf.train.Checkpoint(layer=layer).write(str(tmp_path / "layer"))
    fresh, _ = _build(name, seed=2)
    tf.train.Checkpoint(layer=fresh).read(path).assert_existing_objects_matched()
    x = _input(shape, seed=3)
    np.testing.assert_array_equal(fresh(x).numpy(), layer(x).numpy())


def _flattens(name: str) -> bool:
    """Whether the layer turns images into flat examples (global average pooling)."""
    layer, shape = _build(name)
    return len(shape) == 3 and len(layer.output_shape(shape)) == 1


def test_every_layer_trains_in_one_network():
    import trainer

    kinds = [k for k in registry.LAYERS if k.name != "flatten"]
    to_flat = [k.example for k in kinds if k.input != "flat" and _flattens(k.name)]
    images = [k.example for k in kinds if k.input != "flat" and k.example not in to_flat]
    flat = [k.example for k in kinds if k.input == "flat"]
    specification = ",".join([*images, *to_flat, "flatten", *flat])
    model = zoo.from_spec(specification, (16, 16, 2), 3, seed=0)
    assert len(model.layers) == len(registry.LAYERS) + 1  # and the output layer
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 16, 16, 2)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    history = trainer.fit(model, x, y, epochs=2, batch_size=16, optimizer="adam", verbose=False)
    assert np.all(np.isfinite(history["loss"]))
    assert all(np.all(np.isfinite(v.numpy())) for v in model.variables)
