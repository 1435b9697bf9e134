"""Process set-up: TensorFlow import, devices, strategy, seeds, XLA choice.

Every choice made here is logged, so a run's log says where and how it ran.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import importlib.abc
import json
import logging as pylogging
import os
import select
import signal
import sys
import threading
import time
import warnings

from absl import logging

from trainer.config import Config, UsageError

# TensorFlow's oneDNN CPU kernels (matmul, convolution and their fusions).
# TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX;
# on a 2-core AVX2 CPU they measured faster too (docs/benchmarks.md, third round:
# 3-5% less CPU per example in the benchmark, 7-20% in paired A/B rounds), so the
# trainer turns them on unless the environment already sets the variable.
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def import_tensorflow(verbose: bool = False):
    """Imports TensorFlow, hiding its C++ start-up chatter unless ``verbose``.

    ``TF_CPP_MIN_LOG_LEVEL`` must be set before the import; the few lines
    printed before absl's C++ logging starts (oneDNN, CUDA probing) ignore it,
    so standard error is also muted at the file-descriptor level during the
    import only. oneDNN's CPU kernels are on unless ``TF_ENABLE_ONEDNN_OPTS``
    says otherwise (``ONEDNN_VARIABLE``); it too is read at the import.
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault(ONEDNN_VARIABLE, "1")
    if "tensorflow" in sys.modules or verbose:
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _muted_stderr(), _without_keras():
        import tensorflow as tf
    # TensorFlow's own Python INFO lines (saver timings and the like), whether
    # they go through its logger or straight through absl.
    tf.get_logger().setLevel("WARNING")
    logging.get_absl_handler().addFilter(_HideTensorFlowInfo())
    return tf


class _HideTensorFlowInfo(pylogging.Filter):
    """Drops INFO records that come from TensorFlow's own source files."""

    def filter(self, record: pylogging.LogRecord) -> bool:
        path = record.pathname.replace(os.sep, "/")
        return record.levelno >= pylogging.WARNING or "/tensorflow/" not in path


class _HideKeras(importlib.abc.MetaPathFinder):
    """Makes ``import keras.<anything>`` fail (``keras`` itself stays findable)."""

    def find_spec(self, name, path=None, target=None):
        if name.startswith("keras."):
            raise ImportError(f"{name}: not loaded while TensorFlow starts")
        return None


@contextlib.contextmanager
def _without_keras():
    """Imports TensorFlow without its eager import of Keras.

    ``import tensorflow`` loads ``keras.src.optimizers`` (and with it Keras and
    scikit-learn) when Keras is installed, only to register Keras objects for
    SavedModels of Keras models, inside a ``try/except ImportError``. This
    product never uses Keras, and that import was more than half of the
    start-up time (9.3 s -> 3.7 s wall on the 2-core machine, see BUILD.md). ``tf.keras``
    still loads lazily if anything asks for it, and ``import keras`` works as
    usual afterwards.
    """
    if any(name == "keras" or name.startswith("keras.") for name in sys.modules):
        yield
        return
    finder = _HideKeras()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


@contextlib.contextmanager
def _muted_stderr():
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (e.g. some test runners)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What the run resolved to: devices, strategy, XLA, precision."""

    strategy: object
    device: str  # "cpu" or "gpu"
    num_replicas: int
    jit_compile: bool
    compute_dtype: object
    is_chief: bool
    num_workers: int = 1  # processes training together (multi_worker)
    task: str = ""  # this process in the cluster, e.g. "worker:1"; "" when alone


def configure_devices(config: Config):
    """Applies ``--device`` and ``--cpu_devices``; returns ``"cpu"`` or ``"gpu"``."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if config.device == "gpu" and not gpus:
        raise UsageError("--device=gpu: TensorFlow sees no GPU on this machine; use --device=cpu")
    try:
        if config.device == "cpu" and gpus:
            tf.config.set_visible_devices([], "GPU")
        if config.cpu_devices > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * config.cpu_devices
            )
    except RuntimeError as error:  # devices already initialized in this process
        logging.warning("device configuration left as it was: %s", error)
    return "gpu" if gpus and config.device != "cpu" else "cpu"


