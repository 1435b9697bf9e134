"""The trainer's behaviour, in-process: compiled loops, the notebook's lessons,
regression, and parity with Keras on MNIST-format data."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from trainer import assembly, run_folder, tf_internals, train_lib, xla_policy
from trainer.data import arrays as arrays_lib

from datafiles import write_mnist
from helpers import config, results, train


def test_training_loop_is_traced_once_for_a_whole_run(tmp_path):
    # Loop calls of 7, 3, 5, ... steps (cut at log and checkpoint boundaries)
    # must reuse one trace: the step count is a tensor.
    figures = train(tmp_path, train_steps=50, steps_per_loop=7, log_every=5, checkpoint_every=20)
    assert figures["global_step"] == 50
    assert figures["traces"]["train_loop"] == 1
    assert figures["traces"]["evaluate"] == 1


@pytest.mark.parametrize("jit", ["true", "false"])
def test_jit_choice_is_applied_and_recorded(tmp_path, jit):
    figures = train(tmp_path, train_steps=200, jit_compile=jit)
    assert figures["jit_compile"] is (jit == "true")
    assert figures["test_accuracy"] > 0.5


def test_auto_jit_follows_the_kernels_it_would_replace(monkeypatch):
    from trainer.config import resolve

    plain, bf16 = xla_policy.CpuFeatures(), xla_policy.CpuFeatures(bf16=True)
    for cpu in (plain, bf16):
        for onednn in (True, False):
            for convolutions in (True, False):
                for precision in ("float32", "bfloat16"):
                    assert xla_policy.auto_jit("gpu", convolutions, precision, onednn, cpu)
            # float32 on CPU: dense networks always, convolutions only without oneDNN.
            assert xla_policy.auto_jit("cpu", True, "float32", onednn, cpu) is (not onednn)
            assert xla_policy.auto_jit("cpu", False, "float32", onednn, cpu)
            # bfloat16 on CPU: XLA only where the kernels it replaces lack bfloat16 hardware.
            for convolutions in (True, False):
                on = xla_policy.auto_jit("cpu", convolutions, "bfloat16", onednn, cpu)
                assert on is not (onednn and cpu.bf16)
    # Every choice comes with its reason for the log.
    assert "dense layers" in xla_policy.auto_jit_choice("cpu", False, "float32", True, plain)[1]
    assert (
        "bfloat16 instructions"
        in xla_policy.auto_jit_choice("cpu", True, "bfloat16", True, bf16)[1]
    )

    def chosen(cpu, **values):
        monkeypatch.setattr(xla_policy, "cpu_features", lambda: cpu)
        return xla_policy.resolve_jit(resolve(values), "cpu", 1, "default")

    onednn = tf_internals.onednn_enabled()
    for cpu in (plain, bf16):
        assert chosen(cpu, model="mlp", hidden=(100,)) and chosen(cpu, model="notebook_mlp")
        assert chosen(cpu, model="softmax_regression") and chosen(cpu, model="notebook_deep")
        assert not chosen(cpu, model="mlp", hidden=(100,), deterministic=True)
        assert chosen(cpu, model="lenet") is chosen(cpu, model="cnn") is (not onednn)
        in_bf16 = not (onednn and cpu.bf16)
        assert chosen(cpu, model="cnn", precision="bfloat16") is in_bf16
        assert chosen(cpu, model="notebook_mlp", precision="bfloat16") is in_bf16
        assert not chosen(cpu, model="cnn", precision="bfloat16", deterministic=True)
        assert not chosen(cpu, model="lenet", precision="bfloat16", jit_compile="false")
        assert chosen(cpu, model="notebook_deep", jit_compile="true")
        # XLA has no deterministic max-pool gradient: --deterministic wins over the request.
        assert chosen(cpu, model="cnn", jit_compile="true")
        assert chosen(cpu, model="cnn", layers="conv3x3:4,avgpool2,flatten", jit_compile="true",
                      deterministic=True)  # fmt: skip
        assert not chosen(cpu, model="cnn", jit_compile="true", deterministic=True)
    assert xla_policy.xla_nondeterministic("cnn", "conv3x3:4,maxpool2,maxpool2") == ["maxpool"]
    assert xla_policy.resolve_jit(resolve({"model": "notebook_deep"}), "gpu", 1, "default")


def test_cpu_features_read_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_bf16\nbugs\t: x\n")
    assert xla_policy.cpu_features(str(info)) == xla_policy.CpuFeatures(bf16=True)
    info = tmp_path / "cpuinfo2"  # (read once per path)
    info.write_text("flags\t: fpu avx2\nflags\t: avx512_bf16\n")  # the first line counts
    assert xla_policy.cpu_features(str(info)) == xla_policy.CpuFeatures(bf16=False)
    assert xla_policy.cpu_features(str(tmp_path / "missing")) == xla_policy.CpuFeatures()
    (tmp_path / "binary").write_bytes(b"\xff\xfe flags : \x00")
    assert xla_policy.cpu_features(str(tmp_path / "binary")) == xla_policy.CpuFeatures()


def _first_layer_gradient(cfg):
    run = assembly.Run(cfg)
    x, y = (tf.constant(v) for v in run.source.sample(64))
    _, grads = run.trainer.loss_and_gradients(x, y)
    names = [v.name for v in run.model.trainable_variables]
    return grads[names.index("hidden_0/w:0")].numpy(), run


def test_uniform_init_deep_sigmoid_net_has_exactly_zero_first_layer_gradient(tmp_path):
    deep = {"hidden": (500,) * 6, "activation": "sigmoid"}
    grad, _ = _first_layer_gradient(config(tmp_path / "u", init="uniform", **deep))
    assert np.count_nonzero(grad) == 0
    grad, _ = _first_layer_gradient(config(tmp_path / "x", init="xavier", **deep))
    assert np.count_nonzero(grad) > 0.5 * grad.size


def test_uniform_init_does_not_learn_and_xavier_with_adam_does(tmp_path):
    # Six sigmoid layers as in the notebook, 200 wide rather than 500 to keep the
    # test short: U[0,1) saturates them just the same (measured: 0.100 vs 0.933).
    deep = {"hidden": (200,) * 6, "activation": "sigmoid"}
    uniform = train(
        tmp_path / "u", init="uniform", optimizer="sgd", learning_rate=0.1, epochs=5, **deep
    )
    assert uniform["test_accuracy"] < 0.3
    xavier = train(
        tmp_path / "x", init="xavier", optimizer="adam", learning_rate=0.002, epochs=30,
        batch_size=64, **deep,
    )  # fmt: skip
    assert xavier["test_accuracy"] >= 0.9


def test_zero_init_leaves_hidden_units_identical(tmp_path):
    # Mathematically every hidden unit gets the same gradient forever. In float32
    # the matmuls may sum the units' columns in different orders (that depends on
    # the CPU and the thread count), so units can differ by rounding, and those
    # differences grow with training (after ~900 steps they split the units into
    # groups). After 20 steps they are ~1e-9 of the weights: check the spread
    # across units relative to the weights' size, with a margin that holds on any
    # x86-64 CPU, instead of an absolute tolerance.
    train(tmp_path, init="zeros", train_steps=20, hidden=(20,), optimizer="sgd", learning_rate=0.5)
    reader = tf.train.load_checkpoint(str(tmp_path / "checkpoints"))
    keys = reader.get_variable_to_shape_map()
    (w_key,) = [k for k in keys if k.startswith("model/layers/1/w/") and "OPTIMIZER" not in k]
    w = reader.get_tensor(w_key).astype(np.float64)
    scale = np.abs(w).max()
    assert scale > 0
    spread = (w.max(axis=1) - w.min(axis=1)).max()  # across units, for each input
    assert spread <= 1e-4 * scale, (spread, scale)


def test_sin_regression_fits_to_small_mse(tmp_path):
    figures = train(
        tmp_path, dataset="sin", loss="mse", activation="tanh", hidden=(32, 32),
        epochs=60, batch_size=32, learning_rate=0.01,
    )  # fmt: skip
    assert figures["test_loss"] < 0.01
    assert "test_accuracy" not in figures


def test_same_steps_again_only_testuates_and_more_steps_continue(tmp_path):
    first = train(tmp_path, train_steps=40)
    again = train(tmp_path, train_steps=40)
    assert again["global_step"] == 40
    assert again["test_loss"] == pytest.approx(first["test_loss"], rel=1e-6)
    more = train(tmp_path, train_steps=70)
    assert more["global_step"] == 70


def test_eval_mode_restores_the_latest_checkpoint(tmp_path):
    trained = train(tmp_path, train_steps=60)
    evaluated = train_lib.run(config(tmp_path, mode="eval"))
    assert evaluated["test_accuracy"] == pytest.approx(trained["test_accuracy"])
    assert results(tmp_path)["train_loss"] == trained["train_loss"]


def test_mnist_mlp_trains_as_well_as_keras(tmp_path):
    """784-100-10 sigmoid, Xavier, Adam: same epochs and batch as Keras."""
    write_mnist(str(tmp_path / "mnist"), n_train=1400)
    ours = train(
        tmp_path / "run", dataset="mnist", data_dir=str(tmp_path / "mnist"), hidden=(100,),
        activation="sigmoid", init="xavier", optimizer="adam", learning_rate=0.001,
        epochs=5, batch_size=32,
    )  # fmt: skip
    import keras

    arrays = arrays_lib.load(config(tmp_path, dataset="mnist", data_dir=str(tmp_path / "mnist")))
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Dense(100, "sigmoid", kernel_initializer="glorot_normal"),
            keras.layers.Dense(10, kernel_initializer="glorot_normal"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(0.001),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(arrays.x_train, arrays.y_train, epochs=5, batch_size=32, verbose=0, shuffle=True)
    _, keras_accuracy = model.evaluate(arrays.x_test, arrays.y_test, verbose=0)
    assert ours["test_accuracy"] >= keras_accuracy - 0.02, (ours["test_accuracy"], keras_accuracy)


def test_lenet_reaches_0_985_on_mnist_format_files_in_10_epochs_at_batch_64(tmp_path):
    """The zoo's LeNet on MNIST-layout IDX files (digits drawn at 28x28): the
    images keep their [28, 28, 1] shape, and 10 epochs at batch 64 reach 0.985
    (measured on seeds 0-3, with XLA and without: 0.9975, 0.9899, 0.9975, 0.9899)."""
    write_mnist(str(tmp_path / "mnist"), n_train=1400)
    figures = train(
        tmp_path / "run", dataset="mnist", data_dir=str(tmp_path / "mnist"), model="lenet",
        activation=None, epochs=10, batch_size=64, jit_compile="auto",
    )  # fmt: skip
    saved = results(tmp_path / "run")
    assert figures["global_step"] == 10 * (1260 // 64)  # 140 of 1400 hold out for validation
    assert figures["test_accuracy"] >= 0.985, figures["test_accuracy"]

    # auto: XLA for float32 convolutions on CPU only without oneDNN's kernels
    assert figures["jit_compile"] is (not tf_internals.onednn_enabled())
    config_json = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config_json["input_shape"] == [28, 28, 1] and config_json["activation"] == "tanh"
    assert saved["test_accuracy"] == figures["test_accuracy"]


def test_overrides_of_a_saved_run_keep_its_architecture(tmp_path):
    train(tmp_path, train_steps=20, hidden=(24,))
    merged = run_folder.merge_saved_config(
        dataclasses.replace(config(tmp_path), hidden=(100,), train_steps=30), {"train_steps"}
    )
    assert merged.hidden == (24,) and merged.train_steps == 30


def test_a_diverged_model_is_never_checkpointed_or_exported(tmp_path):
    from trainer.controller import NonFiniteError

    # One SGD step at 1e38 leaves finite weights (~1e37) whose logits overflow; their
    # sum (78,400 of them) passes float32's range, which the step's check counts as
    # diverged.
    with pytest.raises(NonFiniteError, match="update of step 1 left non-finite weights"):
        train(tmp_path, train_steps=1, optimizer="sgd", learning_rate=1e38, hidden=(100,))
    assert not (tmp_path / "checkpoints").exists() or not os.listdir(tmp_path / "checkpoints")
    assert not (tmp_path / "export").exists()


def test_weights_overflowing_after_a_finite_update_stop_the_loop_at_that_step():
    import models
    from trainer.engine.trainer import Trainer

    model = models.Sequential()
    model.add(models.Dense(4, 3, "linear", init="xavier", name="output"))
    # Finite loss and gradients (~1e3), but 3e38 x 1e3 overflows the weights.
    program = Trainer(model, models.optimizers.get("sgd", 3e38), global_batch_size=8)
    data = tf.data.Dataset.from_tensors((tf.fill([8, 4], 1000.0), tf.zeros([8], tf.int64))).repeat()
    program.run_steps(iter(data), 5)
    assert int(program.guard.nonfinite_weights_step.numpy()) == 1
    assert int(program.global_step.numpy()) == 1  # the loop stopped right there
    assert int(program.guard.nonfinite_count.numpy()) == 0  # loss and gradients were finite


def test_a_network_too_big_for_memory_is_refused_saying_what_it_needs(tmp_path):
    from trainer.config import UsageError

    huge = config(tmp_path, hidden=(100000, 100000))
    with pytest.raises(UsageError, match=r"--hidden=100000,100000: .*10,079,600,010 parameters"):
        assembly.check_memory(huge, 784, 10)
    assembly.check_memory(config(tmp_path, hidden=(500,) * 6), 784, 10)  # fits
