"""SavedModel export: layout, signature, serving in a fresh process, CLI.

One tiny digits run is trained in-process and shared by the module (it exports
version 1 at the end of training). The exported model is then loaded in a
fresh Python process that is not allowed to import this project, and checked
against the trainer's own model restored from the run's checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from trainer import assembly, train_lib
from trainer import config as config_lib
from trainer import export as export_lib
from trainer.data import arrays as arrays_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh interpreter with the project made unimportable: loads the
# export, serves raw rows and tries wrong inputs; writes what it saw.
SERVE_SCRIPT = r"""
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("trainer", "models"):
            raise ImportError(f"the export must not need {name}")
        return None

sys.meta_path.insert(0, Block())
import numpy as np
import tensorflow as tf

export_path, rows_path, out_path = sys.argv[1:4]
loaded = tf.saved_model.load(export_path)
serve = loaded.signatures["serving_default"]
x = np.load(rows_path)
outputs = serve(x=tf.constant(x))
errors = {}
bad_inputs = {
    "width": tf.zeros([2, x.shape[1] - 1], tf.float32),
    "rank": tf.zeros([x.shape[1]], tf.float32),
    "dtype": tf.zeros([2, x.shape[1]], tf.float64),
}
for label, bad in bad_inputs.items():
    try:
        serve(x=bad)
        errors[label] = None
    except (tf.errors.InvalidArgumentError, TypeError, ValueError) as error:
        errors[label] = str(error)
