"""Trust, third round: the best model survives resumes and re-runs, ``--mode=export``
exports the model ``--export`` names or says why it cannot, TFRecord shards that
trade contents are refused on resume, and settings that would be ignored are refused."""

from __future__ import annotations

import glob
import json
import os
import shutil
import types
from pathlib import Path

import pytest

from trainer import config as config_lib
from trainer import convert
from trainer.config import UsageError

from datafiles import write_mnist
from helpers import assert_one_line_error, cli, results, train

SMALL = {"hidden": (16,), "histograms": False}


def _newest_export(run) -> str:
    versions = sorted(os.listdir(run / "export"), key=int)
    return str(run / "export" / versions[-1])


def _best_files(run):
    return sorted(os.path.basename(p) for p in glob.glob(str(run / "checkpoints/best/best-*")))


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    """A run of 80 steps (the best at its end), extended to 120 steps at a learning
    rate that makes its later evaluations worse."""
    run = tmp_path_factory.mktemp("extended") / "run"
    first = train(run, train_steps=80, eval_every=40, **SMALL)
    second = train(run, train_steps=120, eval_every=40, learning_rate=3.0, **SMALL)
    return types.SimpleNamespace(run=run, first=first, second=second)


def test_an_extended_run_keeps_the_earlier_best_when_later_evaluations_are_worse(extended):
    first, second = extended.first, extended.second
    best = first["best_step"]
    assert best == 80 and second["global_step"] == 120
    assert second["validation_accuracy"] < first["best_validation_accuracy"]  # worse later
    assert second["best_step"] == best and second["export_step"] == best
    assert second["best_validation_accuracy"] == first["best_validation_accuracy"]
    assert second["test_step"] == best and second["test_model"] == "best"
    assert _best_files(extended.run) == [f"best-{best}.data-00000-of-00001", f"best-{best}.index"]


def test_rerunning_the_extended_command_keeps_its_best_and_export(extended):
    before = results(extended.run)
    after = train(extended.run, train_steps=120, eval_every=40, learning_rate=3.0, **SMALL)
    for key in ("best_step", "best_validation_accuracy", "export_step", "export_path"):
        assert after[key] == before[key], key
    assert after["test_accuracy"] == pytest.approx(before["test_accuracy"])


