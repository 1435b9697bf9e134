"""Runs every command and snippet of docs/walkthrough.md, shortened as the page says."""

import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT

PAGE = os.path.join(ROOT, "docs", "walkthrough.md")
# What docs/walkthrough.md says the test appends to keep it short.
SHORTER = {
    "python -m trainer.main": " --train_steps=30",
    "python scripts/init_study.py": (
        " --steps=20 --depth=3 --width=128 --nohistograms --inits=uniform,xavier"
    ),
    "python scripts/benchmark.py": (
        " --preset=tiny --steps=4 --repeats=1 --matmul_size=64 --noprecision_check"
    ),
}


def _blocks():
    with open(PAGE) as handle:
        text = handle.read()
    return re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.S)


def _shorten(command: str) -> str:
    for prefix, extra in SHORTER.items():
        if command.startswith(prefix):
            return command + extra
    return command


def test_the_page_says_how_it_is_shortened():
    with open(PAGE) as handle:
        text = " ".join(handle.read().split())
    for extra in SHORTER.values():
        assert extra.strip() in text


def test_every_block_of_the_walkthrough_runs(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "docs" / "img").mkdir(parents=True)
    os.symlink(os.path.join(ROOT, "scripts"), tmp_path / "scripts")
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    env["PYTHONPATH"] = ROOT
    blocks = _blocks()
    assert len(blocks) >= 10
    outputs = []
    for number, (language, body) in enumerate(blocks):
        if language == "python":
            script = tmp_path / f"snippet_{number}.py"
            script.write_text(body)
            commands = [[sys.executable, str(script)]]
        else:
            commands = [["bash", "-c", _shorten(line)] for line in body.splitlines() if line]
        for command in commands:
            result = subprocess.run(
                command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
            )
            assert result.returncode == 0, f"block {number}: {command}\n{result.stderr[-3000:]}"
            outputs.append(result.stdout + result.stderr)
    everything = "\n".join(outputs)
    assert "vanishing gradients in layer hidden_0 at step" in everything
    assert "Xavier std:" in everything and "2.0000000e+04" in everything
    assert "ValueError: layer 3 (misfit) expects 50 inputs" in everything
    assert (tmp_path / "docs" / "img" / "loss_curve.png").stat().st_size > 0
    assert (tmp_path / "runs" / "init_study" / "study.json").exists()
