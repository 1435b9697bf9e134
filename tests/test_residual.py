"""Residual blocks (``res3x3:F[:sN]``), global average pooling (``gap``) and the
presets built from them (``resnet20``, ``cifar_cnn``): shapes, the shortcut, the
parameter count, a NumPy reference, the Keras twin, checkpoints, the grammar, and
what diagnostics and ``trainer.inspect`` see inside a block (its parts)."""

import numpy as np
import pytest
import tensorflow as tf

from models import diagnostics, registry, spec, zoo
from models.layers.base import Layer
from models.layers.pooling import GlobalAvgPool2D
from models.layers.residual import ResidualBlock
from trainer import config as config_lib

from helpers import script, train

PARTS = ["conv_a", "bn_a", "conv_b", "bn_b"]
PROJECTION = [*PARTS, "shortcut", "shortcut_bn"]
# ResNet-20 for 10 classes on 32x32x3, by hand: a k x k convolution has k*k*C_in*F
# weights and F biases, a BatchNorm 4 values per channel (2 trained, 2 averages).
CONV = lambda k, c_in, f: k * k * c_in * f + f  # noqa: E731
BN = lambda c: 4 * c  # noqa: E731


def _block_count(c_in, f):
    count = CONV(3, c_in, f) + BN(f) + CONV(3, f, f) + BN(f)
    return count + (CONV(1, c_in, f) + BN(f) if c_in != f else 0)


STAGES = [(16, 16)] * 3 + [(16, 32), (32, 32), (32, 32), (32, 64), (64, 64), (64, 64)]
RESNET20 = CONV(3, 3, 16) + BN(16) + sum(_block_count(*s) for s in STAGES) + 64 * 10 + 10
RESNET20_AVERAGES = 2 * (16 + 6 * 16 + 7 * 32 + 7 * 64)  # BatchNorm's moving averages


def _block(filters, strides=1, shape=(5, 5, 3), seed=1, name="res_0"):
    """A built block with non-trivial BatchNorm parameters and averages."""
    block = ResidualBlock(filters, strides=strides, seed=(seed, 0), name=name)
    block.build(shape)
    rng = np.random.default_rng(seed)
    for layer in block.parts:
        if hasattr(layer, "moving_mean"):
            channels = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels).astype(np.float32))
            layer.beta.assign(rng.normal(size=channels).astype(np.float32))
            layer.moving_mean.assign(rng.normal(size=channels).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2, channels).astype(np.float32))
    return block