def make_strategy(config: Config, device: str):
    """Builds the ``tf.distribute`` strategy named by ``--strategy``."""
    import tensorflow as tf

    if config.strategy == "default":
        return tf.distribute.get_strategy()
    if config.strategy == "mirrored":
        if device == "gpu":
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus)
    if config.strategy == "multi_worker":
        tf_config_task(config)  # one-line errors for a missing or malformed TF_CONFIG
        # No collective timeout (CommunicationOptions.timeout_seconds costs a thread per
        # collective): a lost peer is caught by the coordination service's heartbeats,
        # which abort pending collectives with UnavailableError within about 10 s.
        try:
            with _joining_without_the_gil():
                return tf.distribute.MultiWorkerMirroredStrategy()
        except (ValueError, KeyError) as error:
            raise UsageError(f"--strategy=multi_worker: bad TF_CONFIG ({error})") from None
    if config.strategy == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UsageError(f"--strategy=tpu: no TPU found ({message})") from None
        return tf.distribute.TPUStrategy(resolver)
    raise UsageError(f"--strategy={config.strategy}: unknown strategy")


def resolve_jit(config: Config, device: str, num_replicas: int, strategy_name: str) -> bool:
    """Decides whether XLA compiles the training calls (``TrainingProgram``'s
    ``jit_compile``), and logs why."""
    requested = config.jit_compile
    if strategy_name != "default" or num_replicas > 1:
        if requested == "true":
            logging.warning("XLA: off (requested, but not supported under --strategy here)")
        else:
            logging.info("XLA: off (under a distribution strategy)")
        return False
    if requested == "true":
        logging.info("XLA: on (--jit_compile=true)")
        return True
    if requested == "false":
        logging.info("XLA: off (--jit_compile=false)")
        return False
    if config.deterministic:
        logging.info("XLA: off (auto: --deterministic)")
        return False
    convolutions, widest = _layer_facts(config)
    onednn = onednn_enabled()
    cpu = cpu_features()
    on = auto_jit(device, convolutions, config.precision, onednn, widest, cpu)
    logging.info(
        "XLA: %s (auto: %s)",
        "on" if on else "off",
        auto_jit_reason(device, convolutions, config.precision, onednn, widest, cpu),
    )
    return on


# --jit_compile=auto on CPU puts XLA on dense float32 networks whose layers are
# at most this wide, and on wider ones where the CPU has AVX-512 (docs/benchmarks.md,
# fifth round: the whole loop under XLA against graph mode, 784-100-10 1.4x on a
# 2-core AVX-512 Xeon; 784-500x6-10 0.93x at batch 128 on a 2-core AVX2 EPYC,
# where oneDNN's matmuls beat XLA's, and 1.06-1.15x on the Xeon).
XLA_DENSE_WIDTH = 256


@dataclasses.dataclass(frozen=True)
class CpuFeatures:
    """What ``--jit_compile=auto`` reads of the host CPU: ``avx512`` (AVX-512F,
    for which XLA generates code where TensorFlow's element-wise kernels are
    built for AVX) and ``bf16`` (AVX512_BF16 or AMX-BF16, which oneDNN's
    bfloat16 kernels use)."""

    avx512: bool = False
    bf16: bool = False


@functools.cache
def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> CpuFeatures:
    """The host's ``CpuFeatures``, from the first ``flags`` line of ``cpuinfo``;
    none where it cannot be read (not Linux)."""
    flags: set[str] = set()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                name, _, value = line.partition(":")
                if name.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return CpuFeatures(avx512="avx512f" in flags, bf16=bool({"avx512_bf16", "amx_bf16"} & flags))


def auto_jit(
    device: str,
    convolutions: bool,
    precision: str = "float32",
    onednn: bool = True,
    widest: int = 0,
    cpu: CpuFeatures | None = None,
) -> bool:
    """``--jit_compile=auto``'s choice on one device (``auto_jit_reason`` says why).

    XLA on GPUs. On CPUs it depends on the kernels XLA would replace
    (docs/benchmarks.md): in bfloat16, XLA only where those lack bfloat16
    hardware (oneDNN off, or a CPU without AVX512_BF16/AMX-BF16: XLA ran LeNet
    3.6x faster than oneDNN's emulated bfloat16 there, while on a CPU with AMX
    oneDNN's bfloat16 kernels ran dense networks 1.4-2x and LeNet 3-4x faster
    than XLA). In float32, convolutions only without oneDNN (oneDNN's ran 2.6-2.8x
    faster than XLA's); dense networks when no layer is wider than
    ``XLA_DENSE_WIDTH`` or the CPU has AVX-512 (``cpu``: the host's by default).
    """
    if device == "gpu":
        return True
    cpu = cpu_features() if cpu is None else cpu
    if precision == "bfloat16":
        return not (onednn and cpu.bf16)
    if convolutions:
        return not onednn
    return widest <= XLA_DENSE_WIDTH or cpu.avx512


