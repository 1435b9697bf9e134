"""TensorBoard: event files read back with TensorBoard's own loader and served
by a real ``tensorboard`` process; gradient warnings in the log."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from trainer import summaries
from trainer.engine.diagnostics import GradientWarnings

from helpers import cli, train


def _load(folder):
    accumulator = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.TENSORS: 0, event_accumulator.GRAPH: 1}
    )
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tb") / "run"
    train(folder, train_steps=30, summary_every=10, log_every=10, hidden=(16, 8), activation="tanh")
    return folder


LAYERS = ("hidden_0", "hidden_1", "output")


@pytest.mark.xdist_group("summaries_run")  # one worker builds the module fixture
def test_event_files_hold_scalars_histograms_hparams_and_graph(run_dir):
    events = _load(run_dir / "train")
    tags = set(events.Tags()["tensors"])
    for tag in ("loss", "accuracy", "learning_rate", "examples_per_sec", "steps_per_sec"):
        assert tag in tags, tag
    for layer in LAYERS:
        for figure in ("gradient_norm", "gradient_l1", "gradient_mean_abs", "update_ratio"):
            assert f"{figure}/{layer}" in tags
        assert f"saturation/{layer}" in tags
        assert f"preactivations/{layer}" in tags and f"activations/{layer}" in tags
        for variable in ("w", "b"):
            assert f"weights/{layer}/{variable}" in tags
            assert f"gradients/{layer}/{variable}" in tags
    # gated in-graph every --summary_every steps, and at step 1 (gradients at init)
    assert [e.step for e in events.Tensors("gradient_norm/hidden_0")] == [1, 10, 20, 30]
    assert [e.step for e in events.Tensors("loss")] == [10, 20, 30]
    histogram = events.Tensors("weights/hidden_0/w")[0].tensor_proto
    rows = tf.make_ndarray(histogram)
    assert rows[:, 2].sum() == 64 * 16  # every weight counted once
    assert events.SummaryMetadata("weights/hidden_0/w").plugin_data.plugin_name == "histograms"
    graph = events.SummaryMetadata("train_loop").plugin_data.plugin_name
    assert graph == "graph_run_metadata_graph"  # the Graphs dashboard's data
    evaluation = _load(run_dir / "validation")
    assert {"loss", "accuracy"} <= set(evaluation.Tags()["tensors"])


def test_every_layer_with_weights_gets_its_figures_and_histograms(tmp_path):
    layers = "conv3x3:4:linear,batchnorm,tanh,maxpool2,dropout:0.2,flatten"
    train(tmp_path, model="cnn", layers=layers, train_steps=4, summary_every=2, mode="train")
    events = _load(tmp_path / "train")
    tags = set(events.Tags()["tensors"])
    for layer, variables in (("conv_0", ("w", "b")), ("batchnorm_0", ("gamma", "beta")),
                             ("output", ("w", "b"))):  # fmt: skip
        for figure in ("gradient_norm", "update_ratio", "saturation"):
            assert f"{figure}/{layer}" in tags
        assert f"activations/{layer}" in tags and f"preactivations/{layer}" in tags
        for variable in variables:
            assert f"weights/{layer}/{variable}" in tags and f"gradients/{layer}/{variable}" in tags
    assert not any("dropout" in tag or "maxpool" in tag for tag in tags)  # no weights, no figures
    # a convolution's activations are histograms of [batch, 8, 8, 4] values
    rows = tf.make_ndarray(events.Tensors("activations/conv_0")[0].tensor_proto)
    assert rows[:, 2].sum() == 32 * 8 * 8 * 4
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = _load(tmp_path).PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    assert session.hparams["model"].string_value == "cnn"
    assert session.hparams["layers"].string_value.startswith("conv3x3:4:linear,batchnorm")


@pytest.mark.xdist_group("summaries_run")  # one worker builds the module fixture
def test_hparams_metrics_put_the_choice_first_and_leave_diagnostics_out(run_dir):
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = _load(run_dir).PluginTagToContent("hparams")  # at the run folder's root
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    metrics = [(m.name.group, m.name.tag, m.display_name) for m in experiment.metric_infos]
    # At the run's root (group ""), so a TensorBoard opened on this folder finds them.
    assert metrics == [
        ("", "hparams/best_validation_accuracy", "best validation accuracy"),
        ("", "hparams/validation_accuracy", "validation accuracy"),
        ("", "hparams/validation_loss", "validation loss"),
        ("", "hparams/test_accuracy", "test accuracy"),
        ("", "hparams/test_loss", "test loss"),
        ("", "hparams/train_loss", "train loss"),
    ]
    figures = set(_load(run_dir).Tags()["tensors"])
    assert {tag for _, tag, _ in metrics} <= figures
    assert {h.name for h in experiment.hparam_infos} >= {"learning_rate", "init", "hidden"}
    session = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    assert session.hparams["hidden"].string_value == "16,8"


@pytest.mark.xdist_group("summaries_run")  # one worker builds the module fixture
def test_tanh_saturation_and_update_ratio_are_sensible(run_dir):
    events = _load(run_dir / "train")
    for layer in ("hidden_0", "hidden_1"):
        value = float(tf.make_ndarray(events.Tensors(f"saturation/{layer}")[-1].tensor_proto))
        assert 0.0 <= value <= 1.0
    ratio = float(tf.make_ndarray(events.Tensors("update_ratio/output")[0].tensor_proto))
    assert 0 < ratio < 1


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(port, path, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.xdist_group("summaries_run")  # one worker builds the module fixture
def test_a_real_tensorboard_serves_the_runs_and_hparams_finds_the_figures(run_dir):
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", f"--logdir={run_dir}", "--host=127.0.0.1",
         f"--port={port}", "--load_fast=false"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + 90
        runs = []
        while time.time() < deadline:
            try:
                runs = _get(port, "/data/runs")
                if {"train", "validation", "test"} <= set(runs):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert {"train", "validation", "test"} <= set(runs), runs
        scalars = _get(port, "/data/plugin/scalars/tags")
        assert {"loss", "accuracy", "gradient_norm/hidden_0"} <= set(scalars["train"])
        assert {"loss", "accuracy"} <= set(scalars["validation"]) & set(scalars["test"])
        # HParams, opened on the run folder itself: the session's figures are found.
        groups = _post(port, "/data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 10, "colParams": [],
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
        })  # fmt: skip
        values = {m["name"]["tag"] for m in groups["sessionGroups"][0]["metricValues"]}
        assert {"hparams/best_validation_accuracy", "hparams/test_accuracy"} <= values
        histograms = _get(port, "/data/plugin/histograms/tags")
        assert "gradients/hidden_0/w" in histograms["train"]
        assert "preactivations/output" in histograms["train"]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_uniform_deep_sigmoid_net_warns_of_vanishing_gradients(tmp_path):
    result = cli(
        f"--model_dir={tmp_path}", "--hidden=500,500,500,500,500,500", "--init=uniform",
        "--optimizer=sgd", "--train_steps=10", "--summary_every=5", "--nohistograms",
        "--mode=train", "--steps_per_loop=10", "--log_every=10",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # One compiled call could run steps 1..10; calls end at diagnostic steps, so
    # the warning names step 1, where the gradients first vanished.
    assert "vanishing gradients in layer hidden_0 at step 1:" in result.stderr
    assert "vanishing gradients in layer hidden_0 at step 5" not in result.stderr  # once
    assert "vanishing gradients in layer hidden_0 at step 10" not in result.stderr


def test_gradient_warnings_name_layer_kind_and_step():
    warnings = GradientWarnings(["a", "b", "c", "out"])
    messages = warnings.check(7, np.array([0.0, 5e4, np.nan, 1.0]))
    assert any(m.startswith("vanishing gradients in layer a at step 7") for m in messages)
    assert any(m.startswith("exploding gradients in layer b at step 7") for m in messages)
    assert any(m.startswith("non-finite gradients in layer c at step 7") for m in messages)
    assert warnings.check(8, np.array([0.0, 5e4, np.nan, 1.0])) == []


def test_histogram_tensor_counts_every_value():
    values = np.concatenate([np.zeros(10), np.ones(5) * 3.0]).astype(np.float32)
    rows = summaries.histogram_tensor(values, buckets=3).numpy()
    assert rows.shape == (3, 3) and rows[:, 2].sum() == 15
    assert rows[0, 2] == 10 and rows[-1, 2] == 5
    constant = summaries.histogram_tensor(np.full(4, 2.0, np.float32), buckets=5).numpy()
    assert constant[:, 2].sum() == 4


def test_histogram_tensors_of_many_match_each_alone():
    rng = np.random.default_rng(3)
    spiked = rng.normal(size=(6, 5)).astype(np.float32)
    spiked[2, 1], spiked[4, 4] = np.nan, -np.inf
    tensors = [
        rng.normal(size=(7, 3)).astype(np.float32) * 1e-4,
        spiked,
        np.zeros([0], np.float32),
        np.full([9], 1e9, np.float32),
        tf.cast(rng.random(11), tf.bfloat16),
        rng.uniform(-3.0, 5.0, 200).astype(np.float32),
    ]
    together = summaries.histogram_tensors(tensors).numpy()
    compiled = tf.function(summaries.histogram_tensors)(tensors).numpy()
    assert together.shape == (6, summaries.HISTOGRAM_BUCKETS, 3)
    np.testing.assert_array_equal(together, compiled)
    for rows, values in zip(together, tensors, strict=True):
        np.testing.assert_array_equal(rows, summaries.histogram_tensor(values).numpy())
    finite = [int(np.isfinite(np.asarray(tf.cast(t, tf.float32))).sum()) for t in tensors]
    assert together[:, :, 2].sum(axis=1).tolist() == finite
    # No value within rounding of an edge here: numpy's counts over the same edges.
    edges = np.append(together[5, :, 0], together[5, -1, 1])
    np.testing.assert_array_equal(together[5, :, 2], np.histogram(tensors[5], edges)[0])


def test_summaries_off_writes_no_event_files(tmp_path):
    train(tmp_path, train_steps=10, summary_every=0)
    assert not os.path.exists(tmp_path / "train")


@pytest.mark.parametrize(
    "values, counted",
    [
        ([0.0] * 20, 20),  # all-zero gradients: one narrow bucket at 0, not a 0..1 axis
        ([1e9] * 7, 7),  # low + 1 == low in float32
        ([-3e38, 3e38, 0.0], 3),  # high - low overflows float32
        ([np.nan, 1.0, 2.0, np.inf, -np.inf], 2),  # non-finite values are left out
        ([np.nan, np.nan], 0),
        ([np.inf], 0),
        ([], 0),
        ([1e-30, 1e-30], 2),
    ],
)
def test_histogram_tensor_never_fails_on_constant_huge_or_nonfinite_values(values, counted):
    data = np.asarray(values, np.float32)
    for rows in (
        summaries.histogram_tensor(data).numpy(),
        tf.function(summaries.histogram_tensor)(tf.constant(data)).numpy(),
    ):
        assert rows.shape == (summaries.HISTOGRAM_BUCKETS, 3)
        assert np.all(np.isfinite(rows)) and np.all(rows[:, 2] >= 0)
        assert rows[:, 2].sum() == counted
        assert np.all(rows[:, 1] >= rows[:, 0]) and rows[-1, 1] > rows[0, 0]
        finite = data[np.isfinite(data)]
        if counted and finite.min() == finite.max():
            value = float(finite[0])
            (full,) = np.flatnonzero(rows[:, 2])  # one bucket holds them all
            assert rows[full, 0] <= value <= rows[full, 1]
            width = rows[-1, 1] - rows[0, 0]
            assert width <= max(abs(value) * 1e-2, 1e-4)  # narrow, at the value