def _input(shape, batch=4, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype(np.float32)


def test_shapes_and_the_shortcut_identity_or_projection():
    same = _block(3, shape=(5, 5, 3))
    assert not same.projects((5, 5, 3)) and same.shortcut is None
    assert [layer.name for layer in same.parts] == [f"res_0/{p}" for p in PARTS]
    assert same(_input((5, 5, 3))).shape == (4, 5, 5, 3)
    for block, shape, out in [
        (_block(4, shape=(5, 5, 3)), (5, 5, 3), (5, 5, 4)),  # more channels
        (_block(3, strides=2, shape=(5, 5, 3)), (5, 5, 3), (3, 3, 3)),  # a stride
    ]:
        assert block.projects(shape) and block.output_shape(shape) == out
        assert [layer.name for layer in block.parts] == [f"res_0/{p}" for p in PROJECTION]
        assert block.shortcut.kernel.shape == (1, 1, 3, out[-1])
        assert block(_input(shape)).shape == (4, *out)
        assert block.parameter_count(shape) == sum(int(np.prod(v.shape)) for v in block.variables)
    with pytest.raises(ValueError, match="expects images"):
        ResidualBlock(4).build((12,))


def _np_conv(x, w, b, stride):
    """TensorFlow's 'SAME' convolution in NumPy (float64)."""
    n, height, width, _ = x.shape
    k = w.shape[0]
    out_h, out_w = -(-height // stride), -(-width // stride)
    pad_h = max((out_h - 1) * stride + k - height, 0)
    pad_w = max((out_w - 1) * stride + k - width, 0)
    padded = np.pad(
        x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    )
    out = np.zeros((n, out_h, out_w, w.shape[-1]))
    for i in range(out_h):
        for j in range(out_w):
            window = padded[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
            out[:, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [0, 1, 2]))
    return out + b


def _np_bn(x, layer, training):
    if training:
        mean, variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    else:
        mean, variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    scale = layer.gamma.numpy() / np.sqrt(variance + layer.epsilon)
    return (x - mean) * scale + layer.beta.numpy()


def _np_block(block, x, training):
    """The block of He et al. 2016 computed in NumPy from the block's weights."""

    def conv(layer, h):
        return _np_conv(h, layer.w.numpy(), layer.b.numpy(), layer.strides)

    h = np.maximum(_np_bn(conv(block.conv_a, x), block.bn_a, training), 0)
    main = _np_bn(conv(block.conv_b, h), block.bn_b, training)
    if block.shortcut is None:  # the identity
        return np.maximum(main + x, 0)
    return np.maximum(main + _np_bn(conv(block.shortcut, x), block.shortcut_bn, training), 0)


@pytest.mark.parametrize("filters, strides", [(3, 1), (4, 2)])
def test_the_block_computes_he_et_al_s_function(filters, strides):
    block = _block(filters, strides, shape=(5, 5, 3))
    x = _input((5, 5, 3), seed=2)
    for training in (False, True):
        before = block.bn_a.moving_mean.numpy()
        expected = _np_block(block, x.astype(np.float64), training)
        got = block(tf.constant(x), training=training).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # the training call moved bn_a's average by 1 - momentum towards the batch's mean
    conv_a = _np_conv(x, block.conv_a.w.numpy(), block.conv_a.b.numpy(), strides)
    batch_mean = conv_a.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(
        block.bn_a.moving_mean.numpy(), 0.99 * before + 0.01 * batch_mean, rtol=1e-4, atol=1e-5
    )


def test_the_convolutions_draw_seeds_derived_from_the_block_s():
    first, again, other = (ResidualBlock(4, strides=2, seed=(0, k)) for k in (3, 3, 4))
    for block in (first, again, other):
        block.build((6, 6, 4))
    kernels = [first.conv_a.w, first.conv_b.w, first.shortcut.w]
    for mine, same, different in zip(
        kernels, [again.conv_a.w, again.conv_b.w, again.shortcut.w],
        [other.conv_a.w, other.conv_b.w, other.shortcut.w], strict=True,
    ):  # fmt: skip
        np.testing.assert_array_equal(mine.numpy(), same.numpy())
        assert not np.allclose(mine.numpy(), different.numpy())
    assert not np.allclose(first.conv_a.w.numpy(), first.conv_b.w.numpy())
    # a network: every kernel its own draw, and the block's init reaches them
    model = zoo.from_spec("conv3x3:4,res3x3:4,res3x3:4,gap", (6, 6, 1), 2, init="he", seed=0)
    inner = [
        layer.kernel.numpy() for layer in model.weighted_layers if len(layer.kernel.shape) == 4
    ]
    assert len({k[:, :, :1, :].tobytes() for k in inner}) == len(inner) == 5
    np.testing.assert_allclose(model.layers[2].conv_b.w.numpy().std(), np.sqrt(2 / 36), rtol=0.25)


def test_set_step_source_reaches_every_inner_layer(monkeypatch):
    block = _block(4, strides=2)
    seen = []
    monkeypatch.setattr(Layer, "set_step_source", lambda self, fn: seen.append(self.name))
    block.set_step_source(lambda: tf.constant(3, tf.int64))
    names = {f"res_0/{p}" for p in [*PROJECTION, "act_a", "act"]}
    assert set(seen) == names and len(seen) == len(names)


def test_resnet20_has_the_papers_0_27_m_parameters_by_plan_build_and_hand():
    assert RESNET20 == 274_826  # the Keras twin counts the same: see the twin's test
    shapes, planned = zoo.plan("resnet20", (32, 32, 3), 10)
    assert planned == RESNET20
    assert shapes[-3:] == [(8, 8, 64), (64,), (10,)]
    model = zoo.preset("resnet20", input_shape=(32, 32, 3), num_outputs=10)
    assert sum(int(np.prod(v.shape)) for v in model.variables) == RESNET20
    assert model.count_params() == RESNET20 - RESNET20_AVERAGES == 273_258
    # 1 stem convolution + 18 block convolutions + 2 projections + the output: 22
    kernels = [layer for layer in model.weighted_layers if len(layer.kernel.shape) > 1]
    assert len(kernels) == 22 and len(model.weighted_layers) == 22 + 1 + 18 + 2
    assert model.describe().count("res{") == 9 and "| conv 1x1x64 s2 linear" in model.describe()
    assert zoo.uses_images("resnet20") and zoo.preset("resnet20").input_shape == (28, 28, 1)


def test_the_presets_defaults_and_cifar_cnns_padding():
    assert config_lib.resolve({"model": "resnet20"}).init == "he"
    assert config_lib.resolve({"model": "resnet20", "init": "xavier"}).init == "xavier"
    assert config_lib.resolve({"model": "lenet"}).init == "xavier"
    model = zoo.preset("resnet20", input_shape=(8, 8, 1))  # digits: 8 -> 4 -> 2
    assert model.shapes[9] == (2, 2, 64) and model.shapes[-2:] == [(64,), (10,)]
    # He normal: N(0, 2 / fan_in), fan_in = 3 * 3 * 16
    np.testing.assert_allclose(model.layers[3].conv_a.w.numpy().std(), np.sqrt(2 / 144), rtol=0.1)
    shapes, parameters = zoo.plan("cifar_cnn", (32, 32, 3), 10)
    assert parameters == 1_250_858  # the Keras example's count
    assert shapes[:2] == [(32, 32, 32), (30, 30, 32)]  # same, then valid padding
    with pytest.raises(ValueError, match="'maxpool2'"):
        zoo.plan("cifar_cnn", (8, 8, 1), 10)


def test_gap_averages_each_channel_and_makes_an_image_network_flat():
    layer = GlobalAvgPool2D(name="gap_0")
    assert layer.build((4, 3, 5)) == (5,)
    x = _input((4, 3, 5))
    np.testing.assert_allclose(layer(tf.constant(x)).numpy(), x.mean(axis=(1, 2)), rtol=1e-5)
    assert layer(tf.constant(x, tf.bfloat16)).dtype == tf.bfloat16
    with pytest.raises(ValueError, match="expects images"):
        layer.output_shape((12,))
    assert spec.uses_images(spec.parse("conv3x3:16,gap")) and spec.uses_images(spec.parse("gap"))
    shapes, _ = zoo.plan("cnn", (8, 8, 1), 10, layers="conv3x3:16,gap")
    assert shapes == [(8, 8, 16), (16,), (10,)]
    with pytest.raises(ValueError, match=r"^'gap': .*expects images"):
        zoo.from_spec("flatten,gap", (8, 8, 1), 3)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("res3x3", "'res3x3': write resKxK:FILTERS"),
        ("res:16", "'res:16': give the kernel size"),
        ("res3x3:0", "'res3x3:0': the number of filters must be between 1"),
        ("res3x3:many", "'res3x3:many': the number of filters must be a positive integer"),
        ("res3x3:16:s0", "'res3x3:16:s0': the stride must be between 1"),
        ("res3x3:16:valid", "'res3x3:16:valid': unknown option 'valid'"),
        ("res3x3:16:s2:s2", "'res3x3:16:s2:s2': strides given twice"),
        ("res3x5:16", "'res3x5:16': only square windows"),
        ("gap:2", "'gap:2': gap takes no options"),
    ],
)
def test_bad_tokens_are_value_errors_naming_the_token(text, fragment):
    with pytest.raises(ValueError) as raised:
        zoo.from_spec(f"conv3x3:4,{text}", (8, 8, 1), 3)
    assert fragment in str(raised.value), str(raised.value)