def auto_jit_reason(
    device: str,
    convolutions: bool,
    precision: str,
    onednn: bool,
    widest: int,
    cpu: CpuFeatures,
) -> str:
    """Why ``auto_jit`` chose what it did, for the log."""
    if device == "gpu":
        return "GPU"
    if precision == "bfloat16":
        if onednn and cpu.bf16:
            return "bfloat16 on oneDNN with this CPU's bfloat16 instructions, measured faster"
        if onednn:
            return "bfloat16 on a CPU without bfloat16 instructions, measured faster with XLA"
        return "bfloat16 on TensorFlow's own CPU kernels"
    if convolutions:
        if onednn:
            return "convolutions on oneDNN's float32 kernels, measured faster"
        return "convolutions on TensorFlow's own CPU kernels, measured faster with XLA"
    if widest <= XLA_DENSE_WIDTH:
        return (
            f"dense layers at most {XLA_DENSE_WIDTH} wide, measured faster with XLA on CPU; "
            "the whole loop when batches are gathered in memory"
        )
    if cpu.avx512:
        return (
            f"dense layers wider than {XLA_DENSE_WIDTH} on an AVX-512 CPU, measured faster "
            "with XLA; the whole loop when batches are gathered in memory"
        )
    return f"dense layers wider than {XLA_DENSE_WIDTH} without AVX-512, measured slower with XLA"


def _layer_facts(config: Config) -> tuple[bool, int]:
    """``(has convolutions, widest dense layer's units)`` of the model; the
    output layer is not counted (``(False, 0)`` if the spec does not parse)."""
    from models import spec

    try:
        specs = spec.parse(spec.model_spec(config.model, config.layers, config.hidden))
    except spec.SpecError:
        return False, 0
    widths = [item.options["output_size"] for item in specs if item.layer == "Dense"]
    return any(item.layer == "Conv2D" for item in specs), max(widths, default=0)


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def log_cpu_kernels() -> None:
    setting = os.environ.get(ONEDNN_VARIABLE)
    if onednn_enabled():
        logging.info(
            "CPU kernels: oneDNN (%s=%s; 0 for TensorFlow's own)", ONEDNN_VARIABLE, setting
        )
    else:
        logging.info("CPU kernels: TensorFlow's own (%s=%s)", ONEDNN_VARIABLE, setting)


def seed_everything(config: Config) -> None:
    """Seeds Python-side and TensorFlow randomness; enables op determinism."""
    import numpy as np
    import tensorflow as tf

    tf.random.set_seed(config.seed)
    np.random.seed(config.seed % (2**32))
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
        logging.info("deterministic ops: on")


def setup(config: Config) -> Runtime:
    """Configures the process for ``config`` and returns what was resolved."""
    import tensorflow as tf

    device = configure_devices(config)
    seed_everything(config)
    with guard_workers(config, "join"):
        strategy = make_strategy(config, device)
    num_replicas = strategy.num_replicas_in_sync
    if config.strategy != "default":
        # Raised by tf.distribute's own dataset code on every trace; nothing to act on.
        warnings.filterwarnings(
            "ignore", "To make it possible to preserve tf.data options", UserWarning
        )
    jit = resolve_jit(config, device, num_replicas, config.strategy)
    log_cpu_kernels()
    dtype = tf.bfloat16 if config.precision == "bfloat16" else tf.float32
    is_chief, num_workers, task = True, 1, ""
    if config.strategy == "multi_worker":
        resolver = strategy.cluster_resolver
        cluster = resolver.cluster_spec().as_dict()
        is_chief = is_chief_task(cluster, resolver.task_type, resolver.task_id)
        num_workers = len(cluster.get("chief", ())) + len(cluster.get("worker", ()))
        task = f"{resolver.task_type}:{resolver.task_id}" if resolver.task_type else ""
        logging.info(
            "cluster: %d worker(s); this is %s%s",
            num_workers,
            task or "the only task",
            " (chief: writes checkpoints, summaries and results)" if is_chief else "",
        )
    logging.info(
        "device: %s; strategy: %s with %d replica(s); precision: %s",
        device,
        config.strategy,
        num_replicas,
        config.precision,
    )
    return Runtime(strategy, device, num_replicas, jit, dtype, is_chief, num_workers, task)


