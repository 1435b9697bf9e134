"""scripts/init_study.py: the notebook's init experiment, run small.

A 3x128 sigmoid network on digits is deep and wide enough for U[0,1) weights to
saturate the last hidden layer to exactly 1.0 (pre-activations above ~17 in
float32), so the first layer's gradient is exactly zero, as in the notebook's
784-500x6-10 network; Xavier's is not.

That study run is most of this module's cost, so every check of it is made by one
test: pytest-xdist hands a module's tests to its workers one by one, and a
module-scoped fixture runs again in each worker that gets one of them. The checks
are still reported one by one, all of them, when several fail.
"""

import glob
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "init_study.py")
LAYERS = ["hidden_0", "hidden_1", "hidden_2", "output"]
KEYS = {
    "grad_l1_at_init",
    "saturation_at_init",
    "grad_l1_after",
    "saturation_after",
    "final_loss",
    "final_accuracy",
}


def _run(*flags, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, SCRIPT, *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _run_study(out_dir):
    # A previous study's run of another architecture: the study must clear it.
    stale = out_dir / "uniform"
    (stale / "checkpoints").mkdir(parents=True)
    (stale / "config.json").write_text(json.dumps({"hidden": [7], "model": "mlp"}))
    (stale / "checkpoints" / "ckpt-5.index").write_bytes(b"")
    path = out_dir / "study.json"
    completed = _run(
        "--depth=3",
        "--width=128",
        "--steps=30",
        "--batch_size=64",
        "--summary_every=10",
        "--nohistograms",
        "--inits=uniform,xavier",
        f"--out_dir={out_dir}",
        f"--json={path}",
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    with open(path) as handle:
        return out_dir, json.load(handle), completed.stdout


def check_json_has_every_figure_per_init(study):
    _, data, _ = study
    assert list(data) == ["uniform", "xavier"]
    for figures in data.values():
        assert set(figures) >= KEYS
        for key in ("grad_l1_at_init", "saturation_at_init", "grad_l1_after", "saturation_after"):
            assert len(figures[key]) == len(LAYERS), (key, figures[key])
        assert all(0.0 <= s <= 1.0 for s in figures["saturation_at_init"])
        assert figures["final_loss"] > 0
        assert 0.0 <= figures["final_accuracy"] <= 1.0


def check_uniform_first_layer_gradient_vanishes_and_xavier_does_not(study):
    _, data, _ = study
    uniform, xavier = data["uniform"], data["xavier"]
    assert uniform["grad_l1_at_init"][0] == 0.0
    assert uniform["saturation_at_init"][2] == 1.0  # the last hidden layer
    assert uniform["grad_l1_at_init"][-1] > 0  # the output layer still learns
    # Frozen hidden layers stay frozen: the gradient is still exactly zero after training.
    assert uniform["grad_l1_after"][0] == 0.0
    assert xavier["grad_l1_at_init"][0] > 0
    assert xavier["grad_l1_after"][0] > 0
    assert max(xavier["saturation_at_init"]) < 0.1


def check_one_tensorboard_run_per_init_with_layer_scalars(study):
    out_dir, _, _ = study
    for init in ("uniform", "xavier"):
        events = glob.glob(str(out_dir / init / "train" / "events.out.tfevents.*"))
        assert events, f"no event files in {out_dir / init / 'train'}"
        content = b"".join(pathlib.Path(path).read_bytes() for path in events)
        for tag in (b"gradient_l1/hidden_0", b"saturation/output"):
            assert tag in content, (init, tag)
        assert os.path.exists(out_dir / init / "results.json")
        # The stale run of another architecture was cleared, not resumed.
        assert not os.path.exists(out_dir / init / "checkpoints" / "ckpt-5.index")


def check_prints_a_table_naming_the_layers(study):
    out_dir, _, stdout = study
    assert "cleared the previous runs uniform" in stdout
    assert "grad L1 @init" in stdout and "saturated @init" in stdout
    for layer in LAYERS:
        assert sum(line.startswith(layer) for line in stdout.splitlines()) == 2, layer
    assert f"tensorboard --logdir {out_dir}" in stdout


def check_figure_or_a_note_without_matplotlib(study):
    out_dir, _, stdout = study
    figure = out_dir / "init_study.png"
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in stdout
        assert not figure.exists()
    else:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figure: {figure}" in stdout


CHECKS = (
    check_json_has_every_figure_per_init,
    check_uniform_first_layer_gradient_vanishes_and_xavier_does_not,
    check_one_tensorboard_run_per_init_with_layer_scalars,
    check_prints_a_table_naming_the_layers,
    check_figure_or_a_note_without_matplotlib,
)


def test_one_study_clears_trains_and_reports_every_figure(tmp_path):
    study = _run_study(tmp_path)
    failures = []
    for check in CHECKS:
        try:
            check(study)
        except Exception as error:  # a missing field too: report it and make the other checks
            failures.append(f"{check.__name__}: {type(error).__name__}: {error}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--inits=uniform,bogus"], "--inits"),
        (["--depth=0"], "--depth"),
        (["--learning_rate=-1"], "--learning_rate"),
        (["--dataset=mnist"], "--data_dir"),
        (["extra"], "unexpected arguments"),
    ],
)
def test_bad_input_is_one_line(flags, fragment, tmp_path):
    completed = _run(*flags, f"--out_dir={tmp_path}", timeout=60)
    assert completed.returncode != 0
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert "Traceback" not in completed.stderr, completed.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr
    assert fragment in lines[0], lines[0]


def test_refuses_to_clear_a_folder_it_did_not_write(tmp_path):
    keep = tmp_path / "xavier" / "notes.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    completed = _run("--inits=xavier", f"--out_dir={tmp_path}", timeout=60)
    assert completed.returncode != 0
    assert "refusing to clear" in completed.stderr, completed.stderr
    assert keep.read_text() == "mine"


def test_the_cnn_study_shows_the_same_lesson_on_convolutions(tmp_path):
    path = tmp_path / "study.json"
    completed = _run(
        "--model=cnn", "--layers=conv3x3:16,conv3x3:16,conv3x3:16,flatten,dense:100",
        "--steps=3", "--batch_size=32", "--summary_every=0", "--noplot", "--jit_compile=false",
        "--inits=uniform,xavier", f"--out_dir={tmp_path}", f"--json={path}",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    data = json.loads(path.read_text())
    uniform, xavier = data["uniform"], data["xavier"]
    layers = ["conv_0", "conv_1", "conv_2", "hidden_0", "output"]
    assert uniform["layers"] == xavier["layers"] == layers
    assert "CNN conv3x3:16" in completed.stdout
    # U[0,1): the convolutions saturate and the lower layers get exactly no gradient
    assert uniform["grad_l1_at_init"][:3] == [0.0, 0.0, 0.0]
    assert min(uniform["saturation_at_init"][1:-1]) > 0.98
    assert uniform["grad_l1_at_init"][-1] > 0
    # Xavier: every layer gets a gradient
    assert all(value > 0 for value in xavier["grad_l1_at_init"])
