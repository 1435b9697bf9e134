"""tf.distribute: mirrored over logical CPUs, and several worker processes on
127.0.0.1 (``--strategy=multi_worker`` with ``TF_CONFIG``) that train together,
survive the loss of a peer with a one-line error, and resume."""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from helpers import ROOT, assert_one_line_error, cli, latest_step, results

SMALL = ["--hidden=32", "--summary_every=0", "--eval_every=0"]

# Logical CPU devices must be configured before TensorFlow starts its runtime,
# hence a fresh interpreter.
TRAJECTORY_SCRIPT = textwrap.dedent(
    """
    import json

    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

    from models import optimizers, zoo
    from trainer.engine.trainer import Trainer
    from trainer.data import arrays as arrays_lib, pipeline
    from trainer.config import Config

    arrays = arrays_lib.load(Config())
    BATCH, STEPS = 64, 20


    images = arrays.as_images()
    # BatchNorm all-reduces its batch statistics: mirrored must match one device.
    CNN = "conv3x3:4:linear,batchnorm,relu,maxpool2,flatten"


    def trajectory(strategy, cnn=False):
        source = images if cnn else arrays
        normalization = (source.feature_mean, source.feature_scale)
        with strategy.scope():
            if cnn:
                model = zoo.build("cnn", (8, 8, 1), 10, layers=CNN, normalization=normalization)
            else:
                model = zoo.mlp(64, (32,), 10, normalization=normalization)
            program = Trainer(
                model, optimizers.get("sgd", 0.5), global_batch_size=BATCH, strategy=strategy
            )
        dataset = pipeline.train_dataset(source.x_train, source.y_train, BATCH, seed=0)
        iterator = iter(strategy.experimental_distribute_dataset(dataset))
        losses = []
        for _ in range(STEPS):
            program.train_metrics.reset()
            program.run_steps(iterator, 1)
            losses.append(program.train_metrics.result()["loss"])
        averages = [v.numpy().tolist() for v in model.variables if "moving" in v.name]
        return losses, averages, strategy.num_replicas_in_sync


    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    figures = {}
    # One strategy object for both models: collective keys are per strategy, and a
    # second MirroredStrategy on the same devices would reuse the first one's keys.
    one, mirroring = tf.distribute.OneDeviceStrategy(cpus[0]), tf.distribute.MirroredStrategy(cpus)
    for name, cnn in (("", False), ("cnn_", True)):
        single, single_averages, _ = trajectory(one, cnn)
        mirrored, averages, replicas = trajectory(mirroring, cnn)
        figures.update({
            name + "single": single, name + "mirrored": mirrored, "replicas": replicas,
            name + "single_averages": single_averages, name + "mirrored_averages": averages,
        })
    print(json.dumps(figures))
    """
)


def test_mirrored_over_two_cpus_follows_the_single_device_trajectory():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-c", TRAJECTORY_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["replicas"] == 2
    single, mirrored = figures["single"], figures["mirrored"]
    assert len(single) == len(mirrored) == 20
    assert single[-1] < single[0]  # it does learn
    np.testing.assert_allclose(mirrored, single, rtol=1e-5)
    # A CNN with BatchNorm: each replica normalizes with the global batch's statistics.
    single, mirrored = figures["cnn_single"], figures["cnn_mirrored"]
    assert single[-1] < single[0]
    np.testing.assert_allclose(mirrored, single, rtol=1e-4)
    assert len(figures["cnn_single_averages"]) == 2
    np.testing.assert_allclose(
        figures["cnn_mirrored_averages"], figures["cnn_single_averages"], rtol=1e-4, atol=1e-6
    )