def test_diagnostics_see_every_part_of_a_block_as_a_layer():
    model = zoo.from_spec("conv3x3:4,res3x3:4,res3x3:8:s2,tanh,gap", (6, 6, 1), 3, seed=0)
    names = [layer.name for layer in model.weighted_layers]
    assert names == [
        "conv_0", *[f"res_0/{p}" for p in PARTS], *[f"res_1/{p}" for p in PROJECTION], "output"
    ]  # fmt: skip
    # conv_a and conv_b feed a BatchNorm; bn_a goes through relu, bn_b and the
    # projection through the sum and relu; an Activation after a block is no part's
    assert model.activation_names() == [
        "relu", *["linear", "relu"] * 2, *["linear", "relu"] * 3, "linear"
    ]  # fmt: skip
    x = tf.constant(_input((6, 6, 1)))
    outputs, records = model.forward_with_activations(x, training=True)
    assert outputs.shape == (4, 3) and len(records) == len(names)
    for layer, (pre, post) in zip(model.weighted_layers, records, strict=True):
        expected = (4, *layer.output_shape(layer.input_shape))
        assert pre.shape == post.shape == expected, layer.name
    block_output, block_records = model.layers[1].forward_parts(model.layers[0](x))
    assert block_output.shape == (4, 6, 6, 4) and len(block_records) == 4
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(x, training=True) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    weights = [v.read_value() for v in model.trainable_variables]
    stats = diagnostics.layer_statistics(model, grads, weights, weights, records)
    assert all(value.shape == (len(names),) for value in stats.values())
    assert np.all(stats["gradient_norm"].numpy() > 0)
    # the kernel each entry reports is the part's own (what L2 and weight decay take)
    variables = model.trainable_variables
    for (name, indices), layer in zip(
        diagnostics.layer_variables(model), model.weighted_layers, strict=True
    ):
        assert variables[indices[0]] is layer.kernel and name == layer.name


