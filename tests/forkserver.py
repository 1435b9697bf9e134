"""``python -m module args`` for the tests, without paying for the interpreter and
TensorFlow start-up each time.

A test that runs ``python -m trainer.main ...`` as a program (to see its exit
status and its one-line errors) spends most of its time starting Python and
importing TensorFlow (about 4.5 CPU seconds on the 2-core machine). This file,
run as a script, is a small server: it imports TensorFlow once (as
``trainer.runtime.import_tensorflow`` does, before TensorFlow starts its
runtime), then reads one JSON request per line on standard input and forks a
child per request that runs the module exactly as ``python -m`` would
(``runpy``, as ``__main__``, with ``sys.argv``, the environment, the working
folder, standard output and standard error of the request), and answers with
its exit status. Nothing a command does leaks into the next: each runs in its
own forked process. ``docs/walkthrough.md``'s test runs its commands the same way.

Tests whose subject is the start-up itself (TensorFlow's C++ messages with
``--tf_verbose``, the README's first command) still start a fresh interpreter;
``run`` returns ``None`` for those and the caller falls back to ``subprocess``.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Arguments that make a command's start-up its subject: never forked.
_FRESH_ONLY = ("--tf_verbose",)


# -- the server (this file run as a script) -------------------------------------------
def run_as_python(args: list[str]) -> int:
    """``trainer.cli.run_as_python``: what ``python <args>`` does, in this process."""
    from trainer.cli import run_as_python as run

    return run(args)


def _child(request: dict) -> None:
    """In the forked child: becomes the requested command; never returns."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        code = run_as_python(["-m", *request["module_args"]])
        atexit._run_exitfuncs()  # what the interpreter runs at exit
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    sys.path[0] = ROOT
    from trainer import runtime

    runtime.import_tensorflow()  # what each command's own import would do, done once
    import sklearn.model_selection  # noqa: F401  (the data split imports it)
    from tensorflow.python.eager import context

    # Forking is safe only before TensorFlow starts its runtime (threads, devices).
    assert getattr(context, "_context", None) is None, "TensorFlow started before the fork"
    answers = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        deadline = time.monotonic() + request["timeout"]
        status = None
        while status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(raw)
            elif time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = "timeout"
            else:
                time.sleep(0.01)
        answers.write(json.dumps({"returncode": status}) + "\n")
        answers.flush()


# -- the client (imported by the tests) ------------------------------------------------
_server: subprocess.Popen | None = None
_lock = threading.Lock()


def _start() -> subprocess.Popen:
    global _server
    if _server is None or _server.poll() is not None:
        env = dict(os.environ)
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
        _server = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        atexit.register(_stop)
    return _server


def _stop() -> None:
    if _server is not None and _server.poll() is None:
        _server.stdin.close()
        try:
            _server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _server.kill()


def run(module: str, args, env: dict, cwd: str = ROOT, timeout: float = 240):
    """``python -m module args`` as ``subprocess.run(..., capture_output=True,
    text=True)`` would report it, or ``None`` when it must start afresh.

    Raises:
      subprocess.TimeoutExpired: it ran past ``timeout`` (and was killed).
    """
    args = [str(a) for a in args]
    if any(a.split("=")[0] in _FRESH_ONLY for a in args):
        return None
    with _lock, tempfile.TemporaryDirectory() as folder:
        server = _start()
        request = {
            "module_args": [module, *args],
            "env": env,
            "cwd": cwd,
            "stdout": os.path.join(folder, "out"),
            "stderr": os.path.join(folder, "err"),
            "timeout": timeout,
        }
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        answer = server.stdout.readline()
        if not answer:
            raise RuntimeError("the fork server died")
        code = json.loads(answer)["returncode"]
        with open(request["stdout"]) as out, open(request["stderr"]) as err:
            stdout, stderr = out.read(), err.read()
    command = [sys.executable, "-m", module, *args]
    if code == "timeout":
        raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
    return subprocess.CompletedProcess(command, code, stdout, stderr)


if __name__ == "__main__":
    serve()