def test_mirrored_on_two_logical_cpus_from_the_command_line(tmp_path):
    done = cli(
        "--strategy=mirrored", "--cpu_devices=2", f"--model_dir={tmp_path}", "--train_steps=200",
        *SMALL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "strategy: mirrored with 2 replica(s)" in done.stderr
    assert "UserWarning" not in done.stderr
    figures = results(tmp_path)
    assert figures["num_replicas"] == 2 and figures["jit_compile"] is False
    assert figures["global_step"] == 200 and figures["test_accuracy"] > 0.8


# -- several workers -------------------------------------------------------------
def test_the_chief_is_the_chief_task_else_worker_0():
    from trainer.runtime import is_chief_task

    workers = {"worker": ["a:1", "b:1"]}
    assert is_chief_task(workers, "worker", 0) and not is_chief_task(workers, "worker", 1)
    with_chief = {"chief": ["c:1"], **workers}
    assert is_chief_task(with_chief, "chief", 0)
    assert not is_chief_task(with_chief, "worker", 0)
    assert not is_chief_task({**workers, "evaluator": ["e:1"]}, "evaluator", 0)
    assert is_chief_task({}, None, None)  # not in a cluster


def test_malformed_tf_config_is_a_one_line_error_before_anything_is_written(tmp_path):
    done = cli(
        "--strategy=multi_worker", f"--model_dir={tmp_path / 'run'}", "--train_steps=5",
        env={"TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief"}}'},
    )  # fmt: skip
    assert_one_line_error(done, "--strategy=multi_worker: bad TF_CONFIG", "'chief'")
    assert not (tmp_path / "run").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def processes():
    """Worker processes a test starts; any still running at its end are killed."""
    started = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def _start_workers(processes, log_dir, *flags, num_workers=2, only=None):
    """Starts ``num_workers`` ``trainer.main`` processes forming one cluster
    (or only the workers whose indices are in ``only``: the others never come).

    Returns ``[(process, log path)]``, worker 0 (the chief) first; each process
    is also added to ``processes``.
    """
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(num_workers)]}
    started = []
    for index in range(num_workers) if only is None else only:
        env = dict(os.environ)
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}
        )
        log = os.path.join(str(log_dir), f"worker{index}-{time.monotonic_ns()}.log")
        with open(log, "w") as handle:
            process = subprocess.Popen(
                [sys.executable, "-m", "trainer.main", "--strategy=multi_worker", *flags],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=handle,
                env=env,
            )
        processes.append(process)
        started.append((process, log))
    return started


def _finish(started, timeout=120):
    """Waits for every worker; returns ``[(returncode, stderr)]``."""
    deadline = time.time() + timeout
    finished = []
    for process, log in started:
        try:
            process.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for other, _ in started:
                other.kill()
            raise
        finished.append((process.returncode, _read(log)))
    return finished


def _read(path) -> str:
    with open(path) as handle:
        return handle.read()


def _worker_folders(model_dir):
    return glob.glob(os.path.join(str(model_dir), "**", ".worker-*"), recursive=True)


def test_two_workers_train_together_and_the_chief_checkpoint_evaluates(tmp_path, processes):
    run = tmp_path / "run"
    started = _start_workers(
        processes,
        tmp_path,
        f"--model_dir={run}",
        "--train_steps=200",
        "--checkpoint_every=50",
        *SMALL,
    )
    (chief_rc, chief_log), (worker_rc, worker_log) = _finish(started)
    assert chief_rc == 0, chief_log
    assert worker_rc == 0, worker_log
    assert "this is worker:0 (chief" in chief_log and "this is worker:1\n" in worker_log
    assert "multi_worker with 2 replica(s)" in chief_log
    assert "joined the save of checkpoint" in worker_log

    figures = results(run)
    assert figures["global_step"] == 200 and figures["num_replicas"] == 2
    assert figures["test_accuracy"] > 0.8
    assert os.listdir(run / "export") == ["1"]  # the chief alone exports
    assert sorted(os.listdir(run / "checkpoints"))[-1] == "ckpt-200.index"
    assert _worker_folders(run) == []

    evaluated = cli("--mode=eval", f"--model_dir={run}")
    assert evaluated.returncode == 0, evaluated.stderr
    assert results(run)["test_accuracy"] == figures["test_accuracy"]


def test_two_workers_train_on_tfrecord_shards_from_the_command_line(tmp_path, processes):
    # The strategy is made before the data are opened: opening TFRecords starts
    # TensorFlow's runtime, after which collective ops can no longer be configured.
    import types

    from trainer import convert

    from datafiles import write_csv

    records = tmp_path / "records"
    csv_path = write_csv(str(tmp_path / "d.csv"), n=256, features=16)
    convert.convert(
        types.SimpleNamespace(
            source="csv", data_dir=None, csv_path=csv_path, npz_path=None,
            output_dir=str(records), num_shards=4, label_column="label",
            task="classification", test_fraction=0.2, seed=0,
        )
    )  # fmt: skip
    run = tmp_path / "run"
    started = _start_workers(
        processes, tmp_path, f"--model_dir={run}", "--dataset=tfrecord",
        f"--data_dir={records}", "--train_steps=20", "--batch_size=32", *SMALL,
    )  # fmt: skip
    (chief_rc, chief_log), (worker_rc, worker_log) = _finish(started)
    assert chief_rc == 0, chief_log
    assert worker_rc == 0, worker_log
    assert "input pipeline 0 of 2 reads 2 of 4 files" in chief_log
    assert "input pipeline 1 of 2 reads 2 of 4 files" in worker_log
    assert results(run)["global_step"] == 20


