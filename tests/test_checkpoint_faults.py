"""Damaged checkpoints: the run goes on from the newest good one, sets aside
only the damaged ones, and writes its final checkpoint again."""

import glob
import os
import shutil

import pytest

from trainer import checkpoints as checkpoints_lib

from helpers import train

STEPS = {"train_steps": 60, "checkpoint_every": 20, "mode": "train", "keep_checkpoints": 3}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("template")
    train(folder, **STEPS)
    assert sorted(_steps(folder)) == [20, 40, 60]
    return folder


def _steps(folder):
    return [
        int(os.path.basename(p)[len("ckpt-") : -len(".index")])
        for p in glob.glob(os.path.join(str(folder), "checkpoints", "ckpt-*.index"))
    ]


def _data_file(folder, step):
    return glob.glob(os.path.join(str(folder), "checkpoints", f"ckpt-{step}.data-*"))[0]


def _index_file(folder, step):
    return os.path.join(str(folder), "checkpoints", f"ckpt-{step}.index")


def _flip_a_byte(folder, step):
    path = _data_file(folder, step)
    with open(path, "r+b") as handle:
        data = bytearray(handle.read())
        data[len(data) // 2] ^= 0x40
        handle.seek(0)
        handle.write(data)


def _truncate(folder, step):
    path = _data_file(folder, step)
    os.truncate(path, os.path.getsize(path) // 2)


def _empty_index(folder, step):
    open(_index_file(folder, step), "wb").close()


def _delete_data(folder, step):
    os.remove(_data_file(folder, step))


DAMAGE = {
    "bit_flip": _flip_a_byte,
    "truncated": _truncate,
    "empty_index": _empty_index,
    "deleted_data": _delete_data,
}


@pytest.mark.parametrize("damaged", [[60], [60, 40]], ids=["latest", "two_latest"])
@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_checkpoints_fall_back_to_the_newest_good_one(template, tmp_path, kind, damaged):
    run = tmp_path / "run"
    shutil.copytree(template, run)
    for step in damaged:
        DAMAGE[kind](run, step)
    good = max({20, 40, 60} - set(damaged))
    good_bytes = _read(_data_file(run, good))

    figures = train(run, **STEPS)

    assert figures["global_step"] == 60
    # the final checkpoint was written again, and the state file names it
    assert tf_latest(run) == "ckpt-60"
    checkpoints_lib.Checkpoints.verify(str(run / "checkpoints" / "ckpt-60"))
    # the good checkpoint it resumed from is untouched
    assert _read(_data_file(run, good)) == good_bytes
    # only the damaged checkpoints were set aside
    moved = sorted(os.listdir(run / "checkpoints" / "corrupt"))
    expected_prefixes = {f"ckpt-{step}" for step in damaged}
    assert {name.split(".")[0] for name in moved} == expected_prefixes
    # and a rerun finds everything in order: nothing more to train, nothing moved
    again = train(run, **STEPS)
    assert again["global_step"] == 60
    assert sorted(os.listdir(run / "checkpoints" / "corrupt")) == moved


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def tf_latest(run):
    import tensorflow as tf

    return os.path.basename(tf.train.latest_checkpoint(str(run / "checkpoints")))
