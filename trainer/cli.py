"""What the command-line programs share (``trainer.main``, ``convert``, ``sweep``,
``inspect`` and the scripts): one-line errors and exit statuses, flag parsing,
signals. Only programs import it; the library below raises ``trainer.errors``.

Bad input ends a program with ``error: <one line>`` on standard error and a
non-zero status, never a traceback. Imports absl only (no TensorFlow).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import threading

from absl import flags, logging

from trainer.errors import UsageError


def fail(message, status: int = 2):
    """Ends the program with one line on standard error."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    # The error line is the last word: silence warnings that TensorFlow would
    # print while tearing down objects at exit.
    logging.set_verbosity(logging.FATAL)
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].get_logger().setLevel("ERROR")
    exit_now(status)


def exit_now(status: int = 0):
    """Ends the program with ``status`` once everything written is flushed.

    With TensorFlow loaded, interpreter shutdown waits on tf.data's and the
    summary writers' background threads, seconds after the last line;
    everything the program writes is already on disk by then (checkpoints,
    exports and JSON files are written synchronously, summary writers flushed),
    so it skips that wait. Without TensorFlow: ``sys.exit``.
    """
    if "tensorflow" not in sys.modules:
        sys.exit(status)
    import logging as pylogging

    for handler in [*pylogging.getLogger().handlers, logging.get_absl_handler()]:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def run_as_python(args: list[str]) -> int:
    """What ``python <args>`` (``-m module ...`` or ``script.py ...``) does, in this
    process (a forked child, typically); returns the exit status it would have."""
    import runpy
    import traceback

    try:
        if args[0] == "-m":
            sys.argv = [args[1], *args[2:]]
            sys.path[0] = os.getcwd()
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(args)
            sys.path[0] = os.path.dirname(os.path.abspath(args[0]))
            runpy.run_path(args[0], run_name="__main__")
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def parse_flags(argv):
    """``app.run``'s ``flags_parser``: a flag error becomes one line, exit status 2;
    ``~`` is expanded in every path flag (the shell leaves ``--flag=~/x`` alone)."""
    _check_flagfiles(argv[1:])
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as error:
        fail(error)
    expand_path_flags(flags.FLAGS)
    return rest


# Flags holding a path (or a glob of paths), by the end of their name.
PATH_FLAG_ENDINGS = ("_dir", "_path", "_files", "json", "flagfile")


def expand_path_flags(flag_values) -> None:
    """Expands ``~`` and ``~user`` in the string flags that hold paths, in place."""
    for name in list(flag_values):
        flag = flag_values[name]
        value = flag.value
        if isinstance(value, str) and value.startswith("~") and name.endswith(PATH_FLAG_ENDINGS):
            flag.value = os.path.expanduser(value)


def _check_flagfiles(args) -> None:
    """Refuses a ``--flagfile`` (or one it names, however deep) that is not a
    regular file: absl would block on a FIFO and read a device such as /dev/zero
    until memory runs out."""
    for position, arg in enumerate(args):
        name, equals, path = arg.lstrip("-").partition("=")
        if name != "flagfile" or not arg.startswith("-"):
            continue
        if not equals:
            path = args[position + 1] if position + 1 < len(args) else ""
        if not path.strip():
            fail("--flagfile: give the path of a file of flags")
        path = os.path.expanduser(path)
        if os.path.exists(path):  # missing: absl says so
            try:
                flagfile_lines(path)
            except UsageError as error:
                fail(error)


def flagfile_lines(path: str, stack: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``(flag, where)`` for each flag a flagfile gives, read as absl reads it: a flag
    a line, blank lines and ``#`` or ``//`` comments skipped, a nested
    ``--flagfile=`` read in its place (one that names a file being read is refused)."""
    where = " in ".join(f"--flagfile={p}" for p in (path, *reversed(stack)))
    if path in stack:
        raise UsageError(f"{where}: circular (a flagfile that names itself)")
    if not stat.S_ISREG(_stat_mode(path, where)):
        raise UsageError(f"{where}: not a regular file")
    try:
        with open(path, errors="replace") as handle:
            lines = handle.readlines()
    except OSError as error:
        raise UsageError(f"{where}: cannot read ({error.strerror or error})") from None
    found = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        if line.startswith(("--flagfile=", "-flagfile=")):
            nested = os.path.expanduser(line.partition("=")[2].strip())
            found += flagfile_lines(nested, (*stack, path))
        else:
            found.append((line, where))
    return found


def _stat_mode(path: str, where: str) -> int:
    try:
        return os.stat(path).st_mode
    except (OSError, ValueError) as error:
        raise UsageError(
            f"{where}: cannot read ({getattr(error, 'strerror', None) or error})"
        ) from None


def no_positional_arguments(argv) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; every option is a --flag")


class Interrupted(BaseException):
    """SIGTERM or SIGINT outside training (which saves first, then stops).

    A ``BaseException``, so no ``except Exception`` on the way swallows it.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def fail_interrupted(interrupted: Interrupted, consequence: str):
    """Ends the program for a signal: ``error: received SIGTERM: <consequence>``,
    exit status 128 + the signal's number, as a shell reports it."""
    name = signal.Signals(interrupted.signum).name
    fail(f"received {name}: {consequence}", status=128 + interrupted.signum)


def signal_behind(error: BaseException) -> Interrupted | None:
    """The ``Interrupted`` that caused ``error`` (a signal that arrived while a
    module was being imported surfaces as that import's ImportError), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, Interrupted):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def end_on_signals():
    """While active, SIGTERM and SIGINT raise ``Interrupted`` in the main thread.

    Training installs its own handlers (save, then stop) for its duration and
    puts these back afterwards; a program ended this way exits 128 + signal.
    """

    def handle(signum, frame):
        raise Interrupted(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
