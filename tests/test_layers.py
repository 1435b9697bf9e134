import numpy as np
import pytest
import tensorflow as tf

import trainer
from models import Dense, Normalization, Sequential, optimizers, zoo
from trainer.engine.trainer import Trainer


def test_dense_shapes_and_variable_names():
    layer = Dense(4, 3, "sigmoid", init="xavier", name="hidden_0")
    assert layer.w.shape == (4, 3) and layer.b.shape == (3,)
    assert layer.w.name == "hidden_0/w:0" and layer.b.name == "hidden_0/b:0"
    y = layer(tf.ones([5, 4]))
    assert y.shape == (5, 3)
    assert np.all((y.numpy() > 0) & (y.numpy() < 1))


def test_sequential_rejects_layers_that_do_not_chain():
    model = Sequential([Dense(4, 8, name="first")])
    with pytest.raises(ValueError, match=r"first\) outputs \[8\]") as info:
        model.add(Dense(7, 2, name="second"))
    assert "second" in str(info.value) and "expects 7" in str(info.value)


def test_predict_gives_probabilities_or_regression_values():
    clf = zoo.mlp(6, [5], 3, "tanh", seed=1)
    probs = clf.predict(np.random.default_rng(0).normal(size=(10, 6)), batch_size=4)
    assert probs.shape == (10, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    reg = zoo.mlp(1, [4], 1, "tanh")
    assert reg.predict(np.zeros((3, 1))).shape == (3, 1)
    with pytest.raises(ValueError, match="predict expects shape"):
        clf.predict(np.zeros((2, 5)))


def test_normalization_applies_fitted_scaling_inside_the_model():
    norm = Normalization([1.0, 2.0], [2.0, 4.0])
    np.testing.assert_allclose(norm(tf.constant([[3.0, 6.0]])).numpy(), [[1.0, 1.0]])
    assert norm.trainable_variables == ()


def test_gradients_match_finite_differences():
    model = zoo.mlp(3, [4], 2, "tanh", init="xavier", seed=3)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(5, 3)).astype(np.float32))
    y = tf.constant([0, 1, 1, 0, 1])
    program = Trainer(model, optimizers.SGD(0.1), global_batch_size=5)

    def loss():
        return float(
            tf.reduce_mean(program.objective.eval_loss(y, program.step_fns.forward(x))).numpy()
        )

    with tf.GradientTape() as tape:
        value = tf.reduce_mean(program.objective.eval_loss(y, program.step_fns.forward(x)))
    grads = tape.gradient(value, model.trainable_variables)
    eps = 1e-2
    for var, grad in zip(model.trainable_variables, grads):
        flat = var.numpy().reshape(-1)
        for i in range(flat.size):
            original = flat.copy()
            bumped = original.copy()
            bumped[i] += eps
            var.assign(bumped.reshape(var.shape))
            up = loss()
            bumped[i] -= 2 * eps
            var.assign(bumped.reshape(var.shape))
            down = loss()
            var.assign(original.reshape(var.shape))
            numeric = (up - down) / (2 * eps)
            assert numeric == pytest.approx(grad.numpy().reshape(-1)[i], rel=2e-2, abs=2e-4), (
                var.name
            )


def test_zero_init_leaves_hidden_units_identical_after_training():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    model = zoo.mlp(8, [6], 3, "sigmoid", init="zeros")
    trainer.fit(
        model, x, y, epochs=5, batch_size=16, optimizer="sgd", learning_rate=0.5, verbose=False
    )
    hidden = model.layers[0].w.numpy()
    out = model.layers[1].w.numpy()
    assert np.abs(out).max() > 0, "the output layer should have learned something"
    # every hidden unit (column of w, row of the next layer's w) is the same
    np.testing.assert_allclose(hidden, np.repeat(hidden[:, :1], 6, axis=1), atol=1e-7)
    np.testing.assert_allclose(out, np.repeat(out[:1], 6, axis=0), atol=1e-7)


def test_fit_learns_a_separable_problem_and_reports_history():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 2)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model = zoo.linear(2, 2, seed=0)
    history = trainer.fit(
        model,
        x,
        y,
        epochs=10,
        batch_size=32,
        optimizer="adam",
        learning_rate=0.05,
        validation_data=(x, y),
        verbose=False,
    )
    assert len(history["loss"]) == 10 and history["loss"][-1] < history["loss"][0]
    assert history["val_accuracy"][-1] > 0.95
    assert model.count_params() == 2 * 2 + 2
