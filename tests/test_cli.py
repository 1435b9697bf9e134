"""The command line: the default run, flags, one-line errors for bad input."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from datafiles import write_csv, write_mnist
from helpers import ROOT, assert_one_line_error, cli, results


def _readme_sample_lines():
    """The output lines README.md shows for its first command (without "... ")."""
    with open(os.path.join(ROOT, "README.md")) as handle:
        text = handle.read()
    block = re.search(r"The first command prints.*?```\n(.*?)```", text, flags=re.S).group(1)
    return [line[len("... ") :] for line in block.splitlines() if line.startswith("... ")]


def _shape(line: str) -> str:
    """A line with its measured numbers masked (they vary with the CPU), and the
    steps of evaluations (which one is best can turn on float rounding); the
    progress lines' ``step N/total`` stay."""
    line = re.sub(r"(?<=step )\d+(?!/)", "#", line)
    return re.sub(r"\d[\d,]*\.\d+|\d{1,3}(,\d{3})+", "#", line)


def test_readmes_first_command_prints_what_readme_shows(tmp_path):
    # README's first command, run as README says (from a folder; runs/ relative to it).
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    result = subprocess.run(
        [sys.executable, "-m", "trainer.main", "--model_dir=runs/digits"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "digits"
    figures = results(run)
    assert figures["test_accuracy"] >= 0.97
    for key in ("global_step", "train_loss", "test_loss", "examples_per_sec", "wall_time_s"):
        assert figures[key] is not None, key
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == "digits" and config["input_size"] == 64
    assert any(name.startswith("ckpt-") for name in os.listdir(run / "checkpoints"))
    # README's sample lines, in order, with the same words and step counts; the
    # measured figures agree to within float rounding across CPUs.
    printed = [line.split("] ", 1)[1] for line in result.stderr.splitlines() if "] " in line]
    assert "CPU kernels: oneDNN (TF_ENABLE_ONEDNN_OPTS=1; 0 for TensorFlow's own)" in printed
    shown = _readme_sample_lines()
    assert len(shown) >= 4
    position = 0
    for line in shown:
        matches = [i for i in range(position, len(printed)) if _shape(printed[i]) == _shape(line)]
        assert matches, f"README shows {line!r}; the run printed:\n" + "\n".join(printed)
        position = matches[0] + 1
        got = printed[matches[0]]
        if "accuracy" in line and "examples/s" not in line:
            readme_figures = [float(v) for v in re.findall(r"\d\.\d{4}", line)]
            run_figures = [float(v) for v in re.findall(r"\d\.\d{4}", got)]
            assert np.allclose(readme_figures, run_figures, atol=0.01), (line, got)
    # auto: XLA on this 64-100-10 network, its whole loop over in-memory batches
    assert "ETA" in result.stderr and "XLA: on (auto: dense layers" in result.stderr
    assert "input: batches gathered in the compiled loop from memory" in result.stderr
    for chatter in ("oneDNN custom operations", "cuda", "absl::InitializeLog"):
        assert chatter not in result.stderr
    # The same command again trains nothing and writes no new export version, whether
    # the exported best checkpoint is the last one or not.
    again = subprocess.run(
        [sys.executable, "-m", "trainer.main", "--model_dir=runs/digits"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert os.listdir(run / "export") == ["1"]
    after = results(run)
    for key in ("best_step", "export_step", "test_step", "test_accuracy", "export_path"):
        assert after[key] == figures[key], key
    assert after["export_step"] == after["best_step"]
    assert os.path.exists(run / "checkpoints" / "best" / f"best-{after['best_step']}.index")


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--dataset=imagenet"], ["--dataset=imagenet"]),
        (["--model=resnet"], ["--model=resnet"]),
        (["--model=cnn", "--layers=conv3x3:32,pool2"], ["--layers=conv3x3:32,pool2", "'pool2'"]),
        (["--model=cnn", "--layers=conv3x3:32:s"], ["'conv3x3:32:s'", "unknown option 's'"]),
        (["--layers=dense:8"], ["--layers", "--model=cnn only"]),
        (["--activation=swishy"], ["--activation=swishy"]),
        (["--init=magic"], ["--init=magic"]),
        (["--optimizer=lbfgs"], ["--optimizer=lbfgs"]),
        (["--batch_size=0"], ["--batch_size=0", ">= 1"]),
        (["--learning_rate=-0.1"], ["--learning_rate=-0.1", "> 0"]),
        (["--hidden=0"], ["--hidden=0", ">= 1"]),
        (["--hidden=abc"], ["--hidden=abc", "'abc' is not an integer"]),
        (["--dataset=mnist"], ["--data_dir", "required"]),
        (["--dataset=mnist", "--data_dir=/nonexistent/mnist"], ["--data_dir=/nonexistent"]),
        (["--dataset=csv", "--csv_path=/nonexistent.csv"], ["--csv_path=/nonexistent.csv"]),
        (["--mode=eval", "--model_dir=/nonexistent/run"], ["--model_dir=/nonexistent/run"]),
        (["--epochs=0"], ["--epochs=0"]),
        (["--steps_per_loop=0"], ["--steps_per_loop=0"]),
        (["--batch_size=abc"], ["--batch_size"]),
        (["stray"], ["unexpected arguments"]),
    ],
)
def test_bad_flags_get_one_line_errors(flags, fragments):
    assert_one_line_error(cli(*flags), *fragments)


@pytest.mark.parametrize(
    "values, fragments",
    [
        (
            {"model": "cnn", "layers": "conv5x5:8:valid,conv5x5:8:valid"},
            ["--layers=conv5x5:8:valid,conv5x5:8:valid: 'conv5x5:8:valid'", "4x4 images"],
        ),
        ({"model": "cnn", "layers": "conv3x3:8,dense:10"}, ["'dense:10'", "put a flatten"]),
        ({"model": "lenet", "dataset": "sin"}, ["not an image"]),
        ({"model": "cnn", "layers": "dense:2000000000"}, ["--layers=dense:2000000000", "memory"]),
    ],
)
def test_layers_that_do_not_fit_the_data_are_one_line_errors(tmp_path, values, fragments):
    """Found once the data are loaded (in-process here; main prints the same line)."""
    from trainer import config as config_lib
    from trainer import train_lib

    config = config_lib.resolve({"model_dir": str(tmp_path / "run"), **values})
    with pytest.raises(config_lib.UsageError) as raised:
        train_lib.run(config)
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_bad_data_files_get_one_line_errors(tmp_path):
    paths = write_mnist(str(tmp_path / "mnist"), n_train=200)
    with open(paths["train_images"], "r+b") as handle:
        handle.truncate(1000)
    result = cli(
        "--dataset=mnist", f"--data_dir={tmp_path / 'mnist'}", f"--model_dir={tmp_path / 'r'}"
    )
    assert_one_line_error(result, "train-images-idx3-ubyte", "truncated")
    csv = write_csv(str(tmp_path / "bad.csv"), features=2, rows=["1,2,3", "4,oops,6"])
    result = cli("--dataset=csv", f"--csv_path={csv}", f"--model_dir={tmp_path / 'r2'}")
    assert_one_line_error(result, "bad.csv", "'oops'")


def test_gpu_request_without_gpu_is_a_clear_error(tmp_path):
    result = cli("--device=gpu", f"--model_dir={tmp_path / 'r'}")
    assert_one_line_error(result, "--device=gpu", "no GPU")


def test_tf_verbose_shows_tensorflow_start_up_messages(tmp_path):
    result = cli(
        "--tf_verbose", "--train_steps=5", "--mode=train", "--summary_every=0",
        f"--model_dir={tmp_path / 'r'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    markers = ("oneDNN custom operations", "cuda", "InitializeLog")
    assert any(marker in result.stderr for marker in markers)


def test_flagfile_and_eval_mode(tmp_path):
    run = tmp_path / "run"
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text(
        f"--model_dir={run}\n--train_steps=60\n--hidden=16\n--mode=train\n--summary_every=0\n"
    )
    assert cli(f"--flagfile={flagfile}").returncode == 0
    assert results(run)["global_step"] == 60 and results(run)["test_loss"] is None
    evaluated = cli("--mode=eval", f"--model_dir={run}")
    assert evaluated.returncode == 0, evaluated.stderr
    assert results(run)["test_accuracy"] > 0.5
    assert "unresolved" not in evaluated.stderr.lower()


@pytest.mark.parametrize("setting, enabled", [(None, True), ("0", False), ("1", True)])
def test_onednn_kernels_are_on_unless_the_environment_says_0(setting, enabled):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    code = (
        "from trainer import runtime, tf_internals; runtime.import_tensorflow(); "
        "print(tf_internals.onednn_enabled())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(enabled)


def test_every_command_expands_home_in_path_flags(tmp_path):
    """README's own example: ``--data_dir=~/mnist`` (the shell leaves ``~`` after ``=``)."""
    from datafiles import write_mnist

    write_mnist(str(tmp_path / "mnist"), n_train=300)
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=ROOT)
    converted = subprocess.run(
        [sys.executable, "-m", "trainer.convert", "--source=mnist", "--data_dir=~/mnist",
         "--output_dir=~/converted", "--num_shards=1"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert converted.returncode == 0, converted.stderr
    assert (tmp_path / "converted" / "metadata.json").exists()
    from trainer import cli as cli_lib

    class Flag:
        def __init__(self, value):
            self.value = value

    values = {"model_dir": Flag("~/run"), "learning_rate": Flag(0.1), "grid": Flag("~x")}
    cli_lib.expand_path_flags(values)
    assert values["model_dir"].value == os.path.expanduser("~/run")
    assert values["grid"].value == "~x" and values["learning_rate"].value == 0.1
