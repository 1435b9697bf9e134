import numpy as np
import pytest
import tensorflow as tf

from models import optimizers, registry

GRADS = [np.array([0.5, -1.0, 2.0], np.float32), np.array([1.5, 0.25, -0.5], np.float32)]
START = np.array([1.0, 2.0, -3.0], np.float32)


def _run(optimizer, grads=GRADS):
    var = tf.Variable(START)
    optimizer.build([var])
    for g in grads:
        optimizer.apply_gradients([tf.constant(g)], [var])
    return var.numpy()


def test_sgd_step_is_w_minus_lr_g():
    got = _run(optimizers.SGD(0.1))
    np.testing.assert_allclose(got, START - 0.1 * GRADS[0] - 0.1 * GRADS[1], rtol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_two_steps(nesterov):
    lr, mu = 0.1, 0.9
    got = _run(optimizers.Momentum(lr, mu, nesterov=nesterov))
    w, a = START.astype(np.float64), np.zeros(3)
    for g in GRADS:
        a = mu * a + g
        w = w - lr * (g + mu * a) if nesterov else w - lr * a
    np.testing.assert_allclose(got, w, rtol=1e-6)


def test_adam_two_steps():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    got = _run(optimizers.Adam(lr, b1, b2, eps))
    w, m, v = START.astype(np.float64), np.zeros(3), np.zeros(3)
    for t, g in enumerate(GRADS, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        w = w - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(got, w, rtol=1e-5)


def test_rmsprop_one_step():
    got = _run(optimizers.RMSprop(0.01, rho=0.9, epsilon=1e-7), GRADS[:1])
    s = 0.1 * GRADS[0] ** 2
    np.testing.assert_allclose(got, START - 0.01 * GRADS[0] / (np.sqrt(s) + 1e-7), rtol=1e-5)


def test_global_norm_clipping_rescales():
    g = np.array([3.0, 4.0, 0.0], np.float32)  # norm 5
    got = _run(optimizers.SGD(1.0, clip_norm=1.0), [g])
    np.testing.assert_allclose(got, START - g / 5.0, rtol=1e-6)


def test_slots_exist_after_build_and_round_trip_a_checkpoint(tmp_path):
    var = tf.Variable(START)
    opt = optimizers.Adam(0.01)
    opt.build([var])
    assert [s.shape.as_list() for s in opt.slots["m"]] == [[3]]
    opt.apply_gradients([tf.constant(GRADS[0])], [var])
    path = tf.train.Checkpoint(opt=opt, var=var).save(str(tmp_path / "ckpt"))
    var2 = tf.Variable(np.zeros(3, np.float32))
    opt2 = optimizers.Adam(0.5)
    opt2.build([var2])
    tf.train.Checkpoint(opt=opt2, var=var2).restore(path).assert_consumed()
    np.testing.assert_array_equal(opt2.slots["v"][0].numpy(), opt.slots["v"][0].numpy())
    assert opt2.iterations.numpy() == 1
    assert opt2.learning_rate.numpy() == pytest.approx(0.01)


def test_update_before_build_and_bad_hyperparameters_fail():
    with pytest.raises(ValueError, match="build"):
        optimizers.SGD(0.1).apply_gradients([tf.constant(GRADS[0])], [tf.Variable(START)])
    with pytest.raises(ValueError, match="learning_rate"):
        optimizers.SGD(-0.1)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        optimizers.get("lbfgs", 0.1)


@pytest.mark.parametrize("name", [entry.name for entry in registry.OPTIMIZERS])
def test_constructors_check_hyperparameters_as_flags_do(name):
    # Whatever the library accepts, --<hyperparameter> accepts, and the other way round.
    for option, default in registry.OPTIMIZERS.get(name).hyperparameters.items():
        setting = registry.HYPERPARAMETERS[option]
        for value in (default, 0.0, 0.5, 1.0, 2.0, -1e-9, float("nan"), float("inf")):
            if setting.problem(value) is None:
                assert getattr(optimizers.get(name, **{option: value}), option) == value
            else:
                with pytest.raises(ValueError, match=f"^{option} must be"):
                    optimizers.get(name, **{option: value})
        # NumPy scalars are numbers too.
        assert getattr(optimizers.get(name, **{option: np.float32(default)}), option) == (
            pytest.approx(default)
        )