def test_killing_the_chief_stops_the_other_worker_then_both_resume(tmp_path, processes):
    run = tmp_path / "run"
    flags = [f"--model_dir={run}", "--mode=train", "--checkpoint_every=50", *SMALL]
    chief, worker = _start_workers(processes, tmp_path, *flags, "--train_steps=1000000")
    deadline = time.time() + 90
    while latest_step(run) < 100 and time.time() < deadline:
        assert chief[0].poll() is None and worker[0].poll() is None, _read(chief[1])
        time.sleep(0.05)
    assert latest_step(run) >= 100, _read(chief[1])
    chief[0].send_signal(signal.SIGKILL)
    killed_at = time.time()
    ((survivor_rc, survivor_log),) = _finish([worker], timeout=60)
    waited = time.time() - killed_at
    _finish([chief])
    result = subprocess.CompletedProcess([], survivor_rc, "", survivor_log)
    assert_one_line_error(result, "--strategy=multi_worker: lost contact with another worker")
    assert survivor_rc == 4 and waited < 30, (survivor_rc, waited)

    latest = latest_step(run)
    assert latest >= 100
    target = latest + 60
    resumed = _finish(_start_workers(processes, tmp_path, *flags, f"--train_steps={target}"))
    for returncode, log in resumed:
        assert returncode == 0, log
        assert f"resuming from {run}/checkpoints/ckpt-{latest} (step {latest})" in log, log
    assert results(run)["global_step"] == target
    assert latest_step(run) == target
    assert _worker_folders(run) == []


# -- a worker whose peers never come ----------------------------------------------
WAITING = "waiting for the other workers (1 of 2: worker:1 at 127.0.0.1:"


def _wait_for_line(started, text, timeout=120) -> float:
    """Waits until the log of ``started`` (process, log) shows ``text``; returns when."""
    process, log = started
    deadline = time.time() + timeout
    while text not in _read(log):
        assert process.poll() is None, _read(log)
        assert time.time() < deadline, _read(log)
        time.sleep(0.05)
    return time.time()


def _as_result(returncode: int, log: str) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess([], returncode, "", log)


def _snapshot(folder) -> dict:
    """Every file under ``folder`` but the run lock: its modification time and bytes."""
    files = {}
    for parent, _, names in os.walk(str(folder)):
        for name in names:
            path = os.path.join(parent, name)
            if path == os.path.join(str(folder), ".lock"):
                continue
            with open(path, "rb") as handle:
                files[os.path.relpath(path, folder)] = (os.stat(path).st_mtime_ns, handle.read())
    return files


def test_worker_timeout_must_be_positive(tmp_path):
    done = cli("--worker_timeout=0", f"--model_dir={tmp_path / 'run'}", timeout=60)
    assert_one_line_error(done, "--worker_timeout=0", "> 0")
    assert done.returncode == 2 and not (tmp_path / "run").exists()


def test_the_worker_guard_puts_back_the_signal_handlers(monkeypatch):
    from trainer.config import Config
    from trainer.runtime import guard_workers

    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}),
    )
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for strategy in ("default", "multi_worker"):
        with guard_workers(Config(strategy=strategy), "start"):
            guarded = signal.getsignal(signal.SIGTERM)
            wakeup = signal.set_wakeup_fd(-1)
            signal.set_wakeup_fd(wakeup)
        assert (guarded != before[signal.SIGTERM]) == (strategy == "multi_worker")
        assert (wakeup != -1) == (strategy == "multi_worker")
        assert {s: signal.getsignal(s) for s in before} == before
        assert signal.set_wakeup_fd(-1) == -1