def test_export_mode_exports_the_best_checkpoint(extended, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(extended.run, run)
    done = cli(f"--model_dir={run}", "--mode=export")
    assert done.returncode == 0, done.stderr
    assert "exporting the best model (step 80)" in done.stderr
    import numpy as np
    import tensorflow as tf

    from trainer.config import Config
    from trainer.data import arrays as arrays_lib

    arrays = arrays_lib.load(Config(seed=0))
    path = _newest_export(run)
    served = tf.saved_model.load(path).signatures["serving_default"]
    classes = served(x=tf.constant(arrays.x_validation))["classes"].numpy()
    accuracy = np.mean(classes == arrays.y_validation)
    assert accuracy == pytest.approx(extended.first["best_validation_accuracy"])
    assert accuracy > extended.second["validation_accuracy"]  # not the last model
    last = cli(f"--model_dir={run}", "--mode=export", "--export=last")
    assert last.returncode == 0 and "exporting the last model (step 120)" in last.stderr


@pytest.mark.parametrize("damage", ["deleted", "bit_flipped"])
def test_export_mode_refuses_a_best_checkpoint_it_cannot_use(extended, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(extended.run, run)
    best = run / "checkpoints" / "best"
    if damage == "deleted":
        shutil.rmtree(best)
    else:
        (data,) = glob.glob(str(best / "best-80.data-*"))
        path = Path(data)
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    versions = sorted(os.listdir(run / "export"))
    done = cli(f"--model_dir={run}", "--mode=export")
    assert done.returncode != 0
    assert_one_line_error(done, "the best checkpoint (step 80) cannot be used", "--export=last")
    assert sorted(os.listdir(run / "export")) == versions  # nothing new


def test_training_past_a_lost_best_checkpoint_says_so_and_exports_the_last(extended, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(extended.run, run)
    shutil.rmtree(run / "checkpoints" / "best")
    done = cli(f"--model_dir={run}", "--train_steps=130", "--learning_rate=3.0", "--hidden=16")
    assert done.returncode == 0, done.stderr
    assert "the best checkpoint (step 80) cannot be used" in done.stderr
    figures = results(run)
    assert figures["export_model"] == "last" and figures["export_step"] == 130


# -- TFRecord shards that trade contents ------------------------------------------
def test_two_shards_of_one_size_that_trade_contents_are_refused_on_resume(tmp_path):
    raw = tmp_path / "raw"
    write_mnist(str(raw), n_train=400)
    records = tmp_path / "records"
    convert.convert(
        types.SimpleNamespace(
            source="mnist", data_dir=str(raw), csv_path=None, npz_path=None,
            output_dir=str(records), num_shards=4, label_column="label",
            task="classification", test_fraction=0.2, validation_fraction=0.1, seed=0,
        )
    )  # fmt: skip
    shards = sorted(glob.glob(str(records / "train-*")))
    sizes = [os.path.getsize(p) for p in shards]
    assert sizes[0] == sizes[1]  # 360 examples in 4 shards of 90
    run = tmp_path / "run"
    train(run, dataset="tfrecord", data_dir=str(records), train_steps=4, batch_size=16, **SMALL)
    first, second = (Path(p).read_bytes() for p in shards[:2])
    assert first != second
    Path(shards[0]).write_bytes(second)
    Path(shards[1]).write_bytes(first)
    steps = sorted(os.listdir(run / "checkpoints"))
    with pytest.raises(UsageError, match="the training data differ"):
        train(run, dataset="tfrecord", data_dir=str(records), train_steps=8, batch_size=16,
              **SMALL)  # fmt: skip
    assert sorted(os.listdir(run / "checkpoints")) == steps


# -- settings that would be ignored ---------------------------------------------------
@pytest.mark.parametrize(
    "flags, words",
    [
        (["--hidden=10,,20"], ["--hidden=10,,20", "empty layer size"]),
        (["--model=cnn", "--layers="], ["--layers: empty", "--model=cnn needs its layers"]),
        (["--early_stopping_patience=3", "--eval_every=0"],
         ["--early_stopping_patience=3", "--eval_every=0 turns them off"]),
        (["--early_stopping_patience=3", "--mode=train"],
         ["--early_stopping_patience=3", "--mode=train makes none"]),
        (["--lr_plateau_patience=2", "--eval_every=0"], ["--lr_plateau_patience=2"]),
    ],
    ids=["empty-hidden", "empty-layers", "patience-no-eval", "patience-train", "plateau"],
)  # fmt: skip
def test_settings_that_would_be_ignored_are_refused(tmp_path, flags, words):
    run = tmp_path / "run"
    done = cli(f"--model_dir={run}", "--train_steps=5", *flags)
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done, *words)
    assert not run.exists()


def test_an_unknown_key_in_config_json_is_refused(tmp_path):
    run = tmp_path / "run"
    train(run, train_steps=3, **SMALL)
    path = run / "config.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "learing_rate": 0.5}))
    with pytest.raises(UsageError, match='"learing_rate": not a setting of this version'):
        config_lib.load(str(path))
    before = sorted(os.listdir(run / "checkpoints"))
    done = cli(f"--model_dir={run}", "--train_steps=6")
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done, "config.json", "learing_rate", "fix or remove the file")
    assert sorted(os.listdir(run / "checkpoints")) == before


def test_a_signal_during_an_import_is_reported_as_the_signal():
    # pybind11 turns an exception in a module's initialization into "ImportError:
    # initialization failed" raised from it: a SIGTERM then must not read as a bug.
    from trainer.cli import Interrupted
    from trainer.cli import signal_behind as _signal_behind

    try:
        try:
            raise Interrupted(15)
        except Interrupted as stopped:
            raise ImportError("initialization failed") from stopped
    except ImportError as error:
        assert _signal_behind(error).signum == 15
    assert _signal_behind(ValueError("unrelated")) is None


# -- the second attack pass -----------------------------------------------------------
def test_a_fifo_among_the_best_checkpoints_files_is_refused_without_waiting(extended, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(extended.run, run)
    index = run / "checkpoints" / "best" / "best-80.index"
    index.unlink()
    os.mkfifo(index)  # reading it would wait for a writer for ever
    done = cli(f"--model_dir={run}", "--mode=export", timeout=120)
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done, "best-80.index: not a regular file")


def test_a_best_checkpoint_holding_another_steps_weights_is_refused(extended, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(extended.run, run)
    best = run / "checkpoints" / "best"
    for source in glob.glob(str(run / "checkpoints" / "ckpt-120.*")):
        shutil.copy(source, best / os.path.basename(source).replace("ckpt-120", "best-80"))
    done = cli(f"--model_dir={run}", "--mode=export")
    assert_one_line_error(done, "best-80: holds the weights of step 120")


def test_export_mode_records_its_export_in_results_json(extended, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(extended.run, run)
    done = cli(f"--model_dir={run}", "--mode=export", "--export=last")
    assert done.returncode == 0, done.stderr
    figures = results(run)
    assert figures["export_step"] == 120 and figures["export_model"] == "last"
    assert figures["export_path"] == _newest_export(run)
    assert figures["best_step"] == 80  # the rest is kept


def test_a_linked_best_folder_is_not_written_through(tmp_path):
    run, victim = tmp_path / "run", tmp_path / "victim"
    train(run, train_steps=20, eval_every=20, **SMALL)  # an early, poor best
    shutil.copytree(run / "checkpoints" / "best", victim)
    before = sorted(os.listdir(victim))
    shutil.rmtree(run / "checkpoints" / "best")
    os.symlink(victim, run / "checkpoints" / "best")
    done = cli(f"--model_dir={run}", "--train_steps=200", "--eval_every=20", "--hidden=16")
    assert_one_line_error(done, "is a symbolic link; refusing to write through it")
    assert sorted(os.listdir(victim)) == before


def test_resume_refuses_another_best_metric_and_evaluations_turned_off_under_patience(tmp_path):
    run = tmp_path / "run"
    train(run, train_steps=20, eval_every=10, early_stopping_patience=3, **SMALL)
    other = cli(f"--model_dir={run}", "--train_steps=30", "--best_metric=validation_loss")
    assert_one_line_error(other, "--best_metric=validation_loss", "best-so-far record")
    same = cli(f"--model_dir={run}", "--train_steps=25", "--eval_every=10",
               "--best_metric=validation_accuracy")  # fmt: skip
    assert same.returncode == 0, same.stderr  # what auto chose: the same record
    off = cli(f"--model_dir={run}", "--train_steps=30", "--eval_every=0")
    assert_one_line_error(off, "--early_stopping_patience=3", "--eval_every=0 turns them off")
    assert results(run)["global_step"] == 25


def test_one_csv_for_two_splits_is_refused(tmp_path):
    from datafiles import write_csv

    data = write_csv(str(tmp_path / "data.csv"), n=60, features=4)
    for flag in ("--validation_csv_path", "--test_csv_path"):
        done = cli("--dataset=csv", f"--csv_path={data}", f"{flag}={data}",
                   f"--model_dir={tmp_path / 'run'}")  # fmt: skip
        assert done.returncode == 2
        assert_one_line_error(done, f"{flag}={data}: the same as --csv_path")
    assert not (tmp_path / "run").exists()


def test_nested_flagfiles_that_are_not_files_and_too_many_layers_are_refused(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outer = tmp_path / "outer.flags"
    outer.write_text(f"--flagfile={fifo}\n")
    done = cli(f"--flagfile={outer}", f"--model_dir={tmp_path / 'run'}", timeout=60)
    assert done.returncode == 2
    assert_one_line_error(done, f"--flagfile={fifo} in --flagfile={outer}: not a regular file")
    deep = cli("--hidden=" + ",".join(["1"] * 1001), f"--model_dir={tmp_path / 'run'}")
    assert_one_line_error(deep, "--hidden: at most 1000 layers, got 1001")
    assert not (tmp_path / "run").exists()


def test_class_names_that_do_not_fit_the_model_are_refused(extended, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(extended.run, run)
    path = run / "config.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "class_names": [0, 1, 2]}))
    done = cli(f"--model_dir={run}", "--mode=export")
    assert_one_line_error(done, "config.json", "3 class_names for num_classes 10")
    path.write_text(json.dumps({**saved, "class_names": list(range(10, 20))}))  # relabelled
    done = cli(f"--model_dir={run}", "--mode=export")
    assert_one_line_error(done, "written with class_names=null", 'class_names=["10"')


def test_signals_during_a_savedmodel_save_wait_for_its_end():
    import signal

    from trainer.deferred_signals import deferred_signals

    reached = []
    # Python's own SIGINT handler raises, but only afterwards
    with pytest.raises(KeyboardInterrupt), deferred_signals():
        os.kill(os.getpid(), signal.SIGINT)
        reached.append("the rest of the section ran")
    assert reached == ["the rest of the section ran"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("mode", ["export", "eval", "train"])
def test_a_hand_edited_identity_setting_in_config_json_is_refused(tmp_path, mode):
    run = tmp_path / "run"
    train(run, train_steps=10, **SMALL)
    path = run / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "activation": "relu"}))
    before = sorted(os.listdir(run))
    flags = ["--train_steps=20"] if mode == "train" else [f"--mode={mode}"]
    done = cli(f"--model_dir={run}", *flags)
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done, 'written with activation="sigmoid"', 'says activation="relu"')
    assert sorted(os.listdir(run)) == before and not os.path.exists(run / "export" / "2")


def test_the_third_attack_pass(tmp_path):
    """A removed data fingerprint, a hard link as the test CSV, a linked export folder,
    an export with results.json gone, a circular flagfile, a best without its state file."""
    from datafiles import write_csv

    data = write_csv(str(tmp_path / "data.csv"), n=80, features=4)
    run = tmp_path / "run"
    common = ("--dataset=csv", f"--csv_path={data}", f"--model_dir={run}", "--hidden=16")
    assert cli(*common, "--train_steps=5", "--eval_every=5").returncode == 0
    # the data change, and config.json forgets what they were: the checkpoint remembers
    lines = Path(data).read_text().splitlines()
    lines[5] = lines[6]
    Path(data).write_text("\n".join(lines) + "\n")
    path = run / "config.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in saved.items() if k != "data_fingerprint"}))
    changed = cli(*common, "--train_steps=10")
    assert_one_line_error(changed, "written with data_fingerprint=")
    path.write_text(json.dumps(saved))
    # one file under two names is one split
    os.link(data, tmp_path / "linked.csv")
    linked = cli(*common, f"--test_csv_path={tmp_path / 'linked.csv'}", "--train_steps=10")
    assert_one_line_error(linked, "the same as --csv_path")
    shutil.copy(data, tmp_path / "copy.csv")  # or the same rows in another file
    copied = cli(*common, f"--validation_csv_path={tmp_path / 'copy.csv'}", "--train_steps=10")
    assert_one_line_error(copied, "holds the same rows as --csv_path")
    # a linked export folder would add a version to another run's
    other = tmp_path / "other_export"
    other.mkdir()
    shutil.move(run / "export", tmp_path / "kept_export")
    os.symlink(other, run / "export")
    through = cli(f"--model_dir={run}", "--mode=export")
    assert_one_line_error(through, "is a symbolic link; refusing to add a version through it")
    assert os.listdir(other) == []
    os.unlink(run / "export")
    # export with results.json gone still records what it wrote
    os.remove(run / "results.json")
    assert cli(f"--model_dir={run}", "--mode=export").returncode == 0
    assert results(run)["export_path"] == str(run / "export" / "1")
    # the best checkpoint found without its folder's state file
    (run / "checkpoints" / "best" / "checkpoint").unlink()
    again = cli(f"--model_dir={run}", "--mode=export")
    assert again.returncode == 0 and "exporting the best model (step 5)" in again.stderr
    # a flagfile that names itself
    loop = tmp_path / "loop.flags"
    loop.write_text(f"--train_steps=7\n--flagfile={loop}\n")
    circular = cli(f"--flagfile={loop}", f"--model_dir={tmp_path / 'r2'}")
    assert circular.returncode == 2
    assert_one_line_error(circular, "circular")
    assert not (tmp_path / "r2").exists()