np.savez(out_path, **{name: value.numpy() for name, value in outputs.items()})
json.dump(
    {
        "inputs": {k: [str(v.dtype.name), v.shape.as_list()]
                   for k, v in serve.structured_input_signature[1].items()},
        "outputs": {k: [str(v.dtype.name), v.shape.as_list()]
                    for k, v in serve.structured_outputs.items()},
        "errors": errors,
        "project_imported": sorted(
            m for m in sys.modules if m.split(".")[0] in ("trainer", "models")
        ),
    },
    open(out_path + ".json", "w"),
)
"""


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def _saved_model_cli() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def _config(tmp, name: str, **overrides) -> config_lib.Config:
    base = dict(model_dir=str(tmp / name), train_steps=30, epochs=None, hidden=(16,), log_every=10)
    base.update(overrides)
    return config_lib.Config(**base)


def _restored_model(cfg: config_lib.Config):
    """The trainer's own model, restored from the run's latest checkpoint."""
    run_ = assembly.Run(cfg)
    assert run_.checkpoints.restore_latest(only={"model": run_.model})
    return run_.model


def _fake_run(tmp, export_dir, num_classes=3, input_size=4):
    """A run with an untrained model, for exports that need no training."""
    from models import zoo

    rng = np.random.default_rng(0)
    model = zoo.mlp(
        input_size,
        (5,),
        num_classes or 1,
        normalization=(rng.normal(size=input_size), rng.uniform(1, 2, size=input_size)),
    )
    cfg = config_lib.Config(
        model_dir=str(tmp / "fake"),
        export_dir=export_dir,
        input_size=input_size,
        num_classes=num_classes,
        loss="cross_entropy" if num_classes else "mse",
    )
    return types.SimpleNamespace(
        model=model, config=cfg, runtime=types.SimpleNamespace(is_chief=True)
    )


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """Trains once: ``cfg``, ``results``, raw eval rows ``x`` ``[N, 64]``, labels ``y`` ``[N]``."""
    tmp = tmp_path_factory.mktemp("export")
    cfg = _config(tmp, "run")
    results = train_lib.run(cfg)
    arrays = arrays_lib.load(cfg)
    rows = tmp / "x_test.npy"
    np.save(rows, arrays.x_test.astype(np.float32))
    return types.SimpleNamespace(
        tmp=tmp,
        cfg=cfg,
        results=results,
        version_1=os.path.join(cfg.model_dir, "export", "1"),
        rows=str(rows),
        x=arrays.x_test.astype(np.float32),
        y=arrays.y_test,
    )


@pytest.fixture(scope="module")
def served(digits_run):
    """Output of ``SERVE_SCRIPT`` on version 1: ``outputs`` (arrays) and ``report`` (dict)."""
    tmp = digits_run.tmp
    script = tmp / "serve.py"
    script.write_text(SERVE_SCRIPT)
    out = str(tmp / "served.npz")
    completed = subprocess.run(
        [sys.executable, str(script), digits_run.version_1, digits_run.rows, out],
        cwd=str(tmp),
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    with open(out + ".json") as handle:
        report = json.load(handle)
    return types.SimpleNamespace(outputs=dict(np.load(out)), report=report)


@pytest.mark.xdist_group("export_run")  # one worker builds the module fixture
def test_training_exports_version_1_in_serving_layout(digits_run):
    export_dir = os.path.join(digits_run.cfg.model_dir, "export")
    assert sorted(os.listdir(export_dir)) == ["1"]  # no temporary folder left behind
    assert os.path.isfile(os.path.join(digits_run.version_1, "saved_model.pb"))
    assert os.path.isdir(os.path.join(digits_run.version_1, "variables"))


@pytest.mark.xdist_group("export_run")  # one worker builds the module fixture
def test_export_holds_only_the_model_variables(digits_run):
    names = [
        name
        for name, _ in tf.train.list_variables(
            os.path.join(digits_run.version_1, "variables", "variables")
        )
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
    ]
    assert names and all(name.startswith("model/") for name in names), names
    assert not any(re.search(r"optimizer|global_step|metrics", name) for name in names), names
    # normalization mean + scale, then w + b for the hidden and output layers
    assert len(names) == 6, names


@pytest.mark.xdist_group("export_run")  # one worker builds the module fixture
def test_fresh_process_serves_without_the_project(served):
    assert served.report["project_imported"] == []
    assert served.report["inputs"] == {"x": ["float32", [None, 64]]}
    assert served.report["outputs"] == {
        "probabilities": ["float32", [None, 10]],
        "classes": ["int64", [None]],
        "class_ids": ["int64", [None]],
    }


@pytest.mark.xdist_group("export_run")  # one worker builds the module fixture
def test_served_classes_match_the_trainer(digits_run, served):
    classes = served.outputs["classes"]
    probabilities = served.outputs["probabilities"]
    n = len(digits_run.x)
    assert classes.dtype == np.int64 and classes.shape == (n,)
    assert probabilities.dtype == np.float32 and probabilities.shape == (n, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(classes, probabilities.argmax(axis=1))
    np.testing.assert_array_equal(served.outputs["class_ids"], classes)  # digits: ids are labels

    model = _restored_model(digits_run.cfg)
    logits = model(tf.constant(digits_run.x)).numpy()
    np.testing.assert_array_equal(classes, logits.argmax(axis=1))
    np.testing.assert_allclose(probabilities, tf.nn.softmax(logits).numpy(), atol=1e-5)
    # The accuracy of the served classes is the run's reported eval accuracy.
    accuracy = float(np.mean(classes == digits_run.y))
    assert accuracy == pytest.approx(digits_run.results["test_accuracy"], abs=1e-6)


@pytest.mark.xdist_group("export_run")  # one worker builds the module fixture
def test_wrong_inputs_fail_with_the_expected_shape_or_dtype(served):
    errors = served.report["errors"]
    for label in ("width", "rank"):
        assert errors[label] is not None, f"{label}: accepted a wrong input"
        assert "[?,64]" in errors[label], errors[label]
    assert errors["dtype"] is not None, "dtype: accepted float64"
    assert "float" in errors["dtype"] and "double" in errors["dtype"], errors["dtype"]


@pytest.mark.xdist_group("export_run")  # one worker builds the module fixture
def test_saved_model_cli_show_and_run(digits_run, served):
    rows = str(digits_run.tmp / "x_five.npy")
    np.save(rows, digits_run.x[:5])
    version = digits_run.version_1
    commands = {
        "show": ["show", "--dir", version, "--all"],
        "run": [
            *("run", "--dir", version, "--tag_set", "serve"),
            *("--signature_def", "serving_default", "--inputs", f"x={rows}"),
        ],
    }
    # Both at once: each spends most of its time importing TensorFlow.
    processes = {
        name: subprocess.Popen(
            [*_saved_model_cli(), *args],
            cwd=str(digits_run.tmp),
            env=_clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    }
    finished = {name: process.communicate(timeout=120) for name, process in processes.items()}
    for name, (_, stderr) in finished.items():
        assert processes[name].returncode == 0, f"saved_model_cli {name}: {stderr[-3000:]}"
    out = {name: stdout for name, (stdout, _) in finished.items()}

    signature = out["show"].split("signature_def['serving_default']", 1)
    assert len(signature) == 2, out["show"]
    assert re.search(
        r"inputs\['x'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1, 64\)", signature[1]
    )
    assert re.search(r"outputs\['classes'\] tensor_info:\s+dtype: DT_INT64", signature[1])
    assert re.search(r"outputs\['probabilities'\] tensor_info:\s+dtype: DT_FLOAT", signature[1])

    assert "Result for output key probabilities" in out["run"], out["run"]
    printed = re.search(r"Result for output key classes:\s*\[([\d\s]+)\]", out["run"])
    assert printed, out["run"]
    assert [int(c) for c in printed.group(1).split()] == served.outputs["classes"][:5].tolist()


@pytest.mark.xdist_group("export_run")  # one worker builds the module fixture
def test_export_mode_adds_version_2_and_keeps_version_1(digits_run):
    result = train_lib.run(dataclasses.replace(digits_run.cfg, mode="export"))
    export_dir = os.path.join(digits_run.cfg.model_dir, "export")
    assert result["export_path"] == os.path.join(export_dir, "2")
    assert sorted(os.listdir(export_dir)) == ["1", "2"]
    assert os.path.isfile(os.path.join(digits_run.version_1, "saved_model.pb"))
    # Both versions hold the same trained model.
    first = tf.saved_model.load(digits_run.version_1).signatures["serving_default"]
    second = tf.saved_model.load(result["export_path"]).signatures["serving_default"]
    x = tf.constant(digits_run.x[:20])
    np.testing.assert_allclose(
        first(x=x)["probabilities"].numpy(), second(x=x)["probabilities"].numpy(), atol=1e-6
    )


def test_regression_exports_predictions(tmp_path):
    cfg = _config(
        tmp_path, "sin", dataset="sin", loss="mse", activation="tanh", train_steps=20, log_every=20
    )
    train_lib.run(cfg)
    path = os.path.join(cfg.model_dir, "export", "1")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    assert set(serve.structured_outputs) == {"predictions"}
    width = serve.structured_input_signature[1]["x"].shape[1]
    x = np.linspace(-3, 3, 7 * width, dtype=np.float32).reshape(7, width)
    predictions = serve(x=tf.constant(x))["predictions"]
    assert predictions.dtype == tf.float32 and predictions.shape == (7, 1)
    # The model learns standardized targets; the export answers in the targets' units.
    model = _restored_model(cfg)
    expected = model.target_scaling(model(tf.constant(x)))
    assert float(model.target_scaling.scale.numpy()) != 1.0
    np.testing.assert_allclose(predictions.numpy(), expected.numpy(), atol=1e-5)


def test_bfloat16_training_exports_a_float32_model(tmp_path):
    cfg = _config(tmp_path, "bf16", precision="bfloat16", train_steps=6, log_every=6)
    train_lib.run(cfg)
    path = os.path.join(cfg.model_dir, "export", "1")
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
        saved.ParseFromString(handle.read())
    assert "DT_BFLOAT16" not in str(saved.meta_graphs[0].graph_def)
    x = arrays_lib.load(cfg).x_test[:16].astype(np.float32)
    served = tf.saved_model.load(path).signatures["serving_default"](x=tf.constant(x))
    logits = _restored_model(cfg)(tf.constant(x))  # float32 forward pass
    np.testing.assert_allclose(
        served["probabilities"].numpy(), tf.nn.softmax(logits).numpy(), atol=1e-6
    )


def test_versions_follow_the_largest_numeric_folder(tmp_path):
    export_dir = tmp_path / "exports"
    for name in ("1", "7", "notes", "3.bak", ".tmp-export-99999"):
        (export_dir / name).mkdir(parents=True)
    (export_dir / "12").write_text("a file, not a version")
    (export_dir / "8").write_text("a file in the way of version 8")
    run = _fake_run(tmp_path, str(export_dir))
    path = export_lib.export_run(run)
    assert path == str(export_dir / "9")
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    leftovers = {n for n in os.listdir(export_dir) if n.startswith(".tmp-export-")}
    assert leftovers == {".tmp-export-99999"}  # only someone else's, ours is gone
    assert export_lib.export_run(run) == str(export_dir / "10")


def test_unwritable_export_dir_is_a_one_line_usage_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    export_dir = str(blocker / "export")
    with pytest.raises(config_lib.UsageError) as raised:
        export_lib.export_run(_fake_run(tmp_path, export_dir))
    message = str(raised.value)
    assert "\n" not in message and export_dir in message, message
    assert message.startswith(f"--export_dir={export_dir}:"), message


def test_failed_save_leaves_no_version_behind(tmp_path, monkeypatch):
    export_dir = tmp_path / "exports"
    run = _fake_run(tmp_path, str(export_dir))
    assert export_lib.export_run(run) == str(export_dir / "1")

    def crash(module, path, signatures=None, options=None):
        os.makedirs(os.path.join(path, "variables"))  # half written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(config_lib.UsageError, match="No space left"):
        export_lib.export_run(run)
    assert sorted(os.listdir(export_dir)) == ["1"]


@pytest.mark.xdist_group("export_run")  # one worker builds the module fixture
def test_export_mode_with_config_but_no_checkpoint_is_a_usage_error(digits_run, tmp_path):
    model_dir = tmp_path / "no_checkpoint"
    model_dir.mkdir()
    shutil.copy(os.path.join(digits_run.cfg.model_dir, "config.json"), model_dir)
    cfg = config_lib.Config(mode="export", model_dir=str(model_dir))
    with pytest.raises(config_lib.UsageError, match="no checkpoint") as raised:
        train_lib.run(cfg)
    assert str(model_dir) in str(raised.value) and "\n" not in str(raised.value)
    assert not os.path.exists(model_dir / "export")


def test_export_mode_without_checkpoint_is_a_one_line_error(tmp_path):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    completed = subprocess.run(
        [sys.executable, "-m", "trainer.main", "--mode=export", f"--model_dir={empty}"],
        cwd=REPO,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode != 0
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), completed.stderr
    assert str(empty) in lines[0]
    assert "Traceback" not in completed.stderr + completed.stdout
    assert not os.path.exists(empty / "export")


def test_a_cnn_exports_an_image_signature_in_inference_mode(tmp_path):
    layers = "conv3x3:4:linear,batchnorm,relu,maxpool2,dropout:0.5,flatten,dense:16"
    cfg = _config(
        tmp_path, "cnn", model="cnn", layers=layers, train_steps=20, summary_every=0,
        jit_compile="false",
    )  # fmt: skip
    results = train_lib.run(cfg)
    path = os.path.join(cfg.model_dir, "export", "1")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    assert serve.structured_input_signature[1]["x"].shape.as_list() == [None, 8, 8, 1]
    arrays = arrays_lib.load(cfg).as_images()
    x = tf.constant(arrays.x_test)
    served = serve(x=x)
    # Inference mode: no dropout, BatchNorm's moving averages; the same answer twice,
    # equal to the trainer's own model restored from the checkpoint.
    np.testing.assert_array_equal(serve(x=x)["probabilities"], served["probabilities"])
    logits = _restored_model(dataclasses.replace(cfg, mode="eval"))(x, training=False)
    np.testing.assert_allclose(served["probabilities"], tf.nn.softmax(logits), atol=1e-5)
    accuracy = float(np.mean(served["classes"].numpy() == arrays.y_test))
    assert accuracy == pytest.approx(results["test_accuracy"], abs=1e-6)
    for wrong in (arrays.x_test.reshape(-1, 64), arrays.x_test[:, :4]):  # flat rows, 4x8 images
        with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=r"8, 8, 1|8,8,1"):
            serve(x=tf.constant(wrong))