def is_chief_task(cluster: dict, task_type: str | None, task_id: int | None) -> bool:
    """The chief writes the run's files: the ``chief`` task when the cluster has
    one, otherwise worker 0. A process outside any cluster is its own chief."""
    if not task_type:
        return True
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and int(task_id or 0) == 0


def tf_config_task(config: Config) -> tuple[dict, str | None, int | None]:
    """``(cluster, task type, task id)`` from ``TF_CONFIG`` under ``--strategy=multi_worker``.

    Read without TensorFlow, so the chief is known before the strategy exists
    (only the chief takes the run folder's lock). Other strategies: ``({}, None, None)``.
    """
    if config.strategy != "multi_worker":
        return {}, None, None
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        raise UsageError("--strategy=multi_worker: set TF_CONFIG to describe the cluster")
    try:
        tf_config = json.loads(text)
        cluster = tf_config.get("cluster") or {}
        task = tf_config.get("task") or {}
        task_type = task.get("type")
        task_id = int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError) as error:
        raise UsageError(f"--strategy=multi_worker: bad TF_CONFIG ({error})") from None
    if not isinstance(cluster, dict) or (task_type and task_type not in cluster):
        raise UsageError(
            f"--strategy=multi_worker: bad TF_CONFIG (task type {task_type!r} is not in "
            f"its cluster {sorted(cluster) if isinstance(cluster, dict) else cluster!r})"
        )
    return cluster, task_type, task_id


# -- multi_worker set-up: a bounded wait that honours SIGTERM and SIGINT ----------
#
# A worker whose peers never start used to wait for ever, deaf to SIGTERM and
# SIGINT, because:
# - MultiWorkerMirroredStrategy() waits inside TFE_EnableCollectiveOps until the
#   coordination service has registered every task (up to an hour), and its
#   Python binding holds the GIL all the while: no Python code runs anywhere;
# - TensorFlow's coordination service installs its own SIGTERM handler there
#   (a preemption notice that only sets a flag);
# - the set-up steps after that (the variables' first broadcast, the restore,
#   the gather of the workers' steps) block the main thread in C++ collectives,
#   so Python-level signal handlers cannot run either.
# ``guard_workers`` watches each of these phases from a thread instead, and
# ``_joining_without_the_gil`` makes that thread able to run during the first.

