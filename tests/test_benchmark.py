"""scripts/benchmark.py runs end to end on the tiny preset and writes every JSON field;
a second, minimal run checks the LeNet preset (cnn) against its Keras translation.

Speed is never asserted here: the benchmark measures it, tests only check that
the measurement runs and reports what it promises.

The run is the whole cost of this module, so every check of it is made by one test:
pytest-xdist hands a module's tests to its workers one by one, and a module-scoped
fixture runs again in each worker that gets one of them. The checks are still
reported one by one, all of them, when several fail.
"""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "benchmark.py")


def _benchmark(folder, *flags, timeout=600):
    """Runs the script on CPU with ``flags``; returns its JSON and standard output."""
    path = folder / "out.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run(
        [sys.executable, SCRIPT, *flags, "--device=cpu", f"--json={path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    with open(path) as handle:
        return json.load(handle), completed.stdout


def _run_benchmark(folder):
    return _benchmark(
        folder,
        "--preset=tiny",
        "--batch_size=32",
        "--steps=4",
        "--repeats=2",
        "--steps_per_loop=1,4",
        "--xla=false,true",
        "--precisions=float32,bfloat16",
        "--keras_steps_per_execution=4",
        "--keras_jit=false",
        "--examples=256",
        "--matmul_size=64",
        "--precision_batch_size=64",
        "--precision_steps=4",
        "--compare_devices",
        "--summary_every=2",
    )


def _positive(value):
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def check_every_contender_reports_speed_and_ratios(data, stdout):
    rows = data["contenders"]
    names = {row["name"] for row in rows}
    assert "eager" in names
    assert {
        "trainer_spl1_xla-off_float32",
        "trainer_spl4_xla-off_float32",
        "trainer_spl4_xla-on_float32",
        "trainer_spl1_xla-on_float32",
        "trainer_spl4_xla-on_bfloat16",
        "keras_spe4_jit-off_float32",
        "keras_spe4_jit-off_bfloat16",
    } <= names
    for row in rows:
        for field in (
            "examples_per_sec",
            "cpu_us_per_example",
            "gflops",
            "peak_fraction",
            "ratio_vs_keras",
            "ratio_vs_keras_paired",
        ):
            assert _positive(row[field]), (row["name"], field, row[field])
        assert len(row["examples_per_sec_all"]) == 2  # one figure per repeat
        assert len(row["cpu_us_per_example_all"]) == 2
        assert row["kind"] in ("eager", "trainer", "keras")
        assert row["precision"] in ("float32", "bfloat16")
    for row in rows:
        if row["kind"] == "trainer":
            assert row["traces"] == 1, row  # the timed loop never retraced
    keras_rows = [row for row in rows if row["kind"] == "keras"]
    assert max(row["ratio_vs_keras"] for row in keras_rows) == pytest.approx(1.0)
    best = next(row for row in keras_rows if row["ratio_vs_keras"] == 1.0)
    assert best["ratio_vs_keras_paired"] == pytest.approx(1.0)  # against itself, every round
    assert data["keras_best"]["float32"] == "keras_spe4_jit-off_float32"
    assert "examples/s" in stdout and "x keras" in stdout


def check_summaries_cost_is_measured_against_the_same_settings(data, stdout):
    cost = data["summaries_cost"]
    assert cost["summary_every"] == 2
    assert cost["with"] == "trainer_spl4_xla-on_float32_summaries2"
    assert cost["without"] == "trainer_spl4_xla-on_float32"
    assert math.isfinite(cost["throughput_cost"])
    assert "TensorBoard summaries every 2 steps cost" in stdout


def check_default_row_and_guard_cost(data, stdout):
    # The tiny MLP on CPU: default = float32, the largest steps per call, XLA on
    # (auto: dense layers at most 256 wide).
    defaults = [row["name"] for row in data["contenders"] if row["default"]]
    assert defaults == ["trainer_spl4_xla-on_float32"]
    cost = data["guard_cost"]
    assert cost["with"] == "trainer_spl4_xla-on_float32"
    assert cost["without"] == "trainer_spl4_xla-on_float32_noguard"
    assert math.isfinite(cost["throughput_cost"]) and math.isfinite(cost["cpu_cost"])
    assert math.isfinite(cost["paired_throughput_cost"]) and math.isfinite(cost["paired_cpu_cost"])
    assert "the NaN/Inf guard costs" in stdout and "paired per round" in stdout
    assert "the trainer's default settings: trainer_spl4_xla-on_float32" in stdout
    # The default takes in-graph batches; its A/B twin the tf.data pipeline Keras gets.
    rows = {row["name"]: row for row in data["contenders"]}
    assert rows["trainer_spl4_xla-on_float32"]["input"] == "memory"
    assert rows["trainer_spl4_xla-on_float32_tfdata"]["input"] == "tf.data"
    gain = data["input_gain"]
    assert gain["memory"] == "trainer_spl4_xla-on_float32"
    assert gain["tf.data"] == "trainer_spl4_xla-on_float32_tfdata"
    for key in ("throughput_gain", "cpu_saving", "paired_throughput_gain", "paired_cpu_saving"):
        assert math.isfinite(gain[key]), key
    assert "in-graph batches:" in stdout and "than tf.data" in stdout


def check_peaks_model_and_machine(data, _):
    for precision in ("float32", "bfloat16"):
        assert _positive(data["peaks"][precision]["gflops"])
        assert data["peaks"][precision]["size"] == 64
    assert data["model"]["layers"] == "64-32-10"
    assert data["model"]["params"] == 64 * 32 + 32 + 32 * 10 + 10
    # 3 x forward, forward = 2 x kernel size per dense layer: 6 x params without the biases.
    assert data["model"]["flops_per_example"] == 6 * (64 * 32 + 32 * 10)
    assert data["model"]["activation"] == "sigmoid"
    assert data["machine"]["device"] == "/CPU:0"
    assert data["machine"]["tensorflow"] and data["machine"]["cpu_count"]
    assert isinstance(data["machine"]["onednn"], bool)
    assert data["command"].startswith("python scripts/benchmark.py --preset=tiny")
    assert data["config"]["batch_size"] == 32
    assert _positive(data["input_pipeline"]["examples_per_sec"])


def check_time_to_first_step(data, _):
    firsts = data["time_to_first_step_s"]
    trainer_names = {row["name"] for row in data["contenders"] if row["kind"] == "trainer"}
    assert set(firsts) == trainer_names
    assert all(_positive(seconds) for seconds in firsts.values())


def check_precision_check(data, _):
    check = data["precision"]
    assert check["batch_size"] == 64 and check["data"] == "digits"
    for precision in ("float32", "bfloat16"):
        assert _positive(check[precision]["examples_per_sec"])
        assert 0 <= check[precision]["accuracy"] <= 100
    assert _positive(check["speed_ratio"])
    assert check["accuracy_difference_points"] == pytest.approx(
        check["bfloat16"]["accuracy"] - check["float32"]["accuracy"]
    )
    assert isinstance(check["within_0_5_points"], bool)


def check_devices_without_gpu(data, stdout):
    assert any("CPU" in name for name in data["devices"])
    compared = data["compare_devices"]
    assert [row["device"] for row in compared["devices"]] == ["/device:CPU:0"]
    assert _positive(compared["devices"][0]["examples_per_sec"])
    assert compared["gpu_vs_cpu_ratio"] is None
    assert "no GPU" in compared["note"] and "no GPU" in stdout


CHECKS = (
    check_every_contender_reports_speed_and_ratios,
    check_summaries_cost_is_measured_against_the_same_settings,
    check_default_row_and_guard_cost,
    check_peaks_model_and_machine,
    check_time_to_first_step,
    check_precision_check,
    check_devices_without_gpu,
)


def test_one_run_reports_every_figure(tmp_path):
    data, stdout = _run_benchmark(tmp_path)
    failures = []
    for check in CHECKS:
        try:
            check(data, stdout)
        except Exception as error:  # a missing field too: report it and make the other checks
            failures.append(f"{check.__name__}: {type(error).__name__}: {error}")
    assert not failures, "\n\n".join(failures)


def test_cnn_preset_trains_against_keras(tmp_path):
    """The zoo's LeNet, trainer vs its Keras translation (the float32 probe check included)."""
    data, stdout = _benchmark(
        tmp_path,
        "--preset=cnn",
        "--steps=2",
        "--repeats=1",
        "--batch_size=8",
        "--examples=64",
        "--contenders=trainer,keras",
        "--precisions=float32",
        "--keras_steps_per_execution=2",
        "--keras_jit=false",
        "--xla=false",
        "--steps_per_loop=2",
        "--noprecision_check",
        "--summary_every=0",
        "--matmul_size=64",
        timeout=300,
    )
    assert {row["kind"] for row in data["contenders"]} == {"trainer", "keras"}
    for row in data["contenders"]:
        assert _positive(row["examples_per_sec"]), row
    model = data["model"]
    assert model["input_shape"] == [28, 28, 1]
    assert model["architecture"].startswith("[28, 28, 1] -> conv 5x5x6 ")
    assert "maxpool 2x2 -> conv 5x5x16 " in model["architecture"]
    # Each convolution weight is used at every output position: far more than 6 x params.
    assert model["flops_per_example"] > 6 * model["params"]
    assert "benchmark: cnn [28, 28, 1] -> conv 5x5x6 " in stdout


def test_bad_flag_is_one_line():
    completed = subprocess.run(
        [sys.executable, SCRIPT, "--steps_per_loop=0"],
        cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr
    assert "--steps_per_loop" in completed.stderr


def test_step_ops_counts_the_guard_and_the_diagnostic_step():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "step_ops.py"), "--preset=tiny"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    counts = {}
    for line in completed.stdout.splitlines():
        label, _, rest = line.partition(": ")
        counts[label.removeprefix("tiny ")] = int(rest.split(" ops")[0])
    guarded, unguarded = counts["step with the guard"], counts["step without the guard"]
    assert 0 < unguarded < guarded < counts["diagnostic step"]


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # In a fresh interpreter: the script defines absl flags that other test modules' own
    # (trainer.inspect's) would collide with in this process.
    code = (
        "import sys, math; sys.path.insert(0, sys.argv[1]); import benchmark; "
        "row = {'examples_per_sec_all': [2.0, 4.0, 9.0]}; "
        "print(benchmark.paired_ratio(row, {'examples_per_sec_all': [1.0, 4.0, 3.0]}), "
        "math.isnan(benchmark.paired_ratio(row, {'examples_per_sec_all': [1.0]})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, os.path.dirname(SCRIPT)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2.0", "True"]
