"""The command line: the default run, flags, one-line errors for bad input."""

import json
import os

import pytest

from datafiles import write_csv, write_mnist
from helpers import assert_one_line_error, cli, results


def test_default_run_reaches_097_on_digits_and_writes_the_run_folder(tmp_path):
    run = tmp_path / "run"
    result = cli(f"--model_dir={run}")
    assert result.returncode == 0, result.stderr
    figures = results(run)
    assert figures["eval_accuracy"] >= 0.97
    for key in ("global_step", "train_loss", "eval_loss", "examples_per_sec", "wall_time_s"):
        assert figures[key] is not None, key
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == "digits" and config["input_size"] == 64
    assert any(name.startswith("ckpt-") for name in os.listdir(run / "checkpoints"))
    # progress lines a person can follow, and no TensorFlow start-up chatter
    assert "step 880/880 (100%)" in result.stderr and "ETA" in result.stderr
    assert "examples/s" in result.stderr and "XLA: off" in result.stderr
    for chatter in ("oneDNN", "cuda", "absl::InitializeLog"):
        assert chatter not in result.stderr


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--dataset=imagenet"], ["--dataset=imagenet"]),
        (["--model=cnn"], ["--model=cnn"]),
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
    result = cli("--tf_verbose", "--train_steps=5", f"--model_dir={tmp_path / 'r'}")
    assert result.returncode == 0, result.stderr
    assert any(marker in result.stderr for marker in ("oneDNN", "cuda", "InitializeLog"))


def test_flagfile_and_eval_mode(tmp_path):
    run = tmp_path / "run"
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text(f"--model_dir={run}\n--train_steps=60\n--hidden=16\n--mode=train\n")
    assert cli(f"--flagfile={flagfile}").returncode == 0
    assert results(run)["global_step"] == 60 and results(run)["eval_loss"] is None
    evaluated = cli("--mode=eval", f"--model_dir={run}")
    assert evaluated.returncode == 0, evaluated.stderr
    assert results(run)["eval_accuracy"] > 0.5
    assert "unresolved" not in evaluated.stderr.lower()