PEER_STATUS = 4  # the exit status of a lost or missing peer (see main.py)
_GUARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Per phase: what this worker is doing (for a signal's line), and what the
# other workers did not do in time (for the timeout's line).
_PHASES = {
    "join": ("waiting for the other workers", "join"),
    "model": ("creating the model with the other workers", "create the model"),
    "start": ("restoring and comparing steps with the other workers", "reach the first step"),
}
_EXITING = threading.Lock()  # one thread writes the last line


def _exit_now(message: str, status: int) -> None:
    """Writes ``error: message`` to standard error and ends the process at once.

    ``os._exit``: no Python clean-up, which would wait on the very TensorFlow
    calls that are blocked. Nothing is left half-written: the guarded phases
    write files only by renaming whole ones into place, and the run lock is an
    ``flock`` that the kernel drops. Standard error is line-buffered, so no
    partial log line precedes this one.
    """
    _EXITING.acquire()  # never released: the process ends
    try:
        os.write(2, f"error: {message}\n".encode())
    finally:
        os._exit(status)


class _CHandlers:
    """Python's C-level handlers of some signals, put back when C++ code replaces them.

    The raw ``struct sigaction`` is copied as opaque bytes: no layout is assumed
    beyond the handler's address coming first.
    """

    _SIZE = 512  # more than any libc's struct sigaction
    _POINTER = ctypes.sizeof(ctypes.c_void_p)

    def __init__(self, signums):
        self._saved = {}
        try:
            self._sigaction = ctypes.CDLL(None, use_errno=True).sigaction
        except (OSError, AttributeError, TypeError):
            return
        self._sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        self._sigaction.restype = ctypes.c_int
        for signum in signums:
            current = self._get(signum)
            if current is not None:
                self._saved[signum] = current

    def _get(self, signum):
        action = ctypes.create_string_buffer(self._SIZE)
        return action if self._sigaction(signum, None, action) == 0 else None

    def reassert(self) -> None:
        for signum, saved in self._saved.items():
            current = self._get(signum)
            if current is not None and current.raw[: self._POINTER] != saved.raw[: self._POINTER]:
                self._sigaction(signum, saved, None)


def _other_workers(config: Config) -> tuple[list[str], int]:
    """The other tasks that the coordination service waits for (``"worker:1 at
    host:port"``), and how many tasks there are in all, from TF_CONFIG."""
    cluster, task_type, task_id = tf_config_task(config)
    tasks = [
        (job, index, address)
        for job in ("chief", "worker")
        for index, address in enumerate(cluster.get(job) or ())
    ]
    others = [f"{j}:{i} at {a}" for j, i, a in tasks if (j, i) != (task_type, task_id)]
    return others, len(tasks)


def _listed(names: list[str], most: int = 3) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


class _WorkerGuard:
    """Guards one blocking set-up phase of ``--strategy=multi_worker``.

    For the phase's duration, a watchdog thread ends the process with one line
    on standard error when SIGTERM or SIGINT arrives (status 128 + signal), or
    when the phase outlasts ``--worker_timeout`` (status 4). Signals reach it
    through ``signal.set_wakeup_fd``: Python's C-level handler writes the signal
    number to a pipe even while the main thread is blocked in C++. Leaving the
    phase puts back the previous handlers and wakeup fd. Other strategies, and
    a thread other than the main one (which cannot set handlers): no guard.
    """

    def __init__(self, config: Config, phase: str):
        self.config = config
        self.phase = phase
        self._active = False

    def __enter__(self) -> _WorkerGuard:
        if (
            self.config.strategy != "multi_worker"
            or threading.current_thread() is not threading.main_thread()
            or os.name != "posix"
        ):
            return self
        self._others, size = _other_workers(self.config)
        self._signal_read, self._signal_write = os.pipe()
        self._stop_read, self._stop_write = os.pipe()
        for fd in (self._signal_read, self._signal_write):
            os.set_blocking(fd, False)
        self._previous = {s: signal.signal(s, self._on_signal) for s in _GUARDED_SIGNALS}
        self._previous_wakeup = signal.set_wakeup_fd(self._signal_write, warn_on_full_buffer=False)
        self._handlers = _CHandlers(_GUARDED_SIGNALS)
        self._deadline = time.monotonic() + self.config.worker_timeout
        self._thread = threading.Thread(target=self._watch, name="worker-guard", daemon=True)
        self._active = True
        self._thread.start()
        if self.phase == "join":
            logging.info(
                "waiting for the other workers (%d of %d: %s) to join, for up to %gs "
                "(--worker_timeout)",
                len(self._others),
                size,
                _listed(self._others),
                self.config.worker_timeout,
            )
        return self

    def __exit__(self, *exc) -> None:
        if not self._active:
            return
        self._active = False
        os.write(self._stop_write, b"x")
        self._thread.join()
        signal.set_wakeup_fd(self._previous_wakeup)
        for signum, handler in self._previous.items():
            # None: a handler Python did not install; the default is the closest.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for fd in (self._signal_read, self._signal_write, self._stop_read, self._stop_write):
            os.close(fd)

    def _on_signal(self, signum, frame) -> None:
        """The main thread's handler: the same as the watchdog's, when Python runs."""
        self._signalled(signum)

    def _signalled(self, signum: int) -> None:
        doing, _ = _PHASES[self.phase]
        _exit_now(
            f"received {signal.Signals(signum).name} while {doing}; "
            "nothing was trained, nothing was lost",
            128 + signum,
        )

    def _timed_out(self) -> None:
        _, late = _PHASES[self.phase]
        others = "worker" if len(self._others) == 1 else "workers"
        _exit_now(
            f"--strategy=multi_worker: the other {others} ({_listed(self._others)}) did not "
            f"{late} within {self.config.worker_timeout:g}s; "
            "start every worker with the same command (each with its own TF_CONFIG task), "
            "or raise --worker_timeout; nothing was trained, nothing was lost",
            PEER_STATUS,
        )

    def _watch(self) -> None:
        started = time.monotonic()
        while True:
            now = time.monotonic()
            left = self._deadline - now
            if left <= 0:
                self._timed_out()
            # TensorFlow installs its SIGTERM handler within the join's first
            # 50 ms; it is replaced by Python's again after each nap, hence the
            # short naps at first (a SIGTERM in between would only set its flag).
            nap = 0.005 if now - started < 1 else 0.05
            watched = [self._signal_read, self._stop_read]
            ready, _, _ = select.select(watched, [], [], min(left, nap))
            if self._stop_read in ready:
                return
            if self._signal_read in ready:
                try:
                    received = os.read(self._signal_read, 64)
                except BlockingIOError:
                    received = b""
                for signum in received:
                    if signum in _GUARDED_SIGNALS:
                        self._signalled(signum)
            self._handlers.reassert()


@contextlib.contextmanager
def _joining_without_the_gil():
    """Lets other Python threads run while the strategy waits for the other workers.

    ``MultiWorkerMirroredStrategy()`` waits for every worker inside
    ``TFE_EnableCollectiveOps``, whose Python binding keeps the GIL for the whole
    wait: no other Python thread (``guard_workers``'s watchdog) could run. For
    that call only, the binding is replaced by a ctypes call of the same function
    of TensorFlow's C API, which releases the GIL. Where the C API cannot be
    found, TensorFlow's own binding is left in place.
    """
    from tensorflow.python import pywrap_tfe

    original = pywrap_tfe.TFE_EnableCollectiveOps
    replacement = _enable_collective_ops_through_ctypes()
    if replacement is None:
        yield
        return
    pywrap_tfe.TFE_EnableCollectiveOps = replacement
    try:
        yield
    finally:
        pywrap_tfe.TFE_EnableCollectiveOps = original


def _enable_collective_ops_through_ctypes():
    """``pywrap_tfe.TFE_EnableCollectiveOps`` through ctypes (GIL released), or None."""
    import tensorflow as tf

    def library(name: str):  # Linux, then macOS
        for file_name in (f"lib{name}.so.2", f"lib{name}.2.dylib"):
            path = os.path.join(tf.sysconfig.get_lib(), file_name)
            if os.path.exists(path):
                return ctypes.CDLL(path)
        raise OSError(f"no lib{name} in {tf.sysconfig.get_lib()}")

    try:
        api, framework = library("tensorflow_cc"), library("tensorflow_framework")
        enable = api.TFE_EnableCollectiveOps
        new_status, delete_status = framework.TF_NewStatus, framework.TF_DeleteStatus
        get_code, get_message = framework.TF_GetCode, framework.TF_Message
    except (OSError, AttributeError) as error:
        logging.warning(
            "--strategy=multi_worker: --worker_timeout, SIGTERM and SIGINT take effect only "
            "once every worker has joined (TensorFlow's C API not found: %s)",
            error,
        )
        return None
    enable.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
    enable.restype = None
    new_status.argtypes, new_status.restype = [], ctypes.c_void_p
    delete_status.argtypes, delete_status.restype = [ctypes.c_void_p], None
    get_code.argtypes, get_code.restype = [ctypes.c_void_p], ctypes.c_int
    get_message.argtypes, get_message.restype = [ctypes.c_void_p], ctypes.c_char_p
    capsule_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
        ("PyCapsule_GetPointer", ctypes.pythonapi)
    )

    def enable_collective_ops(context_handle, server_def: bytes) -> None:
        context = capsule_pointer(context_handle, None)  # the TFE_Context*
        status = new_status()
        try:
            enable(context, server_def, len(server_def), status)
            code = get_code(status)
            if code:
                message = (get_message(status) or b"").decode(errors="replace")
                error_type = tf.compat.v1.errors.exception_type_from_error_code(code)
                raise error_type(None, None, message)
        finally:
            delete_status(status)

    return enable_collective_ops


def guard_workers(config: Config, phase: str) -> _WorkerGuard:
    """A context manager guarding ``phase`` ("join", "model" or "start") of a
    ``--strategy=multi_worker`` set-up; see ``_WorkerGuard``. Other strategies:
    it does nothing."""
    if phase not in _PHASES:
        raise ValueError(f"unknown phase {phase!r}")
    return _WorkerGuard(config, phase)