def test_a_checkpoint_round_trip_keeps_weights_and_batchnorm_averages(tmp_path):
    model = zoo.preset("resnet20", input_shape=(8, 8, 3), num_outputs=4, seed=1)
    x = tf.constant(_input((8, 8, 3)))
    for _ in range(3):  # move every moving average
        model(x, training=True)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    names = [name for name, _ in tf.train.list_variables(path)]
    for block in ("layers/4/", "layers/9/"):  # res_1 (identity), res_6 (projection)
        for part in ("bn_a", "bn_b"):
            assert any(f"{block}{part}/moving_variance" in name for name in names), names
    assert any("layers/9/shortcut_bn/moving_mean" in name for name in names)
    fresh = zoo.preset("resnet20", input_shape=(8, 8, 3), num_outputs=4, seed=2)
    tf.train.Checkpoint(model=fresh).read(path).assert_consumed()
    assert len(fresh.variables) == len(model.variables)
    for mine, theirs in zip(model.variables, fresh.variables, strict=True):
        assert mine.name == theirs.name
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    assert not np.allclose(model.layers[4].bn_a.moving_variance.numpy(), 1.0)
    np.testing.assert_array_equal(fresh(x).numpy(), model(x).numpy())


def _relative_close(actual, desired, rtol):
    actual, desired = np.asarray(actual), np.asarray(desired)
    scale = max(float(np.abs(desired).max()), 1e-6)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale)


def test_the_keras_twin_of_resnet20_computes_the_same_outputs_and_training_step():
    keras = pytest.importorskip("keras")
    from models import losses

    model = zoo.preset("resnet20", input_shape=(16, 16, 3), num_outputs=10, seed=0)
    rng = np.random.default_rng(0)
    for layer in model.weighted_layers:  # moving averages away from 0 and 1
        if hasattr(layer, "moving_mean"):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, channels).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, channels).astype(np.float32))
    twin = script("contenders").keras_model(model)
    assert twin.count_params() == sum(int(np.prod(v.shape)) for v in model.variables)
    assert sum(isinstance(layer, keras.layers.Add) for layer in twin.layers) == 9
    x = tf.constant(_input((16, 16, 3), batch=4, seed=1))
    y = tf.constant([1, 3, 5, 7])
    _relative_close(twin(x, training=False), model(x).numpy(), 1e-4)
    # one SGD step each, in training mode: the same loss, then the same network
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        ours = losses.cross_entropy(y, model(x, training=True))
    grads = tape.gradient(ours, model.trainable_variables)
    with tf.GradientTape() as tape:
        theirs = keras_loss(y, twin(x, training=True))
    their_grads = tape.gradient(theirs, twin.trainable_weights)
    _relative_close(float(theirs), float(ours), 1e-5)
    for variable, grad in zip(model.trainable_variables, grads, strict=True):
        variable.assign_sub(0.1 * grad)
    for variable, grad in zip(twin.trainable_weights, their_grads, strict=True):
        variable.assign(variable - 0.1 * grad)
    _relative_close(twin(x, training=False), model(x).numpy(), 1e-3)
    _relative_close(
        keras_loss(y, twin(x, training=True)),
        losses.cross_entropy(y, model(x, training=True)),
        1e-4,
    )


def test_trainer_inspect_reports_the_parts_of_a_block(tmp_path):
    from trainer import inspect as inspect_lib

    layers = "conv3x3:4,res3x3:4,res3x3:8:s2,gap"
    train(tmp_path, model="cnn", layers=layers, train_steps=2, mode="train", batch_size=16)
    figures = inspect_lib.inspect_run(str(tmp_path), batch_size=32)
    rows = {row["layer"]: row for row in figures["layers"]}
    assert list(rows) == [
        "conv_0", *[f"res_0/{p}" for p in PARTS], *[f"res_1/{p}" for p in PROJECTION], "output"
    ]  # fmt: skip
    assert rows["res_1/conv_a"]["weight_shape"] == [3, 3, 4, 8]
    assert rows["res_1/shortcut"]["weight_shape"] == [1, 1, 4, 8]
    assert rows["res_0/bn_a"]["activation"] == "relu" and rows["res_1/shortcut"]["grad_l2"] > 0
    assert "res_1/shortcut_bn" in inspect_lib.format_table(figures)


def test_layer_kinds_are_registered_with_their_inputs():
    res, gap = registry.LAYERS.get("res"), registry.LAYERS.get("gap")
    assert res.input == gap.input == "images" and res.window == "kernel_size"
    [token] = spec.parse("res3x3:64:s2:m0.9")
    layer = token.kind.load()(**token.options, name="res_0")
    assert (layer.filters, layer.kernel_size, layer.strides) == (64, 3, 2)
    assert layer.bn_a.momentum == 0.9


def test_weight_decay_and_l2_take_the_kernels_not_batchnorms_gamma():
    from models import zoo

    model = zoo.build("resnet20", (16, 16, 3), 10)
    names = [kernel.name for kernel in model.decayed_kernels]
    assert len(names) == 22 and all(name.endswith("/w:0") for name in names)  # 21 convs, output
    assert "res_3/shortcut/w:0" in names and not any("gamma" in name for name in names)
