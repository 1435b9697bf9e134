"""``python -m trainer.inspect``: per-layer weights, gradients and saturation."""

import json
import subprocess
import sys

import pytest

from trainer import inspect as inspect_lib
from trainer.config import UsageError

from helpers import ROOT, assert_one_line_error, train


def _inspect(*flags):
    return subprocess.run(
        [sys.executable, "-m", "trainer.inspect", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_inspect_prints_a_table_and_writes_json(tmp_path):
    train(tmp_path / "run", train_steps=30, hidden=(16,), mode="train")
    result = _inspect(f"--model_dir={tmp_path / 'run'}", f"--json={tmp_path / 'f.json'}")
    assert result.returncode == 0, result.stderr
    assert "hidden_0" in result.stdout and "output" in result.stdout
    assert "64x16" in result.stdout and "16x10" in result.stdout
    figures = json.loads((tmp_path / "f.json").read_text())
    assert figures["global_step"] == 30
    assert figures["layers"][0]["distinct_units"] == 16
    assert [layer["layer"] for layer in figures["layers"]] == ["hidden_0", "output"]
    for layer in figures["layers"]:
        assert layer["grad_l1"] > 0 and layer["grad_l2"] > 0
        assert 0 <= layer["saturation"] <= 1
        assert layer["weight_min"] <= layer["weight_mean"] <= layer["weight_max"]


def test_uniform_deep_sigmoid_net_shows_zero_first_layer_gradient(tmp_path):
    train(tmp_path, hidden=(500,) * 6, init="uniform", optimizer="sgd", train_steps=2, mode="train")
    figures = inspect_lib.inspect_run(str(tmp_path), batch_size=64)
    assert figures["layers"][0]["grad_l1"] == 0.0
    assert figures["layers"][-1]["grad_l1"] > 0.0
    assert figures["layers"][3]["saturation"] > 0.99


def test_zero_init_leaves_one_distinct_hidden_unit(tmp_path):
    train(tmp_path, hidden=(12,), init="zeros", optimizer="sgd", learning_rate=0.5,
          train_steps=50, mode="train")  # fmt: skip
    figures = inspect_lib.inspect_run(str(tmp_path), batch_size=32)
    assert figures["layers"][0]["distinct_units"] == 1
    assert figures["layers"][0]["weight_std"] > 0  # it learned, but every unit the same way


@pytest.mark.parametrize("make", ["missing", "empty", "no_checkpoint"])
def test_bad_run_folders_get_one_line_errors(tmp_path, make):
    folder = tmp_path / "run"
    if make != "missing":
        folder.mkdir()
    if make == "no_checkpoint":
        (folder / "config.json").write_text(json.dumps({"dataset": "digits", "hidden": [8]}))
    result = _inspect(f"--model_dir={folder}")
    assert_one_line_error(result, str(folder))


def test_inspect_run_rejects_malformed_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UsageError, match="config.json"):
        inspect_lib.inspect_run(str(tmp_path))


DEEP_SIGMOID_CNN = ",".join(["conv3x3:16"] * 3 + ["flatten", "dense:100"])


def test_uniform_deep_sigmoid_cnn_shows_vanishing_gradients_in_its_lower_layers(tmp_path):
    """Xavier's side of the lesson on a CNN: tests/test_init_study.py."""
    deep = {"model": "cnn", "layers": DEEP_SIGMOID_CNN, "activation": "sigmoid"}
    train(tmp_path, init="uniform", optimizer="sgd", train_steps=2, mode="train", **deep)
    layers = inspect_lib.inspect_run(str(tmp_path), batch_size=64)["layers"]
    assert [layer["layer"] for layer in layers] == [
        "conv_0", "conv_1", "conv_2", "hidden_0", "output"
    ]  # fmt: skip
    assert layers[0]["weight_shape"] == [3, 3, 1, 16] and layers[1]["weight_shape"] == [
        3,
        3,
        16,
        16,
    ]
    assert layers[1]["distinct_units"] == 16  # a unit of a convolution is a filter
    output = layers[-1]["grad_l2"]
    assert output > 0
    for layer in layers[:3]:  # exactly zero (measured), or negligible next to the output's
        assert layer["grad_l2"] <= 1e-6 * output, layer
    assert all(layer["saturation"] > 0.98 for layer in layers[1:-1])