def test_a_worker_alone_gives_up_after_worker_timeout(tmp_path, processes):
    (chief,) = _start_workers(
        processes, tmp_path, f"--model_dir={tmp_path / 'run'}", "--train_steps=20",
        "--worker_timeout=3", *SMALL, only=[0],
    )  # fmt: skip
    waiting = _wait_for_line(chief, WAITING)
    ((returncode, log),) = _finish([chief], timeout=60)
    waited = time.time() - waiting
    assert_one_line_error(
        _as_result(returncode, log),
        "--strategy=multi_worker: the other worker (worker:1 at 127.0.0.1:",
        "did not join within 3s",
        "start every worker with the same command",
        "--worker_timeout",
    )
    assert returncode == 4 and 2.5 < waited < 20, (returncode, waited)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_a_worker_waiting_for_the_others_and_keeps_the_run(
    tmp_path, processes, signum
):
    run = tmp_path / "run"
    flags = [f"--model_dir={run}", "--mode=train", *SMALL]
    if signum == signal.SIGTERM:  # a run folder with checkpoints, left as it was
        trained = cli(*flags, "--train_steps=20", "--checkpoint_every=10")
        assert trained.returncode == 0, trained.stderr
        assert latest_step(run) == 20
    before = _snapshot(run)
    (chief,) = _start_workers(processes, tmp_path, *flags, "--train_steps=40", only=[0])
    _wait_for_line(chief, WAITING)
    time.sleep(0.5)  # well inside the wait
    chief[0].send_signal(signum)
    sent = time.time()
    ((returncode, log),) = _finish([chief], timeout=30)
    ended = time.time() - sent
    name = signal.Signals(signum).name
    assert_one_line_error(
        _as_result(returncode, log),
        f"received {name} while waiting for the other workers",
        "nothing was lost",
    )
    assert returncode == 128 + signum and ended < 5, (returncode, ended)
    assert _snapshot(run) == before


# -- preemption across workers, as TensorFlow's failure_handler_test does it --------
def test_sigterm_to_one_worker_stops_all_at_one_step_and_the_resume_is_bit_identical(
    tmp_path, processes
):
    """SIGTERM to a random worker at a random step: every worker stops after the same
    compiled call, the chief writes the checkpoint of that step, all exit 143 with
    one line; restarted, they end with the weights of an uninterrupted run."""
    import random

    from helpers import checkpoint_variables

    rng = random.Random()
    victim, after = rng.randrange(2), rng.randrange(100, 400, 50)
    total = 800
    flags = ["--mode=train", "--checkpoint_every=100000", "--log_every=50", *SMALL]
    run, reference = tmp_path / "run", tmp_path / "reference"
    started = _start_workers(processes, tmp_path, f"--model_dir={run}", f"--train_steps={total}",
                             *flags)  # fmt: skip
    _wait_for_line(started[0], f"step {after}/{total}")
    started[victim][0].send_signal(signal.SIGTERM)
    sent = time.time()
    stopped = _finish(started, timeout=60)
    assert time.time() - sent < 30, (victim, after)
    steps = {
        int(p.rsplit("-", 1)[1][: -len(".index")])
        for p in glob.glob(str(run / "checkpoints" / "ckpt-*.index"))
    }
    assert len(steps) == 1 and after <= min(steps) < total, (steps, victim, after)
    (step,) = steps
    for index, (returncode, log) in enumerate(stopped):
        assert returncode == 143, log
        own = (
            "received SIGTERM: saved the checkpoint"
            if index == victim
            else ("another worker received SIGTERM: every worker saved the checkpoint")
        )
        assert_one_line_error(_as_result(returncode, log), own, f"of step {step}")
    assert results(run)["stop_reason"] == "signal"

    resumed = _finish(_start_workers(processes, tmp_path, f"--model_dir={run}",
                                     f"--train_steps={total}", *flags))  # fmt: skip
    for returncode, log in resumed:
        assert returncode == 0 and f"(step {step})" in log, log
    uninterrupted = _finish(_start_workers(processes, tmp_path, f"--model_dir={reference}",
                                           f"--train_steps={total}", *flags))  # fmt: skip
    assert all(returncode == 0 for returncode, _ in uninterrupted), uninterrupted
    ours = checkpoint_variables(run / "checkpoints" / f"ckpt-{total}")
    theirs = checkpoint_variables(reference / "checkpoints" / f"ckpt-{total}")
    assert sorted(ours) == sorted(theirs)
    for key in ours:  # (the evaluation tracker holds NaN in a run without evaluations)
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    assert _worker_folders(run) == []
